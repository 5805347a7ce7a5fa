"""The SQLite backend: ``sqlite:///path/app.db``, or ``sqlite://`` for a private in-memory one.

Its SQL is plain text (:mod:`syncline.backends.sqlite_sql`, no SQLAlchemy: opening a store
stays quick), run directly on ``sqlite3`` connections (one per thread, WAL, foreign keys on, a
busy timeout). Transactions
are explicit (``BEGIN IMMEDIATE``, ``SAVEPOINT``), so nesting and rollback behave the same on
every Python version. A private in-memory database has one connection that threads take turns on.
"""

from __future__ import annotations

import datetime as dt
import decimal
import logging
import sqlite3
import threading
import uuid
import weakref
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import TYPE_CHECKING, Any, ClassVar
from urllib.parse import quote

import cattrs

from syncline.backends.sql_conditions import batch_update
from syncline.backends.sqlite_sql import SQLiteSQL, q
from syncline.backends.tuple_rows import TupleRowsMixin
from syncline.core.model.convert import structure_hook, utc_datetime
from syncline.core.model.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    StaleSchemaError,
    TransactionError,
)
from syncline.core.model.query import Compare, Condition, Query
from syncline.core.model.schema import IndexSpec, TableSpec
from syncline.core.spi.backend import Backend
from syncline.core.spi.helpers import store_json_as_text, url_path
from syncline.core.spi.hookspecs import hookimpl
from syncline.core.spi.options import ISOLATION, Option
from syncline.core.spi.registries import BackendRegistry

if TYPE_CHECKING:
    from syncline.backends.sql_migration import SQLiteMigrationOps

log = logging.getLogger("syncline.sqlite")
_CHUNK = 500  # keys per IN (...) list, well under SQLite's variable limit


def _datetime_to_text(value: Any) -> str:
    # Fixed width, always UTC: text order is time order.
    if type(value) is dt.datetime and value.tzinfo is dt.UTC:
        return value.isoformat(timespec="microseconds")
    return utc_datetime(value).isoformat(timespec="microseconds")


class _Local(threading.local):
    def __init__(self) -> None:
        self.conn: sqlite3.Connection | None = None
        self.depth = 0
        self.announced: frozenset[str] = frozenset()  # tables the open transaction wrote
        self.counted = False  # ... and counted in the write counts
        #: PRAGMA data_version when the schema version was last checked (see _check_version)
        self.checked_at: tuple[sqlite3.Connection, int] | None = None


#: Per table, how many write transactions of any store changed it: how the poller tells other
#: connections' commits from this store's own, and which tables they wrote. The row of table
#: '' counts the pollers: writers only count while someone else polls.
_WRITES = "_syncline_table_writes"


def _translate(exc: sqlite3.Error, what: str) -> BackendError:
    msg = str(exc)
    if isinstance(exc, sqlite3.IntegrityError):
        return IntegrityError(f"{what}: {msg}")
    if "no such table" in msg:
        return NotFoundError(f"{what}: {msg}")  # type: ignore[return-value]
    if "locked" in msg or "busy" in msg:
        return BackendError(
            f"{what}: {msg}; another connection held a write lock longer than the busy "
            f"timeout (raise the 'busy_timeout' store option)"
        )
    if isinstance(exc, sqlite3.OperationalError) and "unable to open" in msg:
        return BackendUnavailableError(f"{what}: {msg}")
    return BackendError(f"{what}: {msg}")


class SQLiteBackend(TupleRowsMixin, Backend):
    """SQLite on ``sqlite3``."""

    capabilities: frozenset[str] = frozenset(
        {"persistent", "multi_process", "sql", "savepoints", "concurrent_writers",
         "external_changes", "foreign_keys"}
    )
    passthrough_types: ClassVar[frozenset[type]] = frozenset({str, int, float, bytes})
    shared_converter = True  # make_converter uses nothing of the instance
    options_spec: ClassVar[Mapping[str, Option] | None] = {
        "busy_timeout": Option(float, 10.0, "seconds to wait for another connection's write "
                               "lock", minimum=0),
        "synchronous": Option(str, "NORMAL", "PRAGMA synchronous (FULL also survives power "
                              "loss)", choices=("OFF", "NORMAL", "FULL", "EXTRA")),
        "watch_interval": Option(float, 0.05, "seconds between two looks for other "
                                 "connections' commits", minimum=0.001),
        "mode": Option(str, "rwc", "rwc: read-write, created if missing; rw: read-write, "
                       "must exist; ro: read-only, must exist", choices=("rwc", "rw", "ro")),
        "isolation": ISOLATION,
    }

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        #: the database file; None for a private in-memory database (``sqlite://``)
        self.path: str | None = url_path(self.location)
        if self.path is None:  # a private in-memory database lives and dies with the store
            self.capabilities = self.capabilities - {"persistent", "multi_process",
                                                     "external_changes"}
        self.busy_timeout: float = self.options["busy_timeout"]
        self.synchronous: str = self.options["synchronous"]
        self.mode: str = self.options["mode"]
        if self.path is None and self.mode != "rwc":
            raise ConfigurationError(
                f"{url}: mode={self.mode} needs a file; a private in-memory database is "
                f"always created read-write (mode=rwc)")
        self.sql = SQLiteSQL()
        self._local = _Local()
        #: every connection, with the thread it belongs to (None: the store's own)
        self._conns: list[tuple[weakref.ref[threading.Thread] | None, sqlite3.Connection]] = []
        self._conns_lock = threading.Lock()
        self._shared: sqlite3.Connection | None = None  # the in-memory database's connection
        self._shared_lock = threading.RLock()
        self._open = False
        self._counts_lock = threading.Lock()
        self._started: dict[str, int] = {}  # table -> own write transactions counted (so far)
        self._commits = 0  # own committed write transactions
        self._polling = 0  # this store's pollers (counted in the '' row)

    # -- connections -------------------------------------------------------------------------

    def open(self) -> None:
        if self.path is not None:
            folder = Path(self.path).parent
            if not folder.is_dir():
                raise BackendUnavailableError(
                    f"cannot open {self.url}: folder {folder} does not exist; create it first"
                )
            if self.mode != "rwc" and not Path(self.path).is_file():
                raise BackendUnavailableError(
                    f"cannot open {self.url}: mode={self.mode} opens an existing database "
                    f"and {self.path} does not exist")
        self._open = True
        try:
            conn = self._connection()  # fail now, not on first use
            if self.path is not None and self.mode != "ro":
                with self._errors(f"opening {self.url}"):
                    conn.execute("PRAGMA journal_mode=WAL")
                    exists = conn.execute(
                        "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?",
                        (_WRITES,)).fetchone()
                    if exists is None:
                        conn.execute(f'CREATE TABLE IF NOT EXISTS "{_WRITES}" '
                                     "(tbl TEXT PRIMARY KEY, n INTEGER NOT NULL) WITHOUT ROWID")
        except BaseException:
            self.close()  # no connection (no file descriptor) outlives a failed open
            raise

    def file_path(self) -> str | None:
        return self.path

    @classmethod
    def init_storage(cls, url: str) -> str:
        backend = cls(url)
        if backend.path is not None:
            Path(backend.path).parent.mkdir(parents=True, exist_ok=True)
        backend.open()
        backend.close()
        return f"{url} is ready"

    def _connect(self, thread: threading.Thread | None = None) -> sqlite3.Connection:
        conn: sqlite3.Connection | None = None
        try:
            if self.path is None:
                conn = sqlite3.connect(":memory:", timeout=self.busy_timeout,
                                       isolation_level=None, check_same_thread=False)
            else:
                uri = f"file:{quote(self.path)}?mode={self.mode}"
                conn = sqlite3.connect(uri, timeout=self.busy_timeout, isolation_level=None,
                                       check_same_thread=False, uri=True)
            conn.execute("PRAGMA foreign_keys=ON")
            conn.execute("PRAGMA case_sensitive_like=ON")
            conn.execute(f"PRAGMA busy_timeout={int(self.busy_timeout * 1000)}")
            conn.execute(f"PRAGMA synchronous={self.synchronous}")  # one of the choices
            if self.path is not None:
                conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # a database?
        except sqlite3.Error as exc:
            if conn is not None:
                conn.close()  # not left to the garbage collector: its descriptor goes now
            raise BackendUnavailableError(f"cannot open {self.url}: {exc}") from exc
        with self._conns_lock:
            # Threads come and go (a server's pool): close the connections of ended ones.
            kept = []
            for owner, other in self._conns:
                dead = owner is not None and ((t := owner()) is None or not t.is_alive())
                if dead:
                    with suppress(sqlite3.Error):
                        other.close()
                else:
                    kept.append((owner, other))
            kept.append((None if thread is None else weakref.ref(thread), conn))
            self._conns = kept
        return conn

    def _connection(self) -> sqlite3.Connection:
        if not self._open:
            raise TransactionError(f"the SQLite store {self.url} is closed")
        if self.path is None:
            if self._shared is None:
                with self._shared_lock:
                    if self._shared is None:
                        self._shared = self._connect()
            return self._shared
        conn = self._local.conn
        if conn is None:
            conn = self._local.conn = self._connect(threading.current_thread())
        return conn

    def announce(self, tables: frozenset[str]) -> None:
        # Count the write in the same transaction: readers of the counts learn which tables
        # other connections wrote (see watch_external).
        if self.path is None or not tables:
            return
        local = self._local
        local.announced = tables
        with self._use() as conn, self._errors("counting the written tables"):
            # Read under the write lock: a poller registers in a write transaction, so every
            # commit after it is counted (before it, the poller's baseline covers them).
            row = conn.execute(f'SELECT n FROM "{_WRITES}" WHERE tbl = \'\'').fetchone()
            if (row[0] if row else 0) <= self._polling:
                return  # nobody else polls: a read, no page written
            conn.executemany(
                f'INSERT INTO "{_WRITES}" (tbl, n) VALUES (?, 1) '
                f'ON CONFLICT (tbl) DO UPDATE SET n = n + 1', [(t,) for t in tables])
        local.counted = True
        with self._counts_lock:
            for t in tables:
                self._started[t] = self._started.get(t, 0) + 1

    def _register_poller(self, conn: sqlite3.Connection, step: int) -> None:
        # On the poller's own connection (autocommit): never part of a caller's transaction.
        with self._errors("registering a watcher"):
            conn.execute(f'INSERT INTO "{_WRITES}" (tbl, n) VALUES (\'\', ?) '
                         f'ON CONFLICT (tbl) DO UPDATE SET n = max(n + ?, 0)', (max(step, 0), step))
        with self._counts_lock:
            self._polling += step

    def _settle(self, committed: bool) -> None:
        """The outermost transaction ended: its counted tables are committed or undone."""
        local = self._local
        tables, counted = local.announced, local.counted
        if not tables:
            return
        local.announced, local.counted = frozenset(), False
        with self._counts_lock:
            if committed:
                self._commits += 1
            elif counted:
                for t in tables:
                    self._started[t] -= 1

    def watch_external(
            self, callback: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        """Poll ``PRAGMA data_version`` (a read of a counter in memory: free when idle) on a
        connection of its own; it changes when any other connection commits, this store's own
        included. The per-table write counts then tell which tables others wrote: a count
        beyond this store's own writes of the table is someone else's commit."""
        if self.path is None:
            return lambda: None  # nobody else can reach a private in-memory database
        interval: float = self.options["watch_interval"]
        stop = threading.Event()
        conn = self._connect()
        self._register_poller(conn, +1)

        def external() -> dict[str, int]:
            """Per table, writes counted beyond this store's (in-flight ones included)."""
            counts = conn.execute(f'SELECT tbl, n FROM "{_WRITES}"').fetchall()
            with self._counts_lock:
                return {t: n - self._started.get(t, 0) for t, n in counts}

        # The starting point, read now: a commit after this call returns is noticed.
        with self._errors("watching for other connections' commits"):
            last = conn.execute("PRAGMA data_version").fetchone()[0]
            known = external()
        with self._counts_lock:
            commits = self._commits

        def poll() -> None:
            nonlocal last, commits
            try:
                while not stop.wait(interval):
                    now = conn.execute("PRAGMA data_version").fetchone()[0]
                    if now == last:
                        continue
                    last = now
                    changed = set()
                    for table, n in external().items():
                        if n > known.get(table, 0):
                            changed.add(table)
                            known[table] = n
                    with self._counts_lock:
                        ours, commits = self._commits != commits, self._commits
                    if changed:
                        callback(frozenset(changed))
                    elif not ours:  # a writer that keeps no counts (plain sqlite3): anything
                        callback(None)
            except sqlite3.Error:
                if not stop.is_set():
                    log.exception("watching %s for other connections' commits failed", self.url)

        thread = threading.Thread(target=poll, name="syncline-sqlite-watch", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(5)
            with suppress(BackendError):  # a crash leaves the count high: writers count more
                self._register_poller(conn, -1)

        return halt

    def close(self) -> None:
        self._open = False
        with self._conns_lock:
            conns, self._conns = [c for _, c in self._conns], []
        for conn in conns:
            with suppress(sqlite3.Error):
                conn.close()
        self._shared = None
        self._local = _Local()

    @contextmanager
    def _errors(self, what: str) -> Iterator[None]:
        try:
            yield
        except sqlite3.Error as exc:
            raise _translate(exc, what) from exc

    @contextmanager
    def _use(self) -> Iterator[sqlite3.Connection]:
        """The calling thread's connection (with the shared one's lock for :memory:)."""
        if self.path is None:
            with self._shared_lock:
                yield self._connection()
        else:
            yield self._connection()

    def make_converter(self, base: cattrs.Converter) -> cattrs.Converter:
        conv = base.copy()
        conv.register_unstructure_hook(dt.datetime, _datetime_to_text)
        conv.register_structure_hook(dt.datetime, structure_hook(dt.datetime.fromisoformat))
        conv.register_unstructure_hook(dt.date, lambda v: base.unstructure(v, dt.date).isoformat())
        conv.register_unstructure_hook(uuid.UUID, lambda v: str(base.unstructure(v, uuid.UUID)))
        conv.register_unstructure_hook(
            decimal.Decimal, lambda v: str(base.unstructure(v, decimal.Decimal))
        )
        conv.register_structure_hook(bool, structure_hook(bool))
        store_json_as_text(conv, base)
        return conv

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        if self.path is None:
            with self._shared_lock:
                yield from self._transaction()
        else:
            yield from self._transaction()

    def _transaction(self) -> Iterator[None]:
        conn = self._connection()
        local = self._local
        depth = local.depth
        name = f"sp{depth}"
        with self._errors("beginning a transaction"):
            conn.execute("BEGIN IMMEDIATE" if depth == 0 else f"SAVEPOINT {name}")
            if depth == 0 and self.code_schema_version is not None and self.path is not None:
                self._check_version(conn, local, self.code_schema_version)
        local.depth = depth + 1
        try:
            yield
        except BaseException:
            local.depth = depth
            with suppress(sqlite3.Error):  # the original error matters more
                if depth == 0:
                    conn.execute("ROLLBACK")
                else:
                    conn.execute(f"ROLLBACK TO {name}")
                    conn.execute(f"RELEASE {name}")
            if depth == 0:
                self._settle(False)
            raise
        local.depth = depth
        with self._errors("committing"):
            try:
                conn.execute("COMMIT" if depth == 0 else f"RELEASE {name}")
            except sqlite3.Error:
                if depth == 0:
                    if conn.in_transaction:
                        conn.execute("ROLLBACK")
                    self._settle(False)
                raise
        if depth == 0:
            self._settle(True)

    def _check_version(self, conn: sqlite3.Connection, local: _Local, code: int) -> None:
        """Refuse to write when another connection migrated the file past ``code``. Under the
        write lock; data_version (a counter in memory) only moves when another connection
        committed, so the version is read again only then."""
        seen = conn.execute("PRAGMA data_version").fetchone()[0]
        if local.checked_at is not None and local.checked_at == (conn, seen):
            return
        stored = int(conn.execute("PRAGMA user_version").fetchone()[0])
        if stored > code:
            conn.execute("ROLLBACK")
            raise StaleSchemaError(self.url, stored, code)
        local.checked_at = (conn, seen)

    def in_transaction(self) -> bool:
        return self._local.depth > 0

    @contextmanager
    def _atomic(self, many: bool) -> Iterator[sqlite3.Connection]:
        """A connection for one write: in a transaction (or savepoint) when it has many rows."""
        if many or not self.in_transaction():
            with self.transaction(), self._use() as conn:
                yield conn
        else:
            with self._use() as conn:
                yield conn

    # -- schema ------------------------------------------------------------------------------

    def create_table(self, table: TableSpec) -> None:
        # Look first: an up-to-date store opens without taking the write lock.
        ddl = self.sql.named_ddl(table)
        with self._use() as conn, self._errors(f"creating table {table.name}"):
            marks = ", ".join("?" for _ in ddl)
            found = {r[0] for r in conn.execute(
                f"SELECT name FROM sqlite_master WHERE name IN ({marks})",
                [name for name, _ in ddl]).fetchall()}
        missing = [stmt for name, stmt in ddl if name not in found]
        if not missing:
            return
        with self._atomic(True) as conn, self._errors(f"creating table {table.name}"):
            for stmt in missing:
                conn.execute(stmt)

    def drop_table(self, name: str) -> None:
        with self._use() as conn, self._errors(f"dropping table {name}"):
            conn.execute(f"DROP TABLE IF EXISTS {q(name)}")

    def table_names(self) -> list[str]:
        with self._use() as conn, self._errors("listing tables"):
            rows = conn.execute(
                "SELECT name FROM sqlite_master WHERE type='table' "
                f"AND name NOT LIKE 'sqlite_%' AND name <> '{_WRITES}' ORDER BY name"
            ).fetchall()
        return [r[0] for r in rows]

    def create_index(self, table: str, index: IndexSpec) -> None:
        cols = ", ".join(q(c) for c in index.columns)
        unique = "UNIQUE " if index.unique else ""
        with self._use() as conn, self._errors(f"creating index {index.name}"):
            conn.execute(
                f"CREATE {unique}INDEX IF NOT EXISTS {q(index.name)} ON {q(table)} ({cols})"
            )

    def drop_index(self, table: str, name: str) -> None:
        with self._use() as conn, self._errors(f"dropping index {name}"):
            conn.execute(f"DROP INDEX IF EXISTS {q(name)}")

    def get_schema_version(self) -> int | None:
        with self._use() as conn, self._errors("reading the schema version"):
            version = conn.execute("PRAGMA user_version").fetchone()[0]
            if version:
                return int(version)
            tables = conn.execute(
                f"SELECT count(*) FROM sqlite_master WHERE type='table' AND name <> '{_WRITES}'"
            ).fetchone()[0]
        return 0 if tables else None

    def migration_ops(self) -> SQLiteMigrationOps:
        from syncline.backends.sql_migration import SQLiteMigrationOps

        return SQLiteMigrationOps(self)

    def set_schema_version(self, version: int) -> None:
        with self._use() as conn, self._errors("writing the schema version"):
            conn.execute(f"PRAGMA user_version={int(version)}")

    # -- reads -------------------------------------------------------------------------------

    def _run(self, what: str, sql: str, params: Any) -> list[Any]:
        """Execute and fetch on the calling thread's connection. No context managers: this is
        the read hot path."""
        try:
            if self.path is None:
                with self._shared_lock:
                    return self._connection().execute(sql, params).fetchall()
            conn = self._local.conn or self._connection()
            return conn.execute(sql, params).fetchall()
        except sqlite3.Error as exc:
            raise _translate(exc, what) from exc

    def get_values(self, table: TableSpec, key: Any) -> tuple[Any, ...] | None:
        rows = self._run(f"reading {table.name}", self.sql.by_key(table, "get"), (key,))
        return rows[0] if rows else None

    def get_many_values(self, table: TableSpec, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        found: dict[Any, tuple[Any, ...]] = {}
        pk_index = table.column_names.index(table.primary_key)
        keys = list(keys)
        for start in range(0, len(keys), _CHUNK):
            chunk = keys[start:start + _CHUNK]
            sql = self.sql.by_key(table, "get_many", len(chunk))
            for row in self._run(f"reading {table.name}", sql, chunk):
                found[row[pk_index]] = row
        return [found[k] for k in keys if k in found]

    def query_values(self, table: TableSpec, query: Query) -> list[tuple[Any, ...]]:
        sql, params = self.sql.select(table, query)
        return self._run(f"querying {table.name}", sql, params)

    def count(self, table: TableSpec, where: Condition | None = None) -> int:
        sql, params = self.sql.count(table, where)
        with self._use() as conn, self._errors(f"counting {table.name}"):
            return int(conn.execute(sql, params).fetchone()[0])

    # -- writes ------------------------------------------------------------------------------

    def _write_values(self, table: TableSpec, kind: str, rows: Sequence[Sequence[Any]]) -> None:
        if not rows:
            return
        sql = self.sql.write(table, kind)
        with self._atomic(len(rows) > 1) as conn, self._errors(f"writing {table.name}"):
            if len(rows) == 1:
                conn.execute(sql, rows[0])
            else:
                conn.executemany(sql, rows)

    def increment(self, table: TableSpec, key: Any, column: str, by: int = 1) -> int:
        t, pk, c = q(table.name), q(table.primary_key), q(column)
        sql = (f"INSERT INTO {t} ({pk}, {c}) VALUES (?, ?) ON CONFLICT ({pk}) DO UPDATE SET "
               f"{c} = {t}.{c} + excluded.{c} RETURNING {c}")
        with self._atomic(False) as conn, self._errors(f"counting in {table.name}"):
            return int(conn.execute(sql, (key, by)).fetchone()[0])

    def update(self, table: TableSpec, key: Any, values: Mapping[str, Any]) -> bool:
        return self.update_where(table, Compare(table.primary_key, "eq", key), values) > 0

    def update_where(self, table: TableSpec, where: Condition | None,
                     values: Mapping[str, Any]) -> int:
        sql, params = self.sql.update(table, where, values)
        with self._atomic(False) as conn, self._errors(f"updating {table.name}"):
            return conn.execute(sql, params).rowcount

    def update_values(self, table: TableSpec, columns: Sequence[str],
                      rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        sql, params = batch_update(self.sql, table, columns, rows)
        with self._atomic(len(rows) > 1) as conn, self._errors(f"updating {table.name}"):
            return conn.executemany(sql, params).rowcount

    def delete_many(self, table: TableSpec, keys: Iterable[Any]) -> int:
        keys = list(keys)
        n = 0
        with self._atomic(len(keys) > _CHUNK) as conn, self._errors(f"deleting from {table.name}"):
            for start in range(0, len(keys), _CHUNK):
                chunk = keys[start:start + _CHUNK]
                n += conn.execute(self.sql.by_key(table, "delete", len(chunk)), chunk).rowcount
        return n

    def delete_where(self, table: TableSpec, where: Condition | None) -> int:
        sql, params = self.sql.delete(table, where)
        with self._atomic(False) as conn, self._errors(f"deleting from {table.name}"):
            return conn.execute(sql, params).rowcount


@hookimpl
def syncline_register_backends(registry: BackendRegistry) -> None:
    registry.register("sqlite", SQLiteBackend, description="a SQLite file, or sqlite:// in memory")


@hookimpl
def syncline_register_test_stores(registry: Any) -> None:
    """The test stores of ``pytest --syncline-backend`` (syncline.testing.stores)."""
    registry.register("sqlite", "syncline.testing.stores:sqlite_url", default=True)
    registry.register("sqlite-memory", "syncline.testing.stores:sqlite_memory_url")
