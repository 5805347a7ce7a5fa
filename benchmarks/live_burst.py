"""A burst of changes to connected devices that pull when told: does any fall behind?

Starts ``syncline serve`` (SQLite store) in a subprocess, opens ``--clients`` devices in this
process (``memory://`` stores, each with its sync worker listening to the live stream, polling
only every hour), waits until every stream is open, then pushes ``--burst`` creates in pushes
of ``--batch`` from another client. Each device pulls (whole rounds, page after page) as its
stream tells it; the run ends when every device holds every record.

Reported per device, then summed up: notices heard, pull rounds started, and **pulls behind**:
the rounds that started after its last notice and still brought changes. One at most is the
contract (the notice came after the commit, so the next round from the cursor brings it all);
more would mean the device fell behind by more than one pull. (A round that starts as a notice
arrives counts after it, and the notice then costs one more round that brings nothing: the
raw count of rounds after the last notice can be 2 without anyone being behind.) Also the
time from the last push to the last device holding everything, and the CPU time of the
devices' process and the server's.

Run: ``PYTHONPATH=. python benchmarks/live_burst.py [--clients 100] [--burst 10000]``.
"""

from __future__ import annotations

import argparse
import json
import os
import resource
import tempfile
import threading
import time
import uuid
from pathlib import Path
from typing import Any

from live_idle import cpu_seconds

import syncline
from syncline.core.model.schema import spec_of
from syncline.core.spi.transport import Mutation
from syncline.plugins.http import HTTPTransport
from syncline.testing.chaos import ServerProcess
from syncline.testing.transport_suite import ENTITIES, Item

NEVER = 3600.0


class Device:
    """A client store whose worker pulls when its stream tells it, counted."""

    def __init__(self, url: str) -> None:
        self.store = syncline.open("memory://", entities=ENTITIES, transport=url,
                                   transport_options={"token": "t1"})
        self.lock = threading.Lock()
        self.reset()
        engine = self.store.sync_engine
        sync = engine.sync

        def counted() -> Any:
            with self.lock:
                self.rounds += 1
                after = self.notices
            report = sync()
            with self.lock:
                self.failed += bool(report.failures)
                if report.pulled and after == self.notices:  # no notice since it started
                    self.fruitful_since_notice += 1
            return report

        engine.sync = counted  # type: ignore[method-assign]
        self.worker = self.store.start_sync_worker(interval=NEVER, fallback=NEVER, live=False)
        self.worker.listen(self.told)  # the worker's own listener, counting its notices

    def told(self) -> None:
        with self.lock:
            self.notices += 1
            self.rounds_at_last_notice = self.rounds
            self.fruitful_since_notice = 0
        self.worker._notice()

    def reset(self) -> None:
        with self.lock:
            self.notices = self.rounds = self.rounds_at_last_notice = self.failed = 0
            #: rounds that pulled changes and started after the last notice
            self.fruitful_since_notice = 0

    def holds(self) -> int:
        return self.store.repository(Item).count()


def mutation(n: int) -> Mutation:
    return Mutation(uuid.uuid4().hex, spec_of(Item).table.name, "create", f"r{n}",
                    {"id": f"r{n}", "name": "burst", "size": n})


def main(clients: int, changes: int, batch: int) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 8 * clients)), hard))
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(
            f"sqlite:///{tmp}/server.db", entities="syncline.testing.transport_suite",
            tokens={"t1": "team"}, args=["--max-live-clients", str(clients + 10)],
            log=Path(tmp) / "server.log") as server:
        assert server.process is not None
        devices = [Device(server.url) for _ in range(clients)]
        deadline = time.monotonic() + 300
        while not all(d.worker.streaming and d.worker.rounds for d in devices):
            assert time.monotonic() < deadline, "the streams did not all open"
            time.sleep(0.05)
        time.sleep(1.0)  # the first rounds end
        for device in devices:
            device.reset()
        pusher = HTTPTransport(server.url, {"token": "t1"})
        cpu_server, cpu_here = cpu_seconds(server.process.pid), time.process_time()
        started = time.monotonic()
        for first in range(0, changes, batch):
            answer = pusher.push([mutation(n) for n in range(first, min(changes, first + batch))])
            assert all(r.status == "applied" for r in answer.results)
        pushed = time.monotonic() - started
        done: dict[int, float] = {}
        while len(done) < clients and time.monotonic() - started < 900:
            for i, device in enumerate(devices):
                if i not in done and device.holds() == changes:
                    done[i] = time.monotonic() - started
            time.sleep(0.05)
        time.sleep(0.5)  # rounds under way end
        after = [d.rounds - d.rounds_at_last_notice for d in devices]
        behind = [d.fruitful_since_notice for d in devices]
        report = {
            "clients": clients, "changes": changes, "batch": batch,
            "pushed_s": round(pushed, 2),
            "all_hold_everything_s": round(max(done.values(), default=0.0), 2),
            "after_the_last_push_s": round(max(done.values(), default=0.0) - pushed, 2),
            "devices_holding_everything": len(done),
            "notices_per_device": {"min": min(d.notices for d in devices),
                                   "max": max(d.notices for d in devices)},
            "pull_rounds_per_device": {"min": min(d.rounds for d in devices),
                                       "max": max(d.rounds for d in devices)},
            "rounds_failed": sum(d.failed for d in devices),
            "rounds_after_the_last_notice": {"min": min(after), "max": max(after)},
            "rounds_bringing_changes_after_the_last_notice": {"min": min(behind),
                                                              "max": max(behind)},
            "devices_behind_by_more_than_one_pull": sum(b > 1 for b in behind),
            "their_failed_rounds": [d.failed for d, b in zip(devices, behind, strict=True)
                                    if b > 1],
            "cpu_s": {"server": round(cpu_seconds(server.process.pid) - cpu_server, 1),
                      "devices": round(time.process_time() - cpu_here, 1)},
            "load": os.getloadavg()}
        print(json.dumps(report, indent=2), flush=True)
        pusher.close()
        for device in devices:
            device.store.close()


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=100)
    parser.add_argument("--burst", type=int, default=10_000)
    parser.add_argument("--batch", type=int, default=500)
    args = parser.parse_args()
    main(args.clients, args.burst, args.batch)
