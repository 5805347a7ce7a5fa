"""The PostgreSQL backend: ``postgresql://user:pass@host:port/db`` (or ``postgresql+psycopg://``).

SQLAlchemy Core builds the SQL and owns the connection pool (``pool_size``, ``max_overflow``
options); the compiled SQL runs on the pooled psycopg 3 connections. Native types: timestamptz,
jsonb, uuid, numeric, bytea, text (``COLLATE "C"``, so text sorts by code point as on every
backend). Transactions run at REPEATABLE READ: a read-modify-write that loses a race raises
:class:`TransactionConflictError`, which ``Store.run_transaction`` retries; single writes outside
a transaction retry on their own. Batch upserts go through COPY into a temporary table and one
``INSERT ... ON CONFLICT``.
"""

from __future__ import annotations

import asyncio
import datetime as dt
import decimal
import hashlib
import logging
import random
import threading
import time
import uuid
import zlib
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import AbstractContextManager, contextmanager, suppress
from typing import TYPE_CHECKING, Any, ClassVar

import cattrs
import sqlalchemy as sa
from sqlalchemy.dialects.postgresql import ARRAY, JSONB
from sqlalchemy.dialects.postgresql import insert as pg_insert
from sqlalchemy.dialects.postgresql import psycopg as pg_dialect

from syncline.backends.postgres.on_loop import blocking, raw_cursor, sync_view
from syncline.backends.sql import SQLBuilder, TupleRowsMixin
from syncline.backends.sql_conditions import batch_update
from syncline.core.model.convert import dumps_jsonb, structure_hook, utc_datetime
from syncline.core.model.cooperate import pause
from syncline.core.model.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    IntegrityError,
    NotFoundError,
    StaleSchemaError,
    TransactionConflictError,
    TransactionError,
)
from syncline.core.model.query import Compare, Condition, Query
from syncline.core.model.schema import IndexSpec, Kind, TableSpec
from syncline.core.spi.backend import Backend
from syncline.core.spi.helpers import in_loop_greenlet, store_json
from syncline.core.spi.options import ISOLATION, Option

if TYPE_CHECKING:
    import psycopg

    from syncline.backends.sql_migration import PostgresMigrationOps

log = logging.getLogger("syncline.postgres")
_COPY_THRESHOLD = 64  # below this many rows, executemany beats COPY's fixed cost
#: a lost race is retried at least this many times and for at least _RETRY_FOR seconds
_RETRY_FOR = 10.0
_RETRIES = 5
_META = "_syncline_meta"
#: the listener's first and longest pause between two reconnection attempts (seconds)
_LISTEN_BACKOFF = (0.05, 5.0)
_LEVELS = ("READ COMMITTED", "REPEATABLE READ", "SERIALIZABLE")
#: statements with PostgreSQL's own placeholders ($1, $2...), for psycopg's RawCursor
_NUMBERED = pg_dialect.dialect(paramstyle="numeric_dollar")  # type: ignore[no-untyped-call]


class _Statements(dict[Any, str]):
    """A dict of compiled SQL by (table, kind) that starts over past a bound size."""

    def __setitem__(self, key: Any, value: str) -> None:
        if len(self) >= 20_000:
            self.clear()
        super().__setitem__(key, value)


_STATEMENTS = _Statements()


class PostgresBuilder(SQLBuilder):
    types = {
        "text": sa.Text(collation="C"), "integer": sa.BigInteger(),
        "float": sa.Double(), "boolean": sa.Boolean(), "bytes": sa.LargeBinary(),
        "datetime": sa.DateTime(timezone=True), "date": sa.Date(), "uuid": sa.Uuid(),
        "decimal": sa.Numeric(), "json": JSONB(),
    }
    no_limit = None

    def in_many(self, column: sa.ColumnElement[Any], kind: Kind,
                values: sa.BindParameter[Any]) -> sa.ColumnElement[bool]:
        # column = ANY(CAST(%s AS type[])): one array parameter, however many values.
        element = sa.Text() if kind == "text" else self.types[kind]
        return column == sa.any_(sa.cast(values, ARRAY(element)))


def _import_psycopg() -> Any:
    try:
        import psycopg
    except ImportError as exc:
        raise BackendUnavailableError(
            "the PostgreSQL backend needs psycopg 3: pip install 'syncline[postgresql]'"
        ) from exc
    return psycopg


def translate(exc: BaseException, what: str, where: str) -> BackendError:
    """One place where psycopg and SQLAlchemy errors become syncline errors."""
    psycopg = _import_psycopg()
    orig = getattr(exc, "orig", None) or exc
    msg = str(orig).strip().splitlines()[0] if str(orig).strip() else type(orig).__name__
    sqlstate = getattr(orig, "sqlstate", None) or ""
    if sqlstate in ("40001", "40P01"):
        return TransactionConflictError(f"{what}: {msg} (SQLSTATE {sqlstate}); run it again")
    if sqlstate.startswith("23"):
        return IntegrityError(f"{what}: {msg}")
    if sqlstate == "42P01":
        return NotFoundError(f"{what}: {msg}")  # type: ignore[return-value]
    if sqlstate == "3D000" or ("does not exist" in msg and "database" in msg):
        return BackendUnavailableError(
            f"{what}: {msg}; create it with: syncline init {where}"
        )
    if sqlstate[:2] in ("22", "54"):  # data exception, program limit: a value, not the link
        return BackendError(f"{what}: PostgreSQL refused a value: {msg} (SQLSTATE {sqlstate})")
    if sqlstate == "28P01" or "password authentication failed" in msg:
        return BackendUnavailableError(f"{what}: authentication failed for {where}: {msg}")
    if isinstance(orig, psycopg.OperationalError | sa.exc.DBAPIError) or sqlstate[:2] in (
            "08", "57"):
        return BackendUnavailableError(f"{what}: cannot reach PostgreSQL at {where}: {msg}")
    return BackendError(f"{what}: {msg}")


class _Local(threading.local):
    def __init__(self) -> None:
        self.conn: Any = None  # the pooled connection held by an open transaction
        self.depth = 0
        self.notify: str | None = None  # tables to announce with the transaction's COMMIT
        self.pipelined = False  # inside pipeline(): no COPY (pipeline mode has none)


class PostgresBackend(TupleRowsMixin, Backend):
    """PostgreSQL through SQLAlchemy-compiled SQL on pooled psycopg 3 connections."""

    capabilities = frozenset({"persistent", "multi_process", "sql", "savepoints", "foreign_keys",
                              "concurrent_writers", "exact_decimals", "external_changes",
                              "event_loop_io"})
    passthrough_types = frozenset({str, int, float, bool, bytes, dt.date, uuid.UUID,
                                   decimal.Decimal})
    shared_converter = True  # make_converter uses nothing of the instance
    options_spec: ClassVar[Mapping[str, Option] | None] = {
        "schema": Option(str, None, "the schema holding the store's tables (created if "
                         "missing; any name, quoted as it is)"),
        "isolation": ISOLATION,
        "pool_size": Option(int, 5, "connections kept in the pool", minimum=1),
        "max_overflow": Option(int, 10, "connections opened beyond pool_size when busy",
                               minimum=0),
        "connect_timeout": Option(int, 10, "seconds to wait for a connection", minimum=1),
        "pre_ping": Option(bool, True, "ping pooled connections unused for ping_after "
                           "seconds before handing them out"),
        "ping_after": Option(float, 10.0, "seconds a pooled connection may sit unused before "
                             "it is pinged (0: every time)", minimum=0),
        "notify": Option(bool, True, "announce commits with pg_notify (other processes' "
                         "watchers hear them)"),
    }

    @classmethod
    def driver_parameters(cls) -> frozenset[str]:
        return _LIBPQ_PARAMETERS

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        sa_url = sa.engine.make_url(self.location).set(drivername="postgresql+psycopg")
        # ?schema=name puts the store's tables in that schema (created if missing).
        self.schema: str | None = _check_schema(self.options["schema"], url)
        self.sa_url = sa_url.set(query=self.driver_params)
        self.where = (f"{self.sa_url.host or 'localhost'}:{self.sa_url.port or 5432}/"
                      f"{self.sa_url.database or ''}")
        self.sql = PostgresBuilder(
            pg_dialect.dialect(paramstyle="format"))  # type: ignore[no-untyped-call]
        self.isolation = str(self.options["isolation"]).upper()  # one of the choices
        self._opened = False
        #: the pool of synchronous connections, and the async one used on the event loop
        #: (psycopg's AsyncConnection; see on_loop.py), each made when first needed
        self._engines: dict[bool, sa.Engine] = {}
        self._local = _Local()
        #: compiled statements, shared by every store of the process (the same dialect
        #: compiles a table's statements the same way; compiling a 60-row INSERT costs ms)
        self._statements = _STATEMENTS

    # -- connections -------------------------------------------------------------------------

    def open(self) -> None:
        _import_psycopg()
        self._opened = True
        try:
            with self._connection() as conn:
                # Look before creating: an open of an existing store takes no lock, and
                # needs no CREATE privilege.
                if self.schema and conn.execute("SELECT 1 FROM pg_namespace WHERE nspname = %s",
                                                (self.schema,)).fetchone() is None:
                    conn.execute(_sql().SQL("CREATE SCHEMA IF NOT EXISTS {}").format(
                        _sql().Identifier(self.schema)))
                if not _existing(conn, [_META]):
                    conn.execute(_sql().SQL("CREATE TABLE IF NOT EXISTS {} "
                                            "(key TEXT PRIMARY KEY, value TEXT NOT NULL)")
                                 .format(_sql().Identifier(_META)))
        except BaseException:
            self.close()
            raise

    def _engine(self) -> sa.Engine:
        """The pool for where the caller runs: async connections inside a greenlet on the
        event loop (``syncline.aio``), synchronous ones elsewhere."""
        if not self._opened:
            raise TransactionError(f"the PostgreSQL store {self.where} is closed")
        loop_io = in_loop_greenlet()
        engine = self._engines.get(loop_io)
        if engine is None:
            engine = self._engines[loop_io] = self._make_engine(loop_io)
        return engine

    def _make_engine(self, loop_io: bool) -> sa.Engine:
        options: dict[str, Any] = dict(
            pool_size=self.options["pool_size"],
            max_overflow=self.options["max_overflow"],
            pool_pre_ping=False,  # see _ping_if_idle
            # Autocommit connections; every transaction ends in our COMMIT or ROLLBACK.
            pool_reset_on_return=None,
            connect_args={"connect_timeout": self.options["connect_timeout"],
                          "options": "-c timezone=UTC",
                          # Statements outside a transaction need no BEGIN/COMMIT round trips;
                          # transactions send their own BEGIN with the isolation level.
                          "autocommit": True},
        )
        if loop_io:
            from sqlalchemy.ext.asyncio import create_async_engine

            engine = create_async_engine(
                self.sa_url.set(drivername="postgresql+psycopg_async"), **options).sync_engine
        else:
            engine = sa.create_engine(self.sa_url, **options)
        if self.schema:
            sa.event.listen(engine, "connect", _set_search_path(self.schema))
        if self.options["pre_ping"]:
            idle = self.options["ping_after"]
            sa.event.listen(engine, "checkout", _ping_if_idle(idle))
            sa.event.listen(engine, "checkin", _mark_used)
            sa.event.listen(engine, "connect", _mark_used)
        return engine

    def close(self) -> None:
        self._opened = False
        self.close_loop_io()
        sync_engine = self._engines.pop(False, None)
        if sync_engine is not None:
            blocking(sync_engine.dispose)
        self._local = _Local()

    def prepare_loop_io(self) -> None:
        if True in self._engines:
            return
        from sqlalchemy.util import greenlet_spawn

        engine = self._engines[True] = self._make_engine(loop_io=True)
        # The dialect's first-connection set-up (server version, type look-ups: CPU and round
        # trips) on a loop of this thread's own; the loop's calls then find it done.
        asyncio.run(greenlet_spawn(_first_connection, engine))

    def close_loop_io(self) -> None:
        """Close the async connections: on the loop, in a greenlet, where they await. (Off
        the loop they cannot be; they are left to close with their loop.)"""
        engine = self._engines.pop(True, None)
        if engine is not None and in_loop_greenlet():
            engine.dispose()

    @classmethod
    def init_storage(cls, url: str) -> str:
        """Create the database named in ``url`` if it does not exist (``syncline init``)."""
        from sqlalchemy_utils import create_database, database_exists

        sa_url = cls(url).sa_url  # options checked, the store's own (?schema=) left out
        where = f"{sa_url.host}:{sa_url.port or 5432}/{sa_url.database}"
        try:
            if database_exists(sa_url):
                return f"database {where} already exists"
            create_database(sa_url)
        except Exception as exc:
            raise translate(exc, "creating the database", where) from exc
        return f"created database {where}"

    @contextmanager
    def _session_lock(self, name: str, blocking: bool) -> Iterator[bool]:
        # A session-level advisory lock on a connection of its own: held until unlocked or
        # until this process dies (the server ends the session), never by a dead process.
        key = f"syncline:{self.schema or ''}:{name}"
        conn = self._raw()
        got = False
        try:
            try:
                with sync_view(conn.driver_connection).cursor() as cur:
                    verb = "pg_advisory_lock" if blocking else "pg_try_advisory_lock"
                    cur.execute(f"SELECT {verb}(hashtextextended(%s, 0))", (key,))
                    row = cur.fetchone()
                    got = True if blocking else bool(row[0])
            except Exception as exc:
                raise translate(exc, "taking the sync lock", self.where) from exc
            yield got
        finally:
            try:
                if got:
                    with sync_view(conn.driver_connection).cursor() as cur:
                        cur.execute("SELECT pg_advisory_unlock(hashtextextended(%s, 0))",
                                    (key,))
            except Exception:
                log.warning("could not release the sync lock on %s; closing its connection",
                            self.where)
                conn.invalidate()
            finally:
                conn.close()  # back to the pool

    def advisory_lock(self, name: str, *,
                      blocking: bool = True) -> AbstractContextManager[bool] | None:
        return self._session_lock(name, blocking)

    def _raw(self) -> Any:
        engine = self._engine()
        try:
            return engine.raw_connection()
        except Exception as exc:
            raise translate(exc, "connecting", self.where) from exc

    def connection(self) -> AbstractContextManager[psycopg.Connection[Any]]:
        """The psycopg connection of the open transaction, or a pooled one committed after
        the block, for statements the generic backend API has no call for (the sync server's
        advisory locks, sequence and watermark: ``syncline.server.order``).

        Inside :meth:`transaction` the statements are part of it; errors come out as
        syncline's exceptions, like every other call's."""
        return self._connection()

    @contextmanager
    def _connection(self) -> Iterator[psycopg.Connection[Any]]:
        """The transaction's connection, or a pooled one committed after the block."""
        local = self._local
        if local.depth > 0:  # the transaction's context rolls back on errors
            with self._errors("running a statement"):
                yield sync_view(local.conn.driver_connection)
            return
        proxy = self._raw()
        try:
            with self._errors("running a statement", proxy):
                conn = sync_view(proxy.driver_connection)
                yield conn
        finally:
            proxy.close()

    @contextmanager
    def _errors(self, what: str, proxy: Any = None) -> Iterator[None]:
        try:
            yield
        except BackendError:
            raise
        except Exception as exc:
            err = translate(exc, what, self.where)
            link = proxy if proxy is not None else self._local.conn
            live = getattr(link, "driver_connection", None)
            if (isinstance(err, BackendUnavailableError) and live is not None
                    and not live.closed and not live.broken
                    and not getattr(exc, "sqlstate", None)):
                # The driver refused the statement itself (say, more than 65,535 parameters)
                # on a connection that is fine: not a connectivity problem.
                err = BackendError(f"{what}: {str(exc).strip().splitlines()[0]}")
            if proxy is not None:
                conn = sync_view(proxy.driver_connection)
                if conn is None or conn.closed or conn.broken:
                    proxy.invalidate()  # a killed connection never goes back to the pool
                elif conn.info.transaction_status != 0:  # not idle: end the failed transaction
                    try:
                        conn.execute("ROLLBACK")
                    except Exception:
                        proxy.invalidate()
            raise err from exc

    def make_converter(self, base: cattrs.Converter) -> cattrs.Converter:
        from psycopg.types.json import Jsonb

        conv = base.copy()
        conv.register_structure_hook(dt.datetime, structure_hook(utc_datetime))
        # dumps_jsonb: floats from 1e16 up come back floats (jsonb keeps digits only)
        store_json(conv, base, dump=lambda value: Jsonb(value, dumps=dumps_jsonb),
                   load=lambda value: value)
        return conv

    # -- transactions ------------------------------------------------------------------------

    def _begin(self, conn: Any, level: str, check: bool) -> int | None:
        """BEGIN; with the code's schema version known, in the same round trip: wait out a
        migration (it holds the meta table in ACCESS EXCLUSIVE mode; LOCK takes no snapshot,
        so the version read next sees what it committed; ACCESS SHARE needs only SELECT).
        Returns the stored version when it is newer than the code's (the transaction must not
        go on), else None."""
        code = self.code_schema_version
        if code is None or not check:
            conn.execute(f"BEGIN ISOLATION LEVEL {level}")
            return None
        cur = conn.execute(f"BEGIN ISOLATION LEVEL {level}; "
                           f"LOCK TABLE \"{_META}\" IN ACCESS SHARE MODE; "
                           f"SELECT value FROM \"{_META}\" WHERE key = 'schema_version'")
        while cur.nextset():
            pass
        row = cur.fetchone()
        return int(row[0]) if row is not None and int(row[0]) > code else None

    @contextmanager
    def transaction(self, isolation: str | None = None,
                    check_version: bool = True) -> Iterator[None]:
        """A transaction (a savepoint inside one); ``isolation`` overrides the store's level
        for an outermost one. ``check_version=False``: no stale-code check (a migration's own
        transaction, which takes the migration lock itself)."""
        local = self._local
        depth = local.depth
        if depth == 0:
            for attempt in (1, 2):
                proxy = self._raw()
                local.conn = proxy
                try:
                    level = (isolation or self.isolation).upper()
                    if level not in _LEVELS:
                        raise TransactionError(f"isolation {level!r}: use one of {_LEVELS}")
                    with self._errors("beginning a transaction", proxy):
                        stored = self._begin(sync_view(proxy.driver_connection), level,
                                             check_version)
                    if stored is not None:
                        with self._errors("ending a refused transaction", proxy):
                            sync_view(proxy.driver_connection).execute("ROLLBACK")
                        raise StaleSchemaError(self.url, stored, self.code_schema_version or 0)
                    break
                except BackendUnavailableError:
                    local.conn = None
                    proxy.close()
                    if attempt == 2:
                        raise
                    # A pooled connection the server dropped: nothing began, take another.
                except BaseException:
                    local.conn = None
                    proxy.close()
                    raise
        proxy = local.conn
        conn = sync_view(proxy.driver_connection)
        name = f"sp{depth}"
        local.depth = depth + 1
        try:
            if depth > 0:
                with self._errors("opening a savepoint"):
                    conn.execute(f"SAVEPOINT {name}")
            yield
        except BaseException:
            local.depth = depth
            if depth == 0:
                local.notify = None
                try:
                    conn.execute("ROLLBACK")
                except Exception:
                    proxy.invalidate()
                local.conn = None
                proxy.close()
            else:
                # If this fails the outer transaction is broken; its own rollback follows.
                with suppress(Exception):
                    conn.execute(f"ROLLBACK TO SAVEPOINT {name}")
            raise
        local.depth = depth
        if depth > 0:
            with self._errors("releasing a savepoint"):
                conn.execute(f"RELEASE SAVEPOINT {name}")
            return
        notify, local.notify = local.notify, None
        try:
            with self._errors("committing", proxy):
                if notify is None:
                    conn.execute("COMMIT")
                else:  # one round trip: delivered with (and only with) the commit
                    conn.execute(_NOTIFY_AND_COMMIT.format(
                        _sql().Literal(self.channel), _sql().Literal(notify)))
        finally:
            local.conn = None
            proxy.close()

    def in_transaction(self) -> bool:
        return self._local.depth > 0

    def increment(self, table: TableSpec, key: Any, column: str, by: int = 1) -> int:
        # One statement: the row lock it takes is held to the end of the transaction.
        ident = _sql().Identifier
        sql = _sql().SQL(
            "INSERT INTO {t} ({pk}, {c}) VALUES (%s, %s) ON CONFLICT ({pk}) DO UPDATE SET "
            "{c} = {t}.{c} + excluded.{c} RETURNING {c}").format(
            t=ident(table.name), pk=ident(table.primary_key), c=ident(column))

        def work() -> int:
            with self._connection() as conn:
                row = conn.execute(sql, (key, by)).fetchone()
            assert row is not None  # RETURNING always yields the row
            return int(row[0])

        return int(self._retrying(work))

    # -- change notification ------------------------------------------------------------------

    @property
    def channel(self) -> str:
        channel = f"syncline_{self.schema or 'public'}"
        if len(channel.encode()) > 63:  # PostgreSQL's identifier limit, in bytes
            channel = "syncline_" + hashlib.sha1(channel.encode()).hexdigest()
        return channel

    def announce(self, tables: frozenset[str]) -> None:
        # Delivered to listeners when (and only if) the transaction commits.
        if not self.options.get("notify", True):
            return
        payload = ",".join(sorted(tables))
        if self._local.depth > 0:  # sent with the COMMIT
            self._local.notify = payload
            return
        with self._connection() as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def _listener(self) -> Any:
        """A new autocommit connection LISTENing on this store's channel."""
        psycopg = _import_psycopg()
        url = self.sa_url.set(drivername="postgresql").render_as_string(hide_password=False)
        conn = psycopg.connect(url, autocommit=True,
                               connect_timeout=self.options["connect_timeout"])
        try:
            conn.execute(_sql().SQL("LISTEN {}").format(_sql().Identifier(self.channel)))
        except BaseException:
            conn.close()
            raise
        return conn

    def watch_external(
            self, callback: Callable[[frozenset[str] | None], None]) -> Callable[[], None]:
        """LISTEN on a connection of its own. When that connection is lost (a server restart,
        ``pg_terminate_backend``), reconnect with a growing pause (``_LISTEN_BACKOFF``) and
        then call ``callback(None)``: commits made meanwhile were not heard."""
        try:
            first = blocking(self._listener)  # a synchronous connection of its own
        except Exception as exc:
            raise translate(exc, "listening for changes", self.where) from exc
        stop = threading.Event()
        current: list[Any] = [first]
        lock = threading.Lock()

        def listen() -> None:
            conn: Any = first
            pause = _LISTEN_BACKOFF[0]
            while not stop.is_set():
                try:
                    if conn is None:
                        conn = self._listener()
                        with lock:
                            if stop.is_set():
                                conn.close()
                                return
                            current[0] = conn
                        log.info("listening for changes on %s again", self.where)
                        pause = _LISTEN_BACKOFF[0]
                        callback(None)  # what was committed while deaf is unknown
                    for note in conn.notifies(timeout=0.2):
                        callback(frozenset(t for t in note.payload.split(",") if t))
                except Exception as exc:
                    if stop.is_set():
                        return
                    if conn is not None:
                        log.warning("lost the connection listening for changes on %s (%s); "
                                    "reconnecting", self.where, exc)
                        with suppress(Exception):
                            conn.close()
                        conn = None
                    else:
                        log.debug("reconnecting to %s failed: %s", self.where, exc)
                    stop.wait(pause)
                    pause = min(pause * 2, _LISTEN_BACKOFF[1])

        thread = threading.Thread(target=listen, name="syncline-pg-listen", daemon=True)
        thread.start()

        def halt() -> None:
            stop.set()
            thread.join(5)
            with lock, suppress(Exception):
                current[0].close()

        return halt

    def _retrying(self, work: Any) -> Any:
        """Run a standalone write, again when it loses a race (inside a transaction: once)."""
        if self._local.depth > 0:
            return work()
        attempt = 0
        started = time.monotonic()
        while True:  # by count and by time: on a busy machine a count alone runs out
            try:
                with self.transaction():
                    return work()
            except TransactionConflictError:
                if attempt >= _RETRIES and time.monotonic() - started >= _RETRY_FOR:
                    raise
                attempt += 1
                pause(random.uniform(0, min(0.5, 0.002 * 2**attempt)))

    # -- schema ------------------------------------------------------------------------------

    def create_table(self, table: TableSpec) -> None:
        # The catalog first: CREATE INDEX IF NOT EXISTS takes a SHARE lock on the table even
        # when the index exists, so an open of an up-to-date store would queue behind (and
        # deadlock with) other processes' writers. Only what is missing is created.
        ddl = self.sql.named_ddl(table)
        with self._connection() as conn:
            found = _existing(conn, [name for name, _ in ddl])
            for name, stmt in ddl:
                if name not in found:
                    conn.execute(stmt)

    def drop_table(self, name: str) -> None:
        with self._connection() as conn:
            conn.execute(_sql().SQL("DROP TABLE IF EXISTS {}").format(_sql().Identifier(name)))

    def table_names(self) -> list[str]:
        with self._connection() as conn:
            rows = conn.execute(
                "SELECT tablename FROM pg_tables WHERE schemaname = current_schema() "
                "ORDER BY tablename").fetchall()
        return [r[0] for r in rows if r[0] != _META]

    def create_index(self, table: str, index: IndexSpec) -> None:
        sql, ident = _sql().SQL, _sql().Identifier
        stmt = sql("CREATE {}INDEX IF NOT EXISTS {} ON {} ({})").format(
            sql("UNIQUE " if index.unique else ""), ident(index.name), ident(table),
            sql(", ").join(ident(c) for c in index.columns))
        with self._connection() as conn:
            if not _existing(conn, [index.name]):  # no SHARE lock when it is there
                conn.execute(stmt)

    def drop_index(self, table: str, name: str) -> None:
        with self._connection() as conn:
            conn.execute(_sql().SQL("DROP INDEX IF EXISTS {}").format(_sql().Identifier(name)))

    def get_schema_version(self) -> int | None:
        with self._connection() as conn:
            row = conn.execute(_sql().SQL("SELECT value FROM {} WHERE key = %s").format(
                _sql().Identifier(_META)), ("schema_version",)).fetchone()
        return None if row is None else int(row[0])

    def migration_ops(self) -> PostgresMigrationOps:
        from syncline.backends.sql_migration import PostgresMigrationOps

        return PostgresMigrationOps(self)

    def set_schema_version(self, version: int) -> None:
        with self._connection() as conn:
            conn.execute(_sql().SQL(
                "INSERT INTO {} (key, value) VALUES (%s, %s) "
                "ON CONFLICT (key) DO UPDATE SET value = excluded.value").format(
                _sql().Identifier(_META)), ("schema_version", str(int(version))))

    # -- statements --------------------------------------------------------------------------

    def _multi_stmt(self, table: TableSpec, kind: str,
                    params: Sequence[Sequence[Any]]) -> str | None:
        """One statement writing all ``params`` rows (one round trip and one execution on the
        server instead of one per row), or None where it cannot: an upsert touching a key
        twice (one statement may not), or too many parameters."""
        n = len(params)
        if n * len(table.column_names) > 30_000:
            return None
        if kind == "upsert":  # sorted by key in _write_values: a repeat is adjacent
            pk = table.column_names.index(table.primary_key)
            if any(params[i][pk] == params[i - 1][pk] for i in range(1, n)):
                return None
        key = (table, f"{kind}*{n}")
        sql = self._statements.get(key)
        if sql is None:
            # Compiling n rows' statement is milliseconds of Python: off the loop when on it.
            sql = self._statements[key] = blocking(lambda: self._compile_multi(table, kind, n))
        return sql

    def _compile_multi(self, table: TableSpec, kind: str, n: int) -> str:
        t = self.sql.table(table)
        cols = list(t.c)
        rows = [{c.name: sa.bindparam(f"{c.name}_{i}", type_=c.type) for c in cols}
                for i in range(n)]
        stmt: Any = pg_insert(t).values(rows)
        if kind == "upsert":
            stmt = self._on_conflict(stmt, table, cols)
        # $1, $2...: sent as is by a RawCursor (psycopg re-parses a %s statement of more
        # than 50 parameters on every call, about half of the statement's client CPU)
        sql: str = str(stmt.compile(dialect=_NUMBERED))
        return sql

    def _stmt(self, table: TableSpec, kind: str) -> str:
        key = (table, kind)
        sql = self._statements.get(key)
        if sql is None:
            t = self.sql.table(table)
            cols = list(t.c)
            values: dict[str, Any] = {c.name: sa.bindparam(c.name) for c in cols}
            if kind == "insert":
                sql = self.sql.compile(sa.insert(t).values(values))[0]
            elif kind == "upsert":
                stmt = pg_insert(t).values(values)
                sql = self.sql.compile(self._on_conflict(stmt, table, cols))[0]
            elif kind in ("stage_insert", "stage_upsert"):
                stage = _stage_name(table)
                select: Any = sa.select(*[sa.column(c.name) for c in cols]).select_from(
                    sa.table(stage))
                stmt = pg_insert(t).from_select([c.name for c in cols], select)
                if kind == "stage_upsert":
                    stmt = self._on_conflict(stmt, table, cols)
                sql = self.sql.compile(stmt)[0]
            elif kind == "get":
                sql = self.sql.by_key(table, "get")
            elif kind == "get_many":  # one statement whatever the number of keys
                sql = self.sql.compile(sa.select(*t.c).where(
                    t.c[table.primary_key] == sa.func.any(sa.bindparam("k"))))[0]
            else:
                raise KeyError(kind)
            self._statements[key] = sql
        return sql

    @staticmethod
    def _on_conflict(stmt: Any, table: TableSpec, cols: list[Any]) -> Any:
        others = {c.name: stmt.excluded[c.name] for c in cols if not c.primary_key}
        if not others:
            return stmt.on_conflict_do_nothing(index_elements=[table.primary_key])
        return stmt.on_conflict_do_update(index_elements=[table.primary_key], set_=others)

    # -- reads -------------------------------------------------------------------------------

    def get_values(self, table: TableSpec, key: Any) -> tuple[Any, ...] | None:
        sql = self._stmt(table, "get")
        with self._connection() as conn:
            row: tuple[Any, ...] | None = conn.execute(sql, (key,), prepare=True).fetchone()
        return row

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """Send the writes of the block together, in one round trip at its end (psycopg's
        pipeline mode), inside the open transaction: their errors come out at the end of the
        block, as syncline's exceptions, and the transaction is then aborted. Writes in the
        block report ``-1`` rows changed (not known before the end), and large ones go as
        statements (pipeline mode has no COPY)."""
        local = self._local
        with self._connection() as conn, conn.pipeline():
            local.pipelined = True
            try:
                yield
            finally:
                local.pipelined = False

    def get_many_values(self, table: TableSpec, keys: Sequence[Any]) -> list[tuple[Any, ...]]:
        return self.get_many_after(None, [(table, keys)])[1][0]

    def get_many_after(self, first: tuple[str, Sequence[Any]] | None,
                       reads: Sequence[tuple[TableSpec, Sequence[Any]]]
                       ) -> tuple[tuple[Any, ...] | None, list[list[tuple[Any, ...]]]]:
        """The statement ``first`` (SQL and parameters; None: none), then
        :meth:`get_many_values` of each ``(table, keys)`` of ``reads``, run in this order in
        one round trip (psycopg's pipeline mode): ``first``'s row and each read's rows. Each
        statement sees what committed before it ran, so reads sent after ``first`` takes locks
        see what the locks' previous holders committed (the sync server's claim and reads)."""
        reads = [(t, list(k)) for t, k in reads]
        if first is None and not any(k for _, k in reads):
            return None, [[] for _ in reads]
        with self._connection() as conn:
            statements = [] if first is None else [first]
            statements += [(self._stmt(t, "get_many"), (k,)) for t, k in reads if k]
            if len(statements) == 1:
                cursors = [conn.execute(*statements[0], prepare=True)]
            else:
                with conn.pipeline():
                    cursors = [conn.execute(sql, params, prepare=True)
                               for sql, params in statements]
            results = [c.fetchall() for c in cursors]
        row = results.pop(0)[0] if first is not None else None
        out: list[list[tuple[Any, ...]]] = []
        for table, keys in reads:
            if not keys:
                out.append([])
                continue
            pk_index = table.column_names.index(table.primary_key)
            found = {r[pk_index]: r for r in results.pop(0)}
            out.append([found[k] for k in keys if k in found])
        return row, out

    def query_values(self, table: TableSpec, query: Query) -> list[tuple[Any, ...]]:
        sql, params = self.sql.select(table, query)
        with self._connection() as conn:
            return conn.execute(sql, params).fetchall()

    def count(self, table: TableSpec, where: Condition | None = None) -> int:
        sql, params = self.sql.count(table, where)
        with self._connection() as conn:
            row = conn.execute(sql, params).fetchone()
        return int(row[0]) if row else 0

    # -- writes ------------------------------------------------------------------------------

    def _write_values(self, table: TableSpec, kind: str,
                      params: Sequence[Sequence[Any]]) -> None:
        if not params:
            return
        if kind == "upsert":  # one lock order for every writer: no deadlocks between batches
            pk_index = table.column_names.index(table.primary_key)
            params = sorted(params, key=lambda r: r[pk_index])

        def work() -> None:
            with self._connection() as conn:
                if len(params) < _COPY_THRESHOLD or self._local.pipelined:
                    with conn.cursor() as cur:
                        if len(params) == 1:
                            cur.execute(self._stmt(table, kind), params[0], prepare=True)
                        elif (multi := self._multi_stmt(table, kind, params)) is not None:
                            with raw_cursor(conn) as raw:
                                raw.execute(multi, [v for row in params for v in row])
                        else:
                            cur.executemany(self._stmt(table, kind), params)
                    return
                self._copy(conn, table, params)
                conn.execute(self._stmt(table, "stage_" + kind))

        self._retrying(work)

    def _copy(self, conn: psycopg.Connection[Any], table: TableSpec,
              params: Sequence[Sequence[Any]]) -> None:
        stage = _stage_name(table)
        sql, ident = _sql().SQL, _sql().Identifier
        # Every time (one round trip): a stage created in a transaction that rolled back is
        # gone, so no memory of "created on this connection" can be trusted.
        conn.execute(sql("CREATE TEMP TABLE IF NOT EXISTS {s} (LIKE {t}) ON COMMIT DELETE ROWS; "
                         "TRUNCATE {s}").format(s=ident(stage), t=ident(table.name)))
        cols = sql(", ").join(ident(n) for n in table.column_names)
        with conn.cursor() as cur, cur.copy(
                sql("COPY {} ({}) FROM STDIN").format(ident(stage), cols)) as copy:
            for row in params:
                copy.write_row(row)

    def update(self, table: TableSpec, key: Any, values: Mapping[str, Any]) -> bool:
        return self.update_where(table, Compare(table.primary_key, "eq", key), values) > 0

    def update_values(self, table: TableSpec, columns: Sequence[str],
                      rows: Sequence[Sequence[Any]]) -> int:
        if not rows:
            return 0
        # Rows in key order, as every writer locks them (no deadlocks between batches).
        sql, params = batch_update(self.sql, table, columns, sorted(rows, key=lambda r: r[0]))

        def work() -> int:
            with self._connection() as conn, conn.cursor() as cur:
                cur.executemany(sql, params)
                return int(cur.rowcount)

        return int(self._retrying(work))

    def update_where(self, table: TableSpec, where: Condition | None,
                     values: Mapping[str, Any]) -> int:
        sql, params = self.sql.update(table, where, values)

        def work() -> int:
            with self._connection() as conn:
                return int(conn.execute(sql, params).rowcount)

        return int(self._retrying(work))

    def delete_many(self, table: TableSpec, keys: Iterable[Any]) -> int:
        keys = list(keys)
        if not keys:
            return 0
        t = self.sql.table(table)
        sql = self.sql.compile(
            sa.delete(t).where(t.c[table.primary_key] == sa.func.any(sa.bindparam("k"))))[0]

        def work() -> int:
            with self._connection() as conn:
                return int(conn.execute(sql, (keys,)).rowcount)

        return int(self._retrying(work))

    def delete_where(self, table: TableSpec, where: Condition | None) -> int:
        sql, params = self.sql.delete(table, where)

        def work() -> int:
            with self._connection() as conn:
                return int(conn.execute(sql, params).rowcount)

        return int(self._retrying(work))


def _first_connection(engine: sa.Engine) -> None:
    engine.raw_connection().close()
    engine.dispose()  # its connection belonged to the loop that made it


def _sql() -> Any:
    from psycopg import sql

    return sql


class _LazyQuery:
    """``SELECT pg_notify(channel, tables); COMMIT`` composed safely, built on first use."""

    def __init__(self, text: str) -> None:
        self.text = text
        self._query: Any = None

    def format(self, *args: Any) -> Any:
        if self._query is None:
            self._query = _sql().SQL(self.text)
        return self._query.format(*args)


_NOTIFY_AND_COMMIT = _LazyQuery("SELECT pg_notify({}, {}); COMMIT")


def _existing(conn: Any, names: Sequence[str]) -> set[str]:
    """Which of ``names`` are relations (tables, indexes...) in the current schema: a catalog
    read, which takes no lock on them."""
    rows = conn.execute(
        "SELECT c.relname FROM pg_class c JOIN pg_namespace n ON n.oid = c.relnamespace "
        "WHERE n.nspname = current_schema() AND c.relname = ANY(%s)", (list(names),)).fetchall()
    return {r[0] for r in rows}


def _check_schema(schema: str | None, url: str) -> str | None:
    """A schema name PostgreSQL keeps as it is (any characters but NUL, 1 to 63 bytes);
    refused before anything is created."""
    if schema is None:
        return None
    problem = ("is empty" if not schema else "contains NUL" if "\x00" in schema
               else f"is {len(schema.encode())} bytes long" if len(schema.encode()) > 63
               else None)
    if problem is not None:
        raise ConfigurationError(
            f"schema {schema!r} in {url.partition('?')[0]}: the name {problem}; PostgreSQL "
            f"schema names have 1 to 63 bytes and no NUL")
    return schema


def _set_search_path(schema: str) -> Callable[[Any, Any], None]:
    """A pool connect hook: the store's schema first on the search path, quoted by psycopg."""

    def connect(dbapi_conn: Any, record: Any) -> None:
        sync_view(record.driver_connection).execute(_sql().SQL("SET search_path TO {}").format(
            _sql().Identifier(schema)))

    return connect


#: libpq's connection parameters: a URL query may give them (``?sslmode=require``) and they
#: go to the driver as they are (psycopg.pq.Conninfo.get_defaults() lists them).
_LIBPQ_PARAMETERS = frozenset({
    "service", "user", "password", "passfile", "channel_binding", "connect_timeout",
    "dbname", "host", "hostaddr", "port", "client_encoding", "options", "application_name",
    "fallback_application_name", "keepalives", "keepalives_idle", "keepalives_interval",
    "keepalives_count", "tcp_user_timeout", "sslmode", "sslnegotiation", "sslcompression",
    "sslcert", "sslkey", "sslcertmode", "sslpassword", "sslrootcert", "sslcrl", "sslcrldir",
    "sslsni", "requirepeer", "require_auth", "min_protocol_version", "max_protocol_version",
    "ssl_min_protocol_version", "ssl_max_protocol_version", "gssencmode", "krbsrvname",
    "gsslib", "gssdelegation", "target_session_attrs", "load_balance_hosts",
}) - {"connect_timeout"}  # a store option


def _mark_used(dbapi_conn: Any, record: Any) -> None:
    record.info["used_at"] = time.monotonic()


def _ping_if_idle(idle: float) -> Callable[[Any, Any, Any], None]:
    """A pool checkout hook: ping a connection only when it sat unused for ``idle`` seconds
    (a server restart or an idle timeout drops those), not before every statement."""

    def checkout(dbapi_conn: Any, record: Any, proxy: Any) -> None:
        if time.monotonic() - record.info.get("used_at", 0.0) < idle:
            return
        try:
            sync_view(record.driver_connection).execute("SELECT 1")
        except Exception as exc:  # the pool replaces the connection and tries again
            raise sa.exc.DisconnectionError(str(exc)) from exc
        record.info["used_at"] = time.monotonic()

    return checkout


def _stage_name(table: TableSpec) -> str:
    # The shape is in the name: after a migration a connection's old stage is not reused.
    shape = zlib.crc32(repr(table.columns).encode())
    return f"_syncline_stage_{table.name}"[:54] + f"_{shape:08x}"
