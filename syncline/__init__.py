"""syncline: offline-first data for Python.

Declare entities as attrs classes, open a store from a URL or configuration, read and write
through typed repositories. Importing syncline loads no plugin; plugins load on first use.
"""

from __future__ import annotations

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
    TransactionError,
    UnknownSchemeError,
)
from syncline.core.hookspecs import hookimpl
from syncline.core.outbox import SyncStatus, new_id
from syncline.core.query import F, Field, Query
from syncline.core.repository import Dao, Repository
from syncline.core.schema import EntityRegistry, entity
from syncline.core.store import Store, open_store

open = open_store  # syncline.open(url) is the public spelling

__version__ = "0.1.0"

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
    "IntegrityError",
    "MigrationError",
    "NotFoundError",
    "PluginError",
    "Query",
    "QueryError",
    "Repository",
    "SerializationError",
    "Store",
    "SyncStatus",
    "SynclineError",
    "TransactionError",
    "UnknownSchemeError",
    "entity",
    "hookimpl",
    "load_config",
    "new_id",
    "open",
]
