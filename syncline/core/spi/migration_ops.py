"""What a backend implements for migrations: :class:`MigrationOps`, the storage side of the
:class:`syncline.Migrator` (``Backend.migration_ops()`` returns one)."""

from __future__ import annotations

import abc
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, TypeAlias

from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import (
    ColumnSpec,
    FieldSpec,
    IndexSpec,
    TableSpec,
    Trigger,
    View,
)

#: How a column of a rebuilt table gets its values: ``("copy", old_column)``,
#: ``("sql", expression over the old table)``, ``("call", function(old_row) -> value)`` or
#: ``("default", value)``.
Source: TypeAlias = tuple[str, Any]


class MigrationOps(abc.ABC):
    """What a backend does for the :class:`Migrator`; ``Backend.migration_ops()`` returns it."""

    #: "sqlite", "postgresql", "memory": picks the SQL of views and triggers
    dialect: str = ""
    #: True when SQL expressions, views, triggers and ``execute`` work
    sql: bool = False
    #: the store's declared views by name: a rebuilt table's views come back as declared
    declared_views: dict[str, View] = {}

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """The migration's transaction (SQLite: foreign keys off around it)."""

    @abc.abstractmethod
    def columns(self, table: str) -> list[str] | None:
        """The stored table's column names, or None when it does not exist."""

    def existing(self, tables: Sequence[str]) -> set[str]:
        """Which of ``tables`` exist. Opening a store asks this of every declared table: a
        backend answers it with one catalog query where it can."""
        return {name for name in tables if self.columns(name) is not None}

    @abc.abstractmethod
    def create_table(self, spec: TableSpec) -> None: ...

    @abc.abstractmethod
    def drop_table(self, name: str) -> None: ...

    @abc.abstractmethod
    def rename_table(self, old: str, new: str) -> None: ...

    @abc.abstractmethod
    def create_index(self, spec: TableSpec, index: IndexSpec) -> None: ...

    @abc.abstractmethod
    def drop_index(self, table: str, name: str) -> None: ...

    @abc.abstractmethod
    def add_column(self, spec: TableSpec, column: ColumnSpec) -> None: ...

    @abc.abstractmethod
    def drop_column(self, table: str, column: str) -> None: ...

    @abc.abstractmethod
    def rename_column(self, table: str, old: str, new: str) -> None: ...

    @abc.abstractmethod
    def alter_column(self, spec: TableSpec, column: ColumnSpec, using: str | None) -> None:
        """Give ``column`` of the stored table the type, nullability and default declared."""

    @abc.abstractmethod
    def rebuild(self, spec: TableSpec, sources: Mapping[str, Source],
                convert: Callable[[Any], Any]) -> int:
        """Rebuild the table as ``spec`` from the old one; keep its indexes and triggers, the
        views over it and the rows referencing it. ``convert`` turns a function's result into
        the stored form. Returns the number of rows copied."""

    def release(self) -> None:  # noqa: B027 - optional: only SQL backends borrow anything
        """Let go of what the operations borrowed from the transaction (before it ends)."""

    def foreign_key_violations(self) -> list[str]:
        """Rows whose foreign keys point nowhere (checked before the migration commits)."""
        return []

    def create_view(self, view: View) -> None:
        raise self._no_sql("views")

    def drop_view(self, name: str) -> None:
        raise self._no_sql("views")

    def create_trigger(self, trigger: Trigger) -> None:
        raise self._no_sql("triggers")

    def drop_trigger(self, name: str, table: str) -> None:
        raise self._no_sql("triggers")

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[
            tuple[Any, ...]]:
        """Run one statement; ``params`` bind its ``:name`` placeholders (and only then is
        ``:name`` a placeholder). A ``%`` is a literal ``%`` with or without them."""
        raise self._no_sql("SQL statements")

    def refresh_payloads(self, outbox: str, entity: str, source: TableSpec,
                         fields: Sequence[FieldSpec]) -> bool:
        """Optional, for speed: in the database, set the payload of ``entity``'s queued
        creates and updates not yet sent (rows of ``outbox`` with action create or update, a
        payload and a record_id, no group_id) to the wire form of their record in ``source``:
        the JSON object of ``fields`` by name. Return False to leave it to syncline (it then
        reads, converts and writes the entries in batches): for fields whose wire form the
        database cannot write exactly, or stored values their type does not allow."""
        return False

    @abc.abstractmethod
    def differences(self, specs: Sequence[TableSpec], views: Sequence[View],
                    triggers: Sequence[Trigger]) -> list[str]:
        """How the stored schema differs from the declared one, one line per difference."""

    def _no_sql(self, what: str) -> MigrationError:
        return MigrationError(
            f"this backend ({self.dialect}) cannot run {what}; it lacks the 'sql' capability")
