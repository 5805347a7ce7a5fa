"""Waiting on a condition in tests: as soon as it holds, with a deadline that only a failure
reaches (a busy machine can take seconds for what takes milliseconds idle)."""

from __future__ import annotations

import time
from collections.abc import Callable

#: seconds: generous on purpose, never a measure of speed
DEADLINE = 60.0


def wait_until(condition: Callable[[], object], what: str, deadline: float = DEADLINE) -> None:
    """Return once ``condition()`` is true; an AssertionError naming ``what`` at the deadline."""
    end = time.monotonic() + deadline
    while not condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out after {deadline:.0f} s waiting for {what}")
        time.sleep(0.01)
