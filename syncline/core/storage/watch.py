"""Change notification and reactive queries.

``repository.watch(...)`` gives a :class:`Watch`: subscribe a callback (or ``async for`` over
it) and receive the query's current result at once, then a new result after every committed
transaction that touched the tables it reads, and only when the result changed. Rollbacks
notify nothing; a transaction notifies once, however many rows it wrote.

Committing threads only hand the set of written tables to the store's :class:`WatchHub`; its
own thread re-runs the queries and calls subscribers, so no callback runs while a write lock is
held and a slow or failing subscriber cannot slow down or break a writer. Changes made by other
processes or connections arrive through the backend's ``watch_external`` (SQLite's
``PRAGMA data_version``, PostgreSQL's LISTEN/NOTIFY) and are handled the same way.
"""

from __future__ import annotations

import logging
import queue
import threading
from collections.abc import AsyncIterator, Callable
from typing import Any, Generic, Protocol, TypeVar

from syncline.core.spi.backend import Backend

log = logging.getLogger("syncline.watch")
R = TypeVar("R")
_UNSET: Any = object()
ALL_TABLES = None  # "something changed, which tables is unknown"


class Subscription(Generic[R]):
    """One subscriber of a :class:`Watch`; ``unsubscribe()`` (or leaving ``with``) ends it."""

    def __init__(self, watch: Watch[R], callback: Callable[[R], Any]) -> None:
        self.watch = watch
        self.callback = callback
        self.active = True
        self.last: Any = _UNSET
        self._lock = threading.Lock()  # the first result and the hub's never cross

    def unsubscribe(self) -> None:
        if self.active:
            self.active = False
            self.watch.hub.remove(self)

    def __enter__(self) -> Subscription[R]:
        return self

    def __exit__(self, *exc: object) -> None:
        self.unsubscribe()

    def _deliver(self, result: R, first: bool = False) -> None:
        with self._lock:
            if not self.active or (self.last is not _UNSET and (first or result == self.last)):
                return  # (a first result the hub overtook is older than what it delivered)
            self.last = result
            try:
                self.callback(result)
            except Exception:
                log.exception("watch subscriber %r failed", self.callback)


class Watch(Generic[R]):
    """A query to follow: ``subscribe(callback)``, ``async for``, or ``get()`` once."""

    def __init__(self, hub: WatchHub, tables: frozenset[str], run: Callable[[], R]) -> None:
        self.hub = hub
        self.tables = tables
        self.run = run

    def get(self) -> R:
        """The current result."""
        return self.run()

    def subscribe(self, callback: Callable[[R], Any]) -> Subscription[R]:
        """Call ``callback(result)`` now and after every change of the result."""
        sub = Subscription(self, callback)
        # Registered before the first run: a commit from here on reaches it, none slips
        # between the first result and the first notification.
        self.hub.add(sub)
        try:
            sub._deliver(self.run(), first=True)
        except BaseException:
            sub.unsubscribe()
            raise
        return sub

    async def __aiter__(self) -> AsyncIterator[R]:
        import asyncio  # here: a store that nobody iterates asynchronously never imports it

        loop = asyncio.get_running_loop()
        results: asyncio.Queue[R] = asyncio.Queue()
        sub = self.subscribe(lambda r: loop.call_soon_threadsafe(results.put_nowait, r))
        try:
            while True:
                yield await results.get()
        finally:
            sub.unsubscribe()


class Watched(Protocol):
    """What a :class:`WatchHub` needs of its store (a ``LocalStore``)."""

    @property
    def backend(self) -> Backend: ...

    @property
    def closed(self) -> bool: ...


class WatchHub:
    """The store's subscribers and the thread that re-runs their queries after commits."""

    def __init__(self, store: Watched) -> None:
        self.store = store
        self._subs: list[Subscription[Any]] = []
        self._watched: dict[str, int] = {}  # table -> number of subscriptions reading it
        self._lock = threading.Lock()
        self._queue: queue.SimpleQueue[frozenset[str] | None] = queue.SimpleQueue()
        self._thread: threading.Thread | None = None
        self._stop_external: Callable[[], None] | None = None
        self._closing = False

    def watch(self, tables: frozenset[str], run: Callable[[], R]) -> Watch[R]:
        return Watch(self, tables, run)

    def add(self, sub: Subscription[Any]) -> None:
        with self._lock:
            self._subs.append(sub)
            for table in sub.watch.tables:
                self._watched[table] = self._watched.get(table, 0) + 1
            if self._thread is None and not self._closing:
                self._thread = threading.Thread(target=self._loop, name="syncline-watch",
                                                daemon=True)
                self._thread.start()
                self._stop_external = self.store.backend.watch_external(self.changed)

    def remove(self, sub: Subscription[Any]) -> None:
        with self._lock:
            if sub in self._subs:
                self._subs.remove(sub)
                for table in sub.watch.tables:
                    self._watched[table] -= 1
                    if not self._watched[table]:
                        del self._watched[table]

    def changed(self, tables: frozenset[str] | None) -> None:
        """Tables were written and committed (None: unknown which). Called by committers."""
        if self._thread is None:
            return
        if tables is not None and not any(t in self._watched for t in tables):
            return  # nobody reads these tables: not even a wake-up
        self._queue.put(tables)

    def _loop(self) -> None:
        while True:
            item = self._queue.get()
            if self._closing:
                return
            tables: set[str] | None = None if item is None else set(item)
            while True:  # a burst of commits is one round of re-queries
                try:
                    more = self._queue.get_nowait()
                except queue.Empty:
                    break
                if self._closing:
                    return
                tables = None if more is None or tables is None else tables | set(more)
            with self._lock:
                subs = list(self._subs)
            self._refresh(subs, tables)

    def _refresh(self, subs: list[Subscription[Any]], tables: set[str] | None) -> None:
        results: dict[int, Any] = {}
        for sub in subs:
            watch = sub.watch
            if tables is not None and not (watch.tables & tables):
                continue
            key = id(watch)
            if key not in results:
                try:
                    results[key] = watch.run()
                except Exception:
                    if self._closing or self.store.closed:
                        return
                    log.exception("re-running a watched query failed")
                    continue
            sub._deliver(results[key])

    def close(self) -> None:
        self._closing = True
        if self._stop_external is not None:
            self._stop_external()
            self._stop_external = None
        thread = self._thread
        if thread is not None:
            self._queue.put(None)
            thread.join(5)
            self._thread = None
        with self._lock:
            for sub in self._subs:
                sub.active = False
            self._subs.clear()
