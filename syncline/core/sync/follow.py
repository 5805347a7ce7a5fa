"""The sync queue and record states follow the store's migrations (a MigrationListener)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from syncline.core.model.errors import MigrationError, SynclineError
from syncline.core.model.query import Condition, F, Query
from syncline.core.storage.opening import MigrationListener
from syncline.core.sync.outbox import Outbox, state_key

if TYPE_CHECKING:
    from syncline.core.storage.local import LocalStore


class SyncStateFollows(MigrationListener):
    """The store's sync queue and record states follow its migrations: a renamed table's
    entries and states take the new name; after an upgrade, queued payloads take the migrated
    rows' shape. A syncing store subscribes it before any other listener."""

    def __init__(self, outbox: Outbox) -> None:
        self.outbox = outbox

    def on_rename_table(self, store: LocalStore, old: str, new: str) -> None:
        _rename_sync_state(self.outbox, old, new)

    def after_upgrade(self, store: LocalStore, from_version: int, to_version: int) -> None:
        _drop_unsent_bases(store, self.outbox)
        _rewrite_queued_payloads(store, self.outbox)


def _syncing(store: LocalStore) -> dict[str, type]:
    """The store's syncing entities by table name."""
    return {store.spec(c).table.name: c for c in store.entities if store.spec(c).syncs}


#: queued entries rewritten per batch: memory stays bounded whatever the queue's length
REWRITE_BATCH = 5000


def _rewrite_queued_payloads(store: LocalStore, outbox: Outbox) -> None:
    """Queued creates and updates carry the record as it was written; after a migration they
    carry it as the migrated row, so what is pushed has the new version's shape.

    Streams the queue in batches of :data:`REWRITE_BATCH` entries in id order, as stored
    tuples (no entry objects): each batch reads its records, encodes their payloads and
    writes the entries back in one statement."""
    syncing = _in_python(store, outbox, _syncing(store))
    if not syncing:
        return
    entries = outbox.entries
    table = entries.table
    columns = table.column_names
    id_at, entity_at, record_at, payload_at = (
        columns.index(c) for c in ("id", "entity", "record_id", "payload"))
    # One already sent (group_id) keeps its payload: the server may have applied it under
    # its id and answers a retry from its record only if the payload is unchanged.
    wanted = (F.action.in_(["create", "update"]) & F.entity.in_(sorted(syncing))
              & F.payload.is_not_null() & F.record_id.is_not_null() & F.group_id.is_null())
    backend = store.backend
    encode = entries.codec.encode
    after: Any = None
    while True:
        where = wanted if after is None else wanted & (F.id > after)
        rows = backend.query_values(table, Query.build(where, "id", REWRITE_BATCH))
        if not rows:
            break
        after = rows[-1][id_at]
        by_entity: dict[str, list[tuple[Any, ...]]] = {}
        for row in rows:
            by_entity.setdefault(row[entity_at], []).append(row)
        changed = []
        for name, group in by_entity.items():
            payloads = _payloads(store, syncing[name], name, {r[record_at] for r in group})
            for row in group:
                payload = payloads.get(row[record_at])
                if payload is not None:
                    changed.append((*row[:payload_at], encode("payload", payload),
                                    *row[payload_at + 1:]))
        if changed:
            store.writer.upsert_values(table, changed)


def _in_python(store: LocalStore, outbox: Outbox, syncing: dict[str, type]) -> dict[str, type]:
    """Let the database rewrite what it can in one statement; what is left, by table name."""
    if not syncing:
        return syncing
    ops = store.backend.migration_ops()
    try:
        return {name: cls for name, cls in syncing.items() if not ops.refresh_payloads(
            outbox.entries.table.name, name, store.spec(cls).table, store.spec(cls).fields)}
    finally:
        ops.release()


def _payloads(store: LocalStore, cls: type, name: str, keys: set[Any]) -> dict[Any, Any]:
    """The wire form of the migrated records ``keys`` of ``cls``, by key."""
    repo: Any = store.repository(cls)
    pk = store.spec(cls).primary_key
    unstructure = store.wire.unstructure
    key: Any = None
    out = {}
    try:
        for record in repo.get_many(sorted(keys)):
            key = getattr(record, pk)
            out[key] = unstructure(record)
    except SynclineError as exc:
        which = "rows" if key is None else f"the row {key!r}"
        raise MigrationError(
            f"after the migration, {which} of {name!r} (with queued changes) no longer read "
            f"as {cls.__name__}: {exc}; convert the values in the migration (a "
            f"column_transformer or alter_column(using=...))") from exc
    return out


def _drop_unsent_bases(store: LocalStore, outbox: Outbox) -> None:
    """The kept bases of unsent updates name the old version's fields: drop them, so those
    updates are sent as whole records (of the migrated row). A sent one keeps its own: its
    retry must be the same mutation."""
    syncing = sorted(_syncing(store))
    if not syncing:
        return
    sent = sorted({e.id for e in outbox.entries.find(F.group_id.is_not_null())})
    where: Condition = F.entity.in_(syncing)
    if sent:
        where = where & ~F.id.in_(sent)
    outbox.bases.delete_where(where)


def _rename_sync_state(outbox: Outbox, old: str, new: str) -> None:
    outbox.entries.update_where(F.entity == old, entity=new)
    outbox.bases.update_where(F.entity == old, entity=new)
    states = outbox.states.find(F.entity == old)
    if states:
        outbox.states.delete_many([s.key for s in states])
        outbox.states.insert_many([attrs.evolve(s, key=state_key(new, s.record_id), entity=new)
                                   for s in states])
