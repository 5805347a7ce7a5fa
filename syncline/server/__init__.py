"""The reference sync server: its engine and tables over any store, and a Starlette app over
them (``syncline serve``).

:func:`open_server_store` opens a server's store; :class:`SyncServer` answers pushes and pulls
over it; :func:`create_app` serves it over HTTP (imported on first use: the app needs Starlette,
the engine does not).
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any

from syncline.server.engine import ANONYMOUS, SHARED, SyncServer
from syncline.server.store import ServerTablesFollow, open_server_store

if TYPE_CHECKING:
    from syncline.server.app import ServerConfig, create_app

__all__ = ["ANONYMOUS", "SHARED", "ServerConfig", "ServerTablesFollow", "SyncServer",
           "create_app", "open_server_store"]


def __getattr__(name: str) -> Any:
    if name in ("ServerConfig", "create_app"):
        from syncline.server import app

        return getattr(app, name)
    raise AttributeError(f"module 'syncline.server' has no attribute {name!r}")
