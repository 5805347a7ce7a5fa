"""Migrations and sync together: a client's queue and a server's change log take the new shape,
so an upgraded client pushes what it queued before and a new client pulls what came before."""

from __future__ import annotations

from pathlib import Path

import attrs

import syncline
from syncline.core.model.schema import EntityRegistry
from syncline.plugins.mock import MockServer
from syncline.server.store import open_server_store

v1, v2 = EntityRegistry(), EntityRegistry()


@v1.entity("notes", syncs=True)
@attrs.define
class Note1:
    id: str
    text: str


@v2.entity("notes", syncs=True)
@attrs.define
class Note2:
    id: str
    body: str
    stars: int = 0


def to_2(m: syncline.Migrator) -> None:
    m.alter_table(syncline.TableMigration(Note2, renamed={"body": "text"},
                                          new_columns=["stars"]))


SCHEMA_1 = syncline.Schema(1, [Note1])
SCHEMA_2 = syncline.Schema(2, [Note2], migration=syncline.MigrationStrategy(
    on_upgrade=syncline.steps({2: to_2})))


def _server(path: Path, schema: syncline.Schema) -> MockServer:
    store = open_server_store(f"sqlite:///{path}", schema=schema,
                              options={"isolation": "read committed"})
    return MockServer("migrating", store=store)


def test_upgraded_client_pushes_its_old_queue_and_new_clients_pull_old_changes(
        tmp_path: Path) -> None:
    server = _server(tmp_path / "server.db", SCHEMA_1)
    a = syncline.open(f"sqlite:///{tmp_path}/a.db", schema=SCHEMA_1, transport="mock://migrating")
    notes = a.repository(Note1)
    notes.insert_many([Note1("n1", "one"), Note1("n2", "two"), Note1("n4", "gone")])
    assert a.sync().pushed == 3
    notes.delete("n4")  # the server's log keeps its upsert (old shape) and its delete
    assert a.sync().pushed == 1
    notes.update("n1", text="one, edited offline")
    notes.insert(Note1("n3", "three"))
    a.close()
    server.close()

    server = _server(tmp_path / "server.db", SCHEMA_2)  # the server goes first
    a = syncline.open(f"sqlite:///{tmp_path}/a.db", schema=SCHEMA_2, transport="mock://migrating")
    assert a.opening is not None and a.opening.had_upgrade
    report = a.sync()
    assert report.ok and report.pushed == 2, report
    b = syncline.open(f"sqlite:///{tmp_path}/b.db", schema=SCHEMA_2, transport="mock://migrating")
    assert b.sync().pulled >= 3  # every change since the start, n1 twice
    expected = [Note2("n1", "one, edited offline"), Note2("n2", "two"), Note2("n3", "three")]
    assert sorted(b.repository(Note2).all(), key=lambda n: n.id) == expected
    assert sorted(server.store.repository(Note2).all(), key=lambda n: n.id) == expected
    for store in (a, b):
        store.close()
    server.close()


def test_a_client_of_another_version_gets_a_clear_error(tmp_path: Path) -> None:
    server = _server(tmp_path / "server.db", SCHEMA_1)
    try:
        a = syncline.open(f"sqlite:///{tmp_path}/a.db", schema=SCHEMA_1,
                          transport="mock://migrating")
        a.repository(Note1).insert(Note1("n1", "one"))
        assert a.sync().pushed == 1
        a.close()
        b = syncline.open(f"sqlite:///{tmp_path}/b.db", schema=SCHEMA_2,
                          transport="mock://migrating")
        report = b.sync()  # the server refuses a client of another schema version, saying why
        assert not report.ok and report.quarantined == [] and b.quarantined() == []
        assert any("schema version 2, newer than the server's 1: upgrade the server" in f
                   for f in report.failures), report
        assert b.repository(Note2).all() == []
        b.close()
    finally:
        server.close()


def test_renaming_a_table_moves_the_servers_log_and_records(tmp_path: Path) -> None:
    v3 = EntityRegistry()

    @v3.entity("memos", syncs=True)
    @attrs.define
    class Memo:
        id: str
        text: str

    schema_3 = syncline.Schema(3, [Memo], migration=syncline.MigrationStrategy(
        on_upgrade=lambda m, o, n: m.rename_table("notes", Memo)))
    server = _server(tmp_path / "server.db", SCHEMA_1)
    a = syncline.open(f"sqlite:///{tmp_path}/a.db", schema=SCHEMA_1, transport="mock://migrating")
    a.repository(Note1).insert(Note1("n1", "one"))
    assert a.sync().pushed == 1
    a.repository(Note1).update("n1", text="queued before the rename")
    a.close()
    server.close()

    server = _server(tmp_path / "server.db", schema_3)
    a = syncline.open(f"sqlite:///{tmp_path}/a.db", schema=schema_3, transport="mock://migrating")
    report = a.sync()
    assert report.ok and report.pushed == 1, report  # the update found its server record
    b = syncline.open(f"sqlite:///{tmp_path}/b.db", schema=schema_3, transport="mock://migrating")
    b.sync()
    assert b.repository(Memo).all() == [Memo("n1", "queued before the rename")]
    for store in (a, b):
        store.close()
    server.close()
