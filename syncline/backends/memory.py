"""The in-memory backend: ``memory://`` (private) or ``memory://name`` (shared in-process).

Thread-safe through one re-entrant lock per database; a transaction holds it from begin to end,
so other threads never see uncommitted rows. Rollback replays an undo log; a savepoint is a
mark in that log. Rows are copied in and out, and JSON is kept as text, so mutating an object
you passed in or got back never changes the store.
"""

from __future__ import annotations

import itertools
import threading
import warnings
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple

import cattrs

from syncline.backends.memory_index import OrderedIndex, candidates
from syncline.core.model.errors import IntegrityError, NotFoundError, StaleSchemaError
from syncline.core.model.evaluate import evaluate, order_rows
from syncline.core.model.query import Condition, Query
from syncline.core.model.schema import IndexSpec, TableSpec
from syncline.core.model.sync_fields import (
    STATE_TABLE,
    SYNC_FIELDS,
    query_uses_sync,
    state_key_prefix,
    where_uses_sync,
)
from syncline.core.model.values import describe
from syncline.core.spi.backend import Backend, Row
from syncline.core.spi.helpers import store_json_as_text
from syncline.core.spi.hookspecs import hookimpl
from syncline.core.spi.options import ISOLATION, Option
from syncline.core.spi.registries import BackendRegistry

if TYPE_CHECKING:
    from syncline.backends.memory_migration import MemoryMigrationOps

Key = Any


class Change(NamedTuple):
    """One change of a transaction, in the order made: ``op`` is ``"row"`` (the row ``key`` of
    ``table`` was written or deleted; ``old`` is its value before, None when new), ``"create"``,
    ``"drop"`` (``old``: the dropped :class:`MemoryTable`), ``"index"`` (``key``: the index's
    name) or ``"version"`` (``old``: the schema version before)."""

    op: str
    table: str
    key: Any
    old: Any


Undo = list[Change]


class MemoryTable:
    """One table of a memory database: its current :class:`TableSpec` (``spec``, migrations
    included), its rows by primary key (``rows``: read them; write through :meth:`put` and
    :meth:`remove`, which keep the unique indexes in step) and its unique indexes."""

    def __init__(self, spec: TableSpec) -> None:
        self.spec = spec
        self.rows: dict[Key, Row] = {}
        self.unique: dict[str, tuple[IndexSpec, dict[tuple[Any, ...], Key]]] = {}
        #: every index, its keys in order (queries read through them: memory_index)
        self.ordered: dict[str, OrderedIndex] = {}
        for index in spec.indexes:
            self.add_index(index)

    def add_index(self, index: IndexSpec) -> None:
        """Index the rows by ``index``: every index keeps the keys in order (queries read
        through it); a unique one also maps its values to their key."""
        if index.name not in self.ordered:
            ordered = OrderedIndex(index)
            for key, row in self.rows.items():
                ordered.add(key, row)
            self.ordered[index.name] = ordered
        if not index.unique or index.name in self.unique:
            return
        seen: dict[tuple[Any, ...], Key] = {}
        for key, row in self.rows.items():
            values = tuple(row[c] for c in index.columns)
            if None in values:
                continue
            if values in seen:
                raise IntegrityError(
                    f"cannot create unique index {index.name}: duplicate {values!r}"
                )
            seen[values] = key
        self.unique[index.name] = (index, seen)

    def put(self, key: Key, row: Row) -> None:
        """Store ``row`` under ``key`` (the key must be free: :meth:`remove` it first);
        IntegrityError when a unique index already holds its values for another key, or when
        the row breaks a declared check (as a database's CHECK constraint would)."""
        for check in self.spec.checks:
            if not check.holds(row[check.column]):
                raise IntegrityError(
                    f"{self.spec.name}.{check.column} = {describe(row[check.column])} breaks "
                    f"the check {check.describe()} ({check.name})")
        for name, (index, seen) in self.unique.items():
            values = tuple(row[c] for c in index.columns)
            if None in values:
                continue
            owner = seen.get(values, key)
            if owner != key:
                raise IntegrityError(
                    f"unique index {name} on {self.spec.name}: {index.columns} = {values!r} "
                    f"already belongs to key {owner!r}"
                )
        for _name, (index, seen) in self.unique.items():
            values = tuple(row[c] for c in index.columns)
            if None not in values:
                seen[values] = key
        self.rows[key] = row
        for ordered in self.ordered.values():
            ordered.add(key, row)

    def remove(self, key: Key) -> Row | None:
        """Take the row ``key`` out and return it (None when there was none)."""
        row = self.rows.pop(key, None)
        if row is not None:
            for _name, (index, seen) in self.unique.items():
                values = tuple(row[c] for c in index.columns)
                if seen.get(values) == key:
                    del seen[values]
            for ordered in self.ordered.values():
                ordered.remove(key, row)
        return row


class MemoryDatabase:
    """What a memory store holds: ``tables`` by name, the schema ``version`` (None: never
    set), the re-entrant ``lock`` every transaction holds, and the stores watching it."""

    def __init__(self) -> None:
        self.lock = threading.RLock()
        self.tables: dict[str, MemoryTable] = {}
        self.version: int | None = None
        #: (backend, callback) of every store watching this database
        self.watchers: list[tuple[object, Callable[[frozenset[str] | None], None]]] = []


class _ThreadState(threading.local):
    def __init__(self) -> None:
        self.undo: Undo | None = None


_shared: dict[str, MemoryDatabase] = {}
_shared_lock = threading.Lock()


class MemoryBackend(Backend):
    """Rows in Python dicts; fast, isolated, gone when the process ends.

    A backend that keeps its rows in memory and persists them elsewhere subclasses it through
    three extension points: :meth:`load` fills a fresh database as the store opens,
    :meth:`committed` hears every committed transaction's :class:`Change` list, and :attr:`db`
    (a :class:`MemoryDatabase` of :class:`MemoryTable` objects) is what both see. Set
    ``self.name = ""`` in ``__init__`` so that every open makes a database of its own.
    """

    capabilities: frozenset[str] = frozenset(
        {"savepoints", "concurrent_writers", "exact_decimals", "external_changes"}
    )
    passthrough_types: ClassVar[frozenset[type]] = frozenset({str, int, float, bool, bytes})
    shared_converter = True  # make_converter uses nothing of the instance

    options_spec: ClassVar[Mapping[str, Option] | None] = {
        "isolation": ISOLATION,
    }

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        #: the shared database's name (``memory://name``); "" for a private one
        self.name = self.location.partition("://")[2].strip("/")
        self._db: MemoryDatabase | None = None
        self._state = _ThreadState()

    def open(self) -> None:
        if not self.name:
            self._db = self._new_database()
            return
        with _shared_lock:
            db = _shared.get(self.name)
            if db is None:
                db = _shared[self.name] = self._new_database()
            self._db = db

    def _new_database(self) -> MemoryDatabase:
        db = MemoryDatabase()
        with db.lock:
            self.load(db)
        return db

    def load(self, db: MemoryDatabase) -> None:
        """Fill ``db``, new and empty, as the store opens (the default leaves it empty).

        Restore tables with ``db.tables[name] = MemoryTable(spec)``, their rows with
        ``table.put(key, row)`` and the schema version with ``db.version = n``; nothing done
        here is a change :meth:`committed` hears of. Raise BackendUnavailableError when the
        stored data cannot be read.
        """

    def close(self) -> None:
        self._db = None

    def watch_external(
            self, callback: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        db = self.db
        entry = (self, callback)
        with db.lock:
            db.watchers.append(entry)

        def stop() -> None:
            with db.lock:
                if entry in db.watchers:
                    db.watchers.remove(entry)

        return stop

    @staticmethod
    def forget(name: str) -> None:
        """Drop the shared in-process database ``memory://name``."""
        with _shared_lock:
            _shared.pop(name, None)

    def make_converter(self, base: cattrs.Converter) -> cattrs.Converter:
        conv = base.copy()
        store_json_as_text(conv, base)
        return conv

    @property
    def db(self) -> MemoryDatabase:
        """The open database (NotFoundError once closed); hold ``db.lock`` to read it."""
        if self._db is None:
            raise NotFoundError(f"the memory store {self.url} is closed")
        return self._db

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        db = self.db
        state = self._state
        with db.lock:
            outer = state.undo
            code = self.code_schema_version
            if outer is None and code is not None and (db.version or 0) > code:
                raise StaleSchemaError(self.url, db.version or 0, code)
            state.undo = []
            try:
                yield
            except BaseException:
                self._rollback(state.undo)
                state.undo = outer
                raise
            done = state.undo
            if outer is not None:
                outer.extend(done)
            state.undo = outer
            if outer is None and done:
                self.committed(done)

    def committed(self, undo: Undo) -> None:
        """Called, holding the database's lock, after an outermost transaction committed.

        ``undo`` lists what it changed, in order, as :class:`Change` tuples; a changed row's new
        value is in ``self.db.tables[table].rows`` (absent: deleted), a created table's spec in
        ``self.db.tables[table].spec``. Subclasses that persist the data (see the
        ``syncline-jsonl`` example plugin) extend this; call ``super()``.
        """
        db = self.db
        if db.watchers:
            tables = frozenset(t for _, t, _, _ in undo if t)
            for owner, callback in list(db.watchers):
                if owner is not self:  # the committing store notifies itself
                    callback(tables)

    def in_transaction(self) -> bool:
        return self._state.undo is not None

    def _log(self, op: str, table: str, key: Any, old: Any) -> None:
        undo = self._state.undo
        if undo is not None:
            undo.append(Change(op, table, key, old))

    def _rollback(self, undo: Undo) -> None:
        db = self.db
        for op, table, key, old in reversed(undo):
            if op == "row":
                t = db.tables[table]
                t.remove(key)
                if old is not None:
                    t.put(key, old)
            elif op == "create":
                db.tables.pop(table, None)
            elif op == "drop":
                db.tables[table] = old
            elif op == "version":
                db.version = old
            elif op == "index":
                db.tables[table].unique.pop(key, None)
                db.tables[table].ordered.pop(key, None)

    # -- schema ------------------------------------------------------------------------------

    def create_table(self, table: TableSpec) -> None:
        with self.transaction():
            if table.name not in self.db.tables:
                self.db.tables[table.name] = MemoryTable(table)
                self._log("create", table.name, None, None)

    def drop_table(self, name: str) -> None:
        with self.transaction():
            old = self.db.tables.pop(name, None)
            if old is not None:
                self._log("drop", name, None, old)

    def table_names(self) -> list[str]:
        with self.db.lock:
            return sorted(self.db.tables)

    def create_index(self, table: str, index: IndexSpec) -> None:
        with self.transaction():
            t = self._table(table)
            if index.name not in t.ordered or (index.unique and index.name not in t.unique):
                t.add_index(index)
                self._log("index", table, index.name, None)

    def drop_index(self, table: str, name: str) -> None:
        with self.db.lock:
            t = self.db.tables.get(table)
            if t is not None:
                t.unique.pop(name, None)
                t.ordered.pop(name, None)

    def get_schema_version(self) -> int | None:
        return self.db.version

    def migration_ops(self) -> MemoryMigrationOps:
        from syncline.backends.memory_migration import MemoryMigrationOps

        return MemoryMigrationOps(self)

    def set_schema_version(self, version: int) -> None:
        with self.transaction():
            self._log("version", "", None, self.db.version)
            self.db.version = version

    # -- rows --------------------------------------------------------------------------------

    def _table(self, name: str) -> MemoryTable:
        try:
            return self.db.tables[name]
        except KeyError:
            raise NotFoundError(f"table {name!r} does not exist in {self.url}") from None

    def _put(self, t: MemoryTable, key: Key, row: Row) -> None:
        warnings.warn("MemoryBackend._put(t, key, row) is deprecated; use t.put(key, row)",
                      DeprecationWarning, stacklevel=2)
        t.put(key, row)

    def _remove(self, t: MemoryTable, key: Key) -> Row | None:
        warnings.warn("MemoryBackend._remove(t, key) is deprecated; use t.remove(key)",
                      DeprecationWarning, stacklevel=2)
        return t.remove(key)

    def _write(self, t: MemoryTable, key: Key, row: Row) -> None:
        old = t.remove(key)
        self._log("row", t.spec.name, key, old)
        t.put(key, row)

    def get(self, table: TableSpec, key: Any) -> Row | None:
        with self.db.lock:
            row = self._table(table.name).rows.get(key)
            return None if row is None else dict(row)

    def get_many(self, table: TableSpec, keys: Sequence[Any]) -> list[Row]:
        with self.db.lock:
            rows = self._table(table.name).rows
            return [dict(rows[k]) for k in keys if k in rows]

    def _matching(self, table: TableSpec, where: Condition | None,
                  query: Query | None = None, joined: bool = False) -> list[Row]:
        """The rows matching ``where``; with ``query``, in its order and window; ``joined``:
        with their records' sync state (scanned: the indexes do not hold it)."""
        t = self._table(table.name)
        if joined:
            joined_rows = [r for r in self._with_sync_state(table, t.rows.values())
                           if where is None or evaluate(where, r) is True]
            return joined_rows if query is None else self._window(joined_rows, table, query)
        if where is not None:
            order = () if query is None else query.order_by
            try:
                found = candidates(t.rows, where, t.spec.primary_key, t.ordered, order)
                if found is not None:
                    rows, ordered = found
                    matched = (r for r in rows if evaluate(where, r) is True)
                    if query is None:
                        return list(matched)
                    if ordered and query.limit is not None:  # read no further than needed
                        return list(itertools.islice(matched, query.offset,
                                                     query.offset + query.limit))
                    return self._window(list(matched), table, query)
            except TypeError:  # a value the index cannot sort with the column's: scan
                pass
        found_rows = [r for r in t.rows.values()
                      if where is None or evaluate(where, r) is True]
        return found_rows if query is None else self._window(found_rows, table, query)

    @staticmethod
    def _window(rows: list[Row], table: TableSpec, query: Query) -> list[Row]:
        rows = order_rows(rows, query.order_by, table.primary_key)
        end = None if query.limit is None else query.offset + query.limit
        return rows[query.offset:end]

    def _with_sync_state(self, table: TableSpec, rows: Iterable[Row]) -> list[Row]:
        """The rows with their records' sync state as extra fields, as SQL's LEFT JOIN gives
        them (see :mod:`syncline.core.model.sync_fields`)."""
        states = self.db.tables.get(STATE_TABLE)
        found = states.rows if states is not None else {}
        prefix = state_key_prefix(table.name)
        pk = table.primary_key
        out = []
        for row in rows:
            state = found.get(f"{prefix}{row[pk]}")
            out.append({**row, **{name: None if state is None else state[column]
                                  for name, (column, _) in SYNC_FIELDS.items()}})
        return out

    def query(self, table: TableSpec, query: Query) -> list[Row]:
        with self.db.lock:
            joined = query_uses_sync(query)
            rows = self._matching(table, query.where, query, joined)
            if joined:  # leave the sync state out
                names = table.column_names
                return [{n: r[n] for n in names} for r in rows]
            return [dict(r) for r in rows]

    def count(self, table: TableSpec, where: Condition | None = None) -> int:
        with self.db.lock:
            if where is None:
                return len(self._table(table.name).rows)
            return len(self._matching(table, where, joined=where_uses_sync(where)))

    def insert_many(self, table: TableSpec, rows: Sequence[Row]) -> None:
        pk = table.primary_key
        with self.transaction():
            t = self._table(table.name)
            for row in rows:
                key = row[pk]
                if key in t.rows:
                    raise IntegrityError(f"{table.name}: a row with {pk}={key!r} already exists")
                self._write(t, key, dict(row))

    def upsert_many(self, table: TableSpec, rows: Sequence[Row]) -> None:
        pk = table.primary_key
        with self.transaction():
            t = self._table(table.name)
            for row in rows:
                self._write(t, row[pk], dict(row))

    def update(self, table: TableSpec, key: Any, values: Mapping[str, Any]) -> bool:
        with self.transaction():
            t = self._table(table.name)
            old = t.rows.get(key)
            if old is None:
                return False
            self._write(t, key, {**old, **values})
            return True

    def update_where(self, table: TableSpec, where: Condition | None,
                     values: Mapping[str, Any]) -> int:
        with self.transaction():
            t = self._table(table.name)
            pk = table.primary_key
            matched = self._matching(table, where)
            for old in matched:
                self._write(t, old[pk], {**old, **values})
            return len(matched)

    def delete_many(self, table: TableSpec, keys: Iterable[Any]) -> int:
        n = 0
        with self.transaction():
            t = self._table(table.name)
            for key in keys:
                old = t.remove(key)
                if old is not None:
                    self._log("row", table.name, key, old)
                    n += 1
        return n

    def delete_where(self, table: TableSpec, where: Condition | None) -> int:
        with self.transaction():
            pk = table.primary_key
            keys = [r[pk] for r in self._matching(table, where)]
            return self.delete_many(table, keys)


_RENAMED = {"_Table": "MemoryTable", "_Database": "MemoryDatabase"}


def __getattr__(name: str) -> Any:
    if name in _RENAMED:
        warnings.warn(f"syncline.backends.memory.{name} is deprecated; use {_RENAMED[name]}",
                      DeprecationWarning, stacklevel=2)
        return globals()[_RENAMED[name]]
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


@hookimpl
def syncline_register_backends(registry: BackendRegistry) -> None:
    registry.register("memory", MemoryBackend, description="in-process dicts, for tests and caches")


@hookimpl
def syncline_register_test_stores(registry: Any) -> None:
    """The test stores of ``pytest --syncline-backend`` (syncline.testing.stores)."""
    registry.register("memory", "syncline.testing.stores:memory_url", default=True)
    registry.register("memory-named", "syncline.testing.stores:named_memory_url")
