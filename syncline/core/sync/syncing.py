"""SyncingStore: a :class:`LocalStore` whose writes to syncing entities queue mutations, with
the sync engine, the background worker and the sync look-ups on its repositories.

It subscribes the outbox to the store's writes (``on_write``) and its record states to the
store's migrations (``migration_listeners``). :class:`syncline.Store` builds it with the
plugins' transports and hooks.
"""

from __future__ import annotations

import time
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, Protocol, TypeVar, cast

from syncline.core.model.convert import RowCodec
from syncline.core.model.errors import ConfigurationError
from syncline.core.model.schema import EntitySpec
from syncline.core.spi.backend import Backend
from syncline.core.spi.options import scheme_of
from syncline.core.storage.local import LocalStore
from syncline.core.sync.follow import SyncStateFollows
from syncline.core.sync.outbox import INTERNAL_ENTITIES, Outbox, Quarantined
from syncline.core.sync.repository import SyncRepository
from syncline.core.sync.worker import SyncWorker

if TYPE_CHECKING:
    from syncline.core.spi.transport import Transport
    from syncline.core.sync.engine import SyncEngine, SyncReport

T = TypeVar("T")


class SyncHooks(Protocol):
    """The plugins' sync events, as the engine calls them (``syncline.core.plugins.Hooks``)."""

    def before_push(self, store: Any, mutations: list[Any]) -> None: ...

    def after_push(self, store: Any, mutations: list[Any], results: list[Any]) -> None: ...

    def before_pull(self, store: Any, cursor: str | None) -> None: ...

    def after_pull(self, store: Any, changes: list[Any]) -> None: ...

    def resolve_conflict(self, store: Any, conflict: Any) -> Any | None: ...


class SyncingStore(LocalStore):
    """A local store that syncs: see :class:`syncline.Store` for how to open one."""

    def __init__(self, backend: Backend, entities: Iterable[type] = (), *,
                 sync_hooks: SyncHooks,
                 transports: Callable[[str], type[Transport]],
                 **options: Any) -> None:
        super().__init__(backend, entities, internal_entities=INTERNAL_ENTITIES, **options)
        #: the plugins' sync events
        self.sync_hooks = sync_hooks
        self._transports = transports
        self.transport_url: str | None = None
        self.transport_options: dict[str, Any] = {}
        self.sync_options: dict[str, Any] = {}
        #: ``factory(url, options)`` makes the engine's transport, or returns None for the
        #: plugin registered for the URL's scheme (the asyncio API puts its bridge here)
        self.transport_factory: Callable[[str, dict[str, Any]], Transport | None] | None = None
        self._engine: SyncEngine | None = None
        self._worker: SyncWorker | None = None
        self._outbox = Outbox(self)
        self.on_write(self._queue_write)
        self.migration_listeners.append(SyncStateFollows(self._outbox))

    @property
    def outbox(self) -> Outbox:
        """The sync queue and per-record sync state."""
        return self._outbox

    def _queue_write(self, spec: EntitySpec, action: str, records: Sequence[tuple[Any, Any]],
                     before: Mapping[Any, tuple[Any, ...]] | None) -> None:
        self._outbox.track(spec, action, records, before)

    def repository(self, cls: type[T]) -> SyncRepository[T]:
        """The typed repository of entity ``cls`` (one per store and class)."""
        return cast(SyncRepository[T], super().repository(cls))

    def _new_repository(self, spec: EntitySpec, codec: RowCodec) -> SyncRepository[Any]:
        return SyncRepository(self, spec, codec)

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
            # the schema version goes with every request (HTTP: Syncline-Schema)
            options = {"schema_version": self.schema_version, **self.transport_options}
            made = None
            if self.transport_factory is not None:
                made = self.transport_factory(self.transport_url, options)
            if made is None:
                transport_cls = self._transports(scheme_of(self.transport_url))
                made = transport_cls(self.transport_url, options)
            transport = made
            from syncline.core.sync.engine import SyncEngine  # here: opening needs no engine

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

    def start_sync_worker(self, interval: float = 30.0, debounce: float = 0.1, *,
                          live: bool = True, fallback: float = 5.0) -> SyncWorker:
        """Sync in a background thread: every ``interval`` seconds, soon after writes, and as
        soon as the server's live stream tells of changes (``live``; while the stream is down
        it polls every ``fallback`` seconds)."""
        if self._worker is not None and self._worker.running:
            return self._worker
        self._worker = SyncWorker(self.sync_engine, interval=interval, debounce=debounce,
                                  live=live, fallback=fallback).start()
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

    def _closing(self) -> None:
        self.stop_sync_worker()
        if self._engine is not None:
            self._engine.transport.close()
