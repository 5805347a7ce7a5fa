"""The background sync worker: syncs on an interval, soon after local writes, when a
failed push is due again, and as soon as the server's live stream says there is something to
pull (polling every ``fallback`` seconds while that stream is down). One per store: a lock
file beside a SQLite store keeps a second process from running another."""

from __future__ import annotations

import datetime as dt
import logging
import threading
from collections.abc import Callable
from typing import Any, Protocol

from syncline.core.model.clock import Clock
from syncline.core.model.errors import SynclineError
from syncline.core.model.query import F
from syncline.core.spi.backend import Backend
from syncline.core.spi.locks import FileLock
from syncline.core.spi.transport import Notifications, Transport
from syncline.core.sync.live import Listening, LiveState
from syncline.core.sync.outbox import EntryState, Outbox


class WorkerStore(Protocol):
    """What a worker needs of the store it syncs (a ``SyncingStore``)."""

    @property
    def backend(self) -> Backend: ...

    @property
    def clock(self) -> Clock: ...

    @property
    def outbox(self) -> Outbox: ...

    def on_commit(self, listener: Callable[[frozenset[str]], None]) -> Callable[[], None]: ...


class Syncer(Protocol):
    """What a worker needs of its engine (a ``SyncEngine``)."""

    @property
    def store(self) -> WorkerStore: ...

    @property
    def not_before(self) -> dt.datetime | None: ...

    @property
    def transport(self) -> Transport: ...

    @property
    def entities(self) -> list[str]: ...

    def sync(self) -> Any: ...

    def network_available(self) -> None: ...

log = logging.getLogger("syncline.worker")
_workers: set[str] = set()
_workers_lock = threading.Lock()


class SyncWorker(Listening):
    """Runs ``engine.sync()`` in a daemon thread until :meth:`stop`."""

    def __init__(self, engine: Syncer, *, interval: float = 30.0,
                 debounce: float = 0.1, live: bool = True, fallback: float = 5.0) -> None:
        self.engine = engine
        #: listen to the transport's live stream (if it has one) and pull when told
        self.live = live
        #: the live stream's state and backoff (shared with the asyncio worker)
        self.state = LiveState(fallback)
        self._told = threading.Event()
        self._source: Notifications | None = None
        self._listener: threading.Thread | None = None
        self.store = engine.store
        self.interval = interval
        self.debounce = debounce
        #: the last round's ``SyncReport``
        self.last_report: Any = None
        self.rounds = 0
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._undo: Callable[[], None] | None = None
        self._file: FileLock | None = None
        self._path = self.store.backend.file_path()
        self._key = self._path or f"{id(self.store.backend)}"

    def start(self) -> SyncWorker:
        self.claim()
        self._thread = threading.Thread(target=self._run, name="syncline-sync", daemon=True)
        self._thread.start()
        if self.live:
            self.listen()
        return self

    def listen(self, told: Callable[[], None] | None = None) -> None:
        """Listen to the transport's live stream in a thread and call ``told()`` (default:
        sync now) on each notice; ``start`` does it. (The asyncio worker reads its stream on
        the loop instead, with the same :class:`LiveState`.)"""
        self.state.listening = True
        self._listener = threading.Thread(target=self._listen, args=(told or self._notice,),
                                          name="syncline-live", daemon=True)
        self._listener.start()

    def stop_listening(self, timeout: float = 10.0) -> None:
        """Close the live stream and end its thread (``stop`` does it)."""
        self._stopping.set()
        source = self._source
        if source is not None:
            source.close()
        self.state.listening = False
        if self._listener is not None:
            self._listener.join(timeout)
            self._listener = None

    def _listen(self, told: Callable[[], None]) -> None:
        """Pull as soon as the server says so; reopen the stream when it breaks."""
        state = self.state
        while not self._stopping.is_set():
            try:
                source = self.engine.transport.notifications(self.engine.entities)
            except Exception as exc:
                source = None
                state.refused(exc)
            else:
                if source is None:
                    state.absent()  # this transport (or server) has none: poll at interval
                    return
            if source is not None:
                self._source = source
                broke: Exception | None = None
                try:
                    for _seq in source:
                        if state.heard():  # the stream (re)opened: the server is there
                            self.engine.network_available()
                        told()
                        if self._stopping.is_set():
                            break
                except Exception as exc:
                    broke = exc
                finally:
                    state.broke(broke)
                    self._source = None
                    source.close()
                told()  # a poll at the fallback pace starts now
            self._stopping.wait(state.backoff())

    def claim(self) -> None:
        """Become the store's one sync worker (in this process and, beside a SQLite file, on
        the machine) and hear its commits; :meth:`release` undoes it. ``start`` calls it; the
        asyncio worker (``syncline.aio``) claims the same way and syncs from a task."""
        with _workers_lock:
            if self._key in _workers:
                raise SynclineError(f"a sync worker already runs for {self.store.backend.url}")
            _workers.add(self._key)
        if self._path:
            file_lock = FileLock(f"{self._path}.worker-lock")
            if not file_lock.acquire(blocking=False):
                with _workers_lock:
                    _workers.discard(self._key)
                raise SynclineError(
                    f"another process runs a sync worker for {self.store.backend.url}")
            self._file = file_lock
        self._undo = self.store.on_commit(self._on_commit)

    def _on_commit(self, tables: frozenset[str]) -> None:
        # The worker's own commits (dequeuing what it pushed) are no reason to sync again.
        if "_syncline_outbox" in tables and threading.current_thread() is not self._thread:
            self._wake.set()

    def wake(self) -> None:
        """Sync now rather than at the next interval."""
        self._wake.set()

    def next_timeout(self) -> float:
        """Until the next thing to do: the end of the backoff while backing off, else the
        next retry of a mutation that failed alone, else the interval."""
        now = self.store.clock.now()
        not_before = self.engine.not_before
        if not_before is not None:
            return max(0.0, min(self.interval, (not_before - now).total_seconds()))
        entry = self.store.outbox.entries.first(
            (F.state == EntryState.PENDING) & (F.next_attempt_at > now),
            order_by="next_attempt_at")
        interval = self.state.poll_every(self.interval)
        if entry is None or entry.next_attempt_at is None:
            return interval
        due = (entry.next_attempt_at - now).total_seconds()
        return max(0.0, min(interval, due))

    def _run(self) -> None:
        timeout = 0.0
        while not self._stopping.is_set():
            self._wake.wait(timeout)
            if self._stopping.is_set():
                break
            if self._wake.is_set() and self.debounce and not self._told.is_set():
                self._stopping.wait(self.debounce)  # gather a burst of writes into one push
            self._told.clear()  # before the pull: a notice arriving during it pulls again
            self._wake.clear()
            try:
                self.last_report = self.engine.sync()
                self.rounds += 1
                timeout = self.next_timeout()
            except Exception:
                log.exception("background sync failed")
                timeout = min(self.interval, 5.0)

    def stop(self, timeout: float = 10.0) -> None:
        """Finish the current round and stop the thread."""
        self._wake.set()
        self.stop_listening(timeout)
        if self._thread is not None:
            self._thread.join(timeout)
            self._thread = None
        self.release()

    def release(self) -> None:
        """Stop hearing commits and let another worker claim the store."""
        if self._undo is not None:
            self._undo()
            self._undo = None
        if self._file is not None:
            self._file.release()
            self._file = None
        with _workers_lock:
            _workers.discard(self._key)

    @property
    def running(self) -> bool:
        return self._thread is not None and self._thread.is_alive()
