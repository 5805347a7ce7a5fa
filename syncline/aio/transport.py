"""Async transports, and the bridge that lets the one sync engine use them.

The engine runs on the store's thread and calls a :class:`Transport`; :class:`LoopBridge` is
that transport for an :class:`AsyncTransport`: it hands each call to the event loop with
``asyncio.run_coroutine_threadsafe`` and waits on the store's thread, so the network I/O
happens on the loop and the engine's decisions stay in ``syncline.core.sync``.
"""

from __future__ import annotations

import abc
import asyncio
import concurrent.futures
import contextlib
import threading
from collections.abc import Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from syncline.core.model.errors import SynclineError
from syncline.core.spi.helpers import in_loop_greenlet
from syncline.core.spi.transport import (
    PROTOCOL_VERSION,
    Mutation,
    PullPage,
    PushLimits,
    PushResponse,
    RetryableTransportError,
    Transport,
)

T = TypeVar("T")


class AsyncTransport(abc.ABC):
    """The transport contract as coroutines: the same messages and the same errors as
    :class:`syncline.core.spi.transport.Transport`."""

    #: the protocol version spoken with the server (see ``Transport.protocol``)
    protocol: int = PROTOCOL_VERSION

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.options: dict[str, Any] = dict(options or {})

    @abc.abstractmethod
    async def push(self, mutations: Sequence[Mutation]) -> PushResponse:
        """Send a batch; the response has one result per mutation, in the same order."""

    @abc.abstractmethod
    async def pull(self, cursor: str | None, limit: int,
                   entities: Sequence[str] | None = None) -> PullPage:
        """Changes after ``cursor`` (None: from the start), at most ``limit`` of them."""

    async def limits(self) -> PushLimits | None:
        """The server's push limits, when it publishes them (None: use defaults)."""
        return None

    async def aclose(self) -> None:  # noqa: B027 - optional for transports without resources
        """Release connections."""


class ThreadedTransport(AsyncTransport):
    """A synchronous transport's calls in a thread of the loop's default executor."""

    def __init__(self, transport: Transport) -> None:
        super().__init__(transport.url, transport.options)
        self.transport = transport

    @property
    def protocol(self) -> int:
        return self.transport.protocol

    @protocol.setter
    def protocol(self, version: int) -> None:
        self.transport.protocol = version

    async def push(self, mutations: Sequence[Mutation]) -> PushResponse:
        return await asyncio.to_thread(self.transport.push, mutations)

    async def pull(self, cursor: str | None, limit: int,
                   entities: Sequence[str] | None = None) -> PullPage:
        return await asyncio.to_thread(self.transport.pull, cursor, limit, entities)

    async def limits(self) -> PushLimits | None:
        return await asyncio.to_thread(self.transport.limits)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.transport.close)


class AsyncMockTransport(ThreadedTransport):
    """``mock://name`` for asyncio stores: the in-process :class:`MockServer` of that name,
    with its fault injection, called off the loop (the server's work is not the client's)."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        from syncline.plugins.mock import MockTransport

        super().__init__(MockTransport(url, options))


class LoopBridge(Transport):
    """The engine's transport, on the store's thread, for an async transport on ``loop``."""

    def __init__(self, transport: AsyncTransport, loop: asyncio.AbstractEventLoop) -> None:
        super().__init__(transport.url, transport.options)
        self.transport = transport
        self.loop = loop

    @property
    def protocol(self) -> int:  # as the async transport negotiated it
        return self.transport.protocol

    @protocol.setter
    def protocol(self, version: int) -> None:
        self.transport.protocol = version

    def _wait(self, call: Coroutine[Any, Any, T]) -> T:
        if loop_thread(self.loop) == threading.get_ident():
            if in_loop_greenlet():  # the engine runs on the loop (PostgreSQL): await it there
                from sqlalchemy.util import await_only

                result: T = await_only(call)
                return result
            call.close()
            raise SynclineError(
                "an asyncio store's sync ran on its event loop's thread; await store.sync() "
                "instead (it runs on the store's thread)")
        try:
            fut = asyncio.run_coroutine_threadsafe(call, self.loop)
        except RuntimeError as exc:  # the loop is closed
            call.close()
            raise RetryableTransportError(f"{self.url}: the event loop has stopped") from exc
        try:
            return fut.result()
        except concurrent.futures.CancelledError as exc:  # the loop shut down mid-call
            raise RetryableTransportError(f"{self.url}: the call was cancelled") from exc

    def push(self, mutations: Sequence[Mutation]) -> PushResponse:
        return self._wait(self.transport.push(mutations))

    def pull(self, cursor: str | None, limit: int,
             entities: Sequence[str] | None = None) -> PullPage:
        return self._wait(self.transport.pull(cursor, limit, entities))

    def limits(self) -> PushLimits | None:
        return self._wait(self.transport.limits())

    def close(self) -> None:
        with contextlib.suppress(RetryableTransportError):  # the loop is gone, and its
            self._wait(self.transport.aclose())  # connections with it


def loop_thread(loop: asyncio.AbstractEventLoop) -> int | None:
    """The id of the thread running ``loop`` (None when it is not running)."""
    return getattr(loop, "_thread_id", None)


def async_transport_class(scheme: str) -> type[AsyncTransport] | None:
    """The async transport of a URL scheme; None: run the synchronous one on the store's
    thread (a third party's transport without an async twin)."""
    if scheme in ("http", "https"):
        from syncline.aio.http import AsyncHTTPTransport

        return AsyncHTTPTransport
    if scheme == "mock":
        return AsyncMockTransport
    return None
