"""The storage contract every backend implements.

A backend stores *tables of plain rows*: a row is a ``dict`` from column name to a value of the
backend's own storage form (whatever its converter produces). It knows nothing of entities,
the sync queue or watchers; :mod:`syncline.core.storage.repository` and
:mod:`syncline.core.store` build those once, on top of this class, for every backend.

Rules every implementation follows (the conformance suite checks them):

* Every method may be called from any thread. Work outside :meth:`transaction` is atomic per
  call (``upsert_many`` writes all rows or none).
* :meth:`transaction` is a context manager. Inside it, calls on the same thread see the
  transaction's own writes; other threads never see uncommitted data. Nested transactions are
  savepoints: an exception inside the inner block rolls back only the inner block.
* Conditions follow SQL's three-valued logic; NULLs sort first ascending, last descending;
  ``like`` is case-sensitive.
* Driver exceptions never escape: they are translated into :mod:`syncline.core.model.errors`
  (duplicate keys into :class:`IntegrityError`), with the original kept as ``__cause__``.
"""

from __future__ import annotations

import abc
import warnings
from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import TYPE_CHECKING, Any, ClassVar

import cattrs

from syncline.core.model.errors import MigrationError
from syncline.core.model.query import Condition, Query
from syncline.core.model.schema import IndexSpec, TableSpec
from syncline.core.spi.options import Option, resolve_options

if TYPE_CHECKING:
    from syncline.core.spi.migration_ops import MigrationOps

Row = dict[str, Any]

#: Capabilities a backend may declare; tests needing one are skipped on backends without it.
CAPABILITIES = {
    "persistent": "data survives closing and reopening the store",
    "multi_process": "several processes can open the same store at once",
    "sql": "the backend runs SQL (views, triggers, SQL expressions in migrations)",
    "savepoints": "nested transactions roll back independently",
    "concurrent_writers": "several threads can write at once without corrupting data",
    "exact_decimals": "Decimal comparisons and ordering are exact beyond float precision",
    "external_changes": "watchers see commits made by other connections or processes",
    "foreign_keys": "foreign keys declared on entities are enforced",
    "event_loop_io": "called inside SQLAlchemy's greenlet_spawn on an event loop, the backend "
                     "awaits its I/O there (syncline.aio then runs it without a thread)",
}


class Backend(abc.ABC):
    """Abstract storage backend; subclass it and register the class for a URL scheme."""

    #: Capabilities from :data:`CAPABILITIES` this backend has.
    capabilities: frozenset[str] = frozenset()
    #: Python types the backend stores as they are: the row codec skips conversion for them.
    passthrough_types: ClassVar[frozenset[type]] = frozenset({str, int, float, bytes})
    #: True when :meth:`make_converter` depends on the class alone (not on the URL, the options
    #: or anything else of the instance): stores then build one converter and one row codec
    #: per entity for the class and share them, so that opening a store again costs little.
    shared_converter: ClassVar[bool] = False

    #: The options this backend takes (name -> :class:`syncline.core.spi.options.Option`), also
    #: accepted as URL query parameters. When declared, ``__init__`` checks them: an unknown
    #: or mistyped option or URL parameter is a ConfigurationError, ``self.options`` holds
    #: every declared option (defaults filled in) and ``self.location`` the URL without its
    #: query. None: not declared; options and URL are taken as they are.
    options_spec: ClassVar[Mapping[str, Option] | None] = None
    #: The schema version of the code using this backend, set by the store once it is open.
    #: Every outermost transaction must refuse to begin (raise
    #: :class:`syncline.StaleSchemaError`, nothing written) when the stored version is newer:
    #: another process migrated the store under this code. Check it cheaply: it runs on
    #: every write.
    code_schema_version: int | None = None

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        #: the URL without its query parameters (when ``options_spec`` is declared)
        self.location = url
        #: query parameters handed to the driver (see :meth:`driver_parameters`)
        self.driver_params: dict[str, str] = {}
        if self.options_spec is None:
            self.options: dict[str, Any] = dict(options or {})
        else:
            self.location, self.options, self.driver_params = resolve_options(
                dict(self.options_spec), url, dict(options or {}),
                driver_parameters=self.driver_parameters())

    @classmethod
    def driver_parameters(cls) -> frozenset[str]:
        """URL query parameters the driver takes as they are (PostgreSQL: libpq's)."""
        return frozenset()

    # -- lifecycle ---------------------------------------------------------------------------

    @abc.abstractmethod
    def open(self) -> None:
        """Connect, creating the storage if needed. Raise BackendUnavailableError if it can't."""

    @abc.abstractmethod
    def close(self) -> None:
        """Release every connection and thread. Calling it twice is harmless."""

    def prepare_loop_io(self) -> None:  # noqa: B027 - only event_loop_io backends have any
        """Make ready, off the loop, what calls on the event loop will use (``event_loop_io``
        backends: their async pool, its modules imported), so the loop never waits for it."""

    def close_loop_io(self) -> None:  # noqa: B027 - only event_loop_io backends have any
        """Release what was opened on the event loop (``event_loop_io`` backends: their async
        connections); called in a greenlet on the loop before the store closes elsewhere."""

    @classmethod
    def init_storage(cls, url: str) -> str:
        """Create the storage ``url`` names if it does not exist (``syncline init``).

        Returns a one-line description of what was done. The default opens and closes it.
        """
        backend = cls(url)
        backend.open()
        backend.close()
        return f"{url} is ready"

    def make_converter(self, base: cattrs.Converter) -> cattrs.Converter:
        """Return ``base.copy()`` with hooks for this backend's storage forms.

        ``base`` turns fields into canonical values (aware UTC datetimes, ``date``, ``UUID``,
        ``Decimal``, enum values, JSON-able lists and dicts); override to store them otherwise.
        ``base`` may be shared between stores: register hooks on the copy, never on ``base``.
        """
        return base.copy()

    # -- transactions ------------------------------------------------------------------------

    @abc.abstractmethod
    def transaction(self) -> AbstractContextManager[None]:
        """Begin a transaction (or a savepoint when one is open on this thread).

        Commit when the block ends normally, roll back when it raises, and re-raise.
        """

    @abc.abstractmethod
    def in_transaction(self) -> bool:
        """True when the calling thread has a transaction open."""

    # -- schema ------------------------------------------------------------------------------

    @abc.abstractmethod
    def create_table(self, table: TableSpec) -> None:
        """Create ``table`` and its indexes if it does not exist."""

    @abc.abstractmethod
    def drop_table(self, name: str) -> None:
        """Drop the table ``name`` if it exists."""

    @abc.abstractmethod
    def table_names(self) -> list[str]:
        """Names of the tables that exist, syncline's internal ones included."""

    @abc.abstractmethod
    def create_index(self, table: str, index: IndexSpec) -> None:
        """Create ``index`` on ``table`` if it does not exist."""

    @abc.abstractmethod
    def drop_index(self, table: str, name: str) -> None:
        """Drop the index ``name`` if it exists."""

    @abc.abstractmethod
    def get_schema_version(self) -> int | None:
        """The stored schema version, or None for a new store."""

    @abc.abstractmethod
    def set_schema_version(self, version: int) -> None:
        """Store the schema version (inside the caller's transaction if one is open)."""

    def migration_ops(self) -> MigrationOps:
        """The schema operations migrations run on this backend (see
        :class:`syncline.core.spi.migration_ops.MigrationOps`)."""
        raise MigrationError(
            f"the {type(self).__name__} backend does not support migrations; its plugin must "
            f"implement Backend.migration_ops()")

    # -- reads -------------------------------------------------------------------------------

    @abc.abstractmethod
    def get(self, table: TableSpec, key: Any) -> Row | None:
        """The row whose primary key is ``key``, or None."""

    def get_many(self, table: TableSpec, keys: Sequence[Any]) -> list[Row]:
        """The rows with these keys, in the order of ``keys``; missing keys are left out."""
        rows = []
        for key in keys:
            row = self.get(table, key)
            if row is not None:
                rows.append(row)
        return rows

    @abc.abstractmethod
    def query(self, table: TableSpec, query: Query) -> list[Row]:
        """Rows matching ``query.where``, ordered, then windowed by offset and limit.

        Rows equal on every ordering term are ordered by primary key, so results (and pages)
        are the same on every backend.
        """

    def increment(self, table: TableSpec, key: Any, column: str, by: int = 1) -> int:
        """Add ``by`` to an integer column of one row (created with ``by`` if missing; its other
        columns must then be nullable) and return the new value, atomically.

        The row stays locked by the caller's transaction until it ends: a sync server takes
        its sequence numbers this way, so its writers commit in sequence order.
        """
        with self.transaction():
            row = self.get(table, key)
            value = int(row[column] if row else 0) + by
            if row is None:
                blank = dict.fromkeys(table.column_names)
                self.insert_many(table, [{**blank, table.primary_key: key, column: value}])
            else:
                self.update(table, key, {column: value})
            return value

    # -- one syncer per store ----------------------------------------------------------------

    def advisory_lock(self, name: str, *,
                      blocking: bool = True) -> AbstractContextManager[bool] | None:
        """A lock named ``name`` held across every process sharing this storage while the
        block runs (one syncing process per store); it yields False when ``blocking`` is
        False and another holder has it. None (the default): the backend has none, and the
        engine uses a file lock beside :meth:`file_path`, else a lock of this process.
        """
        return None

    def file_path(self) -> str | None:
        """The file this store lives in, if it lives in one (SQLite's database file): the
        processes sharing it sync one at a time through lock files beside it
        (``<file>.sync-lock``, ``<file>.worker-lock``). None (the default): no file."""
        path = getattr(self, "path", None)  # the old, undeclared way; gone next release
        if path is None:
            return None
        warnings.warn(f"{type(self).__name__}: a backend's lock file is no longer found "
                      f"through its .path attribute; override Backend.file_path()",
                      DeprecationWarning, stacklevel=2)
        return str(path)

    # -- change notification ------------------------------------------------------------------

    def announce(self, tables: frozenset[str]) -> None:  # noqa: B027 - optional
        """Called inside a transaction just before it commits, with the tables it wrote.

        Backends that tell other connections about changes (PostgreSQL's NOTIFY) do it here.
        """

    def watch_external(
            self, callback: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        """Call ``callback(tables)`` when *another* connection or process commits changes
        (``None`` when the tables are unknown); returns a function that stops watching.

        Backends with the ``external_changes`` capability implement it; the default watches
        nothing. The callback must only be handed the news: it runs on the backend's thread.
        """
        return lambda: None

    # -- fast paths: values as tuples in column order ---------------------------------------
    # Repositories read and write through these. The defaults go through the dict methods;
    # a backend whose driver speaks tuples overrides them to skip building dicts.

    def get_values(self, table: TableSpec, key: Any) -> tuple[Any, ...] | None:
        """Like :meth:`get`, as a tuple in ``table.column_names`` order."""
        row = self.get(table, key)
        return None if row is None else tuple(row[c] for c in table.column_names)

    def get_many_values(self, table: TableSpec, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        """Like :meth:`get_many`, as tuples."""
        names = table.column_names
        return [tuple(r[c] for c in names) for r in self.get_many(table, keys)]

    def query_values(self, table: TableSpec, query: Query) -> list[tuple[Any, ...]]:
        """Like :meth:`query`, as tuples."""
        names = table.column_names
        return [tuple(r[c] for c in names) for r in self.query(table, query)]

    def insert_values(self, table: TableSpec, rows: Sequence[Sequence[Any]]) -> None:
        """Like :meth:`insert_many`, given tuples."""
        names = table.column_names
        self.insert_many(table, [dict(zip(names, r, strict=True)) for r in rows])

    def upsert_values(self, table: TableSpec, rows: Sequence[Sequence[Any]]) -> None:
        """Like :meth:`upsert_many`, given tuples."""
        names = table.column_names
        self.upsert_many(table, [dict(zip(names, r, strict=True)) for r in rows])

    @abc.abstractmethod
    def count(self, table: TableSpec, where: Condition | None = None) -> int:
        """How many rows match ``where`` (all rows when None)."""

    # -- writes ------------------------------------------------------------------------------

    @abc.abstractmethod
    def insert_many(self, table: TableSpec, rows: Sequence[Row]) -> None:
        """Insert new rows; any existing key raises IntegrityError and writes nothing."""

    @abc.abstractmethod
    def upsert_many(self, table: TableSpec, rows: Sequence[Row]) -> None:
        """Insert rows, replacing every column of rows whose key exists.

        Callers pass each key at most once per call.
        """

    @abc.abstractmethod
    def update(self, table: TableSpec, key: Any, values: Mapping[str, Any]) -> bool:
        """Set the given columns of one row; False when no row has ``key``."""

    def update_where(self, table: TableSpec, where: Condition | None,
                     values: Mapping[str, Any]) -> int:
        """Set columns on every row matching ``where``; returns the number of rows."""
        keys = [row[table.primary_key] for row in self.query(table, Query(where))]
        with self.transaction():
            for key in keys:
                self.update(table, key, values)
        return len(keys)

    def update_values(self, table: TableSpec, columns: Sequence[str],
                      rows: Sequence[Sequence[Any]]) -> int:
        """Set ``columns`` of many rows, each row's own values: ``rows`` are ``(key, value,
        ...)`` tuples, values in ``columns`` order. Keys with no row are skipped; returns how
        many rows were updated. All or nothing, like every write.

        The default calls :meth:`update` per row in one transaction; a backend overrides it
        with one statement for the batch (the sync engine writes its queue this way).
        """
        n = 0
        with self.transaction():
            for key, *values in rows:
                n += self.update(table, key, dict(zip(columns, values, strict=True)))
        return n

    @abc.abstractmethod
    def delete_many(self, table: TableSpec, keys: Iterable[Any]) -> int:
        """Delete rows by primary key; returns how many existed."""

    @abc.abstractmethod
    def delete_where(self, table: TableSpec, where: Condition | None) -> int:
        """Delete every row matching ``where`` (every row when None); returns the count."""
