"""syncline: offline-first data for Python.

Declare entities as attrs classes, open a store from a URL or configuration, read and write
through typed repositories, watch queries and sync. Importing syncline is cheap and loads no
plugin: the names below are imported on first use, and plugins load when first needed.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

__version__ = "0.1.0"

_EXPORTS = {
    "Backend": "syncline.core.spi.backend",
    "Config": "syncline.core.storage.config",
    "load_config": "syncline.core.storage.config",
    "BackendError": "syncline.core.model.errors",
    "BackendUnavailableError": "syncline.core.model.errors",
    "ConfigurationError": "syncline.core.model.errors",
    "EntityDefinitionError": "syncline.core.model.errors",
    "IntegrityError": "syncline.core.model.errors",
    "MigrationError": "syncline.core.model.errors",
    "NotFoundError": "syncline.core.model.errors",
    "PluginError": "syncline.core.model.errors",
    "QueryError": "syncline.core.model.errors",
    "SerializationError": "syncline.core.model.errors",
    "StaleSchemaError": "syncline.core.model.errors",
    "SynclineError": "syncline.core.model.errors",
    "TransactionConflictError": "syncline.core.model.errors",
    "TransactionError": "syncline.core.model.errors",
    "UnknownSchemeError": "syncline.core.model.errors",
    "hookimpl": "syncline.core.spi.hookspecs",
    "MigrationStrategy": "syncline.core.storage.opening",
    "Migrator": "syncline.core.storage.migration",
    "OpeningDetails": "syncline.core.storage.opening",
    "PreviousSchema": "syncline.core.storage.opening",
    "Schema": "syncline.core.storage.opening",
    "TableMigration": "syncline.core.storage.migration",
    "steps": "syncline.core.storage.migration",
    "SyncStatus": "syncline.core.sync.outbox",
    "new_id": "syncline.core.sync.outbox",
    "F": "syncline.core.model.query",
    "Field": "syncline.core.model.query",
    "Query": "syncline.core.model.query",
    "Dao": "syncline.core.store",
    "Repository": "syncline.core.storage.repository",
    "EntityRegistry": "syncline.core.model.schema",
    "ForeignKey": "syncline.core.model.schema",
    "Trigger": "syncline.core.model.schema",
    "View": "syncline.core.model.schema",
    "entity": "syncline.core.model.schema",
    "field": "syncline.core.model.schema",
    "Store": "syncline.core.store",
    "open": "syncline.core.store",
    "Resolution": "syncline.core.sync.engine",
    "Strategy": "syncline.core.sync.engine",
    "SyncReport": "syncline.core.sync.engine",
}

__all__ = [
    "Backend",
    "BackendError",
    "BackendUnavailableError",
    "Config",
    "ConfigurationError",
    "Dao",
    "EntityDefinitionError",
    "EntityRegistry",
    "F",
    "Field",
    "ForeignKey",
    "IntegrityError",
    "MigrationError",
    "MigrationStrategy",
    "Migrator",
    "NotFoundError",
    "OpeningDetails",
    "PluginError",
    "PreviousSchema",
    "Query",
    "QueryError",
    "Repository",
    "Resolution",
    "Schema",
    "SerializationError",
    "StaleSchemaError",
    "Store",
    "Strategy",
    "SyncReport",
    "SyncStatus",
    "SynclineError",
    "TableMigration",
    "TransactionConflictError",
    "TransactionError",
    "Trigger",
    "UnknownSchemeError",
    "View",
    "entity",
    "field",
    "hookimpl",
    "load_config",
    "new_id",
    "open",
    "steps",
]


def __getattr__(name: str) -> Any:
    module = _EXPORTS.get(name)
    if module is None:
        raise AttributeError(f"module 'syncline' has no attribute {name!r}")
    value = getattr(importlib.import_module(module), "open_store" if name == "open" else name)
    globals()[name] = value
    return value


def __dir__() -> list[str]:
    return sorted([*globals(), *_EXPORTS])


if TYPE_CHECKING:
    from syncline.core.model.errors import (
        BackendError,
        BackendUnavailableError,
        ConfigurationError,
        EntityDefinitionError,
        IntegrityError,
        MigrationError,
        NotFoundError,
        PluginError,
        QueryError,
        SerializationError,
        SynclineError,
        TransactionConflictError,
        TransactionError,
        UnknownSchemeError,
    )
    from syncline.core.model.query import F, Field, Query
    from syncline.core.model.schema import EntityRegistry, ForeignKey, Trigger, View, entity, field
    from syncline.core.spi.backend import Backend
    from syncline.core.spi.hookspecs import hookimpl
    from syncline.core.storage.config import Config, load_config
    from syncline.core.storage.migration import Migrator, TableMigration, steps
    from syncline.core.storage.opening import (
        MigrationStrategy,
        OpeningDetails,
        PreviousSchema,
        Schema,
    )
    from syncline.core.storage.repository import Repository
    from syncline.core.store import Dao, Store
    from syncline.core.store import open_store as open
    from syncline.core.sync.engine import Resolution, Strategy, SyncReport
    from syncline.core.sync.outbox import SyncStatus, new_id
