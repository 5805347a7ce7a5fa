"""SQL building shared by the SQL backends: tables and queries as SQLAlchemy Core statements.

Statements are compiled once per *shape* (table, condition structure, ordering, window) and
cached as SQL text plus the order of their parameters, so the hot paths execute the compiled
SQL directly on the driver.
"""

from __future__ import annotations

import threading
from collections.abc import Mapping, Sequence
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Dialect

from syncline.backends.sql_conditions import bound, shape
from syncline.backends.tuple_rows import Row as Row
from syncline.backends.tuple_rows import TupleRowsMixin as TupleRowsMixin
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
from syncline.core.model.schema import ColumnSpec, Kind, TableSpec
from syncline.core.model.sync_fields import (
    STATE_KEY,
    STATE_TABLE,
    SYNC_FIELDS,
    query_uses_sync,
    state_key_prefix,
    where_uses_sync,
    with_sync_columns,
)

Compiled = tuple[str, tuple[str, ...]]


def server_default(value: Any) -> Any:
    """The DDL default for a column default from :class:`ColumnSpec` (None: no default)."""
    if value is None:
        return None
    if isinstance(value, bool):
        return sa.true() if value else sa.false()
    if isinstance(value, str):
        return value
    return sa.text(repr(value))


_ddl: dict[Any, list[tuple[str, str]]] = {}
_ddl_lock = threading.Lock()


class SQLBuilder:
    """Builds and caches SQL for one dialect. Subclasses set column types per kind."""

    types: Mapping[str, Any] = {}
    #: The LIMIT value meaning "no limit" when only an offset is given.
    no_limit: int | None = -1
    #: ``in_()``/``not_in()`` with more values than this bind them all as one parameter
    #: (:meth:`in_many`): drivers cap a statement's parameters (PostgreSQL at 65,535).
    many_values = 256

    def __init__(self, dialect: Dialect) -> None:
        self.dialect = dialect
        self.metadata = sa.MetaData()
        self._tables: dict[str, tuple[TableSpec, sa.Table]] = {}
        self._cache: dict[Any, Compiled] = {}
        self._lock = threading.Lock()

    # -- tables ------------------------------------------------------------------------------

    def column_type(self, kind: Kind) -> Any:
        return self.types[kind]

    def column(self, col: ColumnSpec) -> sa.Column[Any]:
        return sa.Column(col.name, self.column_type(col.kind), primary_key=col.primary_key,
                         nullable=col.nullable, server_default=server_default(col.default))

    def table(self, spec: TableSpec) -> sa.Table:
        """The SQLAlchemy table for ``spec`` (rebuilt if the spec changed)."""
        cached = self._tables.get(spec.name)
        if cached is not None and cached[0] == spec:
            return cached[1]
        with self._lock:
            if spec.name in self.metadata.tables:
                self.metadata.remove(self.metadata.tables[spec.name])
            columns: list[Any] = [self.column(c) for c in spec.columns]
            columns += [
                sa.ForeignKeyConstraint([fk.column], [f"{fk.ref_table}.{fk.ref_column}"],
                                        ondelete=fk.on_delete.upper() if fk.on_delete else None,
                                        use_alter=False)
                for fk in spec.foreign_keys
            ]
            quote = self.dialect.identifier_preparer.quote_identifier
            columns += [sa.CheckConstraint(c.sql(quote), name=c.name) for c in spec.checks]
            for fk in spec.foreign_keys:  # a stand-in until the referenced table is built
                if fk.ref_table == spec.name or fk.ref_table in self._tables:
                    continue
                stand_in = self.metadata.tables.get(fk.ref_table)
                if stand_in is None:
                    sa.Table(fk.ref_table, self.metadata, sa.Column(fk.ref_column, sa.Integer()))
                elif fk.ref_column not in stand_in.c:  # a second key to the same table
                    stand_in.append_column(sa.Column(fk.ref_column, sa.Integer()))
            table = sa.Table(spec.name, self.metadata, *columns)
            for index in spec.indexes:
                names = list(index.columns)
                if not index.unique and spec.primary_key not in names:
                    # Ties sort by primary key: with it in the index, ORDER BY needs no sort.
                    names.append(spec.primary_key)
                sa.Index(index.name, *[table.c[n] for n in names], unique=index.unique)
            self._tables[spec.name] = (spec, table)
            self._cache = {k: v for k, v in self._cache.items() if k[1] != spec.name}
            return table

    def compile(self, stmt: sa.ClauseElement) -> Compiled:
        compiled = stmt.compile(dialect=self.dialect)
        return str(compiled), tuple(getattr(compiled, "positiontup", None) or ())

    def ddl(self, spec: TableSpec) -> list[str]:
        return [stmt for _, stmt in self.named_ddl(spec)]

    def named_ddl(self, spec: TableSpec) -> list[tuple[str, str]]:
        """(name, CREATE statement) of the table, then of each of its indexes."""
        # A function of the spec (frozen, compared whole: a migrated table is another key) and
        # the dialect: built once per process, not once per store opened.
        key = (type(self), self.dialect.name, self.dialect.driver, self.dialect.paramstyle, spec)
        with _ddl_lock:
            found = _ddl.get(key)
        if found is None:
            found = self._build_ddl(spec)
            with _ddl_lock:
                _ddl[key] = found
                while len(_ddl) > 1024:
                    del _ddl[next(iter(_ddl))]
        return list(found)

    def _build_ddl(self, spec: TableSpec) -> list[tuple[str, str]]:
        table = self.table(spec)
        out = [(spec.name, str(sa.schema.CreateTable(table, if_not_exists=True)
                               .compile(dialect=self.dialect)))]
        for index in sorted(table.indexes, key=lambda ix: str(ix.name)):
            out.append((str(index.name), str(sa.schema.CreateIndex(index, if_not_exists=True)
                                             .compile(dialect=self.dialect))))
        return out

    # -- conditions --------------------------------------------------------------------------

    def comparable(self, column: sa.ColumnElement[Any], kind: Kind) -> sa.ColumnElement[Any]:
        """The expression compared and sorted for a column (override for stored encodings)."""
        return column

    def _shape(self, cond: Condition | None) -> Any:
        return shape(cond, self.many_values)

    def _clause(self, spec: TableSpec, table: sa.Table, cond: Condition,
                names: list[int]) -> sa.ColumnElement[bool]:
        if isinstance(cond, Compare):
            if cond.field not in table.c:
                raise QueryError(f"table {spec.name!r} has no column {cond.field!r}")
            kind = spec.column(cond.field).kind
            col = self.comparable(table.c[cond.field], kind)
            op = cond.op
            if op == "is_null":
                return table.c[cond.field].is_(None)
            if op == "not_null":
                return table.c[cond.field].is_not(None)
            n = names[0]
            names[0] += 1
            if op in ("in", "not_in"):
                if not cond.value:  # x IN () is false and x NOT IN () true, NULL x included
                    return sa.false() if op == "in" else sa.true()
                if len(cond.value) > self.many_values:
                    found = self.in_many(table.c[cond.field], kind, sa.bindparam(f"p{n}"))
                    return found if op == "in" else sa.not_(found)
                binds = [self.comparable(sa.bindparam(f"p{n}_{j}"), kind)
                         for j in range(len(cond.value))]
                return col.in_(binds) if op == "in" else col.not_in(binds)
            bind: sa.BindParameter[Any] = sa.bindparam(f"p{n}")
            if op == "like":  # one escape rule on every backend (see Field.like)
                return col.like(bind, escape=LIKE_ESCAPE)
            value = self.comparable(bind, kind)
            return {
                "eq": col.__eq__, "ne": col.__ne__, "lt": col.__lt__, "le": col.__le__,
                "gt": col.__gt__, "ge": col.__ge__,
            }[op](value)
        if isinstance(cond, Not):
            return sa.not_(self._clause(spec, table, cond.item, names))
        parts = [self._clause(spec, table, i, names) for i in cond.items]
        return sa.and_(*parts) if isinstance(cond, And) else sa.or_(*parts)

    def in_many(self, column: sa.ColumnElement[Any], kind: Kind,
                values: sa.BindParameter[Any]) -> sa.ColumnElement[bool]:
        """``column IN (values)`` with every value in one parameter (see :meth:`many_param`);
        NULLs behave as in an IN list."""
        raise NotImplementedError

    def many_param(self, kind: Kind, values: Sequence[Any]) -> Any:
        """The one parameter :meth:`in_many` binds for ``values`` (in their stored forms)."""
        return list(values)

    def bind_values(self, cond: Condition | None,
                    spec: TableSpec | None = None) -> dict[str, Any]:
        # Parameter names follow the order _clause numbers them: one number per compare.
        out: dict[str, Any] = {}
        kinds = {c.name: c.kind for c in spec.columns} if spec is not None else {}
        for n, c in enumerate(bound(cond)):
            if c.op not in ("in", "not_in"):
                out[f"p{n}"] = c.value
            elif len(c.value) > self.many_values:
                kind: Kind = kinds.get(c.field, "text")
                out[f"p{n}"] = self.many_param(kind, c.value)
            else:
                for j, v in enumerate(c.value):
                    out[f"p{n}_{j}"] = v
        return out

    def where(self, spec: TableSpec, cond: Condition | None) -> sa.ColumnElement[bool] | None:
        if cond is None:
            return None
        return self._clause(spec, self.table(spec), cond, [0])

    def _ordering(self, spec: TableSpec, table: sa.Table,
                  order_by: Sequence[Order]) -> list[Any]:
        terms = tie_broken(order_by, spec.primary_key)
        out = []
        for term in terms:
            if term.field not in table.c:
                raise QueryError(f"table {spec.name!r} has no column {term.field!r}")
            column = spec.column(term.field)
            col = self.comparable(table.c[term.field], column.kind)
            if not column.nullable:  # plain terms let an index serve the ordering
                out.append(col.desc() if term.descending else col.asc())
            else:
                out.append(col.desc().nulls_last() if term.descending
                           else col.asc().nulls_first())
        return out

    # -- cached statements -------------------------------------------------------------------

    def _cached(self, key: Any, build: Any) -> Compiled:
        hit = self._cache.get(key)
        if hit is None:
            hit = self.compile(build())
            self._cache[key] = hit
        return hit

    def _source(self, spec: TableSpec, joined: bool) -> tuple[TableSpec, Any]:
        """The table, or with ``joined`` a subquery of it with its records' sync state as
        extra columns (see :mod:`syncline.core.model.sync_fields`), and the spec of either."""
        table = self.table(spec)
        if not joined:
            return spec, table
        states = sa.table(STATE_TABLE, sa.column(STATE_KEY, sa.Text()), *[
            sa.column(col, self.column_type(kind)) for col, kind in SYNC_FIELDS.values()])
        prefix = "'" + state_key_prefix(spec.name).replace("'", "''") + "'"
        on = states.c[STATE_KEY] == (sa.literal_column(prefix, sa.Text())
                                     + table.c[spec.primary_key])
        sub = sa.select(*table.c, *[states.c[col].label(name)
                                    for name, (col, _) in SYNC_FIELDS.items()]
                        ).select_from(table.outerjoin(states, on)).subquery("with_sync_state")
        return with_sync_columns(spec), sub

    def select(self, spec: TableSpec, query: Query) -> tuple[str, list[Any]]:
        """SQL and positional parameters for ``query`` on ``spec``."""
        key = ("select", spec.name, self._shape(query.where), query.order_by,
               query.limit is not None or bool(query.offset))
        joined = query_uses_sync(query)

        def build() -> sa.Select[Any]:
            source, table = self._source(spec, joined)
            stmt = sa.select(*[table.c[n] for n in spec.column_names])
            if query.where is not None:
                stmt = stmt.where(self._clause(source, table, query.where, [0]))
            stmt = stmt.order_by(*self._ordering(source, table, query.order_by))
            if query.limit is not None or query.offset:
                stmt = stmt.limit(sa.bindparam("_limit", type_=sa.Integer))
                stmt = stmt.offset(sa.bindparam("_offset", type_=sa.Integer))
            return stmt

        sql, names = self._cached(key, build)
        values = self.bind_values(query.where, with_sync_columns(spec) if joined else spec)
        values["_limit"] = self.no_limit if query.limit is None else query.limit
        values["_offset"] = query.offset
        return sql, [values[n] for n in names]

    def count(self, spec: TableSpec, where: Condition | None) -> tuple[str, list[Any]]:
        key = ("count", spec.name, self._shape(where))
        joined = where_uses_sync(where)

        def build() -> sa.Select[Any]:
            source, table = self._source(spec, joined)
            stmt = sa.select(sa.func.count()).select_from(table)
            return stmt if where is None else stmt.where(self._clause(source, table, where, [0]))

        sql, names = self._cached(key, build)
        values = self.bind_values(where, with_sync_columns(spec) if joined else spec)
        return sql, [values[n] for n in names]

    def delete(self, spec: TableSpec, where: Condition | None) -> tuple[str, list[Any]]:
        key = ("delete", spec.name, self._shape(where))

        def build() -> sa.Delete:
            stmt = sa.delete(self.table(spec))
            clause = self.where(spec, where)
            return stmt if clause is None else stmt.where(clause)

        sql, names = self._cached(key, build)
        values = self.bind_values(where, spec)
        return sql, [values[n] for n in names]

    def update(self, spec: TableSpec, where: Condition | None,
               values: Mapping[str, Any]) -> tuple[str, list[Any]]:
        cols = tuple(values)
        key = ("update", spec.name, self._shape(where), cols)

        def build() -> sa.Update:
            table = self.table(spec)
            for c in cols:
                if c not in table.c:
                    raise QueryError(f"table {spec.name!r} has no column {c!r}")
            stmt = sa.update(table).values({c: sa.bindparam(f"v_{c}") for c in cols})
            clause = self.where(spec, where)
            return stmt if clause is None else stmt.where(clause)

        sql, names = self._cached(key, build)
        params = self.bind_values(where, spec)
        params.update({f"v_{c}": v for c, v in values.items()})
        return sql, [params[n] for n in names]

    def by_key(self, spec: TableSpec, kind: str, n: int = 1) -> str:
        """SELECT/DELETE/UPDATE helpers keyed by primary key, cached per table."""
        key = ("bykey", spec.name, kind, n)

        def build() -> sa.ClauseElement:
            table = self.table(spec)
            pk = table.c[spec.primary_key]
            if kind == "get":
                return sa.select(*table.c).where(pk == sa.bindparam("k"))
            binds: list[sa.BindParameter[Any]] = [sa.bindparam(f"k{i}") for i in range(n)]
            if kind == "get_many":
                return sa.select(*table.c).where(pk.in_(binds))
            return sa.delete(table).where(pk.in_(binds))

        return self._cached(key, build)[0]
