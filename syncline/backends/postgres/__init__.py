"""The PostgreSQL backend's plugin: ``postgresql://`` and ``postgresql+psycopg://``.

Loading the plugin registers the backend by import path; the backend itself
(:mod:`syncline.backends.postgres.backend`, SQLAlchemy's PostgreSQL dialect, psycopg) is
imported when a store first uses one of its schemes.
"""

from __future__ import annotations

import importlib
from typing import Any

from syncline.core.spi.hookspecs import hookimpl
from syncline.core.spi.registries import BackendRegistry

_BACKEND = "syncline.backends.postgres.backend:PostgresBackend"


@hookimpl
def syncline_register_backends(registry: BackendRegistry) -> None:
    for scheme in ("postgresql", "postgresql+psycopg"):
        registry.register(scheme, _BACKEND, description="PostgreSQL via psycopg 3",
                          requires="syncline[postgresql]")


@hookimpl
def syncline_register_test_stores(registry: Any) -> None:
    """The test stores of ``pytest --syncline-backend`` (syncline.testing.stores)."""
    registry.register("postgresql", "syncline.testing.stores:postgres_url", default=True,
                      fixtures=["syncline_postgres_server"])


def __getattr__(name: str) -> Any:
    # The backend's names, as before it moved to .backend (imported on first use).
    if name.startswith(("__", "syncline_")):  # pluggy probes plugins for hook names
        raise AttributeError(name)
    return getattr(importlib.import_module("syncline.backends.postgres.backend"), name)
