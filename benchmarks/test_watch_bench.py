"""Cases W1-W2: reactive queries (``docs/watch.md``) on a SQLite file store and a memory store.

* W1, commit-to-callback latency: a subscriber of ``watch_one(key)`` (the upsert changes that
  post) or ``watch_count()`` (the upsert adds a post); each round times from just before
  ``repo.upsert(...)`` to the callback running on the watch thread (``time.perf_counter`` taken
  in the callback, a ``threading.Event`` to wait for it). Side ``baseline``: the same upsert,
  no subscriber, then a bare hand-off to a plain thread through a ``queue.SimpleQueue`` (what
  any design that calls back on another thread pays). Median and p99 are printed and kept in
  ``extra_info``, also measured from the moment ``upsert`` returned; pytest-benchmark's own
  figures are per round (upsert + callback + waking the waiting thread).
* W2, the cost of a commit: 200 single ``posts.upsert(...)`` per round (each its own
  transaction) with 0 subscribers (side ``baseline``), or 100/1,000 subscribers watching
  *another* table (``watch_one`` on notes: ``other-100``, ``other-1000``) or the *same* table
  (``watch_one`` on posts the round does not write: ``same-100``, ``same-1000``). Every
  subscriber has a watch of its own, so the watch thread re-runs one query per affected
  subscriber. Between rounds (not timed) the watch thread is drained: on the SQLite file a
  pause longer than the ``PRAGMA data_version`` poll (50 ms) first, then a marker change that
  the watch thread handles after everything queued before it. ``extra_info`` keeps the CPU
  time of the whole process per round, background work included.

Store files go under pytest's ``tmp_path``.

``python benchmarks/test_watch_bench.py [multiplier]`` runs W2 with the configurations
alternating round by round (a second opinion on a busy machine) and W1 again.
"""

from __future__ import annotations

import itertools
import queue
import statistics
import sys
import tempfile
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from bench_common import Post, make_posts, registry

import syncline

KINDS = ["sqlite-file", "memory"]
N_POPULATED = 1_000  # posts and notes in the store before measuring
LATENCY_ROUNDS = 300
LATENCY_SIDES = ["watch_one", "watch_count", "baseline"]
COMMITS = 200  # single-record upserts per W2 round
COMMIT_ROUNDS = 25
CONFIGS = {  # W2 side -> (watched table, subscribers)
    "baseline": (None, 0),
    "other-100": ("notes", 100),
    "other-1000": ("notes", 1_000),
    "same-100": ("posts", 100),
    "same-1000": ("posts", 1_000),
}
POLL_PAUSE = 0.07  # longer than the SQLite store's data_version poll interval (50 ms)


def group_latency(kind: str) -> str:
    return f"W1 {kind}: commit-to-callback latency"


def group_commit(kind: str) -> str:
    return f"W2 {kind}: {COMMITS} single-record commits vs watchers"


@registry.entity("watch_bench_notes")
@attrs.define
class Note:
    id: str
    text: str
    n: int = 0


NOTES = [Note(id=f"n{i:05d}", text=f"note {i}", n=i) for i in range(N_POPULATED)]


def open_store(kind: str, folder: Path, name: str) -> syncline.Store:
    """A store with N_POPULATED posts and notes."""
    url = f"sqlite:///{folder / f'{name}.db'}" if kind == "sqlite-file" else "memory://"
    store = syncline.open(url, entities=[Post, Note])
    return store


def populate(store: syncline.Store, posts: list[Post]) -> None:
    store.repository(Post).upsert_many(posts[:N_POPULATED])
    store.repository(Note).upsert_many(NOTES)


def subscribe(store: syncline.Store, watched: str | None, n: int) -> list[Any]:
    """``n`` subscribers, each with a ``watch_one`` of its own on posts or notes that the
    timed writes leave unchanged (so they re-query but deliver nothing)."""
    if watched is None or n == 0:
        return []
    repo: Any = store.repository(Post if watched == "posts" else Note)
    prefix = "p" if watched == "posts" else "n"
    keys = [f"{prefix}{i:0{6 if watched == 'posts' else 5}d}" for i in range(n)]
    return [repo.watch_one(k).subscribe(lambda _result: None) for k in keys]


def drain(store: syncline.Store, kind: str) -> None:
    """Wait until the watch thread has handled every change made so far (and, on the SQLite
    file, the data_version poll that notices them)."""
    if kind == "sqlite-file":
        time.sleep(POLL_PAUSE)
    hub = store.watches
    done = threading.Event()
    runs = itertools.count()
    marker = hub.watch(frozenset({"__drain__"}), lambda: next(runs))
    sub = marker.subscribe(lambda n: done.set() if n else None)
    hub.changed(frozenset({"__drain__"}))
    assert done.wait(30), "the watch thread did not catch up"
    sub.unsubscribe()


# -- W1: latency ------------------------------------------------------------------------------

class Latency:
    """Times ``upsert`` -> callback for one subscriber (side ``watch_one`` or ``watch_count``).

    Side ``baseline``: the same upsert as ``watch_one``, no subscriber; after it returns the
    committing thread puts a token on a ``queue.SimpleQueue`` served by a plain thread that
    runs the callback: the least a hand-off to another thread costs on this machine."""

    def __init__(self, store: syncline.Store, side: str, posts: list[Post]) -> None:
        self.repo = store.repository(Post)
        self.side = side
        self.event = threading.Event()
        self.called_at = 0.0
        self.samples: list[float] = []  # seconds from before upsert to the callback
        self.after_commit: list[float] = []  # seconds from upsert's return to the callback
        self.commit: list[float] = []  # seconds the upsert itself took
        self.handoff: queue.SimpleQueue[int | None] | None = None
        target = posts[0]
        fresh = iter(posts[N_POPULATED:])
        if side == "watch_count":
            self.next_write: Callable[[], Post] = lambda: next(fresh)
        else:
            counter = itertools.count(10_000)
            self.next_write = lambda: attrs.evolve(target, likes_count=next(counter))
        self.sub: Any = None
        if side == "baseline":
            handoff = self.handoff = queue.SimpleQueue()

            def serve() -> None:
                while handoff.get() is not None:
                    self._called(None)

            threading.Thread(target=serve, name="bench-handoff", daemon=True).start()
        else:
            watch: Any = (self.repo.watch_count() if side == "watch_count"
                          else self.repo.watch_one(target.id))
            self.sub = watch.subscribe(self._called)

    def _called(self, _result: Any) -> None:
        self.called_at = time.perf_counter()
        self.event.set()

    def once(self) -> None:
        post = self.next_write()
        self.event.clear()
        start = time.perf_counter()
        self.repo.upsert(post)
        returned = time.perf_counter()
        if self.handoff is not None:
            self.handoff.put(1)
        assert self.event.wait(5), "no callback"
        self.samples.append(self.called_at - start)
        self.after_commit.append(self.called_at - returned)
        self.commit.append(returned - start)

    def close(self) -> None:
        if self.sub is not None:
            self.sub.unsubscribe()
        if self.handoff is not None:
            self.handoff.put(None)

    def summary(self) -> dict[str, float]:
        def p99(xs: list[float]) -> float:
            return sorted(xs)[max(0, round(len(xs) * 0.99) - 1)]

        return {
            "latency_median_ms": statistics.median(self.samples) * 1e3,
            "latency_p99_ms": p99(self.samples) * 1e3,
            "after_return_median_ms": statistics.median(self.after_commit) * 1e3,
            "after_return_p99_ms": p99(self.after_commit) * 1e3,
            "upsert_median_ms": statistics.median(self.commit) * 1e3,
            "upsert_p99_ms": p99(self.commit) * 1e3,
            "samples": len(self.samples),
        }

    def line(self) -> str:
        info = self.summary()
        return (f"median {info['latency_median_ms']:.3f} ms, p99 {info['latency_p99_ms']:.3f} ms "
                f"(after upsert returned: median {info['after_return_median_ms']:.3f} ms, p99 "
                f"{info['after_return_p99_ms']:.3f} ms; the upsert itself: median "
                f"{info['upsert_median_ms']:.3f} ms, p99 {info['upsert_p99_ms']:.3f} ms)")


def _report(capsys: pytest.CaptureFixture[str], line: str) -> None:
    with capsys.disabled():
        print(f"\n    {line}", end="")


@pytest.mark.parametrize("side", LATENCY_SIDES)
@pytest.mark.parametrize("kind", KINDS)
def test_watch_latency(benchmark: Any, kind: str, side: str, tmp_path: Path,
                       posts: list[Post], capsys: pytest.CaptureFixture[str]) -> None:
    benchmark.group = group_latency(kind)
    store = open_store(kind, tmp_path, "latency")
    try:
        populate(store, posts)
        probe = Latency(store, side, posts)
        benchmark.pedantic(probe.once, rounds=LATENCY_ROUNDS, warmup_rounds=10)
        for samples in (probe.samples, probe.after_commit, probe.commit):
            del samples[:-LATENCY_ROUNDS]  # not the warmup rounds
        benchmark.extra_info.update(probe.summary())
        _report(capsys, f"{group_latency(kind)} [{side}]: {probe.line()}")
        probe.close()
    finally:
        store.close()


# -- W2: commit cost --------------------------------------------------------------------------

class CommitRounds:
    """One store with a W2 configuration; ``once()`` times COMMITS single upserts."""

    def __init__(self, kind: str, config: str, folder: Path, posts: list[Post],
                 fresh: Iterator[Post]) -> None:
        self.kind = kind
        self.store = open_store(kind, folder, f"commit-{config}")
        populate(self.store, posts)
        watched, n = CONFIGS[config]
        self.subs = subscribe(self.store, watched, n)
        self.watching = bool(self.subs)
        self.upsert = self.store.repository(Post).upsert
        self.fresh = fresh
        self.cpu: list[float] = []  # process CPU per round, drain included

    def batch(self) -> list[Post]:
        return [next(self.fresh) for _ in range(COMMITS)]

    def run(self, batch: list[Post]) -> None:
        upsert = self.upsert
        for post in batch:
            upsert(post)

    def settle(self) -> None:
        if self.watching:
            drain(self.store, self.kind)

    def once(self) -> float:
        """One round timed by hand (for the interleaved run); returns its wall time."""
        batch = self.batch()
        cpu = time.process_time()
        start = time.perf_counter()
        self.run(batch)
        took = time.perf_counter() - start
        self.settle()
        self.cpu.append(time.process_time() - cpu)
        return took

    def close(self) -> None:
        self.store.close()


@pytest.mark.parametrize("side", list(CONFIGS))
@pytest.mark.parametrize("kind", KINDS)
def test_commit_with_watchers(benchmark: Any, kind: str, side: str, tmp_path: Path,
                              posts: list[Post], capsys: pytest.CaptureFixture[str]) -> None:
    benchmark.group = group_commit(kind)
    rounds = CommitRounds(kind, side, tmp_path, posts, iter(posts[N_POPULATED:]))
    started: list[float] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        batch = rounds.batch()
        started.append(time.process_time())
        return (batch,), {}

    def teardown(_batch: list[Post]) -> None:
        rounds.settle()
        rounds.cpu.append(time.process_time() - started[-1])

    try:
        benchmark.pedantic(rounds.run, setup=setup, teardown=teardown, rounds=COMMIT_ROUNDS,
                           warmup_rounds=2)
        assert rounds.store.repository(Post).count() == N_POPULATED + COMMITS * (
            COMMIT_ROUNDS + 2)
    finally:
        rounds.close()
    cpu = statistics.median(rounds.cpu[2:]) * 1e3
    benchmark.extra_info["cpu_ms_per_round_median"] = cpu
    _report(capsys, f"{group_commit(kind)} [{side}]: process CPU per round (drain included) "
                    f"median {cpu:.1f} ms")


# -- interleaved second opinion ---------------------------------------------------------------

def main(scale: int = 1) -> None:
    posts = make_posts(N_POPULATED + COMMITS * 40 * scale * len(CONFIGS) + LATENCY_ROUNDS * scale
                       + 100)
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        for kind in KINDS:
            fresh = iter(posts[N_POPULATED:])
            configs = {c: CommitRounds(kind, c, folder, posts, fresh) for c in CONFIGS}
            wall: dict[str, list[float]] = {c: [] for c in CONFIGS}
            order = list(CONFIGS)
            for r in range(40 * scale):
                for c in order[r % len(order):] + order[:r % len(order)]:
                    wall[c].append(configs[c].once())
            base_min, base_median = min(wall["baseline"]), statistics.median(wall["baseline"])
            base_cpu = statistics.median(configs["baseline"].cpu)
            for c, times in wall.items():
                cpu = statistics.median(configs[c].cpu)
                print(f"{group_commit(kind):52s} {c:10s} min {min(times) * 1e3:7.2f} ms "
                      f"median {statistics.median(times) * 1e3:7.2f} ms  ratio min "
                      f"{min(times) / base_min:4.2f}x median "
                      f"{statistics.median(times) / base_median:4.2f}x  CPU/round "
                      f"{cpu * 1e3:7.2f} ms ({cpu / base_cpu:4.2f}x)", flush=True)
            for rounds in configs.values():
                rounds.close()
        for kind in KINDS:
            for side in LATENCY_SIDES:
                store = open_store(kind, folder, f"latency-{kind}-{side}")
                populate(store, posts)
                probe = Latency(store, side, posts)
                for _ in range(LATENCY_ROUNDS * scale):
                    probe.once()
                print(f"{group_latency(kind)} [{side}]: {probe.line()}", flush=True)
                probe.close()
                store.close()

if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
