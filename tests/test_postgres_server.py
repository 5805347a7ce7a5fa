from __future__ import annotations

import os
import socket

import psycopg
import pytest

from syncline.testing.postgres import PostgresServer, PostgresUnavailable, start_postgres


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
