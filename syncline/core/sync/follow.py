"""The sync queue and record states follow the store's migrations (a MigrationListener)."""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

import attrs

from syncline.core.model.errors import MigrationError, SynclineError
from syncline.core.model.query import F
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
        _rewrite_queued_payloads(store, self.outbox)


def _syncing(store: LocalStore) -> dict[str, type]:
    """The store's syncing entities by table name."""
    return {store.spec(c).table.name: c for c in store.entities if store.spec(c).syncs}


def _rewrite_queued_payloads(store: LocalStore, outbox: Outbox) -> None:
    """Queued creates and updates carry the record as it was written; after a migration they
    carry it as the migrated row, so what is pushed has the new version's shape."""
    syncing = _syncing(store)
    if not syncing:
        return
    entries = outbox.entries.find(F.action.in_(["create", "update"])
                                  & F.entity.in_(sorted(syncing)))
    by_entity: dict[str, list[Any]] = {}
    for entry in entries:
        # One already sent (group_id) keeps its payload: the server may have applied it under
        # its id and answers a retry from its record only if the payload is unchanged.
        if entry.payload is not None and entry.record_id is not None and entry.group_id is None:
            by_entity.setdefault(entry.entity, []).append(entry)
    changed = []
    for name, group in by_entity.items():
        repo: Any = store.repository(syncing[name])
        try:
            pk = store.spec(syncing[name]).primary_key
            rows = {getattr(r, pk): r for r in repo.get_many(
                sorted({e.record_id for e in group}))}
        except SynclineError as exc:
            raise MigrationError(
                f"after the migration, rows of {name!r} with queued changes no longer read "
                f"as {syncing[name].__name__}: {exc}") from exc
        for entry in group:
            obj = rows.get(entry.record_id)
            if obj is not None:
                entry.payload = store.wire.unstructure(obj)
                changed.append(entry)
    outbox.entries.upsert_many(changed)  # one batch, not one update per entry


def _rename_sync_state(outbox: Outbox, old: str, new: str) -> None:
    outbox.entries.update_where(F.entity == old, entity=new)
    states = outbox.states.find(F.entity == old)
    if states:
        outbox.states.delete_many([s.key for s in states])
        outbox.states.insert_many([attrs.evolve(s, key=state_key(new, s.record_id), entity=new)
                                   for s in states])
