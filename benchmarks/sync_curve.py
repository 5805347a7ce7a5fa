"""The sync engine's cost curve in CPU time: push and pull at 1k, 10k and 100k, each beside the
raw write rate of the same rows (S1, S2 and S3 of the README's current summary).

    python benchmarks/sync_curve.py                 # 1k, 10k, 100k; push and pull; both clients
    python benchmarks/sync_curve.py 1000 10000      # chosen sizes

CPU time (``time.process_time``), not wall time: on a shared machine the wall time is mostly
waiting for a core. Push: N queued creates from a client (SQLite file / ``memory://``) to a
``MockServer`` on ``memory://``, split into the server's CPU (inside ``SyncServer.push``) and the
client's (the rest). Pull: N changes from a ``MockServer`` on a SQLite file into a fresh client,
1000 a page. S3: the server alone, N creates pushed in batches of 100 to a SQLite store. The
floor: ``upsert_many`` of the same N rows into a fresh non-syncing store of the same kind.
Files go to a temporary folder.
"""

from __future__ import annotations

import itertools
import sys
import tempfile
import time
import uuid
from collections.abc import Callable
from pathlib import Path
from typing import Any

from bench_common import make_posts
from test_sync_bench import PlainPost, SyncPost, _as, prefill

import syncline
from syncline.core.spi.transport import Mutation
from syncline.plugins.mock import MockServer

_names = itertools.count()


def _client(folder: Path, backend: str, cls: type, server: MockServer | None = None) -> Any:
    url = "memory://" if backend == "memory" else f"sqlite:///{folder}/c-{next(_names)}.db"
    transport = None if server is None else f"mock://{server.name}"
    return syncline.open(url, entities=[cls], transport=transport)


def _cpu(work: Callable[[], Any]) -> tuple[float, Any]:
    started = time.process_time()
    out = work()
    return time.process_time() - started, out


def floor(folder: Path, backend: str, rows: list[PlainPost]) -> float:
    store = _client(folder, backend, PlainPost)
    try:
        return _cpu(lambda: store.repository(PlainPost).upsert_many(rows))[0]
    finally:
        store.close()


def push(folder: Path, backend: str, posts: list[SyncPost]) -> tuple[float, float]:
    """(total CPU, server CPU) of pushing ``posts`` as queued creates."""
    server = MockServer(f"curve-{next(_names)}", entities=[SyncPost])
    client = _client(folder, backend, SyncPost, server)
    try:
        client.repository(SyncPost).insert_many(posts)
        spent = [0.0]
        inner = server.server.push

        def timed(*args: Any, **kwargs: Any) -> Any:
            cpu, out = _cpu(lambda: inner(*args, **kwargs))
            spent[0] += cpu
            return out

        server.server.push = timed  # type: ignore[method-assign]
        total, report = _cpu(client.sync_engine.push)
        assert report.ok and report.pushed == len(posts), report
        return total, spent[0]
    finally:
        client.close()
        server.close()


def pull(folder: Path, backend: str, posts: list[SyncPost]) -> float:
    server = MockServer(f"curve-{next(_names)}", entities=[SyncPost],
                        store_url=f"sqlite:///{folder}/s-{next(_names)}.db")
    prefill(server, posts)
    client = _client(folder, backend, SyncPost, server)
    try:
        client.sync_engine.page_size = 1000
        total, report = _cpu(client.sync_engine.pull)
        assert report.ok and report.pulled == len(posts), report
        return total
    finally:
        client.close()
        server.close()


def server_only(folder: Path, posts: list[SyncPost]) -> float:
    """CPU per mutation of ``SyncServer.push`` on a SQLite store, batches of 100."""
    server = MockServer(f"curve-{next(_names)}", entities=[SyncPost],
                        store_url=f"sqlite:///{folder}/s-{next(_names)}.db")
    wire = server.store.wire
    mutations = [Mutation(str(uuid.uuid4()), "sync_posts", "create", p.id, wire.unstructure(p))
                 for p in posts]
    try:
        def run() -> None:
            for i in range(0, len(mutations), 100):
                server.server.push(mutations[i:i + 100])

        return _cpu(run)[0] / len(mutations)
    finally:
        server.close()


def main(sizes: list[int]) -> None:
    made = make_posts(max(sizes))
    sync_posts = [_as(SyncPost, p) for p in made]
    plain_posts = [_as(PlainPost, p) for p in made]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for n in sizes:
            for backend in ("sqlite", "memory"):
                base = floor(folder, backend, plain_posts[:n])
                total, server = push(folder, backend, sync_posts[:n])
                print(f"S1 push {n:>7,} {backend:6}: {n / total:>8,.0f} mutations/s CPU "
                      f"({total / n * 1e6:5.0f} µs: client {(total - server) / n * 1e6:4.0f}, "
                      f"server {server / n * 1e6:4.0f}); floor {n / base:>9,.0f}/s; "
                      f"{total / base:5.1f}x", flush=True)
                cpu = pull(folder, backend, sync_posts[:n])
                print(f"S2 pull {n:>7,} {backend:6}: {n / cpu:>8,.0f} changes/s CPU "
                      f"({cpu / n * 1e6:5.0f} µs); floor {n / base:>9,.0f}/s; "
                      f"{cpu / base:5.1f}x", flush=True)
            per = server_only(folder, sync_posts[:n])
            print(f"S3 server push {n:>7,} sqlite: {per * 1e3:.3f} ms CPU per mutation",
                  flush=True)


if __name__ == "__main__":
    main([int(a) for a in sys.argv[1:]] or [1_000, 10_000, 100_000])
