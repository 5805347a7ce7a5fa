"""1,000 idle live clients on one server process: its resident memory and its CPU while idle.

Starts ``syncline serve`` (SQLite store) in a subprocess, opens ``--clients`` live streams
(raw asyncio connections in this process, reading their events), waits until every stream has
its ``ready`` event, then measures the server process's resident memory and the CPU time it
uses over ``--idle`` seconds in which nothing is written (heartbeats only), from
``/proc/<pid>``. Then one push: how long until every stream has its ``change`` event.

Run: ``PYTHONPATH=. python benchmarks/live_idle.py [--clients 1000] [--idle 30]``; with
``--burst 10000 --clients 100`` it pushes a burst of changes instead and reports whether every
stream was told of the last one.
"""

from __future__ import annotations

import argparse
import asyncio
import json
import os
import resource
import tempfile
import time
from pathlib import Path

import httpx

from syncline.testing.chaos import ServerProcess


def rss_mb(pid: int) -> float:
    for line in Path(f"/proc/{pid}/status").read_text().splitlines():
        if line.startswith("VmRSS:"):
            return int(line.split()[1]) / 1024
    return 0.0


def cpu_seconds(pid: int) -> float:
    fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    return (int(fields[11]) + int(fields[12])) / os.sysconf("SC_CLK_TCK")


async def stream(port: int, ready: asyncio.Event, counts: list[int], i: int,
                 everyone: int, last: list[int] | None = None) -> None:
    reader, writer = await asyncio.open_connection("127.0.0.1", port)
    writer.write(b"GET /v1/changes/live HTTP/1.1\r\nHost: x\r\n"
                 b"Authorization: Bearer t1\r\nAccept: text/event-stream\r\n\r\n")
    await writer.drain()
    while True:
        line = await reader.readline()
        if not line:
            return
        if line.startswith(b"data:") and last is not None:
            last[i] = max(last[i], json.loads(line[5:])["seq"])
        if line.startswith(b"event:"):
            counts[i] += 1
            if all(counts) and not ready.is_set() and sum(c > 0 for c in counts) == everyone:
                ready.set()


async def main(clients: int, idle: float) -> None:
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (min(hard, max(soft, 4 * clients)), hard))
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(
            f"sqlite:///{tmp}/server.db", entities="syncline.testing.transport_suite",
            tokens={"t1": "team"}, args=["--max-live-clients", str(clients)],
            log=Path(tmp) / "server.log") as server:
        assert server.process is not None
        pid = server.process.pid
        base_rss = rss_mb(pid)
        counts = [0] * clients
        ready = asyncio.Event()
        tasks = [asyncio.create_task(stream(server.port, ready, counts, i, clients))
                 for i in range(clients)]
        await asyncio.wait_for(ready.wait(), 300)
        await asyncio.sleep(2)
        cpu0, t0 = cpu_seconds(pid), time.monotonic()
        await asyncio.sleep(idle)
        cpu = cpu_seconds(pid) - cpu0
        wall = time.monotonic() - t0
        rss = rss_mb(pid)
        before = list(counts)
        started = time.monotonic()
        async with httpx.AsyncClient() as client:
            answer = await client.post(server.url + "v1/push", headers={
                "Authorization": "Bearer t1"}, json={"mutations": [{
                    "id": "m1", "entity": "transport_items", "action": "create",
                    "record_id": "r1", "payload": {"id": "r1", "name": "n", "size": 0}}]})
            assert answer.status_code == 200
        while any(c == b for c, b in zip(counts, before, strict=True)):
            await asyncio.sleep(0.005)
            if time.monotonic() - started > 120:
                break
        fanout = time.monotonic() - started
        told = sum(c > b for c, b in zip(counts, before, strict=True))
        for task in tasks:
            task.cancel()
        print(json.dumps({
            "clients": clients, "rss_mb_before": round(base_rss, 1), "rss_mb": round(rss, 1),
            "idle_s": round(wall, 1), "idle_cpu_s": round(cpu, 3),
            "idle_core_percent": round(100 * cpu / wall, 2),
            "one_push_told": told, "one_push_all_told_ms": round(fanout * 1000, 1),
            "load": os.getloadavg()}, indent=2))


async def burst(clients: int, changes: int, batch: int = 500) -> None:
    """``changes`` changes pushed in batches of ``batch`` while ``clients`` streams listen:
    how many notices each got, and whether each one's last notice names the last change
    (then one pull after it brings everything: nobody is more than one pull behind)."""
    with tempfile.TemporaryDirectory() as tmp, ServerProcess(
            f"sqlite:///{tmp}/server.db", entities="syncline.testing.transport_suite",
            tokens={"t1": "team"}, log=Path(tmp) / "server.log") as server:
        counts, last = [0] * clients, [0] * clients
        ready = asyncio.Event()
        tasks = [asyncio.create_task(stream(server.port, ready, counts, i, clients, last))
                 for i in range(clients)]
        await asyncio.wait_for(ready.wait(), 300)
        started = time.monotonic()
        top = 0
        async with httpx.AsyncClient(timeout=120) as client:
            for first in range(0, changes, batch):
                answer = await client.post(server.url + "v1/push", headers={
                    "Authorization": "Bearer t1"}, json={"mutations": [{
                        "id": f"m{n}", "entity": "transport_items", "action": "create",
                        "record_id": f"r{n}", "payload": {"id": f"r{n}", "name": "n",
                                                          "size": n}}
                        for n in range(first, min(changes, first + batch))]})
                top = max(r["version"] for r in answer.json()["results"])
        pushed = time.monotonic() - started
        while min(last) < top and time.monotonic() - started < 300:
            await asyncio.sleep(0.005)
        told = time.monotonic() - started
        for task in tasks:
            task.cancel()
        print(json.dumps({
            "clients": clients, "changes": changes, "batch": batch,
            "pushed_s": round(pushed, 2), "all_told_of_the_last_s": round(told, 2),
            "behind_after": sum(s < top for s in last),
            "notices_per_client": {"min": min(counts) - 1, "max": max(counts) - 1},
            "load": os.getloadavg()}, indent=2))


if __name__ == "__main__":
    parser = argparse.ArgumentParser()
    parser.add_argument("--clients", type=int, default=1000)
    parser.add_argument("--idle", type=float, default=30.0)
    parser.add_argument("--burst", type=int, default=0,
                        help="instead: push this many changes to --clients streams")
    args = parser.parse_args()
    if args.burst:
        asyncio.run(burst(args.clients, args.burst))
    else:
        asyncio.run(main(args.clients, args.idle))
