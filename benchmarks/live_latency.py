"""Live sync latency: from a commit on device A to a watcher on device B seeing it.

Starts ``syncline serve`` in a subprocess on 127.0.0.1 (``--store``: a SQLite file by default,
or a PostgreSQL URL), opens devices A and B (``memory://`` stores in this process, each with
its sync worker), and ``--rounds`` times: A inserts a record (its worker pushes at once:
debounce 0), B's ``repository.watch()`` subscriber notes when the record appears. The latency
is the time from A's commit returning to B's watcher being called.

Two modes, one after the other against the same server:

* ``live``: B's worker polls every hour and pulls when the live stream tells it to;
* ``polling``: B's worker has no stream and polls every ``--poll-interval`` seconds (30 s is
  the worker's default; 1 s here to keep the run short; the latency is about half of it).

Run: ``PYTHONPATH=. python benchmarks/live_latency.py [--rounds 200] [--store URL]``.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import resource
import statistics
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import syncline
from syncline.testing.chaos import ServerProcess
from syncline.testing.transport_suite import ENTITIES, Item


def percentile(values: list[float], p: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, round(p / 100 * (len(ordered) - 1)))]


def measure(url: str, rounds: int, live: bool, poll: float, gap: float) -> list[float]:
    a = syncline.open("memory://", entities=ENTITIES, transport=url,
                      transport_options={"token": "t1"})
    b = syncline.open("memory://", entities=ENTITIES, transport=url,
                      transport_options={"token": "t2"})
    seen: dict[str, float] = {}
    arrived = threading.Condition()

    def watched(items: list[Item]) -> None:
        now = time.perf_counter()
        with arrived:
            for item in items:
                seen.setdefault(item.id, now)
            arrived.notify_all()

    try:
        a.start_sync_worker(interval=3600, debounce=0.0)
        worker = b.start_sync_worker(interval=3600 if live else poll, live=live)
        deadline = time.monotonic() + 60
        while live and not worker.streaming and time.monotonic() < deadline:
            time.sleep(0.01)
        b.repository(Item).watch().subscribe(watched)
        latencies = []
        tag = "live" if live else "poll"
        for i in range(rounds):
            rid = f"{tag}-{i}-{time.time_ns()}"
            a.repository(Item).insert(Item(rid, "x", i))
            committed = time.perf_counter()
            with arrived:
                if not arrived.wait_for(lambda rid=rid: rid in seen, 60):
                    raise RuntimeError(f"{rid} never reached B")
            latencies.append(seen[rid] - committed)
            time.sleep(random.uniform(0, gap))  # at random moments, as a user's writes
        return latencies
    finally:
        a.close()
        b.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--rounds", type=int, default=200)
    parser.add_argument("--store", default=None, help="the server's store (default: SQLite; "
                        "'postgresql': a throwaway PostgreSQL server)")
    parser.add_argument("--poll-interval", type=float, default=1.0)
    parser.add_argument("--gap", type=float, default=0.1,
                        help="at most this many seconds between two writes (live mode)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp, contextlib.ExitStack() as stack:
        store = args.store or f"sqlite:///{tmp}/server.db"
        if store == "postgresql":
            from syncline.testing.postgres import start_postgres

            store = stack.enter_context(start_postgres()).url + "?schema=live_bench"
        with ServerProcess(store, entities="syncline.testing.transport_suite",
                           tokens={"t1": "team", "t2": "team"},
                           log=Path(tmp) / "server.log") as server:
            load = os.getloadavg()
            cpu = resource.getrusage(resource.RUSAGE_SELF)
            results: dict[str, Any] = {"store": store.split(":")[0], "load_before": load}
            for mode, live in (("live", True), ("polling", False)):
                rounds = args.rounds if live else max(20, args.rounds // 5)
                gap = args.gap if live else args.poll_interval  # any phase of the polls
                lat = measure(server.url, rounds, live, args.poll_interval, gap)
                results[mode] = {"rounds": rounds,
                                 "p50_ms": round(statistics.median(lat) * 1000, 1),
                                 "p99_ms": round(percentile(lat, 99) * 1000, 1),
                                 "max_ms": round(max(lat) * 1000, 1)}
            after = resource.getrusage(resource.RUSAGE_SELF)
            results["client_cpu_s"] = round(after.ru_utime + after.ru_stime
                                            - cpu.ru_utime - cpu.ru_stime, 2)
            results["load_after"] = os.getloadavg()
            results["poll_interval_s"] = args.poll_interval
    print(json.dumps(results, indent=2))


if __name__ == "__main__":
    main()
