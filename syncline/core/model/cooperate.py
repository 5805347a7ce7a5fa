"""Long pure-Python work that shares the event loop when ``syncline.aio`` runs it there.

``syncline.aio`` runs the calls of ``event_loop_io`` backends (PostgreSQL) in greenlets on the
event loop: the store's logic runs there between two waits for the database. A loop over tens
of thousands of values would hold the loop for its whole length; :func:`chunked` lets the loop
serve its other tasks between chunks. Elsewhere (threads, synchronous stores) it costs one
check per call.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Sequence
from typing import TypeVar

T = TypeVar("T")
R = TypeVar("R")
#: values handled between two turns of the loop (a few milliseconds of Python work)
CHUNK = 1000


def in_loop_greenlet() -> bool:
    """True inside SQLAlchemy's ``greenlet_spawn`` on an event loop, where ``syncline.aio``
    runs the calls of ``event_loop_io`` backends: I/O must be awaited there
    (``sqlalchemy.util.await_only``), never blocked on."""
    try:
        from greenlet import getcurrent
    except ImportError:  # no greenlet: nothing runs in one
        return False
    return bool(getattr(getcurrent(), "__sqlalchemy_greenlet_provider__", False))


def yield_to_loop() -> None:
    """Let the event loop run its other ready callbacks, then go on (in a loop greenlet)."""
    import asyncio

    from sqlalchemy.util import await_only

    await_only(asyncio.sleep(0))


def pause(seconds: float) -> None:
    """Sleep (before a retry): awaited when in a loop greenlet, which the loop must not
    spend asleep."""
    if in_loop_greenlet():
        import asyncio

        from sqlalchemy.util import await_only

        await_only(asyncio.sleep(seconds))
    else:
        time.sleep(seconds)


def chunked(fn: Callable[[T], R], values: Sequence[T]) -> list[R]:
    """``[fn(v) for v in values]``, giving the loop a turn every :data:`CHUNK` values when
    running in a loop greenlet."""
    if len(values) <= CHUNK or not in_loop_greenlet():
        return [fn(v) for v in values]
    out: list[R] = []
    for start in range(0, len(values), CHUNK):
        out.extend(fn(v) for v in values[start:start + CHUNK])
        yield_to_loop()
    return out


__all__ = ["CHUNK", "chunked", "in_loop_greenlet", "pause", "yield_to_loop"]
