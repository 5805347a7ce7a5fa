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
    "Backend": "syncline.core.backend",
    "Config": "syncline.core.config",
    "load_config": "syncline.core.config",
    "BackendError": "syncline.core.errors",
    "BackendUnavailableError": "syncline.core.errors",
    "ConfigurationError": "syncline.core.errors",
    "EntityDefinitionError": "syncline.core.errors",
    "IntegrityError": "syncline.core.errors",
    "MigrationError": "syncline.core.errors",
    "NotFoundError": "syncline.core.errors",
    "PluginError": "syncline.core.errors",
    "QueryError": "syncline.core.errors",
    "SerializationError": "syncline.core.errors",
    "SynclineError": "syncline.core.errors",
    "TransactionConflictError": "syncline.core.errors",
    "TransactionError": "syncline.core.errors",
    "UnknownSchemeError": "syncline.core.errors",
    "hookimpl": "syncline.core.hookspecs",
    "MigrationStrategy": "syncline.core.migration",
    "Migrator": "syncline.core.migration",
    "OpeningDetails": "syncline.core.migration",
    "Schema": "syncline.core.migration",
    "TableMigration": "syncline.core.migration",
    "steps": "syncline.core.migration",
    "SyncStatus": "syncline.core.outbox",
    "new_id": "syncline.core.outbox",
    "F": "syncline.core.query",
    "Field": "syncline.core.query",
    "Query": "syncline.core.query",
    "Dao": "syncline.core.repository",
    "Repository": "syncline.core.repository",
    "EntityRegistry": "syncline.core.schema",
    "ForeignKey": "syncline.core.schema",
    "Trigger": "syncline.core.schema",
    "View": "syncline.core.schema",
    "entity": "syncline.core.schema",
    "Store": "syncline.core.store",
    "open": "syncline.core.store",
    "Resolution": "syncline.core.sync",
    "Strategy": "syncline.core.sync",
    "SyncReport": "syncline.core.sync",
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
    "Query",
    "QueryError",
    "Repository",
    "Resolution",
    "Schema",
    "SerializationError",
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
    from syncline.core.backend import Backend
    from syncline.core.config import Config, load_config
    from syncline.core.errors import (
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
    from syncline.core.hookspecs import hookimpl
    from syncline.core.migration import (
        MigrationStrategy,
        Migrator,
        OpeningDetails,
        Schema,
        TableMigration,
        steps,
    )
    from syncline.core.outbox import SyncStatus, new_id
    from syncline.core.query import F, Field, Query
    from syncline.core.repository import Dao, Repository
    from syncline.core.schema import EntityRegistry, ForeignKey, Trigger, View, entity
    from syncline.core.store import Store
    from syncline.core.store import open_store as open
    from syncline.core.sync import Resolution, Strategy, SyncReport
