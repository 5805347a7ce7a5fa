"""The row contract's dict methods on top of tuple fast paths, for SQL backends (no SQL
library imported: the SQLite backend runs without SQLAlchemy)."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any

from syncline.core.model.query import Query
from syncline.core.model.schema import TableSpec

Row = dict[str, Any]


class TupleRowsMixin:
    """For backends whose driver speaks tuples: the contract's dict methods on top of the
    tuple fast paths, and both write paths on one ``_write_values(table, kind, rows)``."""

    def get_values(self, table: TableSpec, key: Any) -> tuple[Any, ...] | None:
        raise NotImplementedError

    def get_many_values(self, table: TableSpec, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def query_values(self, table: TableSpec, query: Query) -> list[tuple[Any, ...]]:
        raise NotImplementedError

    def _write_values(self, table: TableSpec, kind: str,
                      rows: Sequence[Sequence[Any]]) -> None:
        raise NotImplementedError

    def get(self, table: TableSpec, key: Any) -> Row | None:
        row = self.get_values(table, key)
        return None if row is None else dict(zip(table.column_names, row, strict=False))

    def get_many(self, table: TableSpec, keys: Sequence[Any]) -> list[Row]:
        names = table.column_names
        return [dict(zip(names, r, strict=False)) for r in self.get_many_values(table, keys)]

    def query(self, table: TableSpec, query: Query) -> list[Row]:
        names = table.column_names
        return [dict(zip(names, r, strict=False)) for r in self.query_values(table, query)]

    def insert_values(self, table: TableSpec, rows: Sequence[Sequence[Any]]) -> None:
        self._write_values(table, "insert", rows)

    def upsert_values(self, table: TableSpec, rows: Sequence[Sequence[Any]]) -> None:
        self._write_values(table, "upsert", rows)

    def insert_many(self, table: TableSpec, rows: Sequence[Row]) -> None:
        names = table.column_names
        self._write_values(table, "insert", [[r[n] for n in names] for r in rows])

    def upsert_many(self, table: TableSpec, rows: Sequence[Row]) -> None:
        names = table.column_names
        self._write_values(table, "upsert", [[r[n] for n in names] for r in rows])
