"""A sync server's store: the entities it serves beside the server's own tables.

Open it with :func:`open_server_store`. Its migrations keep the server's tables in step through
a :class:`~syncline.core.storage.migration.MigrationListener` (:class:`ServerTablesFollow`), and its
writes queue nothing: the server's store is the truth clients sync with, not a replica.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from syncline.core.model.query import F
from syncline.core.model.schema import spec_of
from syncline.core.storage.local import LocalStore
from syncline.core.storage.opening import MigrationListener, MigrationStrategy
from syncline.core.store import Store, open_store
from syncline.server.order import POSITION_INDEX, SEQUENCE
from syncline.server.tables import (
    SERVER_ENTITIES,
    AppliedMutation,
    ChangeEntry,
    ServerRecord,
    record_key,
)


def open_server_store(url: str | None = None, entities: Iterable[type] = (),
                      **options: Any) -> Store:
    """Open the store of a sync server serving ``entities``, with the server's own tables.

    ``options`` are those of :func:`syncline.open` (``schema``, ``migration``, ``clock``,
    ``options``...). The migration strategy (given, or the schema's) gets
    :class:`ServerTablesFollow` as a listener, and writes to the store queue no mutations.
    """
    schema = options.get("schema")
    strategy = (options.pop("migration", None)
                or (schema.migration if schema is not None else None) or MigrationStrategy())
    strategy = attrs.evolve(strategy, listeners=[*strategy.listeners, ServerTablesFollow()])
    store = open_store(url, entities=[*entities, *SERVER_ENTITIES], migration=strategy,
                       **options)
    store.outbox.queues_writes = False
    try:
        upgrade_server_tables(store)
    except BaseException:
        store.close()
        raise
    return store


#: columns the server's tables gained since their first release (added to older stores)
_ADDED_COLUMNS: list[tuple[type, str]] = [
    (ChangeEntry, "txid"), (AppliedMutation, "applied_at"), (ServerRecord, "created_by")]


def _missing(store: Store, ops: Any) -> list[str]:
    """What an older server store lacks: columns, the log's position index, the sequence."""
    found: list[str] = []
    for cls, column in _ADDED_COLUMNS:
        name = spec_of(cls).table.name
        columns = ops.columns(name)
        if columns is not None and column not in columns:
            found.append(f"column {name}.{column}")
    if ops.dialect == "postgresql":
        rows = ops.execute(
            "SELECT c.relname FROM pg_class c WHERE c.relname IN (:seq, :index) "
            "AND c.relnamespace = current_schema()::regnamespace",
            {"seq": SEQUENCE, "index": POSITION_INDEX})
        have = {r[0] for r in rows}
        found += [f"{what} {name}" for what, name in (("sequence", SEQUENCE),
                                                       ("index", POSITION_INDEX))
                  if name not in have]
    return found


def upgrade_server_tables(store: Store) -> list[str]:
    """Bring the server's own tables of an older store up to this version; what was added.

    A server store created by an earlier syncline lacks the columns in ``_ADDED_COLUMNS``
    (and on PostgreSQL the change sequence and the log's position index). They are added on
    open, under the store's migration lock, once; an up-to-date store is only looked at.
    Existing log entries keep txid 0: they sort before every new one, in their old order,
    which is the order their counter gave them, so cursors issued before the upgrade stay
    valid. The sequence starts above the old counter.
    """
    ops = store.backend.migration_ops()
    if not ops.sql:
        return []  # memory: created with every column, never older
    with store.backend.transaction():
        try:
            missing = _missing(store, ops)
        finally:
            ops.release()
    if not missing:
        return []
    with ops.transaction():
        missing = _missing(store, ops)  # again, under the lock: another process may have
        for cls, column in _ADDED_COLUMNS:
            spec = spec_of(cls).table
            columns = ops.columns(spec.name)
            if columns is not None and column not in columns:
                ops.add_column(spec, spec.column(column))
        if ops.dialect == "postgresql":
            ops.execute(f"CREATE SEQUENCE IF NOT EXISTS {SEQUENCE}")
            ops.execute(
                f"SELECT setval('{SEQUENCE}', GREATEST((SELECT last_value FROM {SEQUENCE}), "
                "(SELECT COALESCE(max(value), 0) FROM _syncline_server_meta "
                "WHERE key = 'seq'), (SELECT COALESCE(max(seq), 0) FROM _syncline_changes), 1))")
            ops.execute(f"CREATE INDEX IF NOT EXISTS {POSITION_INDEX} ON _syncline_changes "
                        "(owner, txid, seq)")
    return missing


class ServerTablesFollow(MigrationListener):
    """A server's change log and record metadata follow its store's migrations."""

    def on_rename_table(self, store: LocalStore, old: str, new: str) -> None:
        """The log's entries and the records' metadata take the table's new name."""
        store.repository(ChangeEntry).update_where(F.entity == old, entity=new)
        records = store.repository(ServerRecord)
        found = records.find(F.entity == old)
        if found:
            records.delete_many([r.key for r in found])
            records.insert_many([attrs.evolve(r, key=record_key(r.owner, new, r.record_id),
                                              entity=new) for r in found])

    def after_upgrade(self, store: LocalStore, from_version: int, to_version: int) -> None:
        """The change log's payloads take the migrated rows' shape, so clients of the new
        version pulling older changes can read them (a record's upserts all carry its current
        row; those of records deleted since are dropped, their delete stays)."""
        changes = store.repository(ChangeEntry)
        for cls in store.entities:
            spec = spec_of(cls)
            if not spec.syncs:
                continue
            upserts = changes.find((F.entity == spec.table.name) & (F.op == "upsert"))
            repo: Any = store.repository(cls)
            found = {getattr(o, spec.primary_key): o
                     for o in repo.get_many(sorted({c.record_id for c in upserts}))}
            payloads = {rid: store.wire.unstructure(obj) for rid, obj in found.items()}
            # Records deleted since: their later delete entry says all a client needs.
            changes.delete_many([c.seq for c in upserts if c.record_id not in found])
            kept = [c for c in upserts if c.record_id in found]
            for c in kept:
                c.payload = payloads[c.record_id]
            changes.upsert_many(kept)
