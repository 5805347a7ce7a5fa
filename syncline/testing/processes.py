"""Processes and ports for tests: a free port on 127.0.0.1, a child process stopped for sure."""

from __future__ import annotations

import socket
import subprocess
from typing import Any


def free_port() -> int:
    """A port on 127.0.0.1 nobody listens on (once this returns)."""
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def stop_process(process: subprocess.Popen[Any] | None, timeout: float = 10.0) -> None:
    """Terminate ``process`` and wait for it; kill it when it does not end within
    ``timeout`` seconds. A process already gone (or None) is left as it is."""
    if process is None or process.poll() is not None:
        return
    process.terminate()
    try:
        process.wait(timeout)
    except subprocess.TimeoutExpired:
        process.kill()
        process.wait(timeout)
