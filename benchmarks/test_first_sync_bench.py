"""F1: a new client's first sync from a compacted change log (issue 17), and the log's size
under steady updates.

The server (``SyncServer`` over a SQLite file or a PostgreSQL schema) gets ``FIRST_SYNC_RECORDS``
records (default 100,000; ``SYNCLINE_FIRST_SYNC_RECORDS`` lowers it for a quick run), each
updated ``UPDATES`` times, then every other one deleted (untimed): written by ``bulk_fill``
through the store's bulk write path, exactly what pushing it as a client would (batches of 500,
``fill``; ``SYNCLINE_FIRST_SYNC_FILL=push``) leaves but for the times. Timed: a new client's
first sync (a SQLite client file, ``page_size`` 1000) from a ``LiveServer`` over that store:
HTTP, the server's pages and the client's apply.
Counted on the client's transport: changes and pages received, and each page's JSON bytes.
Reported: changes transferred per live record (target <= 1.1), records applied, bytes, seconds,
the change-log rows after each round of updates (pushed fill only: it stays one per record),
and the log and mutation-result rows once past every retention (``SyncServer.purge``): the log
then holds the live records only.

    python -m pytest benchmarks/test_first_sync_bench.py --benchmark-enable -p no:cacheprovider -s
"""

from __future__ import annotations

import datetime as dt
import json
import os
import sys
import time
from pathlib import Path
from typing import Any

import attrs
import pytest
from http_load import ENTITY, HttpPost, make_http_posts

import syncline
from syncline.core.model.schema import spec_of
from syncline.core.spi.transport import Mutation, MutationResult, to_wire
from syncline.server.app import ServerConfig, server_store_options
from syncline.server.engine import SyncServer, fingerprint
from syncline.server.store import open_server_store
from syncline.server.tables import AppliedMutation, ChangeEntry, ServerRecord, record_key
from syncline.testing.server import LiveServer

N = int(os.environ.get("SYNCLINE_FIRST_SYNC_RECORDS", "100000"))
UPDATES = int(os.environ.get("SYNCLINE_FIRST_SYNC_UPDATES", "10"))
BATCH = 500
#: how the server store gets its history: "bulk" (bulk_fill, default) or "push" (fill)
FILL = os.environ.get("SYNCLINE_FIRST_SYNC_FILL", "bulk")
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
            ms = history(round_, chunk, versions)
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


def history(round_: int, rows: list[dict[str, Any]], versions: dict[str, int]
            ) -> list[Mutation]:
    """The mutations of one round of ``fill`` (0: the creates), as the client pushes them."""
    return [Mutation(f"m{round_}-{r['id']}", ENTITY, "create" if round_ == 0 else "update",
                     r["id"], {**r, "likes_count": round_}, versions.get(r["id"]))
            for r in rows]


def bulk_fill(server: SyncServer, wire: Any) -> list[int]:
    """What :func:`fill` leaves, written through the store's bulk write path (``Writer``
    inserts: COPY on PostgreSQL, ``executemany`` on SQLite) instead of 1.15 M pushes.

    The same rows: the history's mutations are built as ``fill`` builds them, take their
    numbers from the server's own order in push order (one ``take`` of them all: a single
    writer gets consecutive numbers either way), each record's final change-log entry, server
    record and row, and one result per mutation with its fingerprint. What differs: every row
    carries one time (pushes carry their batch's), and on PostgreSQL the log's entries one txid
    (that of this fill's transaction; pulls read them in ``seq`` order either way).
    ``test_bulk_fill_leaves_what_the_pushes_leave`` checks it against ``fill``."""
    store = server.store
    writer = store.writer
    posts = make_http_posts(N, "r")
    rows = [wire.unstructure(p) for p in posts]
    deleted = {rows[j]["id"] for j in range(0, N, 2)}
    total = N * (UPDATES + 1) + len(deleted)
    now = server.now()
    owner = "team"

    def numbered() -> tuple[int, list[int]]:
        return server.order.take(total)

    def write(cls: type, objs: list[Any]) -> None:
        to_tuple = store.codec(cls).to_tuple
        for i in range(0, len(objs), 20_000):
            chunk = [to_tuple(o) for o in objs[i:i + 20_000]]
            store.run_transaction(lambda chunk=chunk: writer.insert_values(
                spec_of(cls).table, chunk))

    def results(ms: list[Mutation], seqs: list[int]) -> list[AppliedMutation]:
        return [AppliedMutation(f"{owner}/{m.id}", fingerprint(m), to_wire(MutationResult(
            m.id, "applied", server_id=m.record_id, version=seq)), now)
            for m, seq in zip(ms, seqs, strict=True)]

    # The numbers first, in their own transaction: on PostgreSQL its txid goes with the log.
    txid, seqs = store.run_transaction(numbered)
    versions: dict[str, int] = {}
    last: dict[str, tuple[Mutation, int]] = {}
    for round_ in range(UPDATES + 1):
        ms = history(round_, rows, versions)
        taken = seqs[round_ * N:(round_ + 1) * N]
        for m, seq in zip(ms, taken, strict=True):
            versions[m.record_id or ""] = seq
            last[m.record_id or ""] = (m, seq)
        write(AppliedMutation, results(ms, taken))
    gone = [Mutation(f"d-{rows[j]['id']}", ENTITY, "delete", rows[j]["id"],
                     base_version=versions[rows[j]["id"]]) for j in range(0, N, 2)]
    write(AppliedMutation, results(gone, seqs[N * (UPDATES + 1):]))
    for m, seq in zip(gone, seqs[N * (UPDATES + 1):], strict=True):
        last[m.record_id or ""] = (m, seq)
    entities, changes, records = [], [], []
    for r in rows:
        rid = r["id"]
        m, seq = last[rid]
        obj = None if rid in deleted else wire.structure({**(m.payload or {}), "id": rid},
                                                         HttpPost)
        if obj is not None:
            entities.append(obj)
        changes.append(ChangeEntry(seq, owner, ENTITY, rid, "upsert" if obj else "delete", now,
                                   None if obj is None else wire.unstructure(obj), m.id,
                                   txid))
        records.append(ServerRecord(record_key(owner, ENTITY, rid), owner, ENTITY, rid, seq,
                                    now, deleted=obj is None, created_by=f"m0-{rid}"))
    write(HttpPost, entities)
    write(ChangeEntry, sorted(changes, key=lambda c: c.seq))
    write(ServerRecord, records)
    return [server.changes.count()]  # the rounds' sizes are not observed here


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
        sizes = (bulk_fill if FILL == "bulk" else fill)(server, store.wire)
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


def _left(server: SyncServer) -> dict[str, Any]:
    """What a fill left in a server store, but for the times and txids."""
    store, epoch = server.store, dt.datetime(2000, 1, 1, tzinfo=dt.UTC)
    return {
        "posts": sorted(store.repository(HttpPost).all(), key=lambda p: p.id),
        "changes": [attrs.evolve(c, updated_at=epoch, txid=0)
                    for c in store.repository(ChangeEntry).find(order_by="seq")],
        "records": sorted((attrs.evolve(r, updated_at=epoch)
                           for r in store.repository(ServerRecord).all()), key=lambda r: r.key),
        "results": sorted((a.key, a.fingerprint, json.dumps(a.result, sort_keys=True))
                          for a in server.applied.all()),
        "last_number": server.order.committed()[1]}


@pytest.mark.parametrize("backend", ["sqlite", "postgresql"])
def test_bulk_fill_leaves_what_the_pushes_leave(backend: str, tmp_path: Path,
                                                request: pytest.FixtureRequest,
                                                monkeypatch: pytest.MonkeyPatch) -> None:
    """``bulk_fill`` and ``fill`` (the history pushed through ``SyncServer.push``) leave the
    same records, change log, server records, mutation results and numbers (1,100 records x 2
    updates: batches of 500 and a partial one)."""
    monkeypatch.setattr(sys.modules[__name__], "N", 1_100)
    monkeypatch.setattr(sys.modules[__name__], "UPDATES", 2)
    left = []
    for name, how in (("push", fill), ("bulk", bulk_fill)):
        url = (f"sqlite:///{tmp_path}/{name}.db" if backend == "sqlite" else
               f"{request.getfixturevalue('syncline_postgres_url')}?schema=fill{name}"
               f"{os.getpid()}")
        with open_server_store(url, [HttpPost], options=server_store_options({})) as store:
            server = SyncServer(store, purge_interval=None)
            how(server, store.wire)
            left.append(_left(server))
    assert left[0]["changes"] and left[0] == left[1]
