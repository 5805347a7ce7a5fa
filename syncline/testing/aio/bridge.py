"""Runs the shared suites' synchronous cases through the asyncio API.

:class:`LoopThread` is an event loop in a thread of its own, in asyncio's debug mode with
slow-callback detection at 10 ms; every warning the ``asyncio`` logger gives while it runs
fails the test. :class:`BlockingStore` looks like a :class:`syncline.Store` to a test, but
each call goes through the :class:`syncline.aio.AsyncStore` on that loop: repository calls
are awaited there, ``with store.transaction()`` is an ``async with store.transaction()`` held
open by a task that awaits the body's calls (so they run inside it, as an asyncio
application's would).
"""

from __future__ import annotations

import asyncio
import concurrent.futures
import contextlib
import gc
import logging
import os
import threading
import time
from collections.abc import Awaitable, Callable, Iterator
from typing import Any, TypeVar

from syncline.aio.repository import AsyncRepository
from syncline.aio.store import AsyncStore
from syncline.core.model.errors import SynclineError
from syncline.core.spi.helpers import in_loop_greenlet
from syncline.core.storage.repository import Repository

T = TypeVar("T")
SLOW_CALLBACK = 0.01  # seconds: the bound on one step of the loop


#: set (to anything) to fail on every slow-callback warning, even one the loop spent waiting
#: for a CPU rather than working (see :class:`MeasuredLoop`)
STRICT = bool(os.environ.get("SYNCLINE_AIO_STRICT"))


class MeasuredLoop(asyncio.SelectorEventLoop):
    """A loop that knows how much CPU each of its iterations used.

    asyncio's slow-callback detection measures wall time: on a loaded machine the OS leaves
    the loop's thread waiting for a core for more than 10 ms now and then, and the warning
    comes though the loop did nothing wrong; and a full garbage collection (100 ms and more
    in a test process) runs in whichever thread allocates. A warning from an iteration whose
    thread used less CPU than the bound, garbage collection not counted, is counted as
    *descheduled* rather than failing (unless ``SYNCLINE_AIO_STRICT`` is set). The CPU is the
    slow callback's own, measured from the moment asyncio starts it; blocking waits
    on the store are caught deterministically instead (:func:`guard_backend`).
    """

    def __init__(self) -> None:
        super().__init__()
        self.warnings: list[str] = []
        self.descheduled: list[str] = []
        self._heard: list[tuple[logging.LogRecord, float]] = []
        self._handle_cpu = self._handle_gc = 0.0
        self._gc_cpu = 0.0  # CPU the loop's thread spent collecting garbage
        self._gc_started: float | None = None
        gc.callbacks.append(self._collecting)

    def _collecting(self, phase: str, info: dict[str, Any]) -> None:
        if threading.get_ident() != getattr(self, "_thread_id", None):
            return
        if phase == "start":
            self._gc_started = time.thread_time()
        elif self._gc_started is not None:
            self._gc_cpu += time.thread_time() - self._gc_started
            self._gc_started = None

    def close(self) -> None:
        with contextlib.suppress(ValueError):
            gc.callbacks.remove(self._collecting)
        super().close()

    # asyncio sets _current_handle just before it runs each callback and warns just after
    # one ran too long: the CPU the thread used since is that callback's own.
    @property
    def _current_handle(self) -> Any:
        return self.__handle

    @_current_handle.setter
    def _current_handle(self, handle: Any) -> None:
        self.__handle = handle
        if handle is not None:
            self._handle_cpu, self._handle_gc = time.thread_time(), self._gc_cpu

    def handle_cpu(self) -> float:
        """The CPU the running (or just ended) callback used, garbage collection not counted."""
        return time.thread_time() - self._handle_cpu - (self._gc_cpu - self._handle_gc)

    def _run_once(self) -> None:
        super()._run_once()  # type: ignore[misc]
        for record, used in self._heard:
            message = record.getMessage()
            slow = message.startswith("Executing ") and " took " in message
            if slow and used < SLOW_CALLBACK and not STRICT:
                self.descheduled.append(f"{message} (CPU {used * 1000:.1f} ms)")
            elif slow:
                self.warnings.append(f"{message} (CPU {used * 1000:.1f} ms)")
            else:
                self.warnings.append(message)
        self._heard.clear()


class _Capture(logging.Handler):
    def __init__(self, loop: MeasuredLoop) -> None:
        super().__init__(logging.WARNING)
        self.loop = loop
        self.elsewhere: list[str] = []  # warnings from outside the loop's iterations

    def emit(self, record: logging.LogRecord) -> None:
        if threading.get_ident() == getattr(self.loop, "_thread_id", None):
            self.loop._heard.append((record, self.loop.handle_cpu()))
        else:
            self.elsewhere.append(record.getMessage())


def guard_backend(backend: Any, loop: asyncio.AbstractEventLoop) -> None:
    """Make every public method of ``backend`` fail when called on ``loop``'s thread: storage
    I/O there would block the loop, however fast it happens to be in a test. Backends that
    await their I/O on the loop (``event_loop_io``) may be called there inside a greenlet of
    ``syncline.aio``, and nowhere else on it."""
    loop_io = "event_loop_io" in backend.capabilities
    for name in dir(type(backend)):
        if name.startswith("_") or not callable(getattr(type(backend), name, None)):
            continue
        method = getattr(backend, name)

        def guarded(*args: Any, _method: Any = method, _name: str = name,
                    **kwargs: Any) -> Any:
            if threading.get_ident() == getattr(loop, "_thread_id", None) and not (
                    loop_io and in_loop_greenlet()):
                raise AssertionError(f"backend.{_name}() ran on the event loop's thread")
            return _method(*args, **kwargs)

        setattr(backend, name, guarded)


class _End(Exception):
    """Ends a held transaction by rolling it back (the test's body raised)."""


class LoopThread:
    """An asyncio loop in a daemon thread, debug mode on, slow callbacks over 10 ms caught."""

    def __init__(self) -> None:
        self.loop = MeasuredLoop()
        self.loop.set_debug(True)
        self.loop.slow_callback_duration = SLOW_CALLBACK
        self._thread = threading.Thread(target=self.loop.run_forever, name="aio-suite-loop",
                                        daemon=True)
        self._capture = _Capture(self.loop)
        self._logger = logging.getLogger("asyncio")
        self._logger.addHandler(self._capture)
        self._thread.start()
        self._held = threading.local()
        # The loop's executor with its threads started here: starting one on the loop waits
        # for the OS, a one-time cost for an application but a slow callback in every test.
        executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="aio-suite")
        ready = threading.Barrier(5)
        for _ in range(4):
            executor.submit(ready.wait)
        ready.wait()
        self.loop.set_default_executor(executor)

    def _stack(self) -> list[asyncio.Queue[Any]]:
        stack: list[asyncio.Queue[Any]] | None = getattr(self._held, "stack", None)
        if stack is None:
            stack = self._held.stack = []
        return stack

    def call(self, make: Callable[[], Awaitable[T]]) -> T:
        """``await make()`` on the loop (inside the calling thread's held transaction)."""
        stack = self._stack()
        if stack:
            done: concurrent.futures.Future[T] = concurrent.futures.Future()
            self.loop.call_soon_threadsafe(stack[-1].put_nowait, ("call", make, done))
            return done.result()

        async def run() -> T:
            return await make()

        return asyncio.run_coroutine_threadsafe(run(), self.loop).result()

    async def _hold(self, store: AsyncStore, inbox: asyncio.Queue[Any],
                    entered: concurrent.futures.Future[None]) -> None:
        async with store.transaction():
            entered.set_result(None)
            while True:
                kind, *args = await inbox.get()
                if kind == "end":
                    if args[0]:
                        raise _End
                    return
                if kind == "nest":  # awaited here: the task's transaction is its parent
                    nested_inbox, nested_entered, nested_done = args
                    try:
                        await self._hold(store, nested_inbox, nested_entered)
                    except BaseException as exc:
                        nested_done.set_exception(exc)
                    else:
                        nested_done.set_result(None)
                    continue
                make, done = args
                try:
                    done.set_result(await make())
                except Exception as exc:
                    done.set_exception(exc)

    @contextlib.contextmanager
    def transaction(self, store: AsyncStore) -> Iterator[None]:
        """A transaction held open on the loop while the calling thread runs the body."""
        stack = self._stack()
        inbox: asyncio.Queue[Any] = asyncio.Queue()
        entered: concurrent.futures.Future[None] = concurrent.futures.Future()
        done: concurrent.futures.Future[None]
        if stack:
            done = concurrent.futures.Future()
            self.loop.call_soon_threadsafe(stack[-1].put_nowait,
                                           ("nest", inbox, entered, done))
        else:
            done = asyncio.run_coroutine_threadsafe(self._hold(store, inbox, entered),
                                                    self.loop)
        concurrent.futures.wait([entered, done], return_when="FIRST_COMPLETED")
        if not entered.done():
            done.result()  # raises why it could not begin
        stack.append(inbox)
        try:
            yield
        except BaseException:
            stack.pop()
            self.loop.call_soon_threadsafe(inbox.put_nowait, ("end", True))
            with contextlib.suppress(_End):
                done.result()
            raise
        stack.pop()
        self.loop.call_soon_threadsafe(inbox.put_nowait, ("end", False))
        done.result()

    def close(self) -> tuple[list[str], list[str]]:
        """Stop the loop; the ``asyncio`` logger's warnings while it ran, and the slow
        callbacks that were the OS's doing (see :class:`MeasuredLoop`)."""
        self.loop.call_soon_threadsafe(self.loop.stop)
        self._thread.join(10)
        self._logger.removeHandler(self._capture)
        self.loop.close()
        return [*self.loop.warnings, *self._capture.elsewhere], self.loop.descheduled

    def opener(self, url: str, **kwargs: Any) -> BlockingStore:
        """``syncline.aio.open`` on the loop, as :func:`opened_stores`' opener."""
        import syncline.aio

        async def opening() -> AsyncStore:
            return await syncline.aio.open(url, **kwargs)

        aio = self.call(opening)
        guard_backend(aio.sync_store.backend, self.loop)
        return BlockingStore(aio, self)


class OnThread:
    """A synchronous object of the store (its outbox, its backend) whose method calls run on
    the store's thread through :meth:`AsyncStore.run`, inside the held transaction."""

    def __init__(self, obj: Any, store: BlockingStore) -> None:
        self._obj = obj
        self._store = store

    def __getattr__(self, name: str) -> Any:
        value = getattr(self._obj, name)
        if name.startswith("_"):
            return value  # private: as it is (tests patch the engine's)
        if isinstance(value, Repository):  # the outbox's tables
            return OnThread(value, self._store)
        if not callable(value):
            return value
        aio = self._store.aio

        def call(*args: Any, **kwargs: Any) -> Any:
            if aio._thread.inside():  # patched in, called by the store
                return value(*args, **kwargs)
            return self._store.loop.call(lambda: aio.run(lambda _s: value(*args, **kwargs)))

        return call

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("_obj", "_store"):
            object.__setattr__(self, name, value)
        else:
            setattr(self._obj, name, value)

    def __delattr__(self, name: str) -> None:
        delattr(self._obj, name)


class BlockingRepository:
    """A repository for a synchronous test, each call awaited through ``syncline.aio``."""

    def __init__(self, repo: AsyncRepository[Any], loop: LoopThread) -> None:
        self._repo = repo
        self._loop = loop

    def __getattr__(self, name: str) -> Any:
        method = getattr(self._repo, name, None)
        if method is None or not asyncio.iscoroutinefunction(method):
            return getattr(self._repo.sync_repository, name)  # .table, .entity, .query...

        def call(*args: Any, **kwargs: Any) -> Any:
            if self._repo._thread.inside():
                # made by the store's own call (a plugin hook during sync): awaiting the
                # store from there would wait for itself
                return getattr(self._repo.sync_repository, name)(*args, **kwargs)
            return self._loop.call(lambda: method(*args, **kwargs))

        return call


class BlockingStore:
    """A :class:`syncline.Store` look-alike driving an :class:`AsyncStore` (see the module)."""

    def __init__(self, aio: AsyncStore, loop: LoopThread) -> None:
        self.aio = aio
        self.loop = loop
        self._repos: dict[type, BlockingRepository] = {}

    def repository(self, cls: type) -> BlockingRepository:
        if cls not in self._repos:
            self._repos[cls] = BlockingRepository(self.aio.repository(cls), self.loop)
        return self._repos[cls]

    def transaction(self) -> contextlib.AbstractContextManager[None]:
        return self.loop.transaction(self.aio)

    def sync(self) -> Any:
        return self.loop.call(self.aio.sync)

    def enqueue_command(self, *args: Any, **kwargs: Any) -> str:
        return self.loop.call(lambda: self.aio.enqueue_command(*args, **kwargs))

    def network_available(self) -> None:
        self.loop.call(self.aio.network_available)

    def clear_all(self) -> None:
        self.loop.call(self.aio.clear_all)

    def quarantined(self) -> Any:
        return self.loop.call(self.aio.quarantined)

    def close(self) -> None:
        self.loop.call(self.aio.close)

    @property
    def outbox(self) -> OnThread:
        return OnThread(self.aio.sync_store.outbox, self)

    @property
    def backend(self) -> OnThread:
        return OnThread(self.aio.sync_store.backend, self)

    @property
    def sync_engine(self) -> OnThread:
        return OnThread(self.loop.call(lambda: self.aio.run(lambda s: s.sync_engine)), self)

    def __getattr__(self, name: str) -> Any:
        if name in ("run_transaction", "atomic"):
            raise SynclineError(f"{name} is not part of the asyncio API")
        return getattr(self.aio.sync_store, name)  # clock, spec, on_commit, closed...

    def __setattr__(self, name: str, value: Any) -> None:
        if name in ("aio", "loop", "_repos"):
            object.__setattr__(self, name, value)
        else:  # transport_url, transport_options...
            setattr(self.aio.sync_store, name, value)


def run_async(main: Callable[[], Awaitable[T]]) -> T:
    """``asyncio.run(main())`` on a :class:`MeasuredLoop` in debug mode with slow-callback
    detection at 10 ms; raises AssertionError when the ``asyncio`` logger warned."""
    loop = MeasuredLoop()
    loop.set_debug(True)
    loop.slow_callback_duration = SLOW_CALLBACK
    executor = concurrent.futures.ThreadPoolExecutor(4, thread_name_prefix="aio-test")
    ready = threading.Barrier(5)
    for _ in range(4):  # started here: see LoopThread
        executor.submit(ready.wait)
    ready.wait()
    loop.set_default_executor(executor)
    capture = _Capture(loop)
    logger = logging.getLogger("asyncio")
    logger.addHandler(capture)

    async def run() -> T:
        return await main()

    try:
        with asyncio.Runner(debug=True, loop_factory=lambda: loop) as runner:
            result = runner.run(run())
    finally:
        logger.removeHandler(capture)
    warnings = [*loop.warnings, *capture.elsewhere]
    if warnings:
        raise AssertionError(f"the event loop was held for more than "
                             f"{SLOW_CALLBACK * 1000:.0f} ms or warned: {warnings}")
    return result
