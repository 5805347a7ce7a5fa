"""F1: a new client's first sync from a compacted change log (issue 17), and the log's size
under steady updates.

The server (``SyncServer`` over a SQLite file or a PostgreSQL schema) gets ``FIRST_SYNC_RECORDS``
records (default 100,000; ``SYNCLINE_FIRST_SYNC_RECORDS`` lowers it for a quick run), each
updated ``UPDATES`` times, then every other one deleted, all pushed as a client would (batches
of 500, untimed). Timed: a first pull from no cursor, page by page (``max_page`` 1000), as the
HTTP endpoint runs it, with each page encoded to JSON as the wire would carry it. Reported:
changes transferred per live record (target <= 1.1), bytes, seconds, and the change-log rows
after each round of updates (it stays one per record, not one per change).

    python -m pytest benchmarks/test_first_sync_bench.py --benchmark-enable -p no:cacheprovider -s
"""

from __future__ import annotations

import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from http_load import ENTITY, HttpPost, make_http_posts

from syncline.core.spi.transport import Mutation, to_wire
from syncline.server.app import server_store_options
from syncline.server.engine import SyncServer
from syncline.server.store import open_server_store
from syncline.server.tables import ChangeEntry

N = int(os.environ.get("SYNCLINE_FIRST_SYNC_RECORDS", "100000"))
UPDATES = 10
BATCH = 500
RESULTS: dict[str, dict[str, Any]] = {}


def fill(server: SyncServer, wire: Any) -> list[int]:
    """The history; returns the change-log row count after the creates and each update round."""
    posts = make_http_posts(N, "r")
    rows = [p for p in (wire.unstructure(p) for p in posts)]
    versions: dict[str, int] = {}
    sizes = []
    for round_ in range(UPDATES + 1):
        for i in range(0, N, BATCH):
            chunk = rows[i:i + BATCH]
            ms = [Mutation(f"m{round_}-{r['id']}", ENTITY, "create" if round_ == 0 else
                           "update", r["id"], {**r, "likes_count": round_},
                           versions.get(r["id"])) for r in chunk]
            for m, res in zip(ms, server.push(ms, "team").results, strict=True):
                assert res.status == "applied", res
                versions[m.record_id or ""] = res.version or 0
        sizes.append(server.changes.count())
    for i in range(0, N, 2 * BATCH):
        ids = [rows[j]["id"] for j in range(i, min(i + 2 * BATCH, N), 2)]
        ms = [Mutation(f"d-{rid}", ENTITY, "delete", rid, base_version=versions[rid])
              for rid in ids]
        assert all(r.status == "applied" for r in server.push(ms, "team").results)
    sizes.append(server.changes.count())
    return sizes


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_first_sync(benchmark: Any, backend: str, tmp_path: Path,
                    request: pytest.FixtureRequest) -> None:
    if backend == "sqlite":
        url = f"sqlite:///{tmp_path}/server.db"
    else:
        url = f"{request.getfixturevalue('syncline_postgres_url')}?schema=first{os.getpid()}"
    benchmark.group = f"F1 first sync: {N} records x {UPDATES} updates, half deleted"
    with open_server_store(url, [HttpPost], options=server_store_options({})) as store:
        server = SyncServer(store, purge_interval=None)
        t0 = time.perf_counter()
        sizes = fill(server, store.wire)
        fill_s = time.perf_counter() - t0
        out: dict[str, Any] = {}

        def first_sync() -> None:
            cursor, changes, nbytes, pages = None, 0, 0, 0
            while True:
                page = server.pull(cursor, 1000, None, "team")
                nbytes += len(json.dumps(to_wire(page)))
                changes += len(page.changes)
                pages += 1
                cursor = page.cursor
                if not page.more:
                    break
            out.update(changes=changes, bytes=nbytes, pages=pages)

        t0 = time.perf_counter()
        benchmark.pedantic(first_sync, rounds=1, iterations=1)
        seconds = time.perf_counter() - t0
        live = N - (N + 1) // 2
        assert store.repository(ChangeEntry).count() == N  # one per record, tombstones incl.
    RESULTS[backend] = dict(records=N, live=live, changes=out["changes"],
                            per_live=round(out["changes"] / live, 3), bytes=out["bytes"],
                            pages=out["pages"], seconds=round(seconds, 2),
                            live_per_s=round(live / seconds), log_rows=sizes,
                            history_changes=N * (UPDATES + 1) + (N + 1) // 2,
                            fill_mutations_per_s=round((N * (UPDATES + 1) + N // 2) / fill_s))
    benchmark.extra_info.update(RESULTS[backend])
    print(f"\nF1 {backend}: {RESULTS[backend]}")
    assert out["changes"] <= 1.1 * live
