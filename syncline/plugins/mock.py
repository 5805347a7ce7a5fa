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
    server.fail_next(1, status=503, retry_after=60)         # a 503 with Retry-After
    server.fail_batches_with(lambda m: m.record_id == "p1") # 500 for batches holding p1
    server.max_body_bytes = 64_000                          # 413 for larger push bodies
    server.limits = PushLimits(max_bytes=64_000)            # limits the server publishes
    server.server.write(Post(...))                          # another client's edit

A storage error on the server side (``BackendError``, such as a foreign key the server's store
refuses) fails the call with ``RetryableTransportError(..., status=500)``, as the HTTP server
answers 500.
"""

from __future__ import annotations

import contextvars
import json
import threading
import time
import uuid
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from typing import TYPE_CHECKING, Any

from syncline.core.model.errors import (
    BackendError,
    InvalidCursorError,
    NotFoundError,
    SerializationError,
)
from syncline.core.spi.hookspecs import hookimpl
from syncline.core.spi.registries import TransportRegistry
from syncline.core.spi.transport import (
    PROTOCOL_VERSION,
    CursorRejectedError,
    Mutation,
    MutationResult,
    Notifications,
    PermanentTransportError,
    PullPage,
    PushLimits,
    PushResponse,
    RetryableTransportError,
    Transport,
    to_wire,
)

if TYPE_CHECKING:
    from syncline.core.store import Store

# The server is imported when a MockServer is made: loading this plugin (which every store's
# first open does) imports no server code.

_servers: dict[str, MockServer] = {}
_servers_lock = threading.Lock()



#: the id of the MockTransport pushing in this thread (its own live stream is not told)
_pushing_client: contextvars.ContextVar[str | None] = contextvars.ContextVar(
    "syncline_mock_pushing_client", default=None)


def _principal(given: Any) -> str:
    from syncline.server.engine import ANONYMOUS

    return ANONYMOUS if given is None else str(given)


class MockServer:
    """An in-process sync server with fault controls, reachable as ``mock://<name>``."""

    def __init__(self, name: str = "default", *, entities: Iterable[type] = (),
                 store_url: str = "memory://", assign_ids: bool = False,
                 store: Store | None = None, clock: Any = None) -> None:
        from syncline.server.engine import SyncServer
        from syncline.server.store import open_server_store

        self.name = name
        self.store = store or open_server_store(
            store_url, entities, clock=clock, options={"isolation": "read committed"})
        self.server = SyncServer(self.store, assign_ids=assign_ids)
        from syncline.server.notices import Notifier

        #: live change notices to this process's clients (``MockTransport.notifications``)
        self.live = Notifier(max_clients=100_000)
        self.server.live = self.live
        #: whether clients may open live streams (False: they poll, as with an old server)
        self.live_enabled = True
        self._streams = 0  # bumped by drop_live_streams: open streams break
        self.offline = False
        self.latency = 0.0
        self.repeat_pages = False
        self.calls = 0
        #: the push limits the server publishes (``MockTransport.limits()``); None: none
        self.limits: PushLimits | None = None
        #: pushes whose JSON body is larger fail with ``PermanentTransportError(status=413)``
        self.max_body_bytes: int | None = None
        self._fail = 0
        self._fail_permanent = False
        self._fail_status: int | None = None
        self._fail_retry_after: float | None = None
        self._poison: tuple[Callable[[Mutation], bool], int] | None = None
        self._lose = 0
        self._retry_after: tuple[int, float] = (0, 0.0)
        self._repeated: set[str] = set()
        self._lock = threading.Lock()
        with _servers_lock:
            _servers[name] = self

    # -- fault controls ----------------------------------------------------------------------

    def fail_next(self, n: int = 1, *, permanent: bool = False, status: int | None = None,
                  retry_after: float | None = None) -> None:
        """Make the next ``n`` calls fail before reaching the server, with ``status`` (say 503
        or 429) and ``retry_after`` seconds on the error when given."""
        self._fail, self._fail_permanent = n, permanent
        self._fail_status, self._fail_retry_after = status, retry_after

    def fail_batches_with(self, predicate: Callable[[Mutation], bool] | None, *,
                          status: int = 500) -> None:
        """Answer a push whose batch holds a mutation matching ``predicate`` with
        ``RetryableTransportError(..., status=status)``, applying nothing: a "poison" record
        the server's store cannot hold. It stays until called with None (``heal()`` keeps it,
        like ``max_body_bytes`` and ``limits``: they are the server's, not the network's)."""
        self._poison = None if predicate is None else (predicate, status)

    def lose_next_responses(self, n: int = 1) -> None:
        """Apply the next ``n`` pushes but fail as if their answers were lost on the way."""
        self._lose = n

    def retry_after_next(self, n: int = 1, *, seconds: float = 1.0) -> None:
        """Answer the next ``n`` mutations with "retry after ``seconds``"."""
        self._retry_after = (n, seconds)

    def drop_live_streams(self) -> None:
        """Break every open live stream (clients fall back to polling, then reconnect)."""
        self._streams += 1

    def heal(self) -> None:
        """Stop every fault."""
        self.offline = False
        self.latency = 0.0
        self.repeat_pages = False
        self._fail = self._lose = 0
        self._fail_status = self._fail_retry_after = None
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
                    raise PermanentTransportError(f"mock://{self.name} refused the request",
                                                  status=self._fail_status)
                raise RetryableTransportError(f"mock://{self.name}: injected failure",
                                              retry_after=self._fail_retry_after,
                                              status=self._fail_status)

    def _server_error(self, exc: BackendError) -> RetryableTransportError:
        return RetryableTransportError(
            f"mock://{self.name}: 500 the server failed: {type(exc).__name__}: {exc}",
            status=500)

    def push(self, mutations: Sequence[Mutation], principal: str | None = None,
             schema: int | None = None, *, client: str | None = None) -> PushResponse:
        """Apply ``mutations`` for ``principal`` (None: the server's anonymous principal), a
        client of schema version ``schema`` (None: the server's); ``client`` (a transport's
        id) is not told of them on its live stream."""
        self._enter()
        if self.max_body_bytes is not None:
            body = json.dumps({"mutations": [to_wire(m) for m in mutations]},
                              separators=(",", ":")).encode()
            if len(body) > self.max_body_bytes:
                raise PermanentTransportError(
                    f"mock://{self.name}: 413 the push body of {len(body)} bytes is over "
                    f"{self.max_body_bytes}", status=413)
        n, seconds = self._retry_after
        if n:
            self._retry_after = (max(0, n - len(mutations)), seconds)
            return PushResponse([MutationResult(m.id, "retry", reason="busy",
                                                retry_after=seconds) for m in mutations])
        if self._poison is not None:
            predicate, status = self._poison
            bad = next((m for m in mutations if predicate(m)), None)
            if bad is not None:
                raise RetryableTransportError(
                    f"mock://{self.name}: {status} the server's store cannot hold "
                    f"{bad.action} {bad.entity} {bad.record_id}", status=status)
        try:
            response = self.server.push(mutations, _principal(principal), schema,
                                        client=client or _pushing_client.get())
        except BackendError as exc:
            raise self._server_error(exc) from exc
        with self._lock:
            if self._lose:
                self._lose -= 1
                raise RetryableTransportError(f"mock://{self.name}: the response was lost")
        return response

    def pull(self, cursor: str | None, limit: int, entities: Sequence[str] | None = None,
             principal: str | None = None, schema: int | None = None) -> PullPage:
        self._enter()
        principal = _principal(principal)
        try:
            page = self.server.pull(cursor, limit, entities, principal, schema)
        except BackendError as exc:
            raise self._server_error(exc) from exc
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
        self.principal = _principal(self.options.get("principal"))
        #: this client's id: its own pushes are not told back on its live stream
        self.client_id = uuid.uuid4().hex
        #: ``protocol=1`` plays a client of protocol 1 (whole records for updates)
        self.protocol = int(self.options.get("protocol", PROTOCOL_VERSION))
        #: the client's schema version (the store's, given by the engine), as HTTP's header
        version = self.options.get("schema_version")
        self.schema: int | None = None if version is None else int(version)

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
            server = self.server
            # the client id goes beside the call, not in it: tests replace MockServer.push
            # with wrappers of the (mutations, principal) shape
            token = _pushing_client.set(self.client_id)
            try:
                return server.push(mutations, self.principal, *self._schema(server))
            finally:
                _pushing_client.reset(token)
        except (SerializationError, NotFoundError) as exc:
            raise PermanentTransportError(str(exc), status=422) from exc

    def pull(self, cursor: str | None, limit: int,
             entities: Sequence[str] | None = None) -> PullPage:
        try:
            server = self.server
            return server.pull(cursor, limit, entities, self.principal, *self._schema(server))
        except InvalidCursorError as exc:
            raise CursorRejectedError(str(exc), status=400) from exc
        except (SerializationError, NotFoundError) as exc:
            raise PermanentTransportError(str(exc), status=422) from exc

    def _schema(self, server: MockServer) -> tuple[int, ...]:
        """The schema version to send: none when it is the server's (as HTTP's header may be
        left out; tests that wrap ``MockServer.push`` see the calls they always saw)."""
        if self.schema is None or self.schema == server.server.versions.current:
            return ()
        return (self.schema,)

    def limits(self) -> PushLimits | None:
        limits: PushLimits | None = getattr(self.server, "limits", None)
        return limits

    def notifications(self, entities: Sequence[str] | None = None) -> Notifications | None:
        server = self.server
        if not server.live_enabled:
            return None
        if server.offline:
            raise RetryableTransportError(f"{self.url}: the server is offline")
        from syncline.server.notices import BlockingSubscription

        names = frozenset(entities or server.server._specs)
        sub = BlockingSubscription(self.principal, names, self.client_id)
        if server.live.add(sub) is None:
            raise RetryableTransportError(f"{self.url}: too many live streams", status=503)
        return _MockNotices(self.url, server, sub)


class _MockNotices(Notifications):
    """A MockServer's live stream: ``ready`` at once, then each (coalesced) notice; breaks
    when the server goes offline or drops its streams."""

    def __init__(self, url: str, server: MockServer, sub: Any) -> None:
        self.url, self.server, self.sub = url, server, sub
        self.generation = server._streams
        self._closed = threading.Event()

    def __iter__(self) -> Iterator[int]:
        try:
            yield self.server.server.committed_seq()
            while not self._closed.is_set():
                if self.server.offline or self.server._streams != self.generation:
                    raise RetryableTransportError(f"{self.url}: the live stream broke")
                seq = self.sub.wait(0.05)
                if self.sub.ended:
                    return  # the server ended it
                if seq is not None and not self._closed.is_set():
                    yield seq
        finally:
            self.close()

    def close(self) -> None:
        self._closed.set()
        self.server.live.unsubscribe(self.sub)


@hookimpl
def syncline_register_transports(registry: TransportRegistry) -> None:
    registry.register("mock", MockTransport, description="an in-process server for tests")
