"""Two `syncline serve` processes over one PostgreSQL database: clients spread across them
converge exactly as with one server."""

from __future__ import annotations

import itertools
import subprocess
import sys
import time
from collections.abc import Iterator

import httpx
import pytest

import syncline
from syncline.testing.paging import read_every_page
from syncline.testing.server import free_port
from syncline.testing.transport_suite import Item

_n = itertools.count()


def serve(store_url: str, attempts: int = 5) -> tuple[subprocess.Popen[bytes], str]:
    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "syncline.cli", "serve", "--store", store_url, "--entities",
         "syncline.testing.transport_suite", "--host", "127.0.0.1", "--port", str(port),
         "--token", "t1=team"], stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    url = f"http://127.0.0.1:{port}/"
    deadline = time.monotonic() + 120  # a busy machine takes a while to start a process
    while time.monotonic() < deadline:
        try:
            if httpx.get(url + "v1/health", timeout=1).status_code == 200:
                return process, url
        except httpx.HTTPError:
            time.sleep(0.1)
        if process.poll() is not None:
            break
    process.kill()
    process.wait()
    why = process.stderr.read().decode()[-2000:] if process.stderr else ""
    if "address already in use" in why.lower() and attempts > 1:
        return serve(store_url, attempts - 1)  # the free port was taken before the bind
    raise RuntimeError(f"syncline serve did not start: {why}")


@pytest.fixture
def servers(syncline_postgres_url: str) -> Iterator[list[str]]:
    store = f"{syncline_postgres_url}?schema=procs{next(_n)}"
    started = [serve(store), serve(store)]
    try:
        yield [url for _, url in started]
    finally:
        for process, _ in started:
            process.terminate()
            process.wait(10)


def test_clients_spread_over_two_server_processes_converge(servers: list[str]) -> None:
    clients = [syncline.open("memory://", entities=[Item], transport=servers[i % 2],
                             transport_options={"token": "t1"}) for i in range(4)]
    try:
        for round_ in range(3):
            for i, store in enumerate(clients):
                items = store.repository(Item)
                items.upsert(Item(f"c{i}-{round_}", f"from client {i}", round_))
                items.upsert(Item("shared", f"client {i} round {round_}", i))
            for store in clients:
                assert store.sync().ok
        for _ in range(2):
            for store in clients:
                assert store.sync().ok
        first = clients[0].repository(Item).all()
        assert len(first) == 4 * 3 + 1
        for store in clients[1:]:
            assert store.repository(Item).all() == first
    finally:
        for store in clients:
            store.close()


def test_writers_and_paging_readers_over_two_processes_never_skip(servers: list[str]) -> None:
    """16 writers (creates, updates, deletes) and 4 readers paging with limits 1-8, spread
    over two server processes with no shared counter: each reader sees each record's changes
    in version order, none twice, and ends with exactly the records the writers left."""
    import random
    import threading

    from syncline.core.spi.transport import Mutation
    from syncline.plugins.http import HTTPTransport

    table = syncline.core.model.schema.spec_of(Item).table.name
    errors: list[BaseException] = []
    done = threading.Event()
    final: dict[str, int] = {}
    views: list[dict[str, tuple[int, str]]] = [{} for _ in range(4)]

    def write(w: int) -> None:
        rng = random.Random(w)
        versions: dict[str, int] = {}
        transport = HTTPTransport(servers[w % 2], {"token": "t1"})
        try:
            for i in range(10):
                batch = []
                for k in range(rng.randint(1, 3)):
                    rid = f"w{w}-{rng.randint(0, 4)}"
                    if any(m.record_id == rid for m in batch):
                        continue
                    mid = f"m-{w}-{i}-{k}"
                    if rid not in versions:
                        batch.append(Mutation(mid, table, "create", rid,
                                              {"id": rid, "name": "n", "size": i}))
                    elif rng.random() < 0.25:
                        batch.append(Mutation(mid, table, "delete", rid,
                                              base_version=versions[rid]))
                    else:
                        batch.append(Mutation(mid, table, "update", rid,
                                              {"id": rid, "name": "n", "size": i},
                                              versions[rid]))
                for m, r in zip(batch, transport.push(batch).results, strict=True):
                    assert r.status == "applied", r
                    if m.action == "delete":
                        del versions[m.record_id or ""]
                    else:
                        versions[m.record_id or ""] = r.version or 0
            final.update(versions)
        except BaseException as exc:
            errors.append(exc)
        finally:
            transport.close()

    def read(r: int) -> None:
        transport = HTTPTransport(servers[r % 2], {"token": "t1"})
        try:
            read_every_page(lambda cursor, limit: transport.pull(cursor, limit, [table]), done,
                            views[r], random.Random(100 + r))
        except BaseException as exc:
            errors.append(exc)
        finally:
            transport.close()

    readers = [threading.Thread(target=read, args=(r,)) for r in range(4)]
    writers = [threading.Thread(target=write, args=(w,)) for w in range(16)]
    for t in readers + writers:
        t.start()
    for t in writers:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert [repr(e) for e in errors] == []
    for view in views:
        assert {rid: v for rid, (v, op) in view.items() if op == "upsert"} == final
