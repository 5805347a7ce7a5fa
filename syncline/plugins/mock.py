"""The mock transport: ``mock://name`` talks to an in-process :class:`MockServer`.

A MockServer runs the real server side of the protocol over a store of its own (any backend)
and lets tests inject the faults real networks have::

    server = MockServer("main", entities=[Post])          # memory:// store by default
    store = syncline.open("memory://", entities=[Post], transport="mock://main")
    server.offline = True                                   # every call fails, retryably
    server.fail_next(2)                                     # the next two calls fail
    server.lose_next_responses(1)                           # applied, but the answer is lost
    server.latency = 0.05                                   # seconds per call
    server.repeat_pages = True                              # every page is delivered twice
    server.retry_after_next(1, seconds=30)                  # answer "retry after 30 s"
    server.server.write(Post(...))                          # another client's edit
"""

from __future__ import annotations

import threading
import time
from collections.abc import Iterable, Mapping, Sequence
from typing import Any

import syncline
from syncline.core.errors import NotFoundError, SerializationError
from syncline.core.hookspecs import hookimpl
from syncline.core.plugins import TransportRegistry
from syncline.core.serverside import ANONYMOUS, SERVER_ENTITIES, SyncServer
from syncline.core.store import Store
from syncline.core.transport import (
    Mutation,
    MutationResult,
    PermanentTransportError,
    PullPage,
    PushResponse,
    RetryableTransportError,
    Transport,
)

_servers: dict[str, MockServer] = {}
_servers_lock = threading.Lock()


class MockServer:
    """An in-process sync server with fault controls, reachable as ``mock://<name>``."""

    def __init__(self, name: str = "default", *, entities: Iterable[type] = (),
                 store_url: str = "memory://", assign_ids: bool = False,
                 store: Store | None = None, clock: Any = None) -> None:
        self.name = name
        self.store = store or syncline.open(
            store_url, entities=[*entities, *SERVER_ENTITIES], clock=clock,
            options={"isolation": "read committed"})
        self.server = SyncServer(self.store, assign_ids=assign_ids)
        self.offline = False
        self.latency = 0.0
        self.repeat_pages = False
        self.calls = 0
        self._fail = 0
        self._fail_permanent = False
        self._lose = 0
        self._retry_after: tuple[int, float] = (0, 0.0)
        self._repeated: set[str] = set()
        self._lock = threading.Lock()
        with _servers_lock:
            _servers[name] = self

    # -- fault controls ----------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, permanent: bool = False) -> None:
        """Make the next ``n`` calls fail before reaching the server."""
        self._fail, self._fail_permanent = n, permanent

    def lose_next_responses(self, n: int = 1) -> None:
        """Apply the next ``n`` pushes but fail as if their answers were lost on the way."""
        self._lose = n

    def retry_after_next(self, n: int = 1, *, seconds: float = 1.0) -> None:
        """Answer the next ``n`` mutations with "retry after ``seconds``"."""
        self._retry_after = (n, seconds)

    def heal(self) -> None:
        """Stop every fault."""
        self.offline = False
        self.latency = 0.0
        self.repeat_pages = False
        self._fail = self._lose = 0
        self._retry_after = (0, 0.0)

    def close(self) -> None:
        with _servers_lock:
            if _servers.get(self.name) is self:
                del _servers[self.name]
        self.store.close()

    def __enter__(self) -> MockServer:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the calls ---------------------------------------------------------------------------

    def _enter(self) -> None:
        with self._lock:
            self.calls += 1
            if self.latency:
                time.sleep(self.latency)
            if self.offline:
                raise RetryableTransportError(f"mock://{self.name} is offline")
            if self._fail:
                self._fail -= 1
                if self._fail_permanent:
                    raise PermanentTransportError(f"mock://{self.name} refused the request")
                raise RetryableTransportError(f"mock://{self.name}: injected failure")

    def push(self, mutations: Sequence[Mutation], principal: str = ANONYMOUS) -> PushResponse:
        self._enter()
        n, seconds = self._retry_after
        if n:
            self._retry_after = (max(0, n - len(mutations)), seconds)
            return PushResponse([MutationResult(m.id, "retry", reason="busy",
                                                retry_after=seconds) for m in mutations])
        response = self.server.push(mutations, principal)
        with self._lock:
            if self._lose:
                self._lose -= 1
                raise RetryableTransportError(f"mock://{self.name}: the response was lost")
        return response

    def pull(self, cursor: str | None, limit: int, entities: Sequence[str] | None = None,
             principal: str = ANONYMOUS) -> PullPage:
        self._enter()
        page = self.server.pull(cursor, limit, entities, principal)
        key = f"{cursor}|{principal}"
        if self.repeat_pages and page.changes and key not in self._repeated:
            self._repeated.add(key)  # deliver this page again: the cursor does not move
            return PullPage(page.changes, cursor or "", True, page.epoch, page.server_time)
        return page


class MockTransport(Transport):
    """``mock://name``: calls the MockServer of that name in this process."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        self.name = url.partition("://")[2].strip("/") or "default"
        self.principal = str(self.options.get("principal", ANONYMOUS))

    @property
    def server(self) -> MockServer:
        with _servers_lock:
            server = _servers.get(self.name)
        if server is None:
            raise NotFoundError(
                f"no MockServer named {self.name!r} in this process; create one with "
                f"syncline.plugins.mock.MockServer({self.name!r}, entities=[...]) first"
            )
        return server

    def push(self, mutations: Sequence[Mutation]) -> PushResponse:
        try:
            return self.server.push(mutations, self.principal)
        except (SerializationError, NotFoundError) as exc:
            raise PermanentTransportError(str(exc)) from exc

    def pull(self, cursor: str | None, limit: int,
             entities: Sequence[str] | None = None) -> PullPage:
        try:
            return self.server.pull(cursor, limit, entities, self.principal)
        except (SerializationError, NotFoundError) as exc:
            raise PermanentTransportError(str(exc)) from exc


@hookimpl
def syncline_register_transports(registry: TransportRegistry) -> None:
    registry.register("mock", MockTransport, description="an in-process server for tests")
