"""Two `syncline serve` processes over one PostgreSQL database: clients spread across them
converge exactly as with one server."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

import syncline
from syncline.testing.chaos import ServerProcess
from syncline.testing.paging import push_random_changes, read_every_page
from syncline.testing.transport_suite import Item

_n = itertools.count()


@pytest.fixture
def servers(syncline_postgres_url: str, tmp_path: Path) -> Iterator[list[str]]:
    store = f"{syncline_postgres_url}?schema=procs{next(_n)}"
    with contextlib.ExitStack() as stack:
        started = [ServerProcess(store, entities="syncline.testing.transport_suite",
                                 tokens={"t1": "team"}, log=tmp_path / f"server{i}.log")
                   for i in range(2)]
        for server in started:
            stack.callback(server.stop)
            server.start(timeout=120)  # a busy machine takes a while to start a process
        yield [server.url for server in started]


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

    from syncline.plugins.http import HTTPTransport

    table = syncline.core.model.schema.spec_of(Item).table.name
    errors: list[BaseException] = []
    done = threading.Event()
    final: dict[str, int] = {}
    views: list[dict[str, tuple[int, str]]] = [{} for _ in range(4)]

    def write(w: int) -> None:
        transport = HTTPTransport(servers[w % 2], {"token": "t1"})
        try:
            final.update(push_random_changes(
                transport.push, table, w, 10, lambda rid, i: {"id": rid, "name": "n", "size": i},
                most=3, records=5))
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
