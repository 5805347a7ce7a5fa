"""Migrations on the memory backend: each change builds the table anew and swaps it in.

The swap is logged like a dropped and created table, so rolling the migration back puts the old
table object back, rows and all. Views, triggers and SQL expressions need an SQL backend.
"""

from __future__ import annotations

from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import ColumnSpec, IndexSpec, TableSpec, Trigger, View
from syncline.core.storage.migration import MigrationOps, Source

if TYPE_CHECKING:
    from syncline.backends.memory import MemoryBackend, MemoryTable

_TRUE = frozenset({"true", "t", "yes", "y", "on", "1"})
_FALSE = frozenset({"false", "f", "no", "n", "off", "0"})


def _to_bool(value: Any) -> bool:
    if isinstance(value, str):  # as PostgreSQL reads booleans, not Python's bool("false")
        text = value.strip().lower()
        if text in _TRUE or text in _FALSE:
            return text in _TRUE
        raise ValueError(f"{value!r} is not a boolean")
    return bool(value)


_CASTS: dict[str, Callable[[Any], Any]] = {
    "text": str, "integer": int, "float": float, "boolean": _to_bool,
}


class MemoryMigrationOps(MigrationOps):
    dialect = "memory"
    sql = False

    def __init__(self, backend: MemoryBackend) -> None:
        self.backend = backend

    @contextmanager
    def transaction(self) -> Iterator[None]:
        with self.backend.transaction():
            yield

    def _get(self, name: str) -> MemoryTable:
        table = self.backend.db.tables.get(name)
        if table is None:
            raise MigrationError(f"table {name!r} does not exist in {self.backend.url}")
        return table

    def _swap(self, name: str, spec: TableSpec, rows: Mapping[Any, dict[str, Any]]) -> None:
        from syncline.backends.memory import MemoryTable

        new = MemoryTable(spec)
        for key, row in rows.items():
            new.put(key, row)
        old = self.backend.db.tables.get(name)
        self.backend.db.tables[name] = new
        # Logged as drop + create + rows, so subclasses that persist commits (the jsonl
        # example) write the new table out; rolling back undoes them in reverse.
        if old is not None:
            self.backend._log("drop", name, None, old)
        self.backend._log("create", name, None, None)
        for key in new.rows:
            self.backend._log("row", name, key, None)

    def columns(self, table: str) -> list[str] | None:
        found = self.backend.db.tables.get(table)
        return None if found is None else list(found.spec.column_names)

    def create_table(self, spec: TableSpec) -> None:
        self.backend.create_table(spec)

    def drop_table(self, name: str) -> None:
        self.backend.drop_table(name)

    def rename_table(self, old: str, new: str) -> None:
        table = self._get(old)
        if new in self.backend.db.tables:
            raise MigrationError(f"cannot rename table {old!r} to {new!r}: {new!r} exists")
        self.backend.drop_table(old)
        self._swap(new, attrs.evolve(table.spec, name=new), table.rows)

    def create_index(self, spec: TableSpec, index: IndexSpec) -> None:
        table = self._get(spec.name)
        if index not in table.spec.indexes:
            new = attrs.evolve(table.spec, indexes=(*table.spec.indexes, index))
            self._swap(spec.name, new, table.rows)

    def drop_index(self, table: str, name: str) -> None:
        t = self._get(table)
        kept = tuple(i for i in t.spec.indexes if i.name != name)
        self._swap(table, attrs.evolve(t.spec, indexes=kept), t.rows)

    def add_column(self, spec: TableSpec, column: ColumnSpec) -> None:
        t = self._get(spec.name)
        if column.name in t.spec.column_names:
            raise MigrationError(f"column {spec.name}.{column.name} already exists")
        new = attrs.evolve(t.spec, columns=(*t.spec.columns, column))
        self._swap(spec.name, new, {k: {**r, column.name: column.default}
                                    for k, r in t.rows.items()})

    def drop_column(self, table: str, column: str) -> None:
        t = self._get(table)
        col = t.spec.column(column)
        if col.primary_key:
            raise MigrationError(f"cannot drop {table}.{column}: it is the primary key")
        used = [i.name for i in t.spec.indexes if column in i.columns]
        if used:
            raise MigrationError(
                f"cannot drop {table}.{column}: index(es) {', '.join(used)} use it; drop them "
                f"first")
        new = attrs.evolve(t.spec, columns=tuple(c for c in t.spec.columns if c.name != column))
        self._swap(table, new, {k: {n: v for n, v in r.items() if n != column}
                                for k, r in t.rows.items()})

    def rename_column(self, table: str, old: str, new: str) -> None:
        t = self._get(table)
        t.spec.column(old)
        if new in t.spec.column_names:
            raise MigrationError(f"cannot rename {table}.{old} to {new!r}: that column exists")

        def rename(name: str) -> str:
            return new if name == old else name

        spec = attrs.evolve(
            t.spec,
            columns=tuple(attrs.evolve(c, name=rename(c.name)) for c in t.spec.columns),
            primary_key=rename(t.spec.primary_key),
            indexes=tuple(attrs.evolve(i, columns=tuple(map(rename, i.columns)))
                          for i in t.spec.indexes))
        self._swap(table, spec, {k: {rename(n): v for n, v in r.items()}
                                 for k, r in t.rows.items()})

    def alter_column(self, spec: TableSpec, column: ColumnSpec, using: str | None) -> None:
        if using is not None:
            raise self._no_sql("SQL expressions (using=...)")
        t = self._get(spec.name)
        old = t.spec.column(column.name)
        cast = _CASTS.get(column.kind) if column.kind != old.kind else None
        if column.kind != old.kind and (cast is None or old.kind not in _CASTS):
            raise MigrationError(
                f"cannot change {spec.name}.{column.name} from {old.kind} to {column.kind} on "
                f"the memory backend; rebuild it with alter_table(TableMigration(..., "
                f"column_transformer={{{column.name!r}: function of the old row}}))")
        rows: dict[Any, dict[str, Any]] = {}
        for key, row in t.rows.items():
            value = row[column.name]
            if value is not None and cast is not None:
                try:
                    value = cast(value)
                except (TypeError, ValueError) as exc:
                    raise MigrationError(
                        f"cannot change {spec.name}.{column.name} to {column.kind}: row {key!r} "
                        f"holds {value!r} ({exc})") from exc
            if value is None and not column.nullable:
                raise MigrationError(
                    f"cannot make {spec.name}.{column.name} NOT NULL: row {key!r} holds NULL")
            rows[key] = {**row, column.name: value}
        new = attrs.evolve(t.spec, columns=tuple(column if c.name == column.name else c
                                                 for c in t.spec.columns))
        self._swap(spec.name, new, rows)

    def rebuild(self, spec: TableSpec, sources: Mapping[str, Source],
                convert: Callable[[Any], Any]) -> int:
        t = self._get(spec.name)
        rows: dict[Any, dict[str, Any]] = {}
        for row in t.rows.values():
            new: dict[str, Any] = {}
            for name, (kind, arg) in sources.items():
                if kind == "copy":
                    new[name] = row[arg]
                elif kind == "default":
                    new[name] = arg
                else:
                    try:
                        new[name] = convert(arg(dict(row)))
                    except Exception as exc:
                        raise MigrationError(
                            f"the transformer of {spec.name}.{name} failed on row "
                            f"{row.get(t.spec.primary_key)!r}: {type(exc).__name__}: {exc}"
                        ) from exc
            for col in spec.columns:
                if new[col.name] is None and not col.nullable:
                    raise MigrationError(
                        f"rebuilding {spec.name}: column {col.name!r} of row "
                        f"{new[spec.primary_key]!r} would be NULL, but it is not nullable")
            key = new[spec.primary_key]
            if key in rows:
                raise MigrationError(
                    f"rebuilding {spec.name}: two rows would both have primary key {key!r}")
            rows[key] = new
        self._swap(spec.name, spec, rows)
        return len(rows)

    def differences(self, specs: Sequence[TableSpec], views: Sequence[View],
                    triggers: Sequence[Trigger]) -> list[str]:
        out: list[str] = []
        stored = self.backend.db.tables
        for spec in specs:
            table = stored.get(spec.name)
            if table is None:
                out.append(f"table {spec.name} is missing")
                continue
            have = {c.name: c for c in table.spec.columns}
            for col in spec.columns:
                got = have.pop(col.name, None)
                if got is None:
                    out.append(f"column {spec.name}.{col.name} is missing")
                elif (got.kind, got.nullable) != (col.kind, col.nullable):
                    out.append(f"column {spec.name}.{col.name} is {_describe(got)}, declared "
                               f"{_describe(col)}")
            out += [f"column {spec.name}.{n} is not declared" for n in have]
            want = {(i.name, i.columns, i.unique) for i in spec.indexes}
            got_ix = {(i.name, i.columns, i.unique) for i in table.spec.indexes}
            out += [f"index {n} on {spec.name} {c} is missing" for n, c, _ in want - got_ix]
            out += [f"index {n} on {spec.name} {c} is not declared" for n, c, _ in got_ix - want]
            out += [f"check {c.name} on {spec.name} ({c.describe()}) is missing"
                    for c in set(spec.checks) - set(table.spec.checks)]
            out += [f"check {c.name} on {spec.name} is not declared"
                    for c in set(table.spec.checks) - set(spec.checks)]
        declared = {s.name for s in specs}
        out += [f"table {n} is not declared" for n in sorted(stored) if n not in declared]
        return out  # declared views and triggers: skipped on this backend (see create_all)


def _describe(col: ColumnSpec) -> str:
    return f"{col.kind}{' NULL' if col.nullable else ' NOT NULL'}"
