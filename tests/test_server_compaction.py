"""The server's compacted change log, the retention of tombstones and mutation results, and
the upgrade of older server stores (issue 17), on memory, SQLite and PostgreSQL."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest

import syncline
from syncline.core.model.errors import InvalidCursorError
from syncline.core.spi.transport import Mutation
from syncline.core.storage.migration import execute
from syncline.core.store import Store
from syncline.server.engine import SyncServer
from syncline.server.store import open_server_store, upgrade_server_tables
from syncline.server.tables import AppliedMutation, ChangeEntry

registry = syncline.EntityRegistry()
_n = itertools.count()


@registry.entity("compact_items", syncs=True)
@attrs.define
class Item:
    id: str
    n: int


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return f"memory://compact{next(_n)}"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/server.db"
    base: str = request.getfixturevalue("syncline_postgres_url")
    return f"{base}?schema=compact{next(_n)}"


@pytest.fixture
def store(url: str) -> Iterator[Store]:
    with open_server_store(url, [Item], options={"isolation": "read committed"}
                           if url.startswith("postgresql") else {}) as s:
        yield s


def pull_all(server: SyncServer, cursor: str | None = None,
             limit: int = 7) -> tuple[list[tuple[str, str]], str]:
    got = []
    while True:
        page = server.pull(cursor, limit)
        got += [(c.record_id, c.op) for c in page.changes]
        cursor = page.cursor
        if not page.more:
            return got, cursor


def history(server: SyncServer, records: int, updates: int) -> None:
    """``records`` records each updated ``updates`` times, every other one deleted."""
    versions = {}
    for r in range(records):
        res = server.push([Mutation(f"c{r}", "compact_items", "create", f"r{r}",
                                    {"id": f"r{r}", "n": 0})]).results[0]
        versions[r] = res.version
    for u in range(updates):
        results = server.push([Mutation(f"u{r}-{u}", "compact_items", "update", f"r{r}",
                                        {"id": f"r{r}", "n": u + 1}, versions[r])
                               for r in range(records)]).results
        versions = {r: res.version for r, res in zip(range(records), results, strict=True)}
    server.push([Mutation(f"d{r}", "compact_items", "delete", f"r{r}",
                          base_version=versions[r]) for r in range(0, records, 2)])


def test_a_pull_from_the_start_returns_one_entry_per_live_record(store: Store) -> None:
    server = SyncServer(store, purge_interval=None)
    _, old = pull_all(server)  # a client that synced before any of it
    history(server, 20, 5)
    assert store.repository(ChangeEntry).count() == 20  # one entry per record
    fresh, _ = pull_all(server)
    assert sorted(fresh) == sorted((f"r{r}", "upsert") for r in range(1, 20, 2))
    # an older client learns of the deletions: tombstones after its cursor
    since, _ = pull_all(server, old)
    assert sorted(since) == sorted((f"r{r}", "delete" if r % 2 == 0 else "upsert")
                                   for r in range(20))


def test_a_deletion_during_a_first_sync_still_reaches_it(store: Store) -> None:
    server = SyncServer(store, purge_interval=None)
    history(server, 10, 1)
    page = server.pull(None, 2)  # the first page of a snapshot: r1, r3
    assert page.more
    got = {c.record_id for c in page.changes}
    gone = sorted(got)[0]
    version = store.repository(syncline.server.tables.ServerRecord).get(
        f"anonymous/compact_items/{gone}")
    assert version is not None
    [res] = server.push([Mutation("late-delete", "compact_items", "delete", gone,
                                  base_version=version.version)]).results
    assert res.status == "applied"
    rest, _ = pull_all(server, page.cursor)
    assert (gone, "delete") in rest  # the tombstone came after the snapshot began


def test_tombstones_past_their_retention_are_dropped_and_old_cursors_refused(
        store: Store) -> None:
    server = SyncServer(store, purge_interval=None, tombstone_retention=dt.timedelta(0),
                        mutation_retention=None)
    _, old = pull_all(server)
    history(server, 6, 1)
    _, recent = pull_all(server)
    dropped, results = server.purge(server.now() + dt.timedelta(seconds=1))
    assert (dropped, results) == (3, 0)
    assert store.repository(ChangeEntry).count() == 3
    with pytest.raises(InvalidCursorError, match="retention"):
        server.pull(old, 10)
    assert server.pull(recent, 10).changes == []  # it had seen the deletions
    fresh, _ = pull_all(server)
    assert sorted(fresh) == [("r1", "upsert"), ("r3", "upsert"), ("r5", "upsert")]
    # a deleted record's id can be created again
    [res] = server.push([Mutation("again", "compact_items", "create", "r0",
                                  {"id": "r0", "n": 9})]).results
    assert res.status == "applied"


def test_a_replay_after_the_mutation_retention_is_never_applied_twice(store: Store) -> None:
    server = SyncServer(store, purge_interval=None, mutation_retention=dt.timedelta(0))
    create = Mutation("m-create", "compact_items", "create", "x", {"id": "x", "n": 1})
    [first] = server.push([create]).results
    update = Mutation("m-update", "compact_items", "update", "x", {"id": "x", "n": 2},
                      first.version)
    [second] = server.push([update]).results
    assert server.purge(server.now() + dt.timedelta(seconds=1))[1] == 2
    assert store.repository(AppliedMutation).count() == 0
    # the create again: the record says what became of it, nothing is created twice
    [again] = server.push([create]).results
    assert again.status == "conflict" and again.version == second.version
    assert again.record == {"id": "x", "n": 2}
    # the update again: its base version is stale
    [again] = server.push([update]).results
    assert again.status == "conflict" and again.version == second.version
    # deleted since: the replayed create still does not bring it back
    server.push([Mutation("m-delete", "compact_items", "delete", "x",
                          base_version=second.version)])
    server.purge(server.now() + dt.timedelta(seconds=1))  # the replay's own answer too
    [again] = server.push([create]).results
    assert again.status == "conflict" and again.record is None
    assert store.repository(Item).get("x") is None


def test_an_older_server_store_is_upgraded_on_open(url: str) -> None:
    if url.startswith("memory"):
        pytest.skip("a memory store is never older than its code")
    options = {"isolation": "read committed"} if url.startswith("postgresql") else {}
    with open_server_store(url, [Item], options=options) as s:
        server = SyncServer(s, purge_interval=None)
        server.push([Mutation("m1", "compact_items", "create", "a", {"id": "a", "n": 1})])
        _, cursor = pull_all(server)
        # what an earlier syncline left: no txid, applied_at, created_by; no sequence
        for table, column in (("_syncline_changes", "txid"), ("_syncline_mutations",
                                                             "applied_at"),
                              ("_syncline_server_records", "created_by")):
            if url.startswith("postgresql"):
                execute(s, f"ALTER TABLE {table} DROP COLUMN {column} CASCADE")
            else:
                execute(s, f"ALTER TABLE {table} DROP COLUMN {column}")
        if url.startswith("postgresql"):
            execute(s, "DROP SEQUENCE _syncline_change_seq")
    with open_server_store(url, [Item], options=options) as s:
        assert upgrade_server_tables(s) == []  # done on open, once
        server = SyncServer(s, purge_interval=None)
        assert server.pull(cursor, 10).changes == []  # its cursors stay valid
        [res] = server.push([Mutation("m2", "compact_items", "create", "b",
                                      {"id": "b", "n": 2})]).results
        assert res.status == "applied" and (res.version or 0) > 1
        page = server.pull(cursor, 10)
        assert [c.record_id for c in page.changes] == ["b"]
