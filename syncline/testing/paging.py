"""A reader that checks the server's pull contract while writers are busy."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any


def read_every_page(pull: Callable[[str | None, int], Any], done: threading.Event,
                    view: dict[str, tuple[int, str]], rng: random.Random) -> None:
    """Pull page after page (limits of 1 to 8, drawn with ``rng``) until ``done`` is set and
    a page says there is no more. Asserts that no change comes twice and that no record's
    version goes backwards; ``view`` ends with each record's last (version, op)."""
    cursor: str | None = None
    seen: set[tuple[str, int]] = set()
    while True:
        finished = done.is_set()
        page = pull(cursor, rng.randint(1, 8))
        for c in page.changes:
            assert (c.record_id, c.version) not in seen, f"{c} twice"
            seen.add((c.record_id, c.version))
            before = view.get(c.record_id)
            assert before is None or before[0] < c.version, (before, c)
            view[c.record_id] = (c.version, c.op)
        cursor = page.cursor
        if finished and not page.more:
            return
