"""Watches for asyncio: ``async for`` over a watched query without blocking the loop."""

from __future__ import annotations

import asyncio
import contextlib
from collections.abc import AsyncGenerator
from typing import Generic, TypeVar

from syncline.aio.thread import Runner
from syncline.core.storage.watch import Subscription, Watch

R = TypeVar("R")


class AsyncWatch(Generic[R]):
    """A query to follow: ``async for result in watch`` (the result now, then after every
    commit that changes it), or ``await watch.get()`` once.

    The first result is read on the store's thread and later ones on the watch thread of
    the store, as for :class:`syncline.core.storage.watch.Watch`; the loop only receives them.
    """

    def __init__(self, watch: Watch[R], thread: Runner) -> None:
        self.watch = watch
        self._thread = thread

    async def get(self) -> R:
        """The current result."""
        return await self._thread.call(self.watch.get)

    async def __aiter__(self) -> AsyncGenerator[R, None]:
        loop = asyncio.get_running_loop()
        results: asyncio.Queue[R] = asyncio.Queue()

        def deliver(result: R) -> None:
            with contextlib.suppress(RuntimeError):  # the loop is closed: iteration over
                loop.call_soon_threadsafe(results.put_nowait, result)

        sub: Subscription[R] = await self._thread.call(lambda: self.watch.subscribe(deliver))
        try:
            while True:
                yield await results.get()
        finally:
            sub.unsubscribe()
