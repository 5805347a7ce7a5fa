"""AsyncStore: a syncline store for asyncio applications.

``store = await syncline.aio.open(url, entities=[...])`` (or ``async with``) opens the same
store as :func:`syncline.open`; every operation is the synchronous store's, run on a thread of
its own (memory, SQLite) or, for backends whose I/O awaits on the loop (PostgreSQL), in a
greenlet on the loop itself. See docs/async.md.
"""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator, AsyncIterator, Callable, Generator, Iterable
from typing import Any, Literal, TypeVar

import attrs

from syncline.aio.loop import LoopRunner
from syncline.aio.repository import AsyncRepository
from syncline.aio.thread import Runner, StoreThread, complete, finish
from syncline.aio.transport import AsyncTransport, LoopBridge, async_transport_class
from syncline.aio.watch import AsyncWatch
from syncline.aio.worker import AsyncSyncWorker
from syncline.core.model.errors import ConfigurationError
from syncline.core.plugins import plugin_manager
from syncline.core.spi.options import scheme_of
from syncline.core.store import Store, open_store
from syncline.core.sync.engine import SyncReport
from syncline.core.sync.outbox import Quarantined

T = TypeVar("T")


@attrs.frozen
class SyncProgress:
    """What ``async for progress in store.sync_status()`` yields."""

    #: mutations waiting to be pushed (dead letters not included)
    pending: int
    #: the last sync round's report (None before the first round of this store)
    last_report: SyncReport | None


class AsyncTransaction:
    """``async with store.transaction():`` a transaction (nested ones are savepoints) in
    which the body's awaited store calls run; commits at the end, rolls back when the body
    raises or is cancelled."""

    def __init__(self, store: AsyncStore) -> None:
        self._store = store
        self._pinned: Any = None

    async def __aenter__(self) -> None:
        self._pinned = await self._store._thread.begin(self._store.sync_store)

    async def __aexit__(self, exc_type: type[BaseException] | None, *exc: object) -> None:
        pinned, self._pinned = self._pinned, None
        assert pinned is not None
        await self._store._thread.end(pinned, commit=exc_type is None)


class AsyncStore:
    """An open store for asyncio; the synchronous :class:`syncline.Store` does the work on
    the store's thread (:attr:`sync_store`), so answers and errors are the same."""

    def __init__(self, store: Store, thread: Runner) -> None:
        #: the synchronous store (use it only through :meth:`run` from the loop)
        self.sync_store = store
        self._thread = thread
        self._repos: dict[type, AsyncRepository[Any]] = {}
        self._worker: AsyncSyncWorker | None = None
        self._progress: set[asyncio.Queue[SyncReport]] = set()
        self._last_report: SyncReport | None = None
        #: True while a sync round runs on the store's thread (its commits are its own)
        self.in_sync_round = False
        self._engine_ready = False
        self._engine_lock = asyncio.Lock()

    # -- records -----------------------------------------------------------------------------

    def repository(self, cls: type[T]) -> AsyncRepository[T]:
        """The awaitable repository of entity ``cls``."""
        repo = self._repos.get(cls)
        if repo is None:
            repo = self._repos[cls] = AsyncRepository(self.sync_store.repository(cls),
                                                      self._thread)
        return repo

    def transaction(self) -> AsyncTransaction:
        return AsyncTransaction(self)

    async def run(self, fn: Callable[[Store], T]) -> T:
        """Run ``fn(sync_store)`` on the store's thread (inside the task's transaction, if
        any): synchronous code over the store, such as a DAO's method, without blocking."""
        return await self._thread.call(lambda: fn(self.sync_store))

    async def clear_all(self) -> None:
        """Delete every row of every table, sync queue and sync state included (logout)."""
        await self._thread.call(self.sync_store.clear_all)

    # -- sync --------------------------------------------------------------------------------

    def _round(self) -> SyncReport:
        self.in_sync_round = True
        try:
            return self.sync_store.sync()
        finally:
            self.in_sync_round = False

    async def _make_engine(self) -> None:
        """Build the sync engine and its transport (imports, a TLS context: Python work of
        tens of milliseconds) in a thread, once, before the loop's first sync call."""
        if self._engine_ready:
            return
        async with self._engine_lock:
            if not self._engine_ready:
                with contextlib.suppress(Exception):  # the call itself says what is wrong
                    await asyncio.to_thread(lambda: self.sync_store.sync_engine)
                self._engine_ready = True

    async def sync(self) -> SyncReport:
        """Push queued changes, then pull the server's; see :class:`syncline.SyncReport`."""
        await self._make_engine()
        report = await self._thread.call(self._round)
        self._last_report = report
        for listener in list(self._progress):
            listener.put_nowait(report)
        return report

    async def enqueue_command(self, name: str, payload: dict[str, Any] | None = None, *,
                              priority: int = 0, coalesce: bool = False,
                              after: Iterable[tuple[type | str, str]] | None = None) -> str:
        """Queue a named command for the server; returns its mutation id."""
        after = None if after is None else list(after)
        return await self._thread.call(lambda: self.sync_store.enqueue_command(
            name, payload, priority=priority, coalesce=coalesce, after=after))

    async def network_available(self) -> None:
        """Tell the sync engine the network is back: stop backing off and sync soon."""
        await self._make_engine()
        await self._thread.call(self.sync_store.network_available)
        if self._worker is not None:
            self._worker.wake()

    async def quarantined(self) -> list[Quarantined]:
        return await self._thread.call(self.sync_store.quarantined)

    async def pending_count(self) -> int:
        return await self._thread.call(self.sync_store.outbox.pending_count)

    def watch_pending_count(self) -> AsyncWatch[int]:
        """The pending count now and whenever it changes."""
        return AsyncWatch(self.sync_store.outbox.watch_pending_count(), self._thread)

    async def progress(self) -> SyncProgress:
        """The sync status now: what ``sync_status()`` yields first."""
        return SyncProgress(await self.pending_count(), self._last_report)

    async def sync_status(self) -> AsyncIterator[SyncProgress]:
        """``async for progress in store.sync_status()``: the status now, then whenever the
        pending count changes or a sync round (``sync()`` or the worker's) ends."""
        reports: asyncio.Queue[SyncReport] = asyncio.Queue()
        counts: AsyncGenerator[int, None] = self.watch_pending_count().__aiter__()
        last = self._last_report
        self._progress.add(reports)
        next_count = asyncio.ensure_future(anext(counts))
        next_report = asyncio.ensure_future(reports.get())
        try:
            pending = await next_count
            next_count = asyncio.ensure_future(anext(counts))
            yield SyncProgress(pending, last)
            while True:
                await asyncio.wait({next_count, next_report},
                                   return_when=asyncio.FIRST_COMPLETED)
                if next_count.done():
                    pending = next_count.result()
                    next_count = asyncio.ensure_future(anext(counts))
                if next_report.done():
                    last = next_report.result()
                    next_report = asyncio.ensure_future(reports.get())
                yield SyncProgress(pending, last)
        finally:
            self._progress.discard(reports)
            next_count.cancel()
            next_report.cancel()
            with contextlib.suppress(asyncio.CancelledError, StopAsyncIteration):
                await next_count
            await counts.aclose()

    async def wait_synced(self, cls: type, record_id: str, timeout: float = 10.0) -> bool:
        """Wait until the record's local changes have been pushed; False on timeout."""
        await self._make_engine()
        engine = await self._thread.call(lambda: self.sync_store.sync_engine)
        loop = asyncio.get_running_loop()
        deadline = loop.time() + timeout
        while True:
            if await self._thread.call(lambda: engine.is_synced(cls, record_id)):
                return True
            if loop.time() >= deadline:
                return False
            if self._worker is not None:
                self._worker.wake()
            await asyncio.sleep(0.02)

    async def start_sync_worker(self, interval: float = 30.0, debounce: float = 0.1, *,
                                live: bool = True, fallback: float = 5.0) -> AsyncSyncWorker:
        """Sync in an asyncio task: every ``interval`` seconds, soon after writes, and as
        soon as the server's live stream tells (polling every ``fallback`` s while it is
        down; ``live=False``: polling only)."""
        if self._worker is not None and self._worker.running:
            return self._worker
        await self._make_engine()
        self._worker = await AsyncSyncWorker(self, interval=interval, debounce=debounce,
                                             live=live, fallback=fallback).start()
        return self._worker

    async def stop_sync_worker(self) -> None:
        """Let the round under way finish, then stop the worker task."""
        worker, self._worker = self._worker, None
        if worker is not None:
            await worker.stop()

    # -- closing -----------------------------------------------------------------------------

    @property
    def closed(self) -> bool:
        return self.sync_store.closed

    async def close(self) -> None:
        """Stop the worker, close the store on its thread (even when cancelled meanwhile)."""
        if self._thread.stopped:
            return
        await self.stop_sync_worker()
        try:
            await self._thread.close_store(self.sync_store)
        finally:
            self._thread.stop()

    async def __aenter__(self) -> AsyncStore:
        return self

    async def __aexit__(self, *exc: object) -> None:
        await self.close()

    def __repr__(self) -> str:
        return f"<AsyncStore {self.sync_store.backend.url}>"


class Opening:
    """What :func:`open` returns: ``await`` it, or ``async with`` it (closed on leaving)."""

    def __init__(self, url: str | None, kwargs: dict[str, Any]) -> None:
        self._url = url
        self._kwargs = kwargs
        self._store: AsyncStore | None = None

    def __await__(self) -> Generator[Any, None, AsyncStore]:
        return _open(self._url, self._kwargs).__await__()

    async def __aenter__(self) -> AsyncStore:
        self._store = await _open(self._url, self._kwargs)
        return self._store

    async def __aexit__(self, *exc: object) -> None:
        if self._store is not None:
            await self._store.close()


def open(url: str | None = None, *, async_transport: AsyncTransport | None = None,
         io: Literal["loop", "thread"] | None = None, **kwargs: Any) -> Opening:
    """Open a store for asyncio: ``store = await syncline.aio.open("sqlite:///app.db",
    entities=[Post], transport="http://host:8000/")`` or ``async with syncline.aio.open(...)
    as store``. Takes :func:`syncline.open`'s arguments; ``http``, ``https`` and ``mock``
    transports are async (their I/O on the loop), others run on the store's thread.
    ``async_transport`` gives an :class:`AsyncTransport` instance instead of a URL.
    ``io``: where the store's calls run; by default on the loop for backends that await their
    I/O there (PostgreSQL), else on a thread of the store's own; ``"thread"`` for a thread
    whatever the backend (bulk work: the store's Python work then leaves the loop too)."""
    if io not in (None, "loop", "thread"):
        raise ConfigurationError(f"io={io!r}: use 'loop', 'thread' or leave it out")
    return Opening(url, {**kwargs, "async_transport": async_transport, "io": io})


async def _open(url: str | None, kwargs: dict[str, Any]) -> AsyncStore:
    kwargs = dict(kwargs)
    given: AsyncTransport | None = kwargs.pop("async_transport", None)
    io = kwargs.pop("io", None)
    loop = asyncio.get_running_loop()
    thread: Runner
    on_loop = io != "thread" and await asyncio.to_thread(_loop_io, url)  # imports the backend
    if io == "loop" and not on_loop:
        raise ConfigurationError(
            f"io='loop': the backend of {url!r} does not await its I/O on the event loop (no "
            f"event_loop_io capability; PostgreSQL has it); leave io out to use a thread")
    if on_loop:
        # Opened (tables, migrations) in the loop's executor; then its calls run on the loop.
        def open_ready() -> Store:
            store = open_store(url, **kwargs)
            try:
                store.backend.prepare_loop_io()
            except BaseException:
                store.close()
                raise
            return store

        store = await complete(asyncio.to_thread(open_ready))
        thread = LoopRunner()
    else:
        started = await loop.run_in_executor(None, StoreThread)
        opening = asyncio.ensure_future(started.call(lambda: open_store(url, **kwargs)))
        try:
            store = await finish(opening)
        except BaseException:
            started.stop()
            raise
        thread = started

    def bridge(url: str, options: dict[str, Any]) -> LoopBridge | None:
        # Called on the store's thread when the engine is first needed, with the options of
        # that moment (as the synchronous store reads them then).
        cls = async_transport_class(scheme_of(url))
        transport = given if given is not None else None if cls is None else cls(url, options)
        return None if transport is None else LoopBridge(transport, loop)

    store.transport_factory = bridge
    if given is not None and store.transport_url is None:
        store.transport_url = given.url
    return AsyncStore(store, thread)


def _loop_io(url: str | None) -> bool:
    """Whether ``url``'s backend awaits its I/O on the loop (``event_loop_io``): then its
    calls run in greenlets on the loop, with no thread of their own."""
    if url is None:
        return False  # the configured store: on its thread
    try:
        cls = plugin_manager().backend_class(scheme_of(url))
    except Exception:
        return False  # open_store says what is wrong with the URL
    return "event_loop_io" in cls.capabilities
