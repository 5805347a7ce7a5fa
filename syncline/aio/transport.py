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
from collections.abc import AsyncIterator, Coroutine, Mapping, Sequence
from typing import Any, TypeVar

from syncline.core.model.errors import SynclineError
from syncline.core.spi.helpers import in_loop_greenlet
from syncline.core.spi.transport import (
    PROTOCOL_VERSION,
    Mutation,
    Notifications,
    PullPage,
    PushLimits,
    PushResponse,
    RetryableTransportError,
    Transport,
)

T = TypeVar("T")


class AsyncNotifications(abc.ABC):
    """A live stream of "pull now" notices, as :class:`Notifications` but awaited: ``async
    for seq in stream`` yields each notice's change number (the first as soon as it opens),
    ends or raises a ``TransportError`` when the stream breaks; cancelling the iterating task
    or :meth:`aclose` ends it."""

    @abc.abstractmethod
    def __aiter__(self) -> AsyncIterator[int]:
        """Each notice's change number, as it arrives."""

    @abc.abstractmethod
    async def aclose(self) -> None:
        """End the stream."""


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

    async def notifications(self, entities: Sequence[str] | None = None
                            ) -> AsyncNotifications | None:
        """Open a live stream of change notices (see ``Transport.notifications``); None when
        this transport has none (the worker then polls)."""
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

    async def notifications(self, entities: Sequence[str] | None = None
                            ) -> AsyncNotifications | None:
        """The synchronous transport's stream, read in a thread of its own."""
        loop = asyncio.get_running_loop()

        def open_stream() -> ThreadedNotices | None:  # the thread starts here, off the loop
            source = self.transport.notifications(entities)
            return None if source is None else ThreadedNotices(source, loop)

        return await asyncio.to_thread(open_stream)

    async def aclose(self) -> None:
        await asyncio.to_thread(self.transport.close)


class ThreadedNotices(AsyncNotifications):
    """A blocking :class:`Notifications` iterated in a daemon thread, its notices handed to
    ``loop``."""

    def __init__(self, source: Notifications, loop: asyncio.AbstractEventLoop) -> None:
        self.source = source
        self.loop = loop
        self._queue: asyncio.Queue[tuple[int | None, Exception | None]] = asyncio.Queue()
        threading.Thread(target=self._read, name="syncline-live", daemon=True).start()

    def _put(self, item: tuple[int | None, Exception | None]) -> None:
        with contextlib.suppress(RuntimeError):  # the loop is closed: nobody listens
            self.loop.call_soon_threadsafe(self._queue.put_nowait, item)

    def _read(self) -> None:
        try:
            for seq in self.source:
                self._put((seq, None))
        except Exception as exc:
            self._put((None, exc))
        else:
            self._put((None, None))

    async def __aiter__(self) -> AsyncIterator[int]:
        while True:
            seq, exc = await self._queue.get()
            if exc is not None:
                raise exc
            if seq is None:
                return
            yield seq

    async def aclose(self) -> None:
        await asyncio.to_thread(self.source.close)


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
