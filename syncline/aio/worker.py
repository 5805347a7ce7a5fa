"""The background sync worker as an asyncio task: the thread worker's schedule and claim
(:class:`syncline.core.sync.worker.SyncWorker`), its rounds awaited on the store's thread, and
the live stream read on the loop with the thread worker's decisions
(:class:`syncline.core.sync.live.LiveState`)."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from syncline.aio.transport import AsyncTransport, LoopBridge, ThreadedTransport
from syncline.core.sync.engine import SyncReport
from syncline.core.sync.live import Listening, LiveState
from syncline.core.sync.worker import SyncWorker

if TYPE_CHECKING:
    from syncline.aio.store import AsyncStore

log = logging.getLogger("syncline.worker")


class AsyncSyncWorker(Listening):
    """Syncs every ``interval`` seconds, soon after local writes, when a failed push is due
    again, and as soon as the server's live stream says there is something to pull (polling
    every ``fallback`` seconds while that stream is down), until :meth:`stop` (which lets the
    round under way finish)."""

    def __init__(self, store: AsyncStore, *, interval: float = 30.0, debounce: float = 0.1,
                 live: bool = True, fallback: float = 5.0) -> None:
        self.store = store
        self.interval = interval
        self.debounce = debounce
        #: listen to the transport's live stream (if it has one) and pull when told
        self.live = live
        #: the live stream's state and backoff, as the thread worker's
        self.state = LiveState(fallback)
        self._told = asyncio.Event()
        self._listener: asyncio.Task[None] | None = None
        self.last_report: SyncReport | None = None
        self.rounds = 0
        self._wake = asyncio.Event()
        self._stop = asyncio.Event()
        self._task: asyncio.Task[None] | None = None
        self._claim: SyncWorker | None = None
        self._undo_heard: Callable[[], None] | None = None

    async def start(self) -> AsyncSyncWorker:
        loop = asyncio.get_running_loop()
        sync_store = self.store.sync_store

        def claim() -> SyncWorker:
            worker = SyncWorker(sync_store.sync_engine, interval=self.interval,
                                debounce=self.debounce)
            worker.claim()
            worker.state = self.state  # its schedule polls at the fallback pace when down
            return worker

        self._claim = await self.store.run(lambda _store: claim())

        def heard(tables: frozenset[str]) -> None:
            # The rounds' own commits (dequeuing what they pushed) are no reason to sync again.
            if "_syncline_outbox" in tables and not self.store.in_sync_round:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(self._wake.set)

        self._undo_heard = sync_store.on_commit(heard)
        self._task = asyncio.create_task(self._run(), name="syncline-sync")
        if self.live:
            self.state.listening = True
            self._listener = asyncio.create_task(self._listen(), name="syncline-live")
        return self

    def wake(self) -> None:
        """Sync now rather than at the next interval."""
        self._wake.set()

    async def _source(self) -> AsyncTransport:
        """Where the notices come from: the engine's async transport (or its synchronous
        one, read in a thread)."""
        transport = await self.store.run(lambda store: store.sync_engine.transport)
        if isinstance(transport, LoopBridge):
            return transport.transport
        return ThreadedTransport(transport)

    async def _listen(self) -> None:
        """Pull as soon as the server says so; reopen the stream when it breaks."""
        state = self.state
        try:
            transport = await self._source()
            entities = await self.store.run(lambda store: store.sync_engine.entities)
        except Exception as exc:  # no transport: the rounds report it
            state.refused(exc)
            state.absent()
            return
        while not self._stop.is_set():
            try:
                source = await transport.notifications(entities)
            except Exception as exc:
                source = None
                state.refused(exc)
            else:
                if source is None:
                    state.absent()  # this transport (or server) has none: poll at interval
                    return
            if source is not None:
                broke: Exception | None = None
                try:
                    async for _seq in source:
                        if state.heard():  # the stream (re)opened: the server is there
                            await self.store.network_available()
                        self._notice()
                except Exception as exc:
                    broke = exc
                finally:
                    state.broke(broke)
                    with contextlib.suppress(Exception):
                        await source.aclose()
                self._notice()  # a poll at the fallback pace starts now
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._stop.wait(), state.backoff())

    async def _run(self) -> None:
        claim = self._claim
        assert claim is not None
        timeout = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if self._stop.is_set():
                break
            if self._wake.is_set() and self.debounce and not self._told.is_set():
                with contextlib.suppress(TimeoutError):  # gather a burst of writes
                    await asyncio.wait_for(self._stop.wait(), self.debounce)
            self._told.clear()  # before the pull: a notice arriving during it pulls again
            self._wake.clear()
            try:
                self.last_report = await self.store.sync()
                self.rounds += 1
                timeout = await self.store.run(lambda _store: claim.next_timeout())
            except Exception:
                log.exception("background sync failed")
                timeout = min(self.interval, 5.0)

    async def stop(self) -> None:
        """Finish the round under way and stop."""
        self._stop.set()
        self._wake.set()
        listener, self._listener = self._listener, None
        if listener is not None:
            listener.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await listener
        self.state.listening = False
        task, self._task = self._task, None
        if task is not None:
            with contextlib.suppress(asyncio.CancelledError):
                await task
        if self._undo_heard is not None:
            self._undo_heard()
            self._undo_heard = None
        if self._claim is not None:
            claim, self._claim = self._claim, None
            claim.release()

    @property
    def running(self) -> bool:
        return self._task is not None and not self._task.done()
