"""The server lives in syncline.server: core declares internal tables, announces migrations to
listeners and queues nothing for a server's store, without knowing the server exists."""

from __future__ import annotations

import importlib
import warnings
from pathlib import Path
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.model.errors import ConfigurationError, EntityDefinitionError
from syncline.core.model.schema import EntityRegistry, internal_entity, is_internal
from syncline.core.storage.migration import MigrationListener
from syncline.server import SyncServer, open_server_store
from syncline.server.tables import SERVER_ENTITIES, ChangeEntry

v1, v2 = EntityRegistry(), EntityRegistry()


@v1.entity("layout_notes", syncs=True)
@attrs.define
class Note:
    id: str
    text: str


@v2.entity("layout_memos", syncs=True)
@attrs.define
class Memo:
    id: str
    text: str


def test_internal_entity_declares_a_syncline_table_in_its_own_registry() -> None:
    own = EntityRegistry()

    @internal_entity(own, "_syncline_layout_test", primary_key="key")
    @attrs.define
    class Row:
        key: str

    assert is_internal(Row) and own.entities() == [Row]
    assert all(is_internal(cls) for cls in SERVER_ENTITIES)
    with pytest.raises(EntityDefinitionError, match="must start with '_syncline'"):
        internal_entity(own, "layout_rows")
    with pytest.raises(EntityDefinitionError, match="cannot sync"):
        internal_entity(own, "_syncline_layout_synced", syncs=True)


def test_a_server_store_queues_none_of_its_own_writes() -> None:
    with open_server_store("memory://", [Note]) as store:
        assert not store.outbox.queues_writes
        server = SyncServer(store)
        server.write(Note("n1", "by the server"))
        assert store.outbox.all_pending() == []
        assert [c.record_id for c in store.repository(ChangeEntry).all()] == ["n1"]


def test_a_server_needs_a_store_with_its_tables() -> None:
    with syncline.open("memory://", entities=[Note]) as store, \
            pytest.raises(ConfigurationError, match="open_server_store"):
        SyncServer(store)


def test_migrations_announce_renames_and_upgrades_to_listeners(tmp_path: Path) -> None:
    heard: list[tuple[Any, ...]] = []

    class Recorder(MigrationListener):
        def on_rename_table(self, store: syncline.Store, old: str, new: str) -> None:
            heard.append(("rename", old, new))

        def after_upgrade(self, store: syncline.Store, from_version: int,
                          to_version: int) -> None:
            heard.append(("upgraded", from_version, to_version))

    url = f"sqlite:///{tmp_path}/server.db"
    with open_server_store(url, schema=syncline.Schema(1, [Note])) as store:
        SyncServer(store).write(Note("n1", "one"))
    schema_2 = syncline.Schema(2, [Memo], migration=syncline.MigrationStrategy(
        on_upgrade=lambda m, old, new: m.rename_table("layout_notes", Memo),
        listeners=[Recorder()]))
    with open_server_store(url, schema=schema_2) as store:
        assert heard == [("rename", "layout_notes", "layout_memos"), ("upgraded", 1, 2)]
        # the server's own listener moved its log with the table
        assert [c.entity for c in store.repository(ChangeEntry).all()] == ["layout_memos"]


def test_the_old_module_warns_and_gives_the_same_names() -> None:
    with warnings.catch_warnings():
        warnings.simplefilter("ignore", DeprecationWarning)
        old = importlib.import_module("syncline.core.serverside")
    with pytest.warns(DeprecationWarning, match="syncline.server.engine"):
        old = importlib.reload(old)
    assert old.SyncServer is SyncServer and old.SERVER_ENTITIES is SERVER_ENTITIES
