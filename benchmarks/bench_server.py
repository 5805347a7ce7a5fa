"""Server-side helpers the sync and HTTP benchmarks share."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

import syncline
from syncline.core.model.schema import spec_of
from syncline.server.engine import SyncServer
from syncline.server.tables import ChangeEntry, ServerMeta, ServerRecord, record_key


def prefill(store: syncline.Store, server: SyncServer, entity: type, objs: Sequence[Any],
            owner: str, mutation_ids: bool = False) -> None:
    """Write ``objs`` on ``server`` (over ``store``) as pushed creates by ``owner`` would be
    written, in one transaction: the entity rows, change-log entries at the next sequence
    numbers with the wire payloads (and mutation ids ``m-<id>`` with ``mutation_ids``), server
    records at those versions, then the counter moved past them. (A server's store does not
    queue its own writes, so the entity rows go through its repository.)"""
    assert not store.outbox.queues_writes
    name = spec_of(entity).table.name
    unstructure = store.wire.unstructure
    now = server.now()
    with store.transaction():
        counter = server.meta.get("seq")
        start = counter.value if counter else 0
        store.repository(entity).upsert_many(objs)
        server.changes.insert_many(
            ChangeEntry(start + i, owner, name, o.id, "upsert", now, unstructure(o),
                        f"m-{o.id}" if mutation_ids else None)
            for i, o in enumerate(objs, 1))
        server.records.upsert_many(
            ServerRecord(record_key(owner, name, o.id), owner, name, o.id, start + i, now)
            for i, o in enumerate(objs, 1))
        server.meta.upsert(ServerMeta("seq", start + len(objs)))
