"""The reference sync server: a Starlette app over any store (``syncline serve``)."""

from syncline.server.app import ServerConfig, create_app

__all__ = ["ServerConfig", "create_app"]
