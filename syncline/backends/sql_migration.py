"""Migrations on the SQL backends: Alembic's operations where they do the job (batch mode on
SQLite), and the table rebuild of :class:`~syncline.core.storage.migration.TableMigration`.

Everything runs on the connection of the backend's migration transaction: SQLAlchemy and
Alembic get that DB-API connection on loan (their commit, rollback and close do nothing), so
the DDL, the copies and the new schema version commit or roll back together. On SQLite, plain
statements run on the ``sqlite3`` connection itself: creating a store imports neither
SQLAlchemy nor Alembic; the first operation that needs them imports them.
"""

from __future__ import annotations

import abc
import functools
import sqlite3
from collections.abc import Callable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any

import attrs

from syncline.backends import sqlite_sql
from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import (
    ColumnSpec,
    FieldSpec,
    IndexSpec,
    TableSpec,
    Trigger,
    View,
)
from syncline.core.storage.migration import MigrationOps, Source

if TYPE_CHECKING:
    import sqlalchemy as sa
    from alembic.operations import Operations

    from syncline.backends.sql import SQLBuilder

_CHUNK = 5000  # rows per executemany when a Python function transforms them


class _Borrowed:
    """A DB-API connection lent to SQLAlchemy: its commit, rollback and close do nothing, so
    the transaction stays the backend's."""

    def __init__(self, conn: Any) -> None:
        object.__setattr__(self, "_conn", conn)

    def commit(self) -> None:
        pass

    def rollback(self) -> None:
        pass

    def close(self) -> None:
        pass

    def __getattr__(self, name: str) -> Any:
        return getattr(self._conn, name)

    def __setattr__(self, name: str, value: Any) -> None:
        setattr(self._conn, name, value)


def q(name: str) -> str:
    return '"' + name.replace('"', '""') + '"'


def _failed_on(spec: TableSpec, column: str, row: Mapping[str, Any],
               exc: BaseException) -> MigrationError:
    return MigrationError(
        f"the transformer of {spec.name}.{column} failed on row "
        f"{row.get(spec.primary_key)!r}: {type(exc).__name__}: {exc}")


@attrs.define
class _Dependents:
    """What a table rebuild drops with the old table and puts back afterwards."""

    indexes: list[tuple[str, str]] = attrs.Factory(list)  # (name, CREATE INDEX ...)
    triggers: list[str] = attrs.Factory(list)
    views: list[tuple[str, str]] = attrs.Factory(list)  # (name, CREATE VIEW ...)
    children: list[tuple[str, str, str]] = attrs.Factory(list)  # (table, constraint, def)


class SQLMigrationOps(MigrationOps):
    """Shared by SQLite and PostgreSQL; subclasses answer the dialect's catalog questions."""

    sql = True
    url = "sqlite://"
    placeholder = "?"
    engine_options: dict[str, Any] = {}
    #: SQLite resolves a foreign key by table name when used; PostgreSQL binds it to the table
    references_by_name = True

    def __init__(self, backend: Any) -> None:
        self.backend = backend
        self._conn: sa.Connection | None = None
        self._op: Operations | None = None

    @functools.cached_property
    def builder(self) -> SQLBuilder:
        """SQLAlchemy tables and types, for Alembic's operations and comparisons."""
        builder: SQLBuilder = self.backend.sql
        return builder

    # -- the borrowed connection -------------------------------------------------------------

    @abc.abstractmethod
    def raw(self) -> Any:
        """The DB-API connection of the open migration transaction."""

    @property
    def conn(self) -> sa.Connection:
        if self._conn is None:
            import sqlalchemy as sa
            from sqlalchemy.pool import StaticPool

            raw = _Borrowed(self.raw())
            engine = sa.create_engine(self.url, creator=lambda: raw, poolclass=StaticPool,
                                      **self.engine_options)
            self._conn = engine.connect()
        return self._conn

    @property
    def op(self) -> Operations:
        if self._op is None:
            # Alembic is imported by the first schema change it makes: creating a store
            # (CREATE TABLE, the backend's own DDL) does without it.
            from alembic.migration import MigrationContext
            from alembic.operations import Operations

            self._op = Operations(MigrationContext.configure(self.conn))
        return self._op

    def release(self) -> None:
        if self._conn is not None:
            engine = self._conn.engine
            self._conn.close()
            engine.dispose()
        self._conn = None
        self._op = None

    def run(self, sql: str, params: Any = None) -> Any:
        """Run syncline's own SQL: ``params`` in the driver's style (:attr:`placeholder`);
        without them the text goes to the driver as it is (a ``%`` stays a ``%``)."""
        import sqlalchemy as sa

        try:
            if params is None:
                return self.conn.execution_options(no_parameters=True).exec_driver_sql(sql)
            return self.conn.exec_driver_sql(sql, params)
        except sa.exc.DBAPIError as exc:
            raise self.error(exc, sql) from exc

    def error(self, exc: BaseException, what: str) -> MigrationError:
        orig = getattr(exc, "orig", exc)
        first = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
        detail = getattr(getattr(orig, "diag", None), "message_detail", None)  # PostgreSQL's
        if detail:  # names the key: "Key (author_id)=(0) is not present in table ..."
            first = f"{first}: {detail}"
        return MigrationError(f"{first} (while running: {what.strip()[:200]})")

    @contextmanager
    def _guard(self, what: str) -> Iterator[None]:
        import sqlalchemy as sa

        try:
            yield
        except sa.exc.DBAPIError as exc:
            raise self.error(exc, what) from exc
        except (NotImplementedError, ValueError, sa.exc.SQLAlchemyError) as exc:
            raise MigrationError(f"{what}: {exc}") from exc

    # -- catalog -----------------------------------------------------------------------------

    def columns(self, table: str) -> list[str] | None:
        import sqlalchemy as sa

        insp = sa.inspect(self.conn)
        if not insp.has_table(table):
            return None
        return [c["name"] for c in insp.get_columns(table)]

    def existing(self, tables: Sequence[str]) -> set[str]:
        import sqlalchemy as sa

        return set(tables) & set(sa.inspect(self.conn).get_table_names())

    def _require(self, table: str) -> list[str]:
        cols = self.columns(table)
        if cols is None:
            raise MigrationError(f"table {table!r} does not exist")
        return cols

    @abc.abstractmethod
    def _dependents(self, table: str, keep_indexes: set[str]) -> _Dependents: ...

    @abc.abstractmethod
    def _view_names(self) -> list[str]: ...

    @abc.abstractmethod
    def _trigger_names(self) -> list[str]: ...

    # -- tables and indexes ------------------------------------------------------------------

    def create_table(self, spec: TableSpec) -> None:
        for stmt in self.backend.sql.ddl(spec):  # the backend's own DDL, as when it opens
            self.run(stmt)

    def drop_table(self, name: str) -> None:
        self.run(f"DROP TABLE IF EXISTS {q(name)}")

    def rename_table(self, old: str, new: str) -> None:
        self._require(old)
        with self._guard(f"renaming table {old} to {new}"):
            self.op.rename_table(old, new)

    def create_index(self, spec: TableSpec, index: IndexSpec) -> None:
        for name, stmt in self.backend.sql.named_ddl(spec)[1:]:
            if name == index.name:
                self.run(stmt)

    def drop_index(self, table: str, name: str) -> None:
        with self._guard(f"dropping index {name}"):
            self.op.drop_index(name, table_name=table, if_exists=True)

    # -- columns -----------------------------------------------------------------------------

    def add_column(self, spec: TableSpec, column: ColumnSpec) -> None:
        if column.name in self._require(spec.name):
            raise MigrationError(f"column {spec.name}.{column.name} already exists")
        with self._guard(f"adding column {spec.name}.{column.name}"):
            self.op.add_column(spec.name, self.builder.column(column))

    def drop_column(self, table: str, column: str) -> None:
        if column not in self._require(table):
            raise MigrationError(f"table {table!r} has no column {column!r}")
        with self._guard(f"dropping column {table}.{column}"):
            self._alter(table, lambda batch: batch.drop_column(column))

    def rename_column(self, table: str, old: str, new: str) -> None:
        cols = self._require(table)
        if old not in cols:
            raise MigrationError(f"table {table!r} has no column {old!r}")
        if new in cols:
            raise MigrationError(f"cannot rename {table}.{old} to {new!r}: that column exists")
        with self._guard(f"renaming column {table}.{old}"):
            # In place on both (SQLite also rewrites the views and triggers using the column).
            self.op.alter_column(table, old, new_column_name=new)

    def alter_column(self, spec: TableSpec, column: ColumnSpec, using: str | None) -> None:
        if column.name not in self._require(spec.name):
            raise MigrationError(f"table {spec.name!r} has no column {column.name!r}")
        self._alter_column(spec, column, using)

    @abc.abstractmethod
    def _alter(self, table: str, change: Callable[[Any], None]) -> None:
        """Apply an Alembic column operation (in batch mode where the dialect needs it)."""

    @abc.abstractmethod
    def _alter_column(self, spec: TableSpec, column: ColumnSpec, using: str | None) -> None: ...

    # -- rebuild -----------------------------------------------------------------------------

    def rebuild(self, spec: TableSpec, sources: Mapping[str, Source],
                convert: Callable[[Any], Any]) -> int:
        old_cols = self._require(spec.name)
        name = spec.name
        temp = f"_syncline_new_{name}"[:63]
        deps = self._dependents(name, {i.name for i in spec.indexes})
        for child, constraint, _ in deps.children:
            self.run(f"ALTER TABLE {q(child)} DROP CONSTRAINT {q(constraint)}")
        for view_name, _ in reversed(deps.views):
            self.run(f"DROP VIEW IF EXISTS {q(view_name)}")
        self.drop_table(temp)
        temp_spec = attrs.evolve(spec, name=temp, indexes=())
        if not self.references_by_name:  # a reference to itself follows it through the rename
            temp_spec = attrs.evolve(temp_spec, foreign_keys=tuple(
                attrs.evolve(fk, ref_table=temp) if fk.ref_table == name else fk
                for fk in spec.foreign_keys))
        self.run(self.backend.sql.ddl(temp_spec)[0])
        count = self._copy(name, temp, spec, old_cols, sources, convert)
        self.run(f"DROP TABLE {q(name)}")
        self._rename_into(temp, name)
        for stmt in self.backend.sql.ddl(spec)[1:]:
            self.run(stmt)
        for index_name, sql in deps.indexes:
            try:
                self.run(sql)
            except MigrationError as exc:
                raise MigrationError(
                    f"index {index_name} on {name} cannot be rebuilt after the migration "
                    f"({exc}); drop it first with migrator.drop_index({name!r}, "
                    f"{index_name!r})") from exc
        for sql in deps.triggers:
            self.run(sql)
        for _, sql in deps.views:
            self.run(sql)
        for child, constraint, definition in deps.children:
            self.run(f"ALTER TABLE {q(child)} ADD CONSTRAINT {q(constraint)} {definition}")
        return count

    def _rename_into(self, temp: str, name: str) -> None:
        self.run(f"ALTER TABLE {q(temp)} RENAME TO {q(name)}")

    def _copy(self, old: str, new: str, spec: TableSpec, old_cols: Sequence[str],
              sources: Mapping[str, Source], convert: Callable[[Any], Any]) -> int:
        targets = [c for c, (kind, _) in sources.items() if kind != "default"]
        exprs = {c: (q(arg) if kind == "copy" else f"({arg})")
                 for c, (kind, arg) in sources.items() if kind in ("copy", "sql")}
        calls = {c: arg for c, (kind, arg) in sources.items() if kind == "call"}
        cols = ", ".join(q(c) for c in targets)
        if not calls:
            select = ", ".join(exprs[c] for c in targets)
            result = self.run(f"INSERT INTO {q(new)} ({cols}) SELECT {select} FROM {q(old)}")
            return max(int(result.rowcount), 0)
        return self._copy_calls(old, new, spec, old_cols, targets, exprs, calls, convert)

    def _copy_calls(self, old: str, new: str, spec: TableSpec, old_cols: Sequence[str],
                    targets: Sequence[str], exprs: Mapping[str, str],
                    calls: Mapping[str, Callable[[Any], Any]],
                    convert: Callable[[Any], Any]) -> int:
        """The copy when some columns come from Python: read the old rows (plus the SQL
        expressions), compute, insert in chunks."""
        cols = ", ".join(q(c) for c in targets)
        select = ", ".join([*(q(c) for c in old_cols), *(exprs[c] for c in targets
                                                          if c in exprs)])
        import sqlalchemy as sa

        try:  # streamed: a server-side cursor on PostgreSQL, step by step on SQLite
            rows = self.conn.exec_driver_sql(f"SELECT {select} FROM {q(old)}",
                                             execution_options={"stream_results": True,
                                                                "no_parameters": True})
        except sa.exc.DBAPIError as exc:
            raise self.error(exc, f"reading {old}") from exc
        count = 0
        n_old = len(old_cols)
        expr_cols = [c for c in targets if c in exprs]
        insert = (f"INSERT INTO {q(new)} ({cols}) VALUES "
                  f"({', '.join([self.placeholder] * len(targets))})")
        batch: list[tuple[Any, ...]] = []
        for row in rows:
            count += 1
            old_row = dict(zip(old_cols, row[:n_old], strict=True))
            computed = dict(zip(expr_cols, row[n_old:], strict=True))
            values = []
            for c in targets:
                if c in calls:
                    try:
                        values.append(convert(calls[c](old_row)))
                    except Exception as exc:
                        raise _failed_on(spec, c, old_row, exc) from exc
                else:
                    values.append(computed[c])
            batch.append(tuple(values))
            if len(batch) >= _CHUNK:
                self.run(insert, batch)
                batch = []
        if batch:
            self.run(insert, batch)
        return count

    # -- views, triggers, SQL ----------------------------------------------------------------

    def create_view(self, view: View) -> None:
        if view.name not in self._view_names():
            self.run(f"CREATE VIEW {q(view.name)} AS {view.select(self.dialect)}")

    def drop_view(self, name: str) -> None:
        self.run(f"DROP VIEW IF EXISTS {q(name)}")

    def create_trigger(self, trigger: Trigger) -> None:
        if trigger.name not in self._trigger_names():
            for stmt in trigger.statements(self.dialect):
                self.run(stmt)

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[
            tuple[Any, ...]]:
        result = self.run(sql) if not params else self._run_named(sql, params)
        return [tuple(r) for r in result.fetchall()] if result.returns_rows else []

    def _run_named(self, sql: str, params: Mapping[str, Any]) -> Any:
        """``sql`` with ``:name`` parameters, bound by SQLAlchemy in the driver's style (a
        ``%`` escaped where the driver needs it)."""
        import sqlalchemy as sa

        try:
            return self.conn.execute(sa.text(sql), dict(params))
        except sa.exc.DBAPIError as exc:
            raise self.error(exc, sql) from exc
        except sa.exc.ArgumentError as exc:
            raise MigrationError(f"{exc} (while running: {sql.strip()[:200]})") from exc

    def differences(self, specs: Sequence[TableSpec], views: Sequence[View],
                    triggers: Sequence[Trigger]) -> list[str]:
        import sqlalchemy as sa

        builder = type(self.builder)(self.builder.dialect)
        for spec in specs:
            builder.table(spec)
        ignored = self.ignored_tables()
        target = sa.MetaData()
        for spec in specs:
            builder.table(spec).to_metadata(target)

        def include(obj: Any, name: str | None, type_: str, reflected: bool,
                    compare_to: Any) -> bool:
            return not (type_ == "table" and name in ignored)

        from alembic.autogenerate import compare_metadata
        from alembic.migration import MigrationContext

        ctx = MigrationContext.configure(self.conn, opts={
            "compare_type": True, "include_object": include})
        out = [_describe(d) for d in _flatten(compare_metadata(ctx, target))]
        out += self._check_differences(specs)
        have_views = set(self._view_names())
        out += [f"view {v.name} is missing" for v in views if v.name not in have_views]
        out += [f"view {n} is not declared" for n in sorted(have_views - {v.name for v in views})]
        have_triggers = set(self._trigger_names())
        out += [f"trigger {t.name} is missing" for t in triggers if t.name not in have_triggers]
        out += [f"trigger {n} is not declared"
                for n in sorted(have_triggers - {t.name for t in triggers})]
        return out

    def _check_differences(self, specs: Sequence[TableSpec]) -> list[str]:
        """Declared CHECK constraints missing from the stored tables, or stored undeclared
        (Alembic's comparison leaves them out)."""
        import sqlalchemy as sa

        inspector = sa.inspect(self.conn)
        stored = set(inspector.get_table_names())
        out: list[str] = []
        for spec in specs:
            if spec.name not in stored:
                continue
            have = {c["name"] for c in inspector.get_check_constraints(spec.name) if c["name"]}
            out += [f"check {c.name} on {spec.name} ({c.describe()}) is missing"
                    for c in spec.checks if c.name not in have]
            declared = {c.name for c in spec.checks}
            out += [f"check {n} on {spec.name} is not declared" for n in sorted(have - declared)]
        return out

    def ignored_tables(self) -> set[str]:
        return set()


def _flatten(diffs: list[Any]) -> Iterator[Any]:
    for d in diffs:
        if isinstance(d, list):
            yield from d
        else:
            yield d


_SUBJECTS: dict[str, Callable[[Any], str]] = {
    "table": lambda d: f"table {d[1].name}",
    "column": lambda d: f"column {d[2]}.{d[3].name}",
    "index": lambda d: f"index {d[1].name} on {d[1].table.name}",
    "fk": lambda d: f"foreign key on {d[1].parent.name} ({_cols(d[1])})",
}


def _describe(diff: Any) -> str:
    """One line for an Alembic ``compare_metadata`` difference (stored vs declared)."""
    kind = diff[0]
    op, _, subject = kind.partition("_")
    if op in ("add", "remove") and subject in _SUBJECTS:
        return f"{_SUBJECTS[subject](diff)} is {'missing' if op == 'add' else 'not declared'}"
    if kind == "modify_type":
        return f"column {diff[2]}.{diff[3]} has type {diff[5]}, declared {diff[6]}"
    if kind == "modify_nullable":
        stored = "NULL" if diff[5] else "NOT NULL"
        declared = "NULL" if diff[6] else "NOT NULL"
        return f"column {diff[2]}.{diff[3]} is {stored}, declared {declared}"
    if kind == "modify_default":
        return f"column {diff[2]}.{diff[3]} has default {diff[5]!r}, declared {diff[6]!r}"
    return f"{kind}: {diff[1:]!r}"


def _cols(fk: Any) -> str:
    return ", ".join(c.name for c in fk.columns)


def alter_column_kwargs(builder: SQLBuilder, column: ColumnSpec) -> dict[str, Any]:
    from syncline.backends.sql import server_default

    return {"type_": builder.column_type(column.kind), "nullable": column.nullable,
            "server_default": server_default(column.default)}


class _Rows:
    """A ``sqlite3`` cursor answering as the SQLAlchemy results the shared code reads."""

    def __init__(self, cursor: sqlite3.Cursor) -> None:
        self.cursor = cursor
        self.rowcount = cursor.rowcount
        self.returns_rows = cursor.description is not None

    def fetchall(self) -> list[Any]:
        return self.cursor.fetchall()

    def fetchone(self) -> Any:
        return self.cursor.fetchone()


#: SQLite's storage type of each kind whose stored value is also its wire value
_SAME_ON_THE_WIRE = {"text": "text", "uuid": "text", "integer": "integer", "boolean": "integer"}


def _wire_value(field: FieldSpec, column: str) -> str:
    """SQLite: the field's wire value, or an error (malformed JSON) for a stored value its type
    does not read, which stops the UPDATE."""
    stored = _SAME_ON_THE_WIRE[field.kind]
    null = f"WHEN {column} IS NULL THEN NULL " if field.nullable else ""
    if field.kind == "boolean":
        return (f"CASE {null}WHEN typeof({column}) <> 'integer' THEN json('') "
                f"WHEN {column} = 1 THEN json('true') WHEN {column} = 0 THEN json('false') "
                f"ELSE json('') END")
    return f"CASE {null}WHEN typeof({column}) = '{stored}' THEN {column} ELSE json('') END"


class SQLiteMigrationOps(SQLMigrationOps):
    dialect = "sqlite"
    url = "sqlite://"
    placeholder = "?"

    @functools.cached_property
    def builder(self) -> SQLBuilder:
        # SQLAlchemy's types for the backend's columns (its own SQL is text, sqlite_sql).
        import sqlalchemy as sa
        from sqlalchemy.dialects import sqlite

        from syncline.backends.sql import SQLBuilder

        by_name = {"TEXT": sa.Text, "INTEGER": sa.Integer, "FLOAT": sa.Float,
                   "BOOLEAN": sa.Boolean, "BLOB": sa.LargeBinary}

        class SQLiteTypes(SQLBuilder):
            types = {kind: by_name[name]() for kind, name in sqlite_sql.TYPES.items()}

        return SQLiteTypes(sqlite.dialect())

    def run(self, sql: str, params: Any = None) -> Any:
        raw = self.raw()
        try:
            if isinstance(params, list) and params and isinstance(params[0], tuple | list | dict):
                return _Rows(raw.executemany(sql, params))
            return _Rows(raw.execute(sql, () if params is None else params))
        except sqlite3.Error as exc:
            raise self.error(exc, sql) from exc

    def columns(self, table: str) -> list[str] | None:
        rows = self.run(f"PRAGMA table_info({q(table)})").fetchall()
        return [r[1] for r in rows] or None

    def _run_named(self, sql: str, params: Mapping[str, Any]) -> Any:
        return self.run(sql, dict(params))  # sqlite3 binds :name itself

    def raw(self) -> Any:
        return self.backend._connection()

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # PRAGMA foreign_keys cannot change inside a transaction: off before, on after.
        raw = self.raw()
        raw.execute("PRAGMA foreign_keys=OFF")
        try:
            with self.backend.transaction():
                try:
                    yield
                finally:
                    self.release()
        finally:
            raw.execute("PRAGMA foreign_keys=ON")

    def foreign_key_violations(self) -> list[str]:
        """One line per row pointing nowhere, by primary key and column (the check itself
        answers with rowids and key numbers)."""
        out: list[str] = []
        keys: dict[str, tuple[str, dict[int, tuple[str, str]]]] = {}
        for table, rowid, parent, fkid in self.run("PRAGMA foreign_key_check").fetchall():
            if len(out) >= 1000:  # enough to say what is wrong; the rest are counted
                out.append(f"{table} row {rowid}")
                continue
            if table not in keys:
                pk = next((r[1] for r in self.run(f"PRAGMA table_info({q(table)})").fetchall()
                           if r[5] == 1), "rowid")
                keys[table] = (pk, {r[0]: (r[3], r[4]) for r in self.run(
                    f"PRAGMA foreign_key_list({q(table)})").fetchall()})
            pk, fks = keys[table]
            column, ref = fks.get(fkid, ("?", "?"))
            found = self.run(f"SELECT {q(pk)}, {q(column)} FROM {q(table)} WHERE rowid = ?",
                             (rowid,)).fetchone()
            line = (f"{table} {pk} {found[0]!r}: {column} = {found[1]!r} matches no "
                    f"{parent}.{ref}")
            if line not in out:
                out.append(line)
        return out

    def refresh_payloads(self, outbox: str, entity: str, source: TableSpec,
                         fields: Sequence[FieldSpec]) -> bool:
        # Only kinds whose stored value is their wire value (booleans: 0/1 -> false/true).
        if any(f.custom or f.enum_type is not None or f.kind not in _SAME_ON_THE_WIRE
               for f in fields):
            return False
        if not {f.name for f in fields} <= set(self.columns(source.name) or ()):
            return False  # not migrated as declared: syncline's path says so, if it matters
        table, pk = q(source.name), q(source.primary_key)
        pairs = ", ".join(f"'{f.name}', {_wire_value(f, f't.{q(f.name)}')}"
                          for f in sorted(fields, key=lambda f: f.name))
        try:
            # A record gone meanwhile keeps its entry's payload (coalesce: one lookup a row).
            self.run(f"UPDATE {q(outbox)} SET payload = coalesce((SELECT json_object({pairs}) "
                     f"FROM {table} t WHERE t.{pk} = {q(outbox)}.record_id), payload) "
                     "WHERE entity = ? AND action IN ('create', 'update') "
                     "AND payload IS NOT NULL AND group_id IS NULL", (entity,))
        except MigrationError:  # a value its type does not read: the statement undid itself
            return False  # syncline's own path names the row
        return True

    def _master(self, kind: str, table: str | None = None) -> list[tuple[str, str]]:
        sql = "SELECT name, sql FROM sqlite_master WHERE type = ? AND sql IS NOT NULL"
        params: tuple[str, ...] = (kind,)
        if table is not None:
            sql += " AND tbl_name = ?"
            params = (kind, table)
        return [(r[0], r[1]) for r in self.run(sql + " ORDER BY rowid", params).fetchall()]

    def existing(self, tables: Sequence[str]) -> set[str]:
        rows = self.run("SELECT name FROM sqlite_master WHERE type = 'table'").fetchall()
        return set(tables) & {r[0] for r in rows}

    def _view_names(self) -> list[str]:
        return [n for n, _ in self._master("view")]

    def _trigger_names(self) -> list[str]:
        return [n for n, _ in self._master("trigger")]

    def drop_trigger(self, name: str, table: str) -> None:
        self.run(f"DROP TRIGGER IF EXISTS {q(name)}")

    def ignored_tables(self) -> set[str]:
        return {"_syncline_table_writes"}

    def _dependents(self, table: str, keep_indexes: set[str]) -> _Dependents:
        return _Dependents(
            indexes=[(n, s) for n, s in self._master("index", table) if n not in keep_indexes],
            triggers=[s for _, s in self._master("trigger", table)],
            views=self._views())

    def _views(self) -> list[tuple[str, str]]:
        out = []
        for name, sql in self._master("view"):
            declared = self.declared_views.get(name)
            out.append((name, sql if declared is None else
                        f"CREATE VIEW {q(name)} AS {declared.select(self.dialect)}"))
        return out

    def _copy_calls(self, old: str, new: str, spec: TableSpec, old_cols: Sequence[str],
                    targets: Sequence[str], exprs: Mapping[str, str],
                    calls: Mapping[str, Callable[[Any], Any]],
                    convert: Callable[[Any], Any]) -> int:
        # One INSERT ... SELECT calling the functions from SQL: no row crosses into Python but
        # for the call itself (twice as fast as reading and inserting the rows).
        if len(old_cols) > 100:  # SQLite caps a function's arguments
            return super()._copy_calls(old, new, spec, old_cols, targets, exprs, calls, convert)
        raw = self.raw()
        failed: list[MigrationError] = []
        names: dict[str, str] = {}
        for i, (column, fn) in enumerate(calls.items()):
            def call(*values: Any, fn: Callable[[Any], Any] = fn, column: str = column) -> Any:
                row = dict(zip(old_cols, values, strict=True))
                try:
                    return convert(fn(row))
                except Exception as exc:
                    failed.append(_failed_on(spec, column, row, exc))
                    raise
            names[column] = f"_syncline_transformer_{i}"
            raw.create_function(names[column], len(old_cols), call, deterministic=True)
        args = ", ".join(q(c) for c in old_cols)
        select = ", ".join(exprs[c] if c in exprs else f"{names[c]}({args})" for c in targets)
        try:
            result = self.run(f"INSERT INTO {q(new)} ({', '.join(q(c) for c in targets)}) "
                              f"SELECT {select} FROM {q(old)}")
        except MigrationError as exc:
            if failed:
                raise failed[0] from exc.__cause__
            raise
        finally:
            for name in names.values():
                raw.create_function(name, len(old_cols), None)
        return max(int(result.rowcount), 0)

    def _rename_into(self, temp: str, name: str) -> None:
        # Modern renames re-check every view and trigger; the 12-step procedure wants the
        # plain rename (the views come back afterwards).
        self.run("PRAGMA legacy_alter_table=ON")
        try:
            super()._rename_into(temp, name)
        finally:
            self.run("PRAGMA legacy_alter_table=OFF")

    def _alter(self, table: str, change: Callable[[Any], None]) -> None:
        views = self._views()
        triggers = [s for _, s in self._master("trigger", table)]
        for name, _ in reversed(views):
            self.run(f"DROP VIEW IF EXISTS {q(name)}")
        with self.op.batch_alter_table(table, recreate="always") as batch:
            change(batch)
        for sql in triggers:
            self.run(sql)
        for _, sql in views:
            self.run(sql)

    def _alter_column(self, spec: TableSpec, column: ColumnSpec, using: str | None) -> None:
        import sqlalchemy as sa

        old = next(c for c in sa.inspect(self.conn).get_columns(spec.name)
                   if c["name"] == column.name)
        if (column.kind == "boolean" and using is None
                and isinstance(old["type"], sa.String | sa.Text)):
            # SQLite's CAST('true' AS BOOLEAN) is 0: no cast reads text as a boolean.
            raise MigrationError(
                f"changing {spec.name}.{column.name} from text to boolean needs using=, an SQL "
                f"expression giving 0 or 1 (e.g. \"lower({column.name}) IN ('true', 't', "
                f"'1')\"), or a TableMigration with a function")
        indexes = self._master("index", spec.name)
        if using is not None:  # batch mode copies with CAST; convert the values first
            # The copy rebuilds the indexes anyway: none are kept up to date row by row here.
            for name, _ in indexes:
                self.run(f"DROP INDEX {q(name)}")
            self.run(f"UPDATE {q(spec.name)} SET {q(column.name)} = ({using})")
        kwargs = alter_column_kwargs(self.builder, column)
        with self._guard(f"changing column {spec.name}.{column.name}"):
            self._alter(spec.name, lambda batch: batch.alter_column(column.name, **kwargs))
        if using is not None:
            for _, sql in indexes:
                self.run(sql)


class PostgresMigrationOps(SQLMigrationOps):
    dialect = "postgresql"
    url = "postgresql+psycopg://"
    placeholder = "%s"
    # psycopg's type registry wants the real connection class, not the loan wrapper
    engine_options = {"use_native_hstore": False}
    references_by_name = False

    def raw(self) -> Any:
        conn = self.backend._local.conn
        if conn is None:
            raise MigrationError("PostgreSQL migrations run inside the migration transaction")
        return conn.driver_connection

    @contextmanager
    def transaction(self) -> Iterator[None]:
        # READ COMMITTED: after waiting for the lock, the next statement sees what another
        # process's migration committed meanwhile.
        with self.backend.transaction(isolation="READ COMMITTED", check_version=False):
            try:
                self.raw().execute("SELECT pg_advisory_xact_lock(hashtext(%s))",
                                   (f"syncline-migrate:{self.backend.schema or ''}",))
                # Transactions of stores open with older code wait for the migration, then see
                # its version (and stop); see PostgresBackend._begin.
                self.raw().execute('LOCK TABLE "_syncline_meta" IN ACCESS EXCLUSIVE MODE')
                yield
            finally:
                self.release()

    def ignored_tables(self) -> set[str]:
        return {"_syncline_meta"}

    def _view_names(self) -> list[str]:
        return [r[0] for r in self.run(
            "SELECT viewname FROM pg_views WHERE schemaname = current_schema()").fetchall()]

    def _trigger_names(self) -> list[str]:
        return [r[0] for r in self.run(
            "SELECT t.tgname FROM pg_trigger t JOIN pg_class c ON c.oid = t.tgrelid "
            "JOIN pg_namespace n ON n.oid = c.relnamespace "
            "WHERE NOT t.tgisinternal AND n.nspname = current_schema()").fetchall()]

    def drop_trigger(self, name: str, table: str) -> None:
        """Drop the trigger and the function it runs, which it owns (unless another trigger
        runs it too): the declared SQL creates both, so creating it again must work."""
        if not table:
            raise MigrationError(f"dropping trigger {name!r} on PostgreSQL needs its table")
        if self.columns(table) is None:
            return
        functions = self._trigger_functions(
            "t.tgrelid = %s::regclass AND t.tgname = %s", (q(table), name))
        self.run(f"DROP TRIGGER IF EXISTS {q(name)} ON {q(table)}")
        self._drop_unused(functions)

    def drop_table(self, name: str) -> None:
        functions = [] if self.columns(name) is None else self._trigger_functions(
            "t.tgrelid = %s::regclass", (q(name),))
        super().drop_table(name)
        self._drop_unused(functions)

    def _trigger_functions(self, where: str, params: tuple[Any, ...]) -> list[int]:
        return [int(r[0]) for r in self.run(
            f"SELECT DISTINCT t.tgfoid FROM pg_trigger t WHERE NOT t.tgisinternal AND {where}",
            params).fetchall()]

    def _drop_unused(self, functions: list[int]) -> None:
        for oid in functions:
            row = self.run("SELECT p.oid::regprocedure::text FROM pg_proc p WHERE p.oid = %s "
                           "AND NOT EXISTS (SELECT 1 FROM pg_trigger t WHERE t.tgfoid = p.oid)",
                           (oid,)).fetchone()
            if row is not None:
                self.run(f"DROP FUNCTION IF EXISTS {row[0]}")

    def _dependents(self, table: str, keep_indexes: set[str]) -> _Dependents:
        reg = q(table)
        indexes = [(r[0], r[1]) for r in self.run(
            "SELECT indexname, indexdef FROM pg_indexes WHERE schemaname = current_schema() "
            "AND tablename = %s AND indexname NOT IN "
            "(SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass)",
            (table, reg)).fetchall() if r[0] not in keep_indexes]
        triggers = [r[0] for r in self.run(
            "SELECT pg_get_triggerdef(oid) FROM pg_trigger WHERE tgrelid = %s::regclass "
            "AND NOT tgisinternal ORDER BY oid", (reg,)).fetchall()]
        views = []
        for name, definition, _ in self.run(  # views over it, and views over those
                "WITH RECURSIVE deps(oid) AS ("
                " SELECT r.ev_class FROM pg_depend d JOIN pg_rewrite r ON r.oid = d.objid"
                " WHERE d.refobjid = %s::regclass AND r.ev_class <> d.refobjid"
                " UNION SELECT r.ev_class FROM deps JOIN pg_depend d ON d.refobjid = deps.oid"
                " JOIN pg_rewrite r ON r.oid = d.objid WHERE r.ev_class <> d.refobjid) "
                "SELECT DISTINCT c.relname, pg_get_viewdef(c.oid), c.oid FROM deps "
                "JOIN pg_class c ON c.oid = deps.oid WHERE c.relkind = 'v' ORDER BY c.oid",
                (reg,)).fetchall():
            declared = self.declared_views.get(name)
            select = definition if declared is None else declared.select(self.dialect)
            views.append((name, f"CREATE VIEW {q(name)} AS {select}"))
        children = [(r[0], r[1], r[2]) for r in self.run(
            "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) "
            "FROM pg_constraint WHERE contype = 'f' AND confrelid = %s::regclass "
            "AND conrelid <> confrelid", (reg,)).fetchall()]
        return _Dependents(indexes, triggers, views, children)

    def _rename_into(self, temp: str, name: str) -> None:
        super()._rename_into(temp, name)
        for (con,) in self.run(
                "SELECT conname FROM pg_constraint WHERE conrelid = %s::regclass "
                "AND starts_with(conname, %s)", (q(name), temp)).fetchall():
            self.run(f"ALTER TABLE {q(name)} RENAME CONSTRAINT {q(con)} TO "
                     f"{q(name + con[len(temp):])}")

    def _alter(self, table: str, change: Callable[[Any], None]) -> None:
        with self.op.batch_alter_table(table) as batch:  # applied directly on PostgreSQL
            change(batch)

    def _alter_column(self, spec: TableSpec, column: ColumnSpec, using: str | None) -> None:
        kwargs = alter_column_kwargs(self.builder, column)
        type_ = kwargs["type_"]
        if getattr(type_, "collation", None):  # CAST(x AS TEXT COLLATE "C") is no syntax
            type_ = type(type_)()
        type_sql = type_.compile(dialect=self.builder.dialect)
        using = using or f"CAST({q(column.name)} AS {type_sql})"
        with self._guard(f"changing column {spec.name}.{column.name}"):
            # Alembic's DDL reaches psycopg with (empty) parameters: a literal % is written %%
            self.op.alter_column(spec.name, column.name,
                                 postgresql_using=using.replace("%", "%%"), **kwargs)
