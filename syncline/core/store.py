"""Store: opening by configuration, transactions, repositories, clearing everything."""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping
from contextlib import contextmanager
from pathlib import Path
from typing import Any, TypeVar

from syncline.core.backend import Backend
from syncline.core.clock import Clock, SystemClock
from syncline.core.config import Config, default_store_url, load_config
from syncline.core.convert import RowCodec, make_converter, make_wire_converter
from syncline.core.errors import (
    ConfigurationError,
    EntityDefinitionError,
    NotFoundError,
    TransactionConflictError,
    TransactionError,
)
from syncline.core.migration import MigrationStrategy, OpeningDetails, Progress, Schema, open_schema
from syncline.core.outbox import INTERNAL_ENTITIES, Outbox, Quarantined
from syncline.core.plugins import PluginManager, plugin_manager
from syncline.core.repository import Repository
from syncline.core.schema import EntitySpec, TableSpec, Trigger, View, spec_of
from syncline.core.sync import SyncEngine, SyncReport
from syncline.core.watch import WatchHub
from syncline.core.worker import SyncWorker

log = logging.getLogger("syncline.store")
T = TypeVar("T")
CommitListener = Callable[[frozenset[str]], None]


def scheme_of(url: str) -> str:
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(
            f"store URL {url!r} has no scheme; write it like memory://, sqlite:///path/app.db "
            f"or postgresql://user@host/db"
        )
    return scheme.lower()


class _TxState(threading.local):
    def __init__(self) -> None:
        self.depth = 0
        self.touched: list[set[str]] = []


class Store:
    """An open local store: a backend plus the entities it holds.

    Open one with :func:`syncline.open`. A store is safe to share between threads; each thread
    has its own transaction state.
    """

    def __init__(self, backend: Backend, entities: Iterable[type] = (), *,
                 plugins: PluginManager | None = None, schema_version: int = 1,
                 clock: Clock | None = None, views: Iterable[View] = (),
                 triggers: Iterable[Trigger] = (),
                 migration: MigrationStrategy | None = None) -> None:
        self.backend = backend
        #: views and triggers declared beside the entities (created and migrated with them)
        self.views: list[View] = list(views)
        self.triggers: list[Trigger] = list(triggers)
        self.migration = migration
        #: what happened when the store opened (created, upgraded from which version)
        self.opening: OpeningDetails | None = None
        self.plugins = plugins or plugin_manager()
        self.schema_version = schema_version
        self.clock: Clock = clock or SystemClock()
        self.converter = backend.make_converter(make_converter(self.plugins.types))
        #: entities <-> JSON-able payloads for the sync protocol
        self.wire = make_wire_converter(self.plugins.types)
        self._outbox: Outbox | None = None
        self.transport_url: str | None = None
        self.transport_options: dict[str, Any] = {}
        self.sync_options: dict[str, Any] = {}
        self._engine: SyncEngine | None = None
        self._worker: SyncWorker | None = None
        self._internal_classes: set[type] = set()
        self._specs: dict[type, EntitySpec] = {}
        self._codecs: dict[type, RowCodec] = {}
        self._repos: dict[type, Repository[Any]] = {}
        self._tx = _TxState()
        self._listeners: list[CommitListener] = []
        #: subscribers of watched queries (see Repository.watch)
        self.watches = WatchHub(self)
        self._closed = False
        for cls in entities:
            self._add_entity(cls)
        for cls in INTERNAL_ENTITIES:
            self._add_entity(cls)
            self._internal_classes.add(cls)

    # -- opening -----------------------------------------------------------------------------

    def _add_entity(self, cls: type) -> None:
        spec = spec_of(cls)
        for other in self._specs.values():
            if other.table.name == spec.table.name:
                raise EntityDefinitionError(
                    f"{cls.__name__} and {other.cls.__name__} both use table "
                    f"{spec.table.name!r}; one store needs distinct table names"
                )
        self._specs[cls] = spec
        self._codecs[cls] = RowCodec(spec, self.converter, self.backend.passthrough_types)

    _opened = False

    def _open(self, progress: Progress | None = None) -> None:
        self.backend.open()
        try:
            self.opening = open_schema(self, self.migration, progress)
        except BaseException:
            self.backend.close()
            raise
        self._opened = True

    def tables(self) -> list[TableSpec]:
        """Every table of this store: the entities' and syncline's own."""
        return [s.table for s in self._specs.values()]

    @property
    def entities(self) -> list[type]:
        """The application's entity classes (not syncline's own tables)."""
        return [c for c in self._specs if c not in self._internal_classes]

    def entity_for_table(self, table: str) -> type:
        for cls, spec in self._specs.items():
            if spec.table.name == table and cls not in self._internal_classes:
                return cls
        raise NotFoundError(f"no entity uses table {table!r} in this store")

    @property
    def outbox(self) -> Outbox:
        """The sync queue and per-record sync state."""
        if self._outbox is None:
            self._outbox = Outbox(self)
        return self._outbox

    # -- repositories ------------------------------------------------------------------------

    def repository(self, cls: type[T]) -> Repository[T]:
        """The typed repository of entity ``cls`` (one per store and class)."""
        repo = self._repos.get(cls)
        if repo is None:
            if cls not in self._specs:
                spec_of(cls)  # a clear error for non-entities
                raise EntityDefinitionError(
                    f"{cls.__name__} is not part of this store; pass it in "
                    f"syncline.open(..., entities=[...])"
                )
            repo = Repository(self, self._specs[cls], self._codecs[cls])
            self._repos[cls] = repo
        return repo

    def codec(self, cls: type) -> RowCodec:
        return self._codecs[cls]

    # -- transactions ------------------------------------------------------------------------

    @contextmanager
    def transaction(self) -> Iterator[None]:
        """A transaction; nested ones are savepoints. Commits on success, rolls back on error.

        After the outermost transaction commits, commit listeners and the
        ``syncline_after_commit`` hook hear which tables were written.
        """
        self._check_open()
        tx = self._tx
        tx.touched.append(set())
        tx.depth += 1
        ok = False
        try:
            with self.backend.transaction():
                yield
                if tx.depth == 1 and tx.touched[-1]:
                    self.backend.announce(frozenset(tx.touched[-1]))
            ok = True
        finally:
            tx.depth -= 1
            touched = tx.touched.pop()
            if ok and tx.touched:
                tx.touched[-1] |= touched
        if ok and tx.depth == 0 and touched:
            self._notify(frozenset(touched))

    def run_transaction(self, work: Callable[[], T], *, retries: int = 10,
                        within: float = 10.0) -> T:
        """Run ``work()`` in a transaction, running it again when it loses a race.

        Backends with optimistic isolation (PostgreSQL) raise
        :class:`TransactionConflictError` when two transactions collide; this runs the whole
        function again after a random pause that grows with each attempt (capped at half a
        second), for at least ``retries`` more attempts and at least ``within`` seconds: on a
        busy machine a count alone runs out before the other transactions finish. Use it for
        read-modify-write code under concurrency.
        """
        attempt = 0
        started = time.monotonic()
        while True:
            try:
                with self.transaction():
                    return work()
            except TransactionConflictError:
                if self.in_transaction() or (
                        attempt >= retries and time.monotonic() - started >= within):
                    raise
                attempt += 1
                time.sleep(random.uniform(0, min(0.5, 0.002 * 2**attempt)))

    def atomic(self, work: Callable[[], T]) -> T:
        """Run one write: a savepoint inside a transaction, else a retried transaction."""
        if self._tx.depth > 0:
            with self.transaction():
                return work()
        return self.run_transaction(work)

    def touched(self, table: str) -> None:
        """Record that the current transaction wrote ``table``."""
        if self._tx.touched:
            self._tx.touched[-1].add(table)

    def in_transaction(self) -> bool:
        return self._tx.depth > 0

    def on_commit(self, listener: CommitListener) -> Callable[[], None]:
        """Call ``listener(tables)`` after every commit that wrote tables; returns an undo."""
        self._listeners.append(listener)
        return lambda: self._listeners.remove(listener)

    def _notify(self, tables: frozenset[str]) -> None:
        self.watches.changed(tables)
        for listener in list(self._listeners):
            try:
                listener(tables)
            except Exception:
                log.exception("commit listener %r failed", listener)
        self.plugins.hooks.after_commit(self, tables)

    # -- sync ---------------------------------------------------------------------------------

    @property
    def sync_engine(self) -> SyncEngine:
        """The engine syncing this store through its transport (built on first use)."""
        if self._engine is None:
            if self.transport_url is None:
                raise ConfigurationError(
                    "this store has no transport; open it with "
                    "syncline.open(..., transport='mock://name' or 'http://host:port/') or set "
                    "[sync] transport in syncline.toml"
                )
            transport_cls = self.plugins.transports.get(scheme_of(self.transport_url))
            transport = transport_cls(self.transport_url, self.transport_options)
            self._engine = SyncEngine(self, transport, **self.sync_options)
        return self._engine

    def sync(self) -> SyncReport:
        """Push queued changes, then pull the server's; see :class:`SyncReport`."""
        return self.sync_engine.sync()

    def enqueue_command(self, name: str, payload: dict[str, Any] | None = None, *,
                        priority: int = 0, coalesce: bool = False,
                        after: Iterable[tuple[type | str, str]] | None = None) -> str:
        """Queue a named command for the server (``like_post``...); returns its mutation id.

        It reaches the server after every record write queued before it; ``after=[(Post,
        post_id)]`` makes it wait for those records only, ``after=[]`` for nothing."""
        return self.outbox.enqueue_command(name, payload, priority=priority, coalesce=coalesce,
                                           after=after)

    def network_available(self) -> None:
        """Tell the sync engine the network is back: stop backing off and sync soon."""
        if self._engine is not None:
            self._engine.network_available()
        if self._worker is not None:
            self._worker.wake()

    def quarantined(self) -> list[Quarantined]:
        """Pulled changes this store could not hold, with their errors (oldest first). A
        later change of the same record that applies releases its entry."""
        return self.outbox.quarantine.find(order_by="at")

    def start_sync_worker(self, interval: float = 30.0, debounce: float = 0.1) -> SyncWorker:
        """Sync in a background thread: every ``interval`` seconds and soon after writes."""
        if self._worker is not None and self._worker.running:
            return self._worker
        self._worker = SyncWorker(self.sync_engine, interval=interval,
                                  debounce=debounce).start()
        return self._worker

    def stop_sync_worker(self) -> None:
        if self._worker is not None:
            self._worker.stop()
            self._worker = None

    def wait_synced(self, cls: type, record_id: str, timeout: float = 10.0) -> bool:
        """Wait until the record's local changes have been pushed; False on timeout."""
        deadline = time.monotonic() + timeout
        engine = self.sync_engine
        while True:
            if engine.is_synced(cls, record_id):
                return True
            if time.monotonic() >= deadline:
                return False
            if self._worker is not None:
                self._worker.wake()
            time.sleep(0.02)

    # -- whole-store operations --------------------------------------------------------------

    def clear_all(self) -> None:
        """Delete every row of every table, sync queue and sync state included (logout)."""
        with self.transaction():
            for table in self.tables():
                self.backend.delete_where(table, None)
                self.touched(table.name)

    def close(self) -> None:
        if not self._closed:
            self.stop_sync_worker()
            self.watches.close()
            if self._engine is not None:
                self._engine.transport.close()
            self._closed = True
            self.backend.close()

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TransactionError(f"the store at {self.backend.url} is closed")

    def __enter__(self) -> Store:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        return f"<Store {self.backend.url} entities={[c.__name__ for c in self._specs]}>"


def open_store(
    url: str | None = None,
    *,
    entities: Iterable[type] = (),
    app_name: str | None = None,
    schema_version: int | None = None,
    options: Mapping[str, Any] | None = None,
    config: Config | None = None,
    clock: Clock | None = None,
    transport: str | None = None,
    transport_options: Mapping[str, Any] | None = None,
    sync_options: Mapping[str, Any] | None = None,
    schema: Schema | None = None,
    views: Iterable[View] = (),
    triggers: Iterable[Trigger] = (),
    migration: MigrationStrategy | None = None,
    migration_progress: Progress | None = None,
) -> Store:
    """Open a store: ``syncline.open("sqlite:///app.db", entities=[Post])``.

    Arguments win over ``SYNCLINE_STORE_*`` environment variables, which win over
    ``syncline.toml`` / ``[tool.syncline]``. With nothing configured the store is a SQLite file
    in the platform's user-data folder for ``app_name``.

    ``schema`` (a :class:`syncline.Schema`) gives the entities, views, triggers, version and
    migration strategy at once; ``migration_progress(done, total, message)`` hears how an
    upgrade goes.
    """
    if schema is not None:
        entities = [*schema.entities, *entities]
        views = [*schema.views, *views]
        triggers = [*schema.triggers, *triggers]
        migration = migration or schema.migration
        if schema_version is None:
            schema_version = schema.version
    if config is None:
        overrides: dict[str, Any] = {}
        for key, value in (("url", url), ("app_name", app_name),
                           ("schema_version", schema_version),
                           ("options", dict(options) if options else None)):
            if value is not None:
                overrides[key] = value
        config = load_config({"store": overrides} if overrides else None)
    store_cfg = config.store
    resolved = store_cfg.url or default_store_url(store_cfg.app_name)
    if store_cfg.url is None:
        Path(resolved.removeprefix("sqlite:///")).parent.mkdir(parents=True, exist_ok=True)
    manager = plugin_manager()
    backend_cls = manager.backend_class(scheme_of(resolved))
    backend = backend_cls(resolved, store_cfg.options)
    store = Store(backend, entities, plugins=manager, schema_version=store_cfg.schema_version,
                  clock=clock, views=views, triggers=triggers, migration=migration)
    store.transport_url = transport or config.sync.transport
    store.transport_options = dict(transport_options or {})
    if config.sync.token and "token" not in store.transport_options:
        store.transport_options["token"] = config.sync.token
    store.sync_options = dict(sync_options or {})
    store._open(migration_progress)
    return store
