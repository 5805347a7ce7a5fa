"""The HTTP sync benchmark's entity, data and multi-process load generator.

Imported by ``test_http_bench.py``; also the ``--entities`` module of the ``syncline serve``
processes that benchmark starts (they run with ``benchmarks/`` on ``PYTHONPATH``), so it imports
nothing heavy at module level.

Load generator (started by ``test_http_bench.py``, several processes at once)::

    python benchmarks/http_load.py load --url URL [--url URL2] --first 0 --clients 5 \\
        --batch 10 --start-at EPOCH --duration 15 --out result.json

runs ``--clients`` threads; client ``c`` (``--first`` + thread number) has its own
``memory://`` store, token ``t<c>`` (principal ``c<c>``) and server ``urls[c % len(urls)]``.
From ``--start-at`` (a ``time.time()`` value) until ``--duration`` seconds later it repeats:
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

def _client(c: int, url: str, batch: int, start_at: float, duration: float,
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


def run_load(args: argparse.Namespace) -> None:
    results: list[dict[str, Any]] = [{} for _ in range(args.clients)]
    threads = []
    for k in range(args.clients):
        c = args.first + k
        url = args.url[c % len(args.url)]
        threads.append(threading.Thread(
            target=_client, args=(c, url, args.batch, args.start_at, args.duration, results[k]),
            daemon=True))
    for t in threads:
        t.start()
    for t in threads:
        t.join(args.duration + 600)
    Path(args.out).write_text(json.dumps({"clients": results}))


# -- profile ------------------------------------------------------------------------------------

def run_profile(args: argparse.Namespace) -> None:
    """pyinstrument on ``SyncServer.push`` of ``--batch`` fresh creates, ``--rounds`` times,
    on a SQLite file server store (what ``/v1/push`` runs in its thread pool)."""
    from pyinstrument import Profiler

    from syncline.server.app import server_store_options
    from syncline.server.engine import SyncServer
    from syncline.server.store import open_server_store

    with tempfile.TemporaryDirectory() as folder:
        store = open_server_store(f"sqlite:///{folder}/server.db", [HttpPost],
                                  options=server_store_options({}))
        server = SyncServer(store)
        batches = [create_mutations(make_http_posts(args.batch, f"r{r}-"), store.wire)
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
    load = sub.add_parser("load", help="run load clients against syncline servers")
    load.add_argument("--url", action="append", required=True)
    load.add_argument("--first", type=int, default=0)
    load.add_argument("--clients", type=int, default=5)
    load.add_argument("--batch", type=int, default=10)
    load.add_argument("--start-at", type=float, default=0.0)
    load.add_argument("--duration", type=float, default=15.0)
    load.add_argument("--out", required=True)
    prof = sub.add_parser("profile", help="profile the server side of a push")
    prof.add_argument("--batch", type=int, default=500)
    prof.add_argument("--rounds", type=int, default=10)
    prof.add_argument("--interval", type=float, default=0.0002)
    prof.add_argument("--all", action="store_true", help="show library frames too")
    args = parser.parse_args(argv)
    if args.command == "load":
        run_load(args)
    else:
        run_profile(args)


if __name__ == "__main__":
    main()
