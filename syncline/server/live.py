"""A sync server running in a thread of this process: uvicorn on 127.0.0.1 and a port bound at
once (the demo, tests, an app's own tooling)."""

from __future__ import annotations

import contextlib
import socket
import threading
import time
from collections.abc import Sequence
from typing import Any

from syncline.server.app import ServerConfig, create_app
from syncline.server.http11 import uvicorn_config


def _bound_socket(port: int) -> socket.socket:
    """A socket bound to 127.0.0.1:``port`` (0: a free one), not listening yet: connections are
    refused until the server starts, and nobody else can take the port meanwhile."""
    sock = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)  # a restart on the same port
        sock.bind(("127.0.0.1", port))
    except OSError:
        sock.close()
        raise
    return sock


class LiveServer:
    """``with LiveServer(config, entities) as server:`` then point clients at ``server.url``."""

    def __init__(self, config: ServerConfig, entities: Sequence[type],
                 port: int | None = None) -> None:
        import uvicorn

        self.config = config
        self.entities = list(entities)
        # Bound here and handed to uvicorn: a port probed free and bound later can be taken by
        # another process in between, which happens on a busy machine.
        self._socket: socket.socket | None = _bound_socket(port or 0)
        self.port: int = self._socket.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self.app = create_app(config, self.entities)
        self._server = uvicorn.Server(self._config())
        self._thread: threading.Thread | None = None

    def _config(self) -> Any:
        return uvicorn_config(self.app, "127.0.0.1", self.port, self.config.timeouts(),
                              log_level="warning", lifespan="on", access_log=False)

    @property
    def sync(self) -> Any:
        """The app's SyncApp: ``.server`` is the SyncServer, ``.store`` its store."""
        return self.app.state.sync

    def start(self, timeout: float = 60.0) -> LiveServer:
        self._server.should_exit = False
        if self._socket is None:  # uvicorn closed it when it stopped
            self._socket = _bound_socket(self.port)
        self._thread = threading.Thread(target=self._server.run, name="syncline-live-server",
                                        kwargs={"sockets": [self._socket]}, daemon=True)
        self._thread.start()
        deadline = time.monotonic() + timeout
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError(f"the sync server on port {self.port} did not start")
            time.sleep(0.01)
        return self

    def stop(self) -> None:
        if self._thread is not None:
            self._server.should_exit = True
            self._thread.join(20)
            self._thread = None
        if self._socket is not None:
            self._socket.close()
            self._socket = None

    def restart(self) -> None:
        """Stop and start again on the same port (clients see dropped connections)."""
        import uvicorn

        self.stop()
        self._server = uvicorn.Server(self._config())
        with contextlib.suppress(Exception):
            self.start()

    def __enter__(self) -> LiveServer:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()
