"""The store's calls on the event loop itself, for backends whose I/O awaits there
(``event_loop_io``: PostgreSQL through psycopg's async connections).

Each call is the synchronous store's, run in a greenlet on the loop's thread
(``sqlalchemy.util.greenlet_spawn``): where the backend waits for the database, the greenlet
hands the coroutine to the loop, which serves other tasks meanwhile. No thread is involved.

One call (or one transaction) of the store runs at a time, as on the store's thread: the
synchronous store keeps its transaction state per thread, and here every call shares the
loop's thread. ``async with store.transaction()`` holds the store for its task (and the tasks
it starts inside the block), whose calls run inside the transaction one at a time.
"""

from __future__ import annotations

import asyncio
import contextlib
import contextvars
import threading
from collections.abc import Callable
from contextlib import AbstractContextManager
from typing import Any, TypeVar

from syncline.aio.thread import complete, finish
from syncline.core.model.errors import TransactionError
from syncline.core.spi.helpers import in_loop_greenlet
from syncline.core.storage.local import LocalStore

T = TypeVar("T")

#: the transactions this task's context is inside, by runner
_held: contextvars.ContextVar[dict[int, Held]] = contextvars.ContextVar(
    "syncline_aio_held", default={})  # noqa: B039 - never mutated, replaced


class _RolledBack(Exception):
    """Ends a held transaction by rolling it back."""


async def _spawn(fn: Callable[..., T], *args: Any) -> T:
    """``fn(*args)`` in a greenlet on the loop, in a task of its own: once started it runs to
    its end even when the caller is cancelled (then the caller hears CancelledError)."""
    from sqlalchemy.util import greenlet_spawn

    return await complete(greenlet_spawn(fn, *args))


class Held:
    """A transaction holding the store; its body's calls run inside it, one at a time."""

    def __init__(self, transaction: AbstractContextManager[None], lock: asyncio.Lock,
                 root: bool) -> None:
        self.transaction = transaction
        self.lock = lock
        self.root = root
        self.open = True
        self.token: contextvars.Token[dict[int, Held]] | None = None


class LoopRunner:
    """Runs one store's calls in greenlets on the running loop (see the module)."""

    def __init__(self) -> None:
        #: the loop's thread, where the calls run
        self.ident = threading.get_ident()
        self._loop = asyncio.get_running_loop()  # its connections belong to it
        self._lock = asyncio.Lock()  # one call or transaction of the store at a time
        self.stopped = False

    def inside(self) -> bool:
        """True when called by one of the store's own calls (a hook the store runs)."""
        return threading.get_ident() == self.ident and in_loop_greenlet()

    def _check(self) -> None:
        if self.stopped:
            raise TransactionError("the asyncio store is closed")
        if asyncio.get_running_loop() is not self._loop:
            raise TransactionError(
                "this asyncio store belongs to the event loop it was opened on (its "
                "PostgreSQL connections do); open a store on each loop")

    def _current(self) -> Held | None:
        held = _held.get().get(id(self))
        return held if held is not None and held.open else None

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` in a greenlet on the loop (inside the task's transaction, if any)."""
        held = self._current()
        if held is None:
            self._check()
        async with held.lock if held is not None else self._lock:
            return await _spawn(fn)  # cancelled before this: it never ran

    async def begin(self, store: LocalStore) -> Held:
        """Begin a transaction (a savepoint inside another) and hold the store for it."""
        self._check()
        parent = self._current()
        outer = parent.lock if parent is not None else self._lock
        held = Held(store.transaction(), parent.lock if parent is not None else asyncio.Lock(),
                    root=parent is None)
        await outer.acquire()  # cancelled here: nothing began
        entering = asyncio.ensure_future(_spawn(held.transaction.__enter__))
        try:
            await finish(entering)
        except BaseException:
            if entering.done() and not entering.cancelled() and entering.exception() is None:
                # It began, then the caller was cancelled: it ends as soon as it began.
                await complete(self._exit(held, commit=False))
            outer.release()
            raise
        if parent is not None:
            outer.release()  # the parent's lock: held per call, not per savepoint
        held.token = _held.set({**_held.get(), id(self): held})
        return held

    async def _exit(self, held: Held, commit: bool) -> None:
        args: tuple[Any, ...] = (None, None, None) if commit else (
            _RolledBack, _RolledBack(), None)
        with contextlib.suppress(_RolledBack):
            await _spawn(held.transaction.__exit__, *args)

    async def _end(self, held: Held, commit: bool) -> None:
        try:
            async with held.lock:  # after the body's calls still running (its tasks')
                await self._exit(held, commit)
        finally:
            if held.root:
                self._lock.release()

    async def end(self, held: Held, commit: bool) -> None:
        """Commit (or roll back) and let the store go; finishes even when cancelled."""
        held.open = False
        if held.token is not None:
            with contextlib.suppress(ValueError):  # left in another context than it began in
                _held.reset(held.token)
        await complete(self._end(held, commit))

    async def close_store(self, store: LocalStore) -> None:
        """Close the async connections here, then the rest of the store (its watch threads,
        its synchronous pool) in a thread: joining threads would hold the loop."""
        async def closing() -> None:
            async with self._lock:
                await _spawn(store.backend.close_loop_io)
                await asyncio.to_thread(store.close)

        await complete(closing())

    def stop(self) -> None:
        self.stopped = True
