"""Writers and readers that check the server's pull contract under concurrency."""

from __future__ import annotations

import random
import threading
from collections.abc import Callable
from typing import Any

from syncline.core.spi.transport import Mutation, PushResponse


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


def push_random_changes(push: Callable[[list[Mutation]], PushResponse], table: str,
                        writer: int, rounds: int, payload: Callable[[str, int], dict[str, Any]],
                        *, most: int = 4, records: int = 6) -> dict[str, int]:
    """Push ``rounds`` batches of up to ``most`` creates, updates and deletes of the writer's
    own ``records`` (drawn with a generator seeded by ``writer``), each answered "applied";
    the records left and their versions."""
    rng = random.Random(writer)
    versions: dict[str, int] = {}
    for i in range(rounds):
        batch: list[Mutation] = []
        for k in range(rng.randint(1, most)):
            rid = f"w{writer}-{rng.randint(0, records - 1)}"
            if any(m.record_id == rid for m in batch):
                continue
            mid = f"m-{writer}-{i}-{k}"
            if rid not in versions:
                batch.append(Mutation(mid, table, "create", rid, payload(rid, i)))
            elif rng.random() < 0.25:
                batch.append(Mutation(mid, table, "delete", rid, base_version=versions[rid]))
            else:
                batch.append(Mutation(mid, table, "update", rid, payload(rid, i), versions[rid]))
        for m, r in zip(batch, push(batch).results, strict=True):
            assert r.status == "applied", r
            if m.action == "delete":
                del versions[m.record_id or ""]
            else:
                assert r.version is not None, r
                versions[m.record_id or ""] = r.version
    return versions
