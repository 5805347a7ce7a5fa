"""Store: the one composition root. It builds a syncing store (storage + sync layers) with the
plugins' types, transports and hooks; :func:`open_store` (``syncline.open``) opens one by
configuration. See docs/architecture.md for the layers."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import Any, TypeVar

from syncline.core.model.clock import Clock
from syncline.core.model.schema import Trigger, View
from syncline.core.plugins import PluginManager, plugin_manager
from syncline.core.spi.backend import Backend
from syncline.core.spi.options import scheme_of as scheme_of
from syncline.core.storage.config import Config, default_store_url, load_config
from syncline.core.storage.local import CommitListener as CommitListener
from syncline.core.storage.opening import MigrationStrategy, Progress, Schema
from syncline.core.sync.repository import SyncRepository
from syncline.core.sync.syncing import SyncingStore

T = TypeVar("T")


class Store(SyncingStore):
    """An open local store: a backend plus the entities it holds, synced through a transport.

    Open one with :func:`syncline.open`. A store is safe to share between threads; each thread
    has its own transaction state.
    """

    def __init__(self, backend: Backend, entities: Iterable[type] = (), *,
                 plugins: PluginManager | None = None, schema_version: int = 1,
                 clock: Clock | None = None, views: Iterable[View] = (),
                 triggers: Iterable[Trigger] = (),
                 migration: MigrationStrategy | None = None) -> None:
        self.plugins = plugins or plugin_manager()
        super().__init__(backend, entities, types=self.plugins.types,
                         sync_hooks=self.plugins.hooks, transports=self.plugins.transports.get,
                         schema_version=schema_version, clock=clock, views=views,
                         triggers=triggers, migration=migration)

    def _after_commit(self, tables: frozenset[str]) -> None:
        self.plugins.hooks.after_commit(self, tables)


class Dao:
    """Base for data-access objects: small classes of plain methods over one store.

    ::

        class PostsDao(syncline.Dao):
            def user_posts(self, user_id: str) -> list[Post]:
                return self.repo(Post).find(F.user_id == user_id, order_by="-created_at")
    """

    def __init__(self, store: Store) -> None:
        self.store = store

    def repo(self, cls: type[T]) -> SyncRepository[T]:
        return self.store.repository(cls)

    def transaction(self) -> Any:
        return self.store.transaction()


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
    store.previous_schema = schema.previous if schema is not None else None
    store._open(migration_progress)
    return store
