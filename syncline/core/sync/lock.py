"""One syncer per store: :class:`sync_lock`, held by ``sync()`` (threads of this process and
other processes wait or give up)."""

from __future__ import annotations

import threading
import weakref
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING

from syncline.core.model.cooperate import in_loop_greenlet, pause
from syncline.core.model.errors import SynclineError
from syncline.core.spi.locks import FileLock

if TYPE_CHECKING:
    from syncline.core.storage.local import LocalStore


class _ProcessLock:
    """A thread lock that a weak dictionary can hold (entries go with their stores)."""

    def __init__(self) -> None:
        self.lock = threading.Lock()


_process_locks: weakref.WeakValueDictionary[str, _ProcessLock] = weakref.WeakValueDictionary()
_process_locks_guard = threading.Lock()


class sync_lock:
    """One syncer per store: a lock of this process, plus one across processes: the backend's
    advisory lock (PostgreSQL), else a file lock beside a file store (SQLite)."""

    def __init__(self, store: LocalStore, *, blocking: bool = True) -> None:
        self.store = store
        self.blocking = blocking
        self._file: FileLock | None = None
        self._advisory: AbstractContextManager[bool] | None = None
        backend = store.backend
        path = backend.file_path()
        self.path = f"{path}.sync-lock" if path else None
        url = backend.url
        key = path or (f"{url}#{id(backend)}" if url.endswith("://") else url)
        with _process_locks_guard:
            lock = _process_locks.get(key)
            if lock is None:
                lock = _process_locks[key] = _ProcessLock()
        # the backend keeps its lock alive; when the store is gone, the entry goes too
        backend.__dict__["_syncline_sync_lock"] = lock
        self._lock = lock.lock

    def __enter__(self) -> sync_lock:
        if not self._acquire():
            raise SynclineError(f"another thread is syncing {self.store.backend.url}")
        try:
            self._cross_process()
        except BaseException:
            self._lock.release()
            raise
        return self

    def _acquire(self) -> bool:
        if not (self.blocking and in_loop_greenlet()):
            return self._lock.acquire(blocking=self.blocking)
        # On the event loop (syncline.aio, PostgreSQL): the holder may be another store's
        # round on this same loop, which can only finish if the loop is not blocked here.
        while not self._lock.acquire(blocking=False):
            pause(0.01)
        return True

    def _cross_process(self) -> None:
        advisory = self.store.backend.advisory_lock("sync", blocking=self.blocking)
        if advisory is not None:
            if not advisory.__enter__():
                advisory.__exit__(None, None, None)
                raise SynclineError(f"another process is syncing {self.store.backend.url}")
            self._advisory = advisory
            return
        if self.path is None:
            return
        file_lock = FileLock(self.path)
        if not file_lock.acquire(blocking=self.blocking):
            raise SynclineError(f"another process is syncing {self.store.backend.url}")
        self._file = file_lock

    def __exit__(self, *exc: object) -> None:
        try:
            if self._advisory is not None:
                self._advisory.__exit__(None, None, None)
                self._advisory = None
            if self._file is not None:
                self._file.release()
                self._file = None
        finally:
            self._lock.release()
