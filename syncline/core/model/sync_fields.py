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

from syncline.core.model.query import Condition, Query, condition_fields
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
    """Whether ``query`` filters or orders by a sync field."""
    return bool(sync_fields_of(query.fields()))


def where_uses_sync(where: Condition | None) -> bool:
    return where is not None and bool(sync_fields_of(condition_fields(where)))


def with_sync_columns(spec: TableSpec) -> TableSpec:
    """``spec`` with the sync fields as extra nullable columns (what a joined query reads)."""
    extra = tuple(ColumnSpec(name, kind, nullable=True) for name, (_, kind) in SYNC_FIELDS.items())
    return attrs.evolve(spec, columns=spec.columns + extra, indexes=(), foreign_keys=(),
                        checks=())
