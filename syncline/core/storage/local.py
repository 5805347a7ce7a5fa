"""LocalStore: a backend and the entities it holds, with transactions that record the tables
they write, typed repositories, watched queries and migrations; no sync.

It is the storage layer's whole store. The sync layer subclasses it (``SyncingStore``) and
:class:`syncline.Store` wires that to the plugins; components here take a ``LocalStore`` and
hear of what happens through listeners: commits (:meth:`LocalStore.on_commit`), writes of
syncing entities (:meth:`LocalStore.on_write`) and migrations (``migration_listeners``).
"""

from __future__ import annotations

import logging
import random
import threading
import time
from collections.abc import Callable, Iterable, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import Any, Self, TypeVar

import cattrs

from syncline.core.model.clock import Clock, SystemClock
from syncline.core.model.convert import RowCodec, shared_codec, shared_converters
from syncline.core.model.cooperate import pause
from syncline.core.model.errors import (
    EntityDefinitionError,
    NotFoundError,
    TransactionConflictError,
    TransactionError,
)
from syncline.core.model.schema import EntitySpec, TableSpec, Trigger, TypeRegistry, View, spec_of
from syncline.core.spi.backend import Backend
from syncline.core.storage.opening import (
    MigrationListener,
    MigrationStrategy,
    OpeningDetails,
    PreviousSchema,
    Progress,
    open_schema,
)
from syncline.core.storage.repository import Repository
from syncline.core.storage.watch import WatchHub
from syncline.core.storage.writer import Writer

log = logging.getLogger("syncline.store")
T = TypeVar("T")
CommitListener = Callable[[frozenset[str]], None]
#: ``listener(spec, action, records, before)``: ``action`` ("create", "update" or "delete") was
#: written to ``records``, a list of ``(stored primary key, entity or None for deletes)``;
#: ``before``: an update's previous rows (stored tuples) by key, or None
WriteListener = Callable[[EntitySpec, str, Sequence[tuple[Any, Any]],
                          Mapping[Any, tuple[Any, ...]] | None], None]


_converters_lock = threading.Lock()
_converters: dict[tuple[type, int], tuple[cattrs.Converter, cattrs.Converter]] = {}


def _backend_converter(backend: Backend, base: cattrs.Converter) -> cattrs.Converter:
    """The converter of a backend class with ``shared_converter``, built once per base."""
    key = (type(backend), id(base))
    with _converters_lock:
        found = _converters.get(key)
        if found is None or found[0] is not base:  # the entry keeps base alive: ids stay
            found = _converters[key] = (base, backend.make_converter(base))
            if len(_converters) > 256:
                del _converters[next(iter(_converters))]
        return found[1]


class _TxState(threading.local):
    def __init__(self) -> None:
        self.depth = 0
        self.touched: list[set[str]] = []


class LocalStore:
    """An open local store without sync: a backend plus the entities it holds.

    Safe to share between threads; each thread has its own transaction state.
    """

    def __init__(self, backend: Backend, entities: Iterable[type] = (), *,
                 types: TypeRegistry | None = None, schema_version: int = 1,
                 clock: Clock | None = None, views: Iterable[View] = (),
                 triggers: Iterable[Trigger] = (),
                 migration: MigrationStrategy | None = None,
                 internal_entities: Iterable[type] = ()) -> None:
        self.backend = backend
        #: views and triggers declared beside the entities (created and migrated with them)
        self.views: list[View] = list(views)
        self.triggers: list[Trigger] = list(triggers)
        self.migration = migration
        #: what happened when the store opened (created, upgraded from which version)
        self.opening: OpeningDetails | None = None
        self.schema_version = schema_version
        self.clock: Clock = clock or SystemClock()
        types = types if types is not None else TypeRegistry()
        base, wire = shared_converters(types)
        self._shared_converter = backend.shared_converter
        self.converter = (_backend_converter(backend, base) if self._shared_converter
                          else backend.make_converter(base))
        #: entities <-> JSON-able payloads for the sync protocol (shared: never changed)
        self.wire = wire
        #: hear every migration first, before the strategy's own listeners
        self.migration_listeners: list[MigrationListener] = []
        self._internal_classes: set[type] = set()
        self._specs: dict[type, EntitySpec] = {}
        self._codecs: dict[type, RowCodec] = {}
        self._repos: dict[type, Repository[Any]] = {}
        self._tx = _TxState()
        #: the one way syncline writes rows: each write records its table as touched
        self.writer = Writer(backend, self)
        self._listeners: list[CommitListener] = []
        self._write_listeners: list[WriteListener] = []
        #: subscribers of watched queries (see Repository.watch)
        self.watches = WatchHub(self)
        self._closed = False
        for cls in entities:
            self._add_entity(cls)
        for cls in internal_entities:
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
        passthrough = self.backend.passthrough_types
        self._codecs[cls] = (shared_codec(spec, self.converter, passthrough)
                             if self._shared_converter
                             else RowCodec(spec, self.converter, passthrough))

    _opened = False
    #: the schema version before this one, when declared (a sync server serves its clients)
    previous_schema: PreviousSchema | None = None

    def _open(self, progress: Progress | None = None) -> None:
        self.backend.open()
        try:
            self.opening = open_schema(self, self.migration, progress)
            self.backend.code_schema_version = self.schema_version  # stale writers refused
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

    def spec(self, cls: type) -> EntitySpec:
        """The declaration of entity ``cls`` as this store holds it."""
        return self._specs[cls]

    def entity_for_table(self, table: str) -> type:
        for cls, spec in self._specs.items():
            if spec.table.name == table and cls not in self._internal_classes:
                return cls
        raise NotFoundError(f"no entity uses table {table!r} in this store")

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
            repo = self._new_repository(self._specs[cls], self._codecs[cls])
            self._repos[cls] = repo
        return repo

    def _new_repository(self, spec: EntitySpec, codec: RowCodec) -> Repository[Any]:
        return Repository(self, spec, codec)

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
                pause(random.uniform(0, min(0.5, 0.002 * 2**attempt)))

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
        self._after_commit(tables)

    def _after_commit(self, tables: frozenset[str]) -> None:
        """After the commit listeners (the store calls the plugins' hook here)."""

    # -- writes of syncing entities ----------------------------------------------------------

    def on_write(self, listener: WriteListener) -> Callable[[], None]:
        """Call ``listener(spec, action, records)`` inside the transaction of every write to an
        entity declared ``syncs=True``, after the rows are written (what it writes commits or
        vanishes with them); returns an undo. The sync layer queues mutations this way."""
        self._write_listeners.append(listener)
        return lambda: self._write_listeners.remove(listener)

    def written(self, spec: EntitySpec, action: str, records: Sequence[tuple[Any, Any]],
                before: Mapping[Any, tuple[Any, ...]] | None = None) -> None:
        """Announce a write of a syncing entity to the write listeners (repositories call it);
        ``before`` holds an update's previous rows (stored tuples) by key, when read."""
        if records:
            for listener in list(self._write_listeners):
                listener(spec, action, records, before)

    # -- whole-store operations --------------------------------------------------------------

    def clear_all(self) -> None:
        """Delete every row of every table, sync queue and sync state included (logout)."""
        with self.transaction():
            for table in self.tables():
                self.writer.delete_where(table, None)

    def close(self) -> None:
        if not self._closed:
            self._closing()
            self.watches.close()
            self._closed = True
            self.backend.close()

    def _closing(self) -> None:
        """Before the store closes (the sync layer stops its worker and transport here)."""

    @property
    def closed(self) -> bool:
        return self._closed

    def _check_open(self) -> None:
        if self._closed:
            raise TransactionError(f"the store at {self.backend.url} is closed")

    def __enter__(self) -> Self:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def __repr__(self) -> str:
        names = [c.__name__ for c in self._specs]
        return f"<{type(self).__name__} {self.backend.url} entities={names}>"
