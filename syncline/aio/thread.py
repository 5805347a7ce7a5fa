"""The store's thread: every operation of an asyncio store runs on one worker thread (one
writer), awaited from the event loop, which never blocks.

``async with store.transaction()`` pins the thread: it enters the synchronous store's
transaction there and serves the body's awaited calls on it, in order, until the body ends;
then it commits, or rolls the whole transaction back when the body raised or was cancelled.
Other tasks' operations wait behind it, as they would wait for the one writer.
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import contextvars
import logging
import queue
import threading
from collections.abc import Callable, Coroutine
from typing import Any, Protocol, TypeVar

from syncline.core.model.errors import TransactionError
from syncline.core.storage.local import LocalStore

log = logging.getLogger("syncline.aio")
T = TypeVar("T")

#: the transactions this task's context is inside, by store thread
_pinned: contextvars.ContextVar[dict[int, Pinned]] = contextvars.ContextVar(
    "syncline_aio_pinned", default={})  # noqa: B039 - never mutated, replaced


class _RolledBack(Exception):
    """Ends a pinned transaction by rolling it back."""


_COMMIT = "commit"
_ROLLBACK = "rollback"


def _settle(loop: asyncio.AbstractEventLoop, fut: asyncio.Future[Any], result: Any = None,
            exc: BaseException | None = None) -> None:
    """Hand a result from the store's thread to a future of the loop."""

    def resolve() -> None:
        if fut.done():
            return  # cancelled meanwhile: nobody waits for the answer
        if exc is not None:
            fut.set_exception(exc)
        else:
            fut.set_result(result)

    with contextlib.suppress(RuntimeError):  # the loop is closed: nobody waits either
        loop.call_soon_threadsafe(resolve)


class _Job:
    def __init__(self, fn: Callable[[], Any], fut: asyncio.Future[Any],
                 loop: asyncio.AbstractEventLoop) -> None:
        self.fn, self.fut, self.loop = fn, fut, loop

    def run(self) -> None:
        if self.fut.cancelled():
            return  # cancelled before it started: it never runs
        try:
            result = self.fn()
        except Exception as exc:
            _settle(self.loop, self.fut, exc=exc)
        else:
            _settle(self.loop, self.fut, result)


class _Nested:
    """A nested transaction (a savepoint) begun inside a pinned one."""

    def __init__(self, store: LocalStore, started: asyncio.Future[None],
                 done: asyncio.Future[None], loop: asyncio.AbstractEventLoop) -> None:
        self.store, self.started, self.done, self.loop = store, started, done, loop

    def run(self, jobs: queue.SimpleQueue[Any]) -> None:
        try:
            _hold(self.store, jobs, lambda: _settle(self.loop, self.started), self.loop)
        except Exception as exc:
            _settle(self.loop, self.done, exc=exc)
        else:
            _settle(self.loop, self.done)


def _hold(store: LocalStore, jobs: queue.SimpleQueue[Any], started: Callable[[], None],
          loop: asyncio.AbstractEventLoop) -> None:
    """On the store's thread: one transaction serving the jobs of its body until told to
    commit (return) or roll back; rolled back too if its loop closes without a word."""
    try:
        with store.transaction():
            started()
            while True:
                try:
                    item = jobs.get(timeout=1.0)
                except queue.Empty:
                    if loop.is_closed():
                        raise _RolledBack from None
                    continue
                if item == _COMMIT:
                    break
                if item == _ROLLBACK:
                    raise _RolledBack
                if isinstance(item, _Nested):
                    item.run(jobs)
                else:
                    item.run()
    except _RolledBack:
        pass


class Pinned:
    """A transaction holding the store's thread; its body's calls are served there."""

    def __init__(self, jobs: queue.SimpleQueue[Any]) -> None:
        self.jobs = jobs
        self.open = True
        self.done: asyncio.Future[None] | None = None
        self.token: contextvars.Token[dict[int, Pinned]] | None = None


async def finish(fut: asyncio.Future[T]) -> T:
    """Await ``fut`` to its end even when cancelled meanwhile (then raise CancelledError):
    what runs on the store's thread is never abandoned half-way."""
    cancelled = False
    while not fut.done():
        try:
            await asyncio.shield(fut)
        except asyncio.CancelledError:
            if not fut.done():
                cancelled = True
    if cancelled:
        if not fut.cancelled():
            fut.exception()  # retrieved: the cancellation is what the caller hears
        raise asyncio.CancelledError
    return fut.result()


async def complete(coro: Coroutine[Any, Any, T]) -> T:
    """Run ``coro`` in a task of its own to its end (:func:`finish`). A coroutine that cannot
    be scheduled (no running loop: a task closed after its loop was gone) is closed instead of
    being left to warn that it was never awaited."""
    try:
        fut = asyncio.ensure_future(coro)
    except BaseException:
        coro.close()
        raise
    return await finish(fut)


class Runner(Protocol):
    """Where an asyncio store's calls run: :class:`StoreThread`, or the event loop itself
    for backends whose I/O awaits there (:class:`syncline.aio.loop.LoopRunner`)."""

    stopped: bool

    def inside(self) -> bool:
        """True when called by one of the store's own calls (a hook the store runs)."""
        ...

    async def call(self, fn: Callable[[], T]) -> T: ...

    async def begin(self, store: LocalStore) -> Any: ...

    async def end(self, pinned: Any, commit: bool) -> None: ...

    async def close_store(self, store: LocalStore) -> None: ...

    def stop(self) -> None: ...


class StoreThread:
    """One bounded worker thread for one store, and the transactions pinning it."""

    def __init__(self) -> None:
        self._executor = concurrent.futures.ThreadPoolExecutor(
            max_workers=1, thread_name_prefix="syncline-aio")
        # Started now, by whoever makes it: starting a thread waits for the OS to schedule it,
        # which the loop must not do (syncline.aio.open makes it in the loop's executor).
        #: the thread's id (what runs there must not wait for the thread)
        self.ident = self._executor.submit(threading.get_ident).result()
        self._open: set[Pinned] = set()
        self.stopped = False

    def inside(self) -> bool:
        return threading.get_ident() == self.ident

    def _current(self) -> Pinned | None:
        pinned = _pinned.get().get(id(self))
        return pinned if pinned is not None and pinned.open else None

    async def call(self, fn: Callable[[], T]) -> T:
        """Run ``fn()`` on the store's thread (inside the task's transaction, if any)."""
        loop = asyncio.get_running_loop()
        pinned = self._current()
        if pinned is not None:
            fut: asyncio.Future[T] = loop.create_future()
            pinned.jobs.put(_Job(fn, fut, loop))
            return await fut
        if self.stopped:
            raise TransactionError("the asyncio store is closed")
        return await loop.run_in_executor(self._executor, fn)

    async def begin(self, store: LocalStore) -> Pinned:
        """Begin a transaction (a savepoint inside another) and pin the thread to it."""
        if self.stopped:
            raise TransactionError("the asyncio store is closed")
        loop = asyncio.get_running_loop()
        parent = self._current()
        pinned = Pinned(parent.jobs if parent is not None else queue.SimpleQueue())
        started: asyncio.Future[None] = loop.create_future()
        done: asyncio.Future[None]
        if parent is None:
            done = loop.run_in_executor(self._executor, _hold, store, pinned.jobs,
                                        lambda: _settle(loop, started), loop)
        else:
            done = loop.create_future()
            parent.jobs.put(_Nested(store, started, done, loop))
        pinned.done = done
        try:
            await asyncio.wait({started, done}, return_when=asyncio.FIRST_COMPLETED)
        except asyncio.CancelledError:
            pinned.jobs.put(_ROLLBACK)  # the transaction ends as soon as it begins
            done.add_done_callback(_quiet)
            raise
        if not started.done():
            await done  # it could not begin: raises why
        self._open.add(pinned)
        pinned.token = _pinned.set({**_pinned.get(), id(self): pinned})
        return pinned

    async def end(self, pinned: Pinned, commit: bool) -> None:
        """Commit (or roll back) and unpin; waits for the thread even when cancelled."""
        assert pinned.done is not None and pinned.token is not None
        pinned.open = False
        self._open.discard(pinned)
        with contextlib.suppress(ValueError):  # left in another context than it began in
            _pinned.reset(pinned.token)
        pinned.jobs.put(_COMMIT if commit else _ROLLBACK)
        await finish(pinned.done)

    async def close_store(self, store: LocalStore) -> None:
        """Close the store on its thread (even when cancelled meanwhile)."""
        await complete(self.call(store.close))

    def stop(self) -> None:
        """Roll back what is still pinned (its task is gone) and let the thread end."""
        self.stopped = True
        for pinned in list(self._open):
            pinned.open = False
            pinned.jobs.put(_ROLLBACK)
        self._executor.shutdown(wait=False)


def _quiet(fut: asyncio.Future[Any]) -> None:
    if not fut.cancelled():
        fut.exception()
