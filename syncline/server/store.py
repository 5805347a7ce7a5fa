"""A sync server's store: the entities it serves beside the server's own tables.

Open it with :func:`open_server_store`. Its migrations keep the server's tables in step through
a :class:`~syncline.core.migration.MigrationListener` (:class:`ServerTablesFollow`), and its
writes queue nothing: the server's store is the truth clients sync with, not a replica.
"""

from __future__ import annotations

from collections.abc import Iterable
from typing import Any

import attrs

from syncline.core.migration import MigrationListener, MigrationStrategy
from syncline.core.query import F
from syncline.core.schema import spec_of
from syncline.core.store import Store, open_store
from syncline.server.tables import SERVER_ENTITIES, ChangeEntry, ServerRecord


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
    return store


class ServerTablesFollow(MigrationListener):
    """A server's change log and record metadata follow its store's migrations."""

    def on_rename_table(self, store: Store, old: str, new: str) -> None:
        """The log's entries and the records' metadata take the table's new name."""
        store.repository(ChangeEntry).update_where(F.entity == old, entity=new)
        records = store.repository(ServerRecord)
        found = records.find(F.entity == old)
        if found:
            records.delete_many([r.key for r in found])
            records.insert_many([attrs.evolve(r, key=f"{r.owner}/{new}/{r.record_id}",
                                              entity=new) for r in found])

    def after_upgrade(self, store: Store, from_version: int, to_version: int) -> None:
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
