"""The one way syncline's own code writes rows: :class:`Writer`.

Each write goes to the backend and records its table as touched by the current transaction,
so watchers, commit listeners and ``syncline_after_commit`` hear of it when it commits; no
caller has to remember to say so. Repositories, the sync engine and the server all write
through ``store.writer``.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Protocol, TypeVar

from syncline.core.model.query import Condition
from syncline.core.model.schema import TableSpec
from syncline.core.spi.backend import Backend, Row

R = TypeVar("R")


class Transactions(Protocol):
    """What the writer needs of the store: its transactions and their touched tables."""

    def transaction(self) -> AbstractContextManager[None]: ...

    def in_transaction(self) -> bool: ...

    def touched(self, table: str) -> None: ...


class Writer:
    """Writes rows to ``backend`` and records the tables written (a write outside any
    transaction runs in one of its own, so it is announced too)."""

    def __init__(self, backend: Backend, store: Transactions) -> None:
        self.backend = backend
        self._store = store

    def _write(self, table: TableSpec, work: Callable[[], R], changed: Callable[[R], bool]
               ) -> R:
        if not self._store.in_transaction():
            with self._store.transaction():
                return self._write(table, work, changed)
        result = work()
        if changed(result):
            self._store.touched(table.name)
        return result

    def insert_values(self, table: TableSpec, rows: Sequence[Sequence[Any]]) -> None:
        self._write(table, lambda: self.backend.insert_values(table, rows), lambda _: bool(rows))

    def upsert_values(self, table: TableSpec, rows: Sequence[Sequence[Any]]) -> None:
        self._write(table, lambda: self.backend.upsert_values(table, rows), lambda _: bool(rows))

    def insert_many(self, table: TableSpec, rows: Sequence[Row]) -> None:
        self._write(table, lambda: self.backend.insert_many(table, rows), lambda _: bool(rows))

    def upsert_many(self, table: TableSpec, rows: Sequence[Row]) -> None:
        self._write(table, lambda: self.backend.upsert_many(table, rows), lambda _: bool(rows))

    def update(self, table: TableSpec, key: Any, values: Mapping[str, Any]) -> bool:
        return self._write(table, lambda: self.backend.update(table, key, values), bool)

    def update_where(self, table: TableSpec, where: Condition | None,
                     values: Mapping[str, Any]) -> int:
        return self._write(table, lambda: self.backend.update_where(table, where, values), bool)

    def update_values(self, table: TableSpec, columns: Sequence[str],
                      rows: Sequence[Sequence[Any]]) -> int:
        return self._write(table, lambda: self.backend.update_values(table, columns, rows),
                           bool)

    def delete_many(self, table: TableSpec, keys: Iterable[Any]) -> int:
        return self._write(table, lambda: self.backend.delete_many(table, keys), bool)

    def delete_where(self, table: TableSpec, where: Condition | None) -> int:
        return self._write(table, lambda: self.backend.delete_where(table, where), bool)

    def increment(self, table: TableSpec, key: Any, column: str, by: int = 1) -> int:
        return self._write(table, lambda: self.backend.increment(table, key, column, by),
                           lambda _: True)
