"""The background sync worker as an asyncio task: the thread worker's schedule and claim
(:class:`syncline.core.sync.worker.SyncWorker`), its rounds awaited on the store's thread."""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import Callable
from typing import TYPE_CHECKING

from syncline.core.sync.engine import SyncReport
from syncline.core.sync.worker import SyncWorker

if TYPE_CHECKING:
    from syncline.aio.store import AsyncStore

log = logging.getLogger("syncline.worker")


class AsyncSyncWorker:
    """Syncs every ``interval`` seconds, soon after local writes, and when a failed push is
    due again, until :meth:`stop` (which lets the round under way finish)."""

    def __init__(self, store: AsyncStore, *, interval: float = 30.0,
                 debounce: float = 0.1) -> None:
        self.store = store
        self.interval = interval
        self.debounce = debounce
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
            return worker

        self._claim = await self.store.run(lambda _store: claim())

        def heard(tables: frozenset[str]) -> None:
            # The rounds' own commits (dequeuing what they pushed) are no reason to sync again.
            if "_syncline_outbox" in tables and not self.store.in_sync_round:
                with contextlib.suppress(RuntimeError):  # the loop is closed
                    loop.call_soon_threadsafe(self._wake.set)

        self._undo_heard = sync_store.on_commit(heard)
        self._task = asyncio.create_task(self._run(), name="syncline-sync")
        return self

    def wake(self) -> None:
        """Sync now rather than at the next interval."""
        self._wake.set()

    async def _run(self) -> None:
        claim = self._claim
        assert claim is not None
        timeout = 0.0
        while not self._stop.is_set():
            with contextlib.suppress(TimeoutError):
                await asyncio.wait_for(self._wake.wait(), timeout)
            if self._stop.is_set():
                break
            if self._wake.is_set() and self.debounce:
                with contextlib.suppress(TimeoutError):  # gather a burst of writes
                    await asyncio.wait_for(self._stop.wait(), self.debounce)
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
