"""Pull never skips or repeats a change, with many concurrent writers on PostgreSQL, where
writers of different records commit concurrently and in any order (no shared counter row):
readers stop at the transaction-id watermark (syncline.server.order)."""

from __future__ import annotations

import itertools
import random
import threading
import time
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.spi.transport import Mutation
from syncline.core.storage.migration import execute
from syncline.core.store import Store
from syncline.plugins.mock import MockServer
from syncline.server.engine import SyncServer, _Batch
from syncline.server.order import PostgresOrder
from syncline.server.store import open_server_store
from syncline.server.tables import ChangeEntry, ServerRecord
from syncline.testing.paging import push_random_changes, read_every_page

registry = syncline.EntityRegistry()
_n = itertools.count()


@registry.entity("log_items", syncs=True)
@attrs.define
class Item:
    id: str
    n: int


@pytest.fixture
def store(syncline_postgres_url: str) -> Iterator[Store]:
    url = f"{syncline_postgres_url}?schema=changelog{next(_n)}"
    with open_server_store(url, [Item],
                           options={"isolation": "read committed", "pool_size": 24}) as s:
        yield s


def test_concurrent_writers_and_readers_never_skip_a_change(store: Store) -> None:
    """16 writers (creates, updates and deletes of their own and of shared records), 4 readers
    paging with limits 1-8: each reader sees every record's changes in version order, never
    one twice, and ends with exactly the server's state."""
    server = SyncServer(store, purge_interval=None)
    assert isinstance(server.order, PostgresOrder)
    writers, rounds, errors = 16, 12, []
    done = threading.Event()
    views: list[dict[str, tuple[int, str]]] = [{} for _ in range(4)]

    def write(w: int) -> None:
        try:
            push_random_changes(server.push, "log_items", w, rounds,
                                lambda rid, i: {"id": rid, "n": i})
        except BaseException as exc:
            errors.append(exc)

    def read(r: int) -> None:
        try:
            read_every_page(server.pull, done, views[r], random.Random(100 + r))
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(r,)) for r in range(4)]
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert [repr(e) for e in errors] == []
    records = {r.record_id: r for r in store.repository(ServerRecord).all()}
    log = store.repository(ChangeEntry).all()
    assert len(log) == len(records)  # one entry per record: its latest change
    for view in views:
        live = {rid: v for rid, (v, op) in view.items() if op == "upsert"}
        assert live == {rid: r.version for rid, r in records.items() if not r.deleted}


def test_a_transaction_held_open_holds_pulls_back_until_it_commits(store: Store) -> None:
    """The adversarial case: a writer takes its transaction id and sequence number, then
    stays open while later writers commit. A reader must not pass it (else the held change,
    committed later at an earlier position, would be skipped); once it commits, the reader
    gets it and every later change, each once."""
    server = SyncServer(store, purge_interval=None)
    server.push([Mutation("m-0", "log_items", "create", "before", {"id": "before", "n": 0})])
    first = server.pull(None, 100)
    assert [c.record_id for c in first.changes] == ["before"]
    holding, release, held_result = threading.Event(), threading.Event(), []

    def held() -> None:
        def work() -> Any:
            results = _Batch(server, "anonymous").apply(
                [Mutation("m-held", "log_items", "create", "held", {"id": "held", "n": 1})])
            holding.set()
            assert release.wait(60)
            return results

        held_result.extend(store.run_transaction(work))

    thread = threading.Thread(target=held)
    thread.start()
    assert holding.wait(60)
    later = [server.push([Mutation(f"m-{i}", "log_items", "create", f"later{i}",
                                   {"id": f"later{i}", "n": i})]).results[0]
             for i in range(1, 6)]
    assert all(r.status == "applied" for r in later)
    # the held writer numbered its change first: the later ones are above it...
    assert held_result == [] and all((r.version or 0) > 0 for r in later)
    # ...and committed, yet a reader does not pass the open transaction
    page = server.pull(first.cursor, 100)
    assert page.changes == [] and not page.more
    fresh = server.pull(None, 100)
    assert [c.record_id for c in fresh.changes] == ["before"]
    # both tell the client that committed changes wait behind the open transaction
    assert not page.settled and not fresh.settled and first.settled
    release.set()
    thread.join(60)
    assert [r.status for r in held_result] == ["applied"]
    got = []
    cursor = page.cursor
    while True:
        page = server.pull(cursor, 2)
        got += [c.record_id for c in page.changes]
        cursor = page.cursor
        if not page.more:
            break
    assert sorted(got) == sorted(["held", *(f"later{i}" for i in range(1, 6))])
    assert len(got) == len(set(got)) and page.settled


def _hold_create(server: SyncServer, store: Store) -> tuple[threading.Thread, threading.Event]:
    """A transaction that creates record "busy" and stays open until the event is set."""
    holding, release = threading.Event(), threading.Event()

    def held() -> None:
        def work() -> None:
            _Batch(server, "anonymous").apply(
                [Mutation("h", "log_items", "create", "busy", {"id": "busy", "n": 0})])
            holding.set()
            assert release.wait(60)

        store.run_transaction(work)

    thread = threading.Thread(target=held)
    thread.start()
    assert holding.wait(60)
    return thread, release


def _wait_for_a_queued_lock(store: Store, racer: threading.Thread) -> None:
    deadline = time.monotonic() + 60
    while not execute(store, "SELECT count(*) FROM pg_locks WHERE locktype = 'advisory' "
                             "AND NOT granted")[0][0]:
        assert time.monotonic() < deadline and racer.is_alive()
        time.sleep(0.01)


def test_writers_of_different_records_do_not_wait_for_each_other(store: Store) -> None:
    """A push of other records commits while another writer's transaction is open (with the
    old counter row it would wait for it); a push of the same record waits."""
    server = SyncServer(store, purge_interval=None)
    thread, release = _hold_create(server, store)
    other = server.push([Mutation("o", "log_items", "create", "free", {"id": "free", "n": 0})])
    assert other.results[0].status == "applied"  # did not wait for the open transaction
    same: list[Any] = []
    racer = threading.Thread(target=lambda: same.extend(server.push(
        [Mutation("s", "log_items", "create", "busy", {"id": "busy", "n": 1})]).results))
    racer.start()
    _wait_for_a_queued_lock(store, racer)  # the racer queues on the record's lock
    assert same == []
    release.set()
    thread.join(60)
    racer.join(60)
    assert [r.status for r in same] == ["conflict"]  # it saw the committed create


def test_a_writer_waiting_for_a_record_holds_no_txid_and_no_numbers(store: Store) -> None:
    """A batch claims its locks, numbers and txid in one statement: while it waits for a
    record's lock it has drawn no number and has no txid (so it holds no reader's watermark
    back), and once it runs its version is above the holder's."""
    server = SyncServer(store, purge_interval=None)
    thread, release = _hold_create(server, store)
    drawn = execute(store, "SELECT last_value FROM _syncline_change_seq")[0][0]  # the holder's
    same: list[Any] = []
    racer = threading.Thread(target=lambda: same.extend(server.push(
        [Mutation("u", "log_items", "update", "busy", {"n": 1}, drawn)]).results))
    racer.start()
    _wait_for_a_queued_lock(store, racer)
    waiting = execute(store, "SELECT a.backend_xid FROM pg_locks l JOIN pg_stat_activity a "
                             "ON a.pid = l.pid WHERE l.locktype = 'advisory' AND NOT l.granted")
    assert waiting == [(None,)]
    assert execute(store, "SELECT last_value FROM _syncline_change_seq")[0][0] == drawn
    release.set()
    thread.join(60)
    racer.join(60)
    held = server.records.get("anonymous/log_items/busy")
    assert [r.status for r in same] == ["applied"] and held is not None
    assert same[0].version == held.version and held.version > drawn


def test_a_first_pull_behind_an_open_transaction_keeps_what_the_device_pushed(
        store: Store) -> None:
    """A device's first sync pushes, then pulls from the start, which takes the synced records
    it does not meet for deleted on the server. Behind another writer's open transaction the
    device's own committed creates are not readable yet: they must be kept (they were removed,
    and a delete made before the next pull was lost), and a record deleted meanwhile is
    still removed once the server's answer is settled."""
    server = MockServer(f"held-{next(_n)}", entities=[Item], store=store)
    phone = syncline.open("memory://", entities=[Item], transport=f"mock://{server.name}")
    laptop = syncline.open("memory://", entities=[Item], transport=f"mock://{server.name}")
    laptop.repository(Item).insert(Item("gone", 0))
    assert laptop.sync().ok
    phone.repository(Item).upsert_from_server([Item("gone", 0)])  # synced, about to vanish
    laptop.repository(Item).delete("gone")
    assert laptop.sync().ok
    thread, release = _hold_create(server.server, store)
    try:
        items = phone.repository(Item)
        items.insert_many([Item("a", 1), Item("b", 2)])
        report = phone.sync()
        assert report.ok and report.pushed == 2, report
        assert {i.id for i in items.all()} == {"a", "b", "gone"}  # nothing decided yet
        items.delete("a")  # made while the server holds changes back: it must go out
    finally:
        release.set()
        thread.join(60)
    assert phone.sync().ok
    assert {i.id for i in items.all()} == {"b", "busy"}  # "gone" swept once settled
    assert {i.id for i in store.repository(Item).all()} == {"b", "busy"}
    assert phone.outbox.get_meta("resync") is None
