"""The same cases, with syncline and baseline rounds alternating: a cross-check on busy machines.

pytest-benchmark runs a case's sides one after the other, so load that comes and goes (other
processes on a shared machine) can land on one side only. Here every round of syncline is
followed by a round of the baseline, and the ratios of the minimums and medians are printed.

    python benchmarks/bench_interleaved.py [rounds-multiplier]

Data files go to a temporary folder that is removed at the end.
"""

from __future__ import annotations

import itertools
import random
import statistics
import sys
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_common as base
from bench_common import (
    GROUP_ALL,
    GROUP_BATCH,
    GROUP_GET,
    GROUP_LATEST,
    GROUP_MEM_GET,
    GROUP_MEM_UPSERT,
    GROUP_SINGLE,
    TARGETS,
    Post,
)

import syncline
from syncline import F

Timed = Callable[[], float]  # runs one round (with its own untimed setup), returns seconds


def timed(setup: Callable[[], Any], run: Callable[[Any], Any],
          teardown: Callable[[Any], Any] = lambda _: None) -> Timed:
    def once() -> float:
        arg = setup()
        start = time.perf_counter()
        run(arg)
        took = time.perf_counter() - start
        teardown(arg)
        return took

    return once


def compare(group: str, syncline_side: Timed, baseline_side: Timed, rounds: int) -> None:
    s, b = [], []
    for _ in range(rounds):
        s.append(syncline_side())
        b.append(baseline_side())
    fastest = min(s) / min(b)
    median = statistics.median(s) / statistics.median(b)
    target = TARGETS.get(group)
    status = "" if target is None else ("met" if fastest <= target else "NOT MET")
    print(f"{group:44s} min {min(s) * 1e3:9.2f} / {min(b) * 1e3:9.2f} ms  "
          f"ratio min {fastest:4.2f}x median {median:4.2f}x  "
          f"target {'-' if target is None else target:>4}  {status}", flush=True)


def main(scale: int = 1) -> None:
    posts = base.make_posts()
    rng = random.Random(base.SEED + 1)
    ids = [f"p{i:06d}" for i in rng.sample(range(base.N_POSTS), 1000)]
    users = [f"u{u:04d}" for u in rng.sample(range(base.N_USERS), 100)]
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        n = itertools.count()

        def fresh_store() -> syncline.Store:
            return syncline.open(f"sqlite:///{folder / f's{next(n)}.db'}", entities=[Post])

        def fresh_conn() -> Any:
            return base.connect(folder / f"b{next(n)}.db")

        compare(GROUP_BATCH,
                timed(fresh_store, lambda s: s.repository(Post).upsert_many(posts),
                      lambda s: s.close()),
                timed(fresh_conn, lambda c: base.upsert_many(c, posts), lambda c: c.close()),
                3 * scale)

        store, conn = fresh_store(), fresh_conn()
        batches = (posts[i:i + 200] for i in itertools.count(0, 200))
        upsert = store.repository(Post).upsert
        compare(GROUP_SINGLE,
                timed(lambda: next(batches), lambda batch: [upsert(p) for p in batch]),
                timed(lambda: next(batches), lambda batch: [base.upsert(conn, p) for p in batch]),
                20 * scale)
        store.close()
        conn.close()

        store, conn = fresh_store(), fresh_conn()
        repo = store.repository(Post)
        repo.upsert_many(posts)
        base.upsert_many(conn, posts)
        compare(GROUP_GET,
                timed(lambda: None, lambda _: [repo.get(k) for k in ids]),
                timed(lambda: None, lambda _: [base.get(conn, k) for k in ids]),
                40 * scale)
        compare(GROUP_LATEST,
                timed(lambda: None, lambda _: [
                    repo.find(F.user_id == u, order_by=F.created_at.desc(), limit=50)
                    for u in users]),
                timed(lambda: None, lambda _: [base.latest(conn, u) for u in users]),
                30 * scale)
        compare(GROUP_ALL,
                timed(lambda: None, lambda _: repo.find()),
                timed(lambda: None, lambda _: base.find_all(conn)),
                6 * scale)
        store.close()
        conn.close()

    copy = base.copy_post

    def fill(d: dict[str, Post]) -> None:
        for p in posts:
            d[p.id] = copy(p)

    compare(GROUP_MEM_UPSERT,
            timed(lambda: syncline.open("memory://", entities=[Post]),
                  lambda s: s.repository(Post).upsert_many(posts), lambda s: s.close()),
            timed(dict, fill),
            4 * scale)
    mem = syncline.open("memory://", entities=[Post])
    mem.repository(Post).upsert_many(posts)
    get = mem.repository(Post).get
    plain = {p.id: copy(p) for p in posts}
    compare(GROUP_MEM_GET,
            timed(lambda: None, lambda _: [get(k) for k in ids]),
            timed(lambda: None, lambda _: [copy(plain[k]) for k in ids]),
            60 * scale)
    mem.close()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
