"""The HTTP sync benchmark's entity, data and multi-process load generator.

Imported by ``test_http_bench.py``; also the ``--entities`` module of the ``syncline serve``
processes that benchmark starts (they run with ``benchmarks/`` on ``PYTHONPATH``), so it imports
nothing heavy at module level.

Load generator (started by ``test_http_bench.py``, several processes at once)::

    python benchmarks/http_load.py load --url URL [--url URL2] --first 0 --clients 5 \\
        --batch 10 --start-file GO --duration 15 --out result.json

runs ``--clients`` threads; client ``c`` (``--first`` + thread number) has its own
``memory://`` store, token ``t<c>`` (principal ``c<c>``) and server ``urls[c % len(urls)]``.
Once every client's store is open the process writes ``<out>.ready``; the clients then wait for
``--start-file`` to hold a ``time.time()`` value (the parent writes it once every load process
is ready: a busy machine can take tens of seconds to import). From that time until
``--duration`` seconds later each repeats:
``upsert_many`` of ``--batch`` new posts (ids ``c<c>-<n>``), then ``store.sync_engine.push()``,
timed (that push's latency). After the deadline it pushes what is still queued (bounded), and
writes per client: records created, mutations the server acknowledged, latencies, failures.

Profile of the server side of a batch-500 push (pyinstrument)::

    python benchmarks/http_load.py profile [--batch 500] [--rounds 10]
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import sys
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

import attrs

import syncline

ENTITY = "http_posts"
registry = syncline.EntityRegistry()


@registry.entity(ENTITY, syncs=True, indexes=[("user_id", "created_at")])
@attrs.define
class HttpPost:
    """The seed's post shape (``bench_common.Post``), syncing."""

    id: str
    user_id: str
    content: str
    created_at: dt.datetime
    likes_count: int = 0
    image_urls: list[str] | None = None


_TEMPLATES: list[Any] = []


def make_http_posts(n: int, prefix: str) -> list[HttpPost]:
    """``n`` new posts with ids ``<prefix>000000``...; fields cycle through 1,000 posts of
    ``bench_common.make_posts`` (the seed's post shape)."""
    if not _TEMPLATES:
        sys.path.insert(0, str(Path(__file__).parent))
        from bench_common import make_posts

        _TEMPLATES.extend(make_posts(1_000))
    out = []
    for i in range(n):
        t = _TEMPLATES[i % len(_TEMPLATES)]
        out.append(HttpPost(f"{prefix}{i:06d}", t.user_id, t.content, t.created_at,
                            t.likes_count, list(t.image_urls) if t.image_urls else None))
    return out


def create_mutations(posts: list[HttpPost], wire: Any) -> list[Any]:
    """Create mutations for ``posts``, as a client's outbox sends them."""
    from syncline.core.spi.transport import Mutation

    return [Mutation(uuid.uuid4().hex, ENTITY, "create", p.id, wire.unstructure(p))
            for p in posts]


# -- load generator ---------------------------------------------------------------------------

def _start_time(start: Any) -> float:
    """Signal this client ready (``start``: the process's barrier and start file), then wait
    for the start time the parent writes."""
    barrier, path = start
    barrier.wait()
    while True:
        try:
            return float(Path(path).read_text())
        except (OSError, ValueError):
            time.sleep(0.02)


def _client(c: int, url: str, batch: int, start: Any, duration: float,
            out: dict[str, Any]) -> None:
    store = syncline.open("memory://", entities=[HttpPost], transport=url,
                          transport_options={"token": f"t{c}", "timeout": 60},
                          sync_options={"batch_size": max(batch, 1)})
    posts = store.repository(HttpPost)
    engine = store.sync_engine
    latencies: list[float] = []
    failures: list[str] = []
    created = acknowledged = 0
    templates = make_http_posts(batch, f"c{c:02d}-")
    try:
        start_at = _start_time(start)
        time.sleep(max(0.0, start_at - time.time()))
        deadline = start_at + duration
        n = 0
        while time.time() < deadline:
            posts.upsert_many([attrs.evolve(t, id=f"c{c:02d}-{n + i:07d}")
                               for i, t in enumerate(templates)])
            n += batch
            created += batch
            t0 = time.perf_counter()
            report = engine.push()
            latencies.append(time.perf_counter() - t0)
            acknowledged += report.pushed
            failures += report.failures + report.rejected
        t_end = time.time()
        # Untimed drain: retried mutations (after a failure) go out now; bounded.
        for _ in range(50):
            if store.outbox.pending_count() == 0:
                break
            due = store.outbox.next_batch(limit=1)
            if not due:  # backing off after a failure: send it now
                for entry in store.outbox.all_pending():
                    store.outbox.entries.update(entry.id, next_attempt_at=None)
            report = engine.push()
            acknowledged += report.pushed
            failures += report.failures + report.rejected
            time.sleep(0.05)
        out.update(client=c, url=url, created=created, acknowledged=acknowledged, t_end=t_end,
                   pending=store.outbox.pending_count(), latencies=latencies,
                   failures=failures[:20], n_failures=len(failures))
    except Exception as exc:  # reported, not raised: the parent checks every client
        out.update(client=c, url=url, error=repr(exc), created=created,
                   acknowledged=acknowledged, latencies=latencies)
    finally:
        store.close()


#: the writes of a push of creates, on plain psycopg (``bare``): no counter row, no advisory
#: lock, change numbers from the store's sequence; the tables are the server store's
BARE_SQL = [
    "INSERT INTO http_posts (id, user_id, content, created_at, likes_count, image_urls) "
    "VALUES (%s, %s, %s, %s, %s, %s)",
    "INSERT INTO _syncline_changes (seq, owner, entity, record_id, op, updated_at, payload, "
    "mutation_id, txid) VALUES (nextval('_syncline_change_seq'), %s, %s, %s, 'upsert', %s, "
    "%s, %s, pg_current_xact_id()::text::bigint)",
    "INSERT INTO _syncline_server_records (key, owner, entity, record_id, version, "
    "updated_at, deleted, created_by) VALUES (%s, %s, %s, %s, currval('_syncline_change_seq'),"
    " %s, false, %s)",
    "INSERT INTO _syncline_mutations (key, fingerprint, result, applied_at) "
    "VALUES (%s, %s, %s, %s)"]


def _bare_client(c: int, url: str, batch: int, start: Any, duration: float,
                 out: dict[str, Any]) -> None:
    """``_client``'s loop with the server replaced by plain psycopg writing the same rows: the
    ceiling of the database and driver for this load (one transaction per batch)."""
    import hashlib

    import psycopg
    from psycopg.types.json import Jsonb

    latencies: list[float] = []
    created = 0
    owner = f"c{c}"
    templates = make_http_posts(batch, f"c{c:02d}-")
    try:
        with psycopg.connect(url) as conn:
            start_at = _start_time(start)
            time.sleep(max(0.0, start_at - time.time()))
            deadline = start_at + duration
            n = 0
            while time.time() < deadline:
                t0 = time.perf_counter()
                now = dt.datetime.now(dt.UTC)
                posts, changes, records, applied = [], [], [], []
                for i, t in enumerate(templates):
                    rid, mid = f"c{c:02d}-{n + i:07d}", uuid.uuid4().hex
                    posts.append((rid, t.user_id, t.content, t.created_at, t.likes_count,
                                  Jsonb(t.image_urls) if t.image_urls else None))
                    payload = {"id": rid, "user_id": t.user_id, "content": t.content,
                               "created_at": t.created_at.isoformat(),
                               "likes_count": t.likes_count, "image_urls": t.image_urls}
                    changes.append((owner, ENTITY, rid, now, Jsonb(payload), mid))
                    records.append((f"{owner}/{ENTITY}/{rid}", owner, ENTITY, rid, now, mid))
                    print_ = hashlib.sha256(json.dumps(payload).encode()).hexdigest()
                    applied.append((f"{owner}/{mid}", print_, Jsonb(
                        {"id": mid, "status": "applied", "server_id": rid}), now))
                with conn.transaction(), conn.cursor() as cur:
                    cur.executemany(BARE_SQL[0], posts)
                    for change, record in zip(changes, records, strict=True):
                        cur.execute(BARE_SQL[1], change, prepare=True)
                        cur.execute(BARE_SQL[2], record, prepare=True)
                    cur.executemany(BARE_SQL[3], applied)
                latencies.append(time.perf_counter() - t0)
                n += batch
                created += batch
        out.update(client=c, url=url, created=created, acknowledged=created,
                   t_end=time.time(), pending=0, latencies=latencies, failures=[],
                   n_failures=0)
    except Exception as exc:  # reported, not raised: the parent checks every client
        out.update(client=c, url=url, error=repr(exc), created=created, latencies=latencies)


def run_load(args: argparse.Namespace) -> None:
    results: list[dict[str, Any]] = [{} for _ in range(args.clients)]
    threads = []
    target = _bare_client if args.command == "bare" else _client
    barrier = threading.Barrier(args.clients + 1)
    for k in range(args.clients):
        c = args.first + k
        url = args.url[c % len(args.url)]
        threads.append(threading.Thread(
            target=target, args=(c, url, args.batch, (barrier, args.start_file), args.duration,
                                 results[k]), daemon=True))
    for t in threads:
        t.start()
    barrier.wait(600)
    Path(args.out + ".ready").write_text("ready")
    for t in threads:
        t.join(args.duration + 600)
    Path(args.out).write_text(json.dumps({"clients": results}))


# -- profile ------------------------------------------------------------------------------------

def run_profile(args: argparse.Namespace) -> None:
    """pyinstrument on ``SyncServer.push`` of ``--batch`` fresh creates, ``--rounds`` times,
    on a SQLite file server store or ``--store`` (what ``/v1/push`` runs in its thread pool)."""
    from pyinstrument import Profiler

    from syncline.server.app import server_store_options
    from syncline.server.engine import SyncServer
    from syncline.server.store import open_server_store

    with tempfile.TemporaryDirectory() as folder:
        store = open_server_store(args.store or f"sqlite:///{folder}/server.db", [HttpPost],
                                  options=server_store_options({}))
        server = SyncServer(store)
        tag = uuid.uuid4().hex[:8]  # a reused store: ids of their own
        batches = [create_mutations(make_http_posts(args.batch, f"r{tag}{r}-"), store.wire)
                   for r in range(args.rounds + 1)]
        server.push(batches[0], "team")  # warm up
        profiler = Profiler(interval=args.interval)
        t0 = time.perf_counter()
        with profiler:
            for batch in batches[1:]:
                server.push(batch, "team")
        elapsed = time.perf_counter() - t0
        store.close()
    per = elapsed / (args.rounds * args.batch) * 1e6
    print(f"{args.rounds} x SyncServer.push({args.batch}): {elapsed:.3f} s under the profiler,"
          f" {per:.0f} us per mutation")
    print(profiler.output_text(unicode=False, color=False, show_all=args.all))


def main(argv: list[str] | None = None) -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    sub = parser.add_subparsers(dest="command", required=True)
    for name, help_ in (("load", "run load clients against syncline servers"),
                        ("bare", "the same load written by plain psycopg (--url: the "
                                 "PostgreSQL URL with the store's schema on its search path)")):
        load = sub.add_parser(name, help=help_)
        load.add_argument("--url", action="append", required=True)
        load.add_argument("--first", type=int, default=0)
        load.add_argument("--clients", type=int, default=5)
        load.add_argument("--batch", type=int, default=10)
        load.add_argument("--start-file", required=True)
        load.add_argument("--duration", type=float, default=15.0)
        load.add_argument("--out", required=True)
    prof = sub.add_parser("profile", help="profile the server side of a push")
    prof.add_argument("--batch", type=int, default=500)
    prof.add_argument("--rounds", type=int, default=10)
    prof.add_argument("--interval", type=float, default=0.0002)
    prof.add_argument("--all", action="store_true", help="show library frames too")
    prof.add_argument("--store", help="a server store URL (default: a new SQLite file)")
    args = parser.parse_args(argv)
    if args.command in ("load", "bare"):
        run_load(args)
    else:
        run_profile(args)


if __name__ == "__main__":
    main()
