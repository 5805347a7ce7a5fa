"""A real sync server for tests: uvicorn on 127.0.0.1, on a free port, stopped afterwards
(:class:`LiveServer` lives in :mod:`syncline.server.live`)."""

from __future__ import annotations

from syncline.server.live import LiveServer as LiveServer
from syncline.testing.processes import free_port as free_port  # its old place

__all__ = ["LiveServer", "free_port"]
