"""F1: a new client's first sync from a compacted change log (issue 17), and the log's size
under steady updates.

The server (``SyncServer`` over a SQLite file or a PostgreSQL schema) gets ``FIRST_SYNC_RECORDS``
records (default 100,000; ``SYNCLINE_FIRST_SYNC_RECORDS`` lowers it for a quick run), each
updated ``UPDATES`` times, then every other one deleted, all pushed as a client would (batches
of 500, untimed). Timed: a new client's first sync (a SQLite client file, ``page_size`` 1000)
from a ``LiveServer`` over that store: HTTP, the server's pages and the client's apply.
Counted on the client's transport: changes and pages received, and each page's JSON bytes.
Reported: changes transferred per live record (target <= 1.1), records applied, bytes, seconds,
the change-log rows after each round of updates (it stays one per record, not one per change),
and the log and mutation-result rows once past every retention (``SyncServer.purge``): the log
then holds the live records only.

    python -m pytest benchmarks/test_first_sync_bench.py --benchmark-enable -p no:cacheprovider -s
"""

from __future__ import annotations

import datetime as dt
import json
import os
import time
from pathlib import Path
from typing import Any

import pytest
from http_load import ENTITY, HttpPost, make_http_posts

import syncline
from syncline.core.spi.transport import Mutation, to_wire
from syncline.server.app import ServerConfig, server_store_options
from syncline.server.engine import SyncServer
from syncline.server.store import open_server_store
from syncline.server.tables import ChangeEntry
from syncline.testing.server import LiveServer

N = int(os.environ.get("SYNCLINE_FIRST_SYNC_RECORDS", "100000"))
UPDATES = int(os.environ.get("SYNCLINE_FIRST_SYNC_UPDATES", "10"))
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


class Counted:
    """A client transport's ``pull`` that counts what comes over the wire: changes, pages and
    the bytes of each page's JSON as the endpoint encodes it."""

    def __init__(self, pull: Any) -> None:
        self.inner, self.changes, self.pages, self.bytes = pull, 0, 0, 0

    def __call__(self, *args: Any, **kwargs: Any) -> Any:
        page = self.inner(*args, **kwargs)
        self.changes += len(page.changes)
        self.pages += 1
        self.bytes += len(json.dumps(to_wire(page), separators=(",", ":")))
        return page


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
        results_rows = server.applied.count()
        config = ServerConfig(store=url, tokens={"t": "team"},
                              store_options=server_store_options({}))
        with LiveServer(config, [HttpPost]) as live:
            client = syncline.open(f"sqlite:///{tmp_path}/client.db", entities=[HttpPost],
                                   transport=live.url, transport_options={"token": "t"},
                                   sync_options={"page_size": 1000})
            try:
                engine = client.sync_engine
                counted = Counted(engine.transport.pull)
                engine.transport.pull = counted

                def first_sync() -> None:
                    engine.pull()

                t0 = time.perf_counter()
                benchmark.pedantic(first_sync, rounds=1, iterations=1)
                seconds = time.perf_counter() - t0
                applied = client.repository(HttpPost).count()
            finally:
                client.close()
        live_n = N - (N + 1) // 2
        assert applied == live_n
        assert store.repository(ChangeEntry).count() == N  # one per record, tombstones incl.
        # Past every retention: the tombstones and the mutation results go.
        dropped = server.purge(server.now() + dt.timedelta(days=36500))
        after_purge = (store.repository(ChangeEntry).count(), server.applied.count())
        assert after_purge == (live_n, 0)
    RESULTS[backend] = dict(
        records=N, live=live_n, changes=counted.changes,
        per_live=round(counted.changes / live_n, 3), applied=applied, bytes=counted.bytes,
        pages=counted.pages, seconds=round(seconds, 2), live_per_s=round(live_n / seconds),
        log_rows_per_round=sizes, log_rows_after_purge=after_purge[0],
        results_rows_before_purge=results_rows, purged=dropped,
        history_changes=N * (UPDATES + 1) + (N + 1) // 2,
        fill_mutations_per_s=round((N * (UPDATES + 1) + N // 2) / fill_s),
        loadavg=os.getloadavg())
    benchmark.extra_info.update(RESULTS[backend])
    print(f"\nF1 {backend}: {RESULTS[backend]}")
    assert counted.changes <= 1.1 * live_n
