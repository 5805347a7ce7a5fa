"""The SQLite backend's SQL, written as text: tables, indexes and statements over them.

Plain string building keeps SQLAlchemy (a tenth of a second to import) out of every process
that opens a SQLite store; migrations, which use Alembic, import it when they run. Statements
are built once per *shape* (table, condition structure, ordering, window) and cached with the
order of their parameters.
"""

from __future__ import annotations

import json
from collections.abc import Callable, Mapping, Sequence
from typing import Any

from syncline.backends.sql_conditions import bound, shape
from syncline.core.model.errors import QueryError
from syncline.core.model.query import (
    LIKE_ESCAPE,
    And,
    Compare,
    Condition,
    Not,
    Order,
    Query,
    tie_broken,
)
from syncline.core.model.schema import ColumnSpec, IndexSpec, Kind, TableSpec
from syncline.core.model.sync_fields import (
    STATE_KEY,
    STATE_TABLE,
    SYNC_FIELDS,
    query_uses_sync,
    state_key_prefix,
    where_uses_sync,
    with_sync_columns,
)

#: the column type of each storage kind (SQLAlchemy's types for migrations are made from it)
TYPES: Mapping[str, str] = {
    "text": "TEXT", "integer": "INTEGER", "float": "FLOAT", "boolean": "BOOLEAN",
    "bytes": "BLOB", "datetime": "TEXT", "date": "TEXT", "uuid": "TEXT", "decimal": "TEXT",
    "json": "TEXT",
}
#: in/not_in with more values than this bind them all as one JSON array (see _in_many)
MANY_VALUES = 256
_OPS = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">="}


def q(name: str) -> str:
    """A quoted identifier (always quoted, inner quotes doubled)."""
    return '"' + name.replace('"', '""') + '"'


def literal(value: Any) -> str:
    """A column default as SQL: a str, int, float or bool."""
    if isinstance(value, bool):
        return "1" if value else "0"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    if isinstance(value, int):
        return str(value)
    return f"({value!r})"


def index_columns(spec: TableSpec, index: IndexSpec) -> list[str]:
    names = list(index.columns)
    if not index.unique and spec.primary_key not in names:
        # Ties sort by primary key: with it in the index, ORDER BY needs no sort.
        names.append(spec.primary_key)
    return names


class SQLiteSQL:
    """Builds and caches the SQL of the SQLite backend."""

    def __init__(self) -> None:
        #: keys end with the table's spec: a migrated table gets statements of its own
        self._cache: dict[Any, str] = {}

    # -- tables ------------------------------------------------------------------------------

    def column(self, col: ColumnSpec) -> str:
        out = f"{q(col.name)} {TYPES[col.kind]}"
        if col.default is not None:
            out += f" DEFAULT {literal(col.default)}"
        return out if col.nullable else out + " NOT NULL"

    def create_table(self, spec: TableSpec) -> str:
        parts = [self.column(c) for c in spec.columns]
        parts.append(f"PRIMARY KEY ({q(spec.primary_key)})")
        for fk in spec.foreign_keys:
            on_delete = f" ON DELETE {fk.on_delete.upper()}" if fk.on_delete else ""
            parts.append(f"FOREIGN KEY ({q(fk.column)}) REFERENCES {q(fk.ref_table)} "
                         f"({q(fk.ref_column)}){on_delete}")
        parts += [f"CONSTRAINT {q(c.name)} CHECK ({c.sql(q)})" for c in spec.checks]
        body = ",\n\t".join(parts)
        return f"CREATE TABLE IF NOT EXISTS {q(spec.name)} (\n\t{body}\n)"

    def create_index(self, spec: TableSpec, index: IndexSpec) -> str:
        unique = "UNIQUE " if index.unique else ""
        cols = ", ".join(q(c) for c in index_columns(spec, index))
        return f"CREATE {unique}INDEX IF NOT EXISTS {q(index.name)} ON {q(spec.name)} ({cols})"

    def named_ddl(self, spec: TableSpec) -> list[tuple[str, str]]:
        """(name, CREATE statement) of the table, then of each of its indexes by name."""
        out = [(spec.name, self.create_table(spec))]
        for index in sorted(spec.indexes, key=lambda ix: ix.name):
            out.append((index.name, self.create_index(spec, index)))
        return out

    def ddl(self, spec: TableSpec) -> list[str]:
        return [stmt for _, stmt in self.named_ddl(spec)]

    # -- conditions --------------------------------------------------------------------------

    @staticmethod
    def _shape(cond: Condition | None) -> Any:
        return shape(cond, MANY_VALUES)

    @staticmethod
    def _kind(spec: TableSpec, field: str) -> Kind:
        for col in spec.columns:
            if col.name == field:
                return col.kind
        raise QueryError(f"table {spec.name!r} has no column {field!r}")

    @staticmethod
    def _comparable(expr: str, kind: Kind) -> str:
        # Decimals are stored as exact text; compare and sort them by numeric value.
        return f"CAST({expr} AS REAL)" if kind == "decimal" else expr

    def _clause(self, spec: TableSpec, cond: Condition) -> str:
        if isinstance(cond, Compare):
            kind = self._kind(spec, cond.field)
            column = q(cond.field)
            op = cond.op
            if op == "is_null":
                return f"{column} IS NULL"
            if op == "not_null":
                return f"{column} IS NOT NULL"
            col = self._comparable(column, kind)
            if op in ("in", "not_in"):
                if not cond.value:  # x IN () is false and x NOT IN () true, NULL x included
                    return "0" if op == "in" else "1"
                if len(cond.value) > MANY_VALUES:
                    found = self._in_many(column, kind)
                    return found if op == "in" else f"NOT ({found})"
                marks = ", ".join(self._comparable("?", kind) for _ in cond.value)
                return f"{col} {'IN' if op == 'in' else 'NOT IN'} ({marks})"
            if op == "like":  # one escape rule on every backend (see Field.like)
                return f"{column} LIKE ? ESCAPE '{LIKE_ESCAPE}'"
            return f"{col} {_OPS[op]} {self._comparable('?', kind)}"
        if isinstance(cond, Not):
            return f"NOT ({self._clause(spec, cond.item)})"
        joiner = " AND " if isinstance(cond, And) else " OR "
        if not cond.items:
            return "1" if isinstance(cond, And) else "0"
        return "(" + joiner.join(f"({self._clause(spec, i)})" for i in cond.items) + ")"

    def _in_many(self, column: str, kind: Kind) -> str:
        # One JSON array parameter, read back as rows by json_each: no limit on its length.
        if kind == "bytes":  # JSON has no bytes: compared as hex text (hex(NULL) is '')
            return (f"CASE WHEN {column} IS NULL THEN NULL ELSE hex({column}) END "
                    f"IN (SELECT value FROM json_each(?))")
        return (f"{self._comparable(column, kind)} IN "
                f"(SELECT {self._comparable('value', kind)} FROM json_each(?))")

    @staticmethod
    def _many_param(kind: Kind, values: Sequence[Any]) -> str:
        if kind == "bytes":
            return json.dumps([None if v is None else bytes(v).hex().upper() for v in values])
        return json.dumps(list(values), default=str, allow_nan=False)

    def params(self, spec: TableSpec, cond: Condition | None, out: list[Any]) -> list[Any]:
        """Append the parameters of ``cond`` to ``out`` in the order its SQL binds them."""
        for c in bound(cond):
            if c.op not in ("in", "not_in"):
                out.append(c.value)
            elif len(c.value) > MANY_VALUES:
                out.append(self._many_param(self._kind(spec, c.field), c.value))
            else:
                out.extend(c.value)
        return out

    def _where(self, spec: TableSpec, cond: Condition | None) -> str:
        return "" if cond is None else f" WHERE {self._clause(spec, cond)}"

    def _ordering(self, spec: TableSpec, order_by: Sequence[Order]) -> str:
        out = []
        for term in tie_broken(order_by, spec.primary_key):
            column = next((c for c in spec.columns if c.name == term.field), None)
            if column is None:
                raise QueryError(f"table {spec.name!r} has no column {term.field!r}")
            col = self._comparable(q(term.field), column.kind)
            if not column.nullable:  # plain terms let an index serve the ordering
                out.append(f"{col} DESC" if term.descending else f"{col} ASC")
            else:
                out.append(f"{col} DESC NULLS LAST" if term.descending
                           else f"{col} ASC NULLS FIRST")
        return ", ".join(out)

    # -- cached statements -------------------------------------------------------------------

    def _cached(self, key: Any, build: Callable[[], str]) -> str:
        sql = self._cache.get(key)
        if sql is None:
            sql = self._cache[key] = build()
        return sql

    def _columns(self, spec: TableSpec) -> str:
        return ", ".join(q(c) for c in spec.column_names)

    @staticmethod
    def _source(spec: TableSpec, joined: bool) -> str:
        """The table, or with ``joined`` the table with its records' sync state as columns
        (see :mod:`syncline.core.model.sync_fields`; SQLite flattens the subquery)."""
        if not joined:
            return q(spec.name)
        cols = ", ".join(f"s.{q(col)} AS {q(name)}" for name, (col, _) in SYNC_FIELDS.items())
        return (f"(SELECT t.*, {cols} FROM {q(spec.name)} AS t LEFT JOIN {q(STATE_TABLE)} AS s "
                f"ON s.{q(STATE_KEY)} = {literal(state_key_prefix(spec.name))} || "
                f"t.{q(spec.primary_key)}) AS {q(spec.name)}")

    def select(self, spec: TableSpec, query: Query) -> tuple[str, list[Any]]:
        """SQL and positional parameters for ``query`` on ``spec``."""
        windowed = query.limit is not None or bool(query.offset)
        joined = query_uses_sync(query)
        key = ("select", spec.name, self._shape(query.where), query.order_by, windowed, spec)
        read = with_sync_columns(spec) if joined else spec

        def build() -> str:
            sql = (f"SELECT {self._columns(spec)} FROM {self._source(spec, joined)}"
                   f"{self._where(read, query.where)} ORDER BY "
                   f"{self._ordering(read, query.order_by)}")
            return sql + " LIMIT ? OFFSET ?" if windowed else sql

        sql = self._cached(key, build)
        params = self.params(read, query.where, [])
        if windowed:
            params += [-1 if query.limit is None else query.limit, query.offset]
        return sql, params

    def count(self, spec: TableSpec, where: Condition | None) -> tuple[str, list[Any]]:
        key = ("count", spec.name, self._shape(where), spec)
        joined = where_uses_sync(where)
        read = with_sync_columns(spec) if joined else spec
        sql = self._cached(key, lambda: f"SELECT count(*) FROM {self._source(spec, joined)}"
                                        f"{self._where(read, where)}")
        return sql, self.params(read, where, [])

    def delete(self, spec: TableSpec, where: Condition | None) -> tuple[str, list[Any]]:
        key = ("delete", spec.name, self._shape(where), spec)
        sql = self._cached(key, lambda: f"DELETE FROM {q(spec.name)}{self._where(spec, where)}")
        return sql, self.params(spec, where, [])

    def update(self, spec: TableSpec, where: Condition | None,
               values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        cols = tuple(values)
        key = ("update", spec.name, self._shape(where), cols, spec)

        def build() -> str:
            for c in cols:
                if c not in spec.column_names:
                    raise QueryError(f"table {spec.name!r} has no column {c!r}")
            sets = ", ".join(f"{q(c)} = ?" for c in cols)
            return f"UPDATE {q(spec.name)} SET {sets}{self._where(spec, where)}"

        sql = self._cached(key, build)
        return sql, self.params(spec, where, list(values.values()))

    def by_key(self, spec: TableSpec, kind: str, n: int = 1) -> str:
        """SELECT (one or ``n`` keys) and DELETE (``n`` keys) by primary key."""
        key = ("bykey", spec.name, kind, n, spec)

        def build() -> str:
            pk = q(spec.primary_key)
            if kind == "get":
                return f"SELECT {self._columns(spec)} FROM {q(spec.name)} WHERE {pk} = ?"
            marks = ", ".join("?" for _ in range(n))
            if kind == "get_many":
                return (f"SELECT {self._columns(spec)} FROM {q(spec.name)} "
                        f"WHERE {pk} IN ({marks})")
            if kind == "delete":
                return f"DELETE FROM {q(spec.name)} WHERE {pk} IN ({marks})"
            raise KeyError(kind)

        return self._cached(key, build)

    def write(self, spec: TableSpec, kind: str) -> str:
        """INSERT (``kind="insert"``) or upsert by primary key of every column, in order."""
        key = ("write", spec.name, kind, spec)

        def build() -> str:
            names = self._columns(spec)
            marks = ", ".join("?" for _ in spec.column_names)
            sql = f"INSERT INTO {q(spec.name)} ({names}) VALUES ({marks})"
            if kind == "insert":
                return sql
            if kind != "upsert":
                raise KeyError(kind)
            others = [c for c in spec.column_names if c != spec.primary_key]
            if not others:
                return f"{sql} ON CONFLICT ({q(spec.primary_key)}) DO NOTHING"
            sets = ", ".join(f"{q(c)} = excluded.{q(c)}" for c in others)
            return f"{sql} ON CONFLICT ({q(spec.primary_key)}) DO UPDATE SET {sets}"

        return self._cached(key, build)
