"""Sync state in queries: ``F.sync.status``, ``F.sync.retry_count``, ``F.sync.modified_at``.

On a syncing entity a query may filter and order by the sync state of its records. The state
lives in syncline's record-state table, one row per record under the key
``"<table>/<primary key>"``; a backend answers such a query as if the entity's table had three
more nullable columns, named as below, taken from that row (a LEFT JOIN in SQL: a record with
no state has NULLs there). Only reads use them (``find``, ``first``, ``count``, ``exists``).
"""

from __future__ import annotations

from collections.abc import Iterable

import attrs

from syncline.core.model.query import Compare, Condition, Not, Query
from syncline.core.model.schema import ColumnSpec, Kind, TableSpec

#: syncline's record-state table (``RecordState`` in ``syncline.core.sync.outbox``)
STATE_TABLE = "_syncline_records"
#: its primary key: ``"<table>/<record id>"``
STATE_KEY = "key"
#: query field name -> (the record-state table's column, its kind)
SYNC_FIELDS: dict[str, tuple[str, Kind]] = {
    "sync.status": ("status", "text"),
    "sync.retry_count": ("retry_count", "integer"),
    "sync.modified_at": ("local_modified_at", "datetime"),
}


def state_key_prefix(table: str) -> str:
    """What a record's state key starts with: the key is this plus the record's id."""
    return f"{table}/"


def sync_fields_of(names: Iterable[str]) -> list[str]:
    return [n for n in names if n in SYNC_FIELDS]


def query_uses_sync(query: Query) -> bool:
    """Whether ``query`` filters or orders by a sync field (on every read: kept cheap)."""
    return (any(o.field in SYNC_FIELDS for o in query.order_by)
            or where_uses_sync(query.where))


def where_uses_sync(where: Condition | None) -> bool:
    if where is None:
        return False
    if isinstance(where, Compare):
        return where.field in SYNC_FIELDS
    if isinstance(where, Not):
        return where_uses_sync(where.item)
    return any(where_uses_sync(item) for item in where.items)


def with_sync_columns(spec: TableSpec) -> TableSpec:
    """``spec`` with the sync fields as extra nullable columns (what a joined query reads)."""
    extra = tuple(ColumnSpec(name, kind, nullable=True) for name, (_, kind) in SYNC_FIELDS.items())
    return attrs.evolve(spec, columns=spec.columns + extra, indexes=(), foreign_keys=(),
                        checks=())
