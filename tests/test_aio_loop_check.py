"""The aio suites' slow-callback check: a callback that works 10 ms or more on the loop's
thread fails the test; one that only waited (for a core, or blocked without working) is
logged as descheduled unless SYNCLINE_AIO_STRICT is set."""

from __future__ import annotations

import asyncio
import time

from syncline.testing.aio.bridge import SLOW_CALLBACK, LoopThread


def busy(seconds: float) -> None:
    end = time.thread_time() + seconds
    while time.thread_time() < end:
        pass


def test_a_callback_working_past_the_bound_is_a_warning() -> None:
    loop = LoopThread()

    async def work() -> None:
        busy(SLOW_CALLBACK * 3)

    loop.call(work)
    warnings, descheduled = loop.close()
    assert len(warnings) == 1 and "took" in warnings[0] and descheduled == []


def test_a_callback_that_only_waited_is_descheduled_not_failed() -> None:
    loop = LoopThread()

    async def wait() -> None:
        time.sleep(SLOW_CALLBACK * 3)  # wall time without CPU, as when no core is free

    async def several_short_ones() -> None:
        for _ in range(6):  # each well under the bound, together over it
            busy(SLOW_CALLBACK / 3)
            await asyncio.sleep(0)

    loop.call(wait)
    loop.call(several_short_ones)
    warnings, descheduled = loop.close()
    # the sleeping one at least (on a busy machine a short one may wait for a core too)
    assert warnings == [] and descheduled and all("CPU" in d for d in descheduled)
