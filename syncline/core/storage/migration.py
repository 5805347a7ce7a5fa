"""Schema versions and migrations: :class:`MigrationStrategy`, :class:`Migrator`,
:class:`TableMigration` and the step-by-step helper :func:`steps`.

A store records the schema version it was created or last migrated at. Opening it with code of
a newer version runs ``on_upgrade(migrator, from_version, to_version)`` in one transaction
(with foreign keys checked before it commits); a failure leaves the store at its old version
with every row as it was. See docs/migrations.md.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import TableSpec, Trigger, View, spec_of
from syncline.core.spi.migration_ops import MigrationOps as MigrationOps
from syncline.core.spi.migration_ops import Source as Source
from syncline.core.storage.opening import MigrationListener as MigrationListener
from syncline.core.storage.opening import MigrationStrategy as MigrationStrategy
from syncline.core.storage.opening import OpeningDetails as OpeningDetails
from syncline.core.storage.opening import Progress as Progress
from syncline.core.storage.opening import Schema as Schema
from syncline.core.storage.opening import _as_tuple, _refuse_newer
from syncline.core.storage.opening import open_schema as open_schema

if TYPE_CHECKING:
    from syncline.core.storage.local import LocalStore

log = logging.getLogger("syncline.migration")

Transformer: TypeAlias = "str | Callable[[Mapping[str, Any]], Any]"
_STORED_AS_IS = frozenset({str, int, float, bytes})  # by every backend


def _as_dict(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


def steps(by_version: Mapping[int, Callable[[Migrator], object]]) -> Callable[
        [Migrator, int, int], None]:
    """An ``on_upgrade`` that runs ``by_version[v](migrator)`` for every version ``v`` after
    the store's, up to the code's, in order: one function per version, as Drift's stepByStep.

    A missing step is refused before any step runs.
    """
    table = dict(by_version)

    def upgrade(migrator: Migrator, from_version: int, to_version: int) -> None:
        wanted = list(range(from_version + 1, to_version + 1))
        missing = [v for v in wanted if v not in table]
        if missing:
            raise MigrationError(
                f"no migration step for version(s) {', '.join(map(str, missing))} "
                f"(upgrading {from_version} -> {to_version}; steps exist for "
                f"{', '.join(map(str, sorted(table))) or 'none'})")
        for done, version in enumerate(wanted):
            migrator.report(done, len(wanted), f"migrating to version {version}")
            table[version](migrator)
            migrator.version = version
        migrator.report(len(wanted), len(wanted), f"at version {to_version}")

    return upgrade


@attrs.frozen
class TableMigration:
    """Rebuild ``entity``'s table as declared now, filling each column from the old table.

    ``column_transformer`` maps a column to an SQL expression over the old table's columns
    (SQL backends) or to a function of the old row (any backend; it gets the row as stored and
    returns the new value). ``renamed`` maps a new column name to the old one it copies.
    ``new_columns`` are not in the old table: each needs a transformer, a default or to be
    nullable. Every other column is copied as it is.
    """

    entity: type
    column_transformer: Mapping[str, Transformer] = attrs.field(factory=dict,
                                                                converter=_as_dict)
    new_columns: Sequence[str] = attrs.field(default=(), converter=_as_tuple)
    renamed: Mapping[str, str] = attrs.field(factory=dict, converter=_as_dict)

    def __attrs_post_init__(self) -> None:
        table = spec_of(self.entity).table
        names = set(table.column_names)
        for where, cols in (("column_transformer", self.column_transformer),
                            ("new_columns", self.new_columns), ("renamed", self.renamed)):
            unknown = [c for c in cols if c not in names]
            if unknown:
                raise MigrationError(
                    f"TableMigration of {table.name!r}: {where} names {', '.join(unknown)}, "
                    f"not columns of the table as declared now ({', '.join(table.column_names)})")
        for name, fn in self.column_transformer.items():
            if not (isinstance(fn, str) or callable(fn)):
                raise MigrationError(
                    f"TableMigration of {table.name!r}: the transformer of {name!r} must be an "
                    f"SQL expression (str) or a function of the old row, not {fn!r}")
        for name in self.new_columns:
            col = table.column(name)
            if (name not in self.column_transformer and col.default is None
                    and not col.nullable):
                raise MigrationError(
                    f"TableMigration of {table.name!r}: new column {name!r} has no default, is "
                    f"not nullable and has no transformer; give it a default in the entity or "
                    f"a column_transformer entry")

    def sources(self, old_columns: Sequence[str]) -> dict[str, Source]:
        table = spec_of(self.entity).table
        out: dict[str, Source] = {}
        for col in table.columns:
            fn = self.column_transformer.get(col.name)
            if fn is not None:
                out[col.name] = ("sql", fn) if isinstance(fn, str) else ("call", fn)
            elif col.name in self.renamed:
                old = self.renamed[col.name]
                if old not in old_columns:
                    raise MigrationError(
                        f"TableMigration of {table.name!r}: renamed column {col.name!r} copies "
                        f"{old!r}, which the old table does not have ({', '.join(old_columns)})")
                out[col.name] = ("copy", old)
            elif col.name in self.new_columns:
                out[col.name] = ("default", col.default)
            elif col.name in old_columns:
                out[col.name] = ("copy", col.name)
            else:
                raise MigrationError(
                    f"TableMigration of {table.name!r}: column {col.name!r} is not in the old "
                    f"table ({', '.join(old_columns)}); list it in new_columns (with a default "
                    f"or a transformer) or map it in renamed")
        return out


class Migrator:
    """Changes a store's schema towards the one its code declares (given to migrations).

    Everything runs in the migration's transaction. Entities name tables; the target shape
    of a table, index, view or trigger is always the one declared now.
    """

    def __init__(self, store: LocalStore, ops: MigrationOps, from_version: int | None,
                 to_version: int, progress: Progress | None = None,
                 listeners: Iterable[MigrationListener] = ()) -> None:
        self.store = store
        #: who hears of renamed tables and the finished upgrade: the sync state first
        self.listeners: tuple[MigrationListener, ...] = (*store.migration_listeners,
                                                         *listeners)
        self.ops = ops
        self.from_version = from_version
        self.to_version = to_version
        #: the version the steps have reached so far
        self.version = from_version
        self._progress = progress
        ops.declared_views = {v.name: v for v in store.views}

    def report(self, done: int, total: int, message: str) -> None:
        log.info("%s (%d/%d)", message, done, total)
        if self._progress is not None:
            self._progress(done, total, message)

    # -- target schema -----------------------------------------------------------------------

    def _spec(self, entity: type | str | TableSpec) -> TableSpec:
        if isinstance(entity, TableSpec):
            return entity
        if isinstance(entity, str):
            for table in self.store.tables():
                if table.name == entity:
                    return table
            raise MigrationError(
                f"no entity of this store uses table {entity!r}; pass the entity class or "
                f"declare it in syncline.open(entities=[...])")
        return spec_of(entity).table

    @staticmethod
    def _name(entity: type | str | TableSpec) -> str:
        if isinstance(entity, str):
            return entity
        if isinstance(entity, TableSpec):
            return entity.name
        return spec_of(entity).table.name

    # -- whole schema ------------------------------------------------------------------------

    def create_all(self) -> None:
        """Create every declared table (with its indexes), then the triggers and views (on
        backends without SQL, such as memory, those are skipped)."""
        tables = self.store.tables()
        existing = self.ops.existing([t.name for t in tables])
        for table in tables:
            if table.name not in existing:
                self.ops.create_table(table)
        if not self.ops.sql and (self.store.triggers or self.store.views):
            # Nothing could read them there: the app's views and triggers are SQL.
            log.info("%s holds no views or triggers; skipping the declared ones",
                     self.store.backend.url)
            return
        for trigger in self.store.triggers:
            self.ops.create_trigger(trigger)
        for view in self.store.views:
            self.ops.create_view(view)

    def create(self, element: type | View | Trigger) -> None:
        """Create a table (entity class), view or trigger."""
        if isinstance(element, View):
            self.ops.create_view(element)
        elif isinstance(element, Trigger):
            self.ops.create_trigger(element)
        else:
            self.create_table(element)

    def drop(self, element: type | View | Trigger) -> None:
        """Drop a table (entity class), view or trigger."""
        if isinstance(element, View):
            self.ops.drop_view(element.name)
        elif isinstance(element, Trigger):
            self.ops.drop_trigger(element.name, element.table)
        else:
            self.drop_table(element)

    # -- tables ------------------------------------------------------------------------------

    def create_table(self, entity: type) -> None:
        """Create the entity's table and its indexes as declared."""
        self.ops.create_table(self._spec(entity))

    def drop_table(self, entity: type | str) -> None:
        self.ops.drop_table(self._name(entity))

    def rename_table(self, old_name: str, entity: type | str) -> None:
        """Rename the stored table ``old_name`` to the entity's table name (queued changes and
        sync states of its records follow it)."""
        new_name = self._name(entity)
        self.ops.rename_table(old_name, new_name)
        for listener in self.listeners:
            listener.on_rename_table(self.store, old_name, new_name)

    def create_index(self, entity: type, name: str | None = None) -> None:
        """Create the entity's declared index ``name`` (all of its indexes when None)."""
        spec = self._spec(entity)
        indexes = [i for i in spec.indexes if name is None or i.name == name]
        if name is not None and not indexes:
            raise MigrationError(
                f"{spec.name!r} declares no index {name!r}; its indexes: "
                f"{', '.join(i.name for i in spec.indexes) or 'none'}")
        for index in indexes:
            self.ops.create_index(spec, index)

    def drop_index(self, entity: type | str, name: str) -> None:
        self.ops.drop_index(self._name(entity), name)

    # -- columns -----------------------------------------------------------------------------

    def add_column(self, entity: type, column: str) -> None:
        """Add the declared ``column``; a non-nullable one needs a default in the entity."""
        spec = self._spec(entity)
        col = spec.column(column)
        if not col.nullable and col.default is None:
            raise MigrationError(
                f"cannot add column {spec.name}.{column}: it is not nullable and has no default "
                f"the database can use for existing rows; give the field a default, or use "
                f"alter_table(TableMigration(..., new_columns=[{column!r}], "
                f"column_transformer={{...}}))")
        self.ops.add_column(spec, col)

    def drop_column(self, entity: type | str, column: str) -> None:
        self.ops.drop_column(self._name(entity), column)

    def rename_column(self, entity: type | str, old: str, new: str) -> None:
        self.ops.rename_column(self._name(entity), old, new)

    def alter_column(self, entity: type, column: str, using: str | None = None) -> None:
        """Give a column its declared type, nullability and default.

        ``using`` is an SQL expression converting the old values (for example
        ``"CAST(category AS INTEGER)"``); without it values are cast by the database.
        """
        spec = self._spec(entity)
        self.ops.alter_column(spec, spec.column(column), using)

    def alter_table(self, migration: TableMigration) -> int:
        """Rebuild a table (see :class:`TableMigration`); returns the rows copied."""
        spec = spec_of(migration.entity).table
        old = self.ops.columns(spec.name)
        if old is None:
            raise MigrationError(f"cannot migrate table {spec.name!r}: it does not exist")
        sources = migration.sources(old)
        if not self.ops.sql:
            sql = [c for c, (kind, _) in sources.items() if kind == "sql"]
            if sql:
                raise MigrationError(
                    f"TableMigration of {spec.name!r}: {', '.join(sql)} use SQL expressions, "
                    f"which this backend ({self.ops.dialect}) cannot run; use functions of the "
                    f"old row instead")
        converter = self.store.converter

        def convert(value: Any) -> Any:
            if value is None or type(value) in _STORED_AS_IS:
                return value
            return converter.unstructure(value)

        self.report(0, 1, f"rebuilding {spec.name}")
        count = self.ops.rebuild(spec, sources, convert)
        self.report(1, 1, f"rebuilt {spec.name} ({count} rows)")
        return count

    # -- views, triggers, SQL ----------------------------------------------------------------

    def create_view(self, view: View) -> None:
        self.ops.create_view(view)

    def drop_view(self, view: View | str) -> None:
        self.ops.drop_view(view if isinstance(view, str) else view.name)

    def recreate_all_views(self) -> None:
        """Drop and create every declared view (their SQL may depend on renamed columns)."""
        for view in reversed(self.store.views):
            self.ops.drop_view(view.name)
        for view in self.store.views:
            self.ops.create_view(view)

    def create_trigger(self, trigger: Trigger) -> None:
        self.ops.create_trigger(trigger)

    def drop_trigger(self, trigger: Trigger | str, table: str | None = None) -> None:
        if isinstance(trigger, Trigger):
            self.ops.drop_trigger(trigger.name, trigger.table)
        else:
            self.ops.drop_trigger(trigger, table or "")

    def execute(self, sql: str, params: Mapping[str, Any] | None = None) -> list[
            tuple[Any, ...]]:
        """Run one SQL statement in the migration's transaction; returns its rows, if any.

        Parameters are named on every backend: ``execute("... WHERE id = :id", {"id": 3})``;
        a ``%`` in the SQL is a literal ``%``."""
        return self.ops.execute(sql, named_params(params))


# -- running migrations on open --------------------------------------------------------------


def _migrate(store: LocalStore, strategy: MigrationStrategy, progress: Progress | None,
             stored: int | None) -> OpeningDetails:
    backend = store.backend
    target = store.schema_version
    ops = backend.migration_ops()
    before = stored  # read again under the lock below
    locked = False
    try:
        with ops.transaction():
            locked = True
            before = backend.get_schema_version()  # again, now that we hold the write lock
            _refuse_newer(store, before)
            if before == target:  # another process migrated it while we waited
                return OpeningDetails(before, target)
            with store.transaction():
                migrator = Migrator(store, ops, before, target, progress, strategy.listeners)
                internal = [t for t in store.tables() if t.name.startswith("_syncline")]
                existing = ops.existing([t.name for t in internal])
                for table in internal:
                    if table.name not in existing:
                        ops.create_table(table)
                if before is None:
                    strategy.on_create(migrator)
                else:
                    strategy.on_upgrade(migrator, before, target)
                    for listener in migrator.listeners:
                        listener.after_upgrade(store, before, target)
                violations = ops.foreign_key_violations()
                if violations:
                    raise MigrationError(
                        "the migration leaves rows whose foreign keys point nowhere: "
                        + "; ".join(violations[:20])
                        + (f" (and {len(violations) - 20} more)" if len(violations) > 20 else ""))
                backend.set_schema_version(target)
    except MigrationError as exc:
        if before is None:
            raise
        raise MigrationError(
            f"{exc} (nothing was changed: the store is still at version {before})") from exc
    except Exception as exc:  # a backend's error or the app's own: say which version stays
        if not locked:
            raise MigrationError(_not_started(before, target, exc)) from exc
        raise MigrationError(_failed(before, target, exc)) from exc
    return OpeningDetails(before, target)


def _failed(before: int | None, target: int, exc: BaseException) -> str:
    what = "creating the store" if before is None else f"upgrading from version {before}"
    kept = ("" if before is None else
            f"; nothing was changed, the store is still at version {before}")
    return f"{what} to version {target} failed: {type(exc).__name__}: {exc}{kept}"


def _not_started(before: int | None, target: int, exc: BaseException) -> str:
    # Another connection holds the write lock: maybe another process migrating the store right
    # now, so the stored version may change any moment: say what this process did, not more.
    what = "creating the store" if before is None else f"upgrading from version {before}"
    return (f"{what} to version {target} did not start: the store's write lock was not "
            f"granted ({type(exc).__name__}: {exc}); another process may be migrating it at "
            f"this moment. This process changed nothing; open the store again to use it as "
            f"that migration leaves it")


def named_params(params: object) -> dict[str, Any] | None:
    """``params`` as a dict of ``:name`` parameters, or a clear error for positional ones."""
    if params is None or (not isinstance(params, Mapping) and not params):
        return None
    if not isinstance(params, Mapping):
        raise MigrationError(
            f"SQL parameters are named on every backend: write :name in the SQL and pass a "
            f"mapping such as {{'name': value}}, not {type(params).__name__} {params!r}")
    return dict(params)


def execute(store: LocalStore, sql: str, params: Mapping[str, Any] | None = None) -> list[
        tuple[Any, ...]]:
    """Run one SQL statement on a store of an SQL backend, in a transaction of its own; returns
    its rows, if any (for checks in tests and one-off maintenance, not for application data).
    Parameters are ``:name`` ones given as a mapping; ``%`` is a literal ``%``."""
    ops = store.backend.migration_ops()
    checked = named_params(params)
    with store.backend.transaction():  # an ordinary one: foreign keys stay on
        try:
            return ops.execute(sql, checked)
        finally:
            ops.release()
