"""The PostgreSQL test stores: a schema each in the process's scratch database, emptied after
every test (syncline.testing.postgres.scratch_database / clear_scratch_database)."""

from __future__ import annotations

import psycopg
import pytest

from syncline.testing import postgres
from syncline.testing.stores import postgres_url


def _plain(url: str) -> str:
    return url.replace("postgresql+psycopg://", "postgresql://").split("?")[0]


def _schemas(url: str) -> set[str]:
    with psycopg.connect(_plain(url)) as conn:
        rows = conn.execute("SELECT nspname FROM pg_namespace WHERE nspname NOT LIKE 'pg\\_%' "
                            "AND nspname <> 'information_schema'").fetchall()
    return {r[0] for r in rows}


def test_each_test_store_gets_its_own_schema_and_nothing_outlives_the_test(
        tmp_path: object, syncline_postgres_server: str) -> None:
    first = postgres_url(tmp_path, syncline_postgres_server)  # type: ignore[arg-type]
    url = next(first)
    database, schema = _plain(url), url.split("schema=")[1]
    left_open = psycopg.connect(database, autocommit=True)  # a session the test forgot
    left_open.execute(f'CREATE SCHEMA "{schema}"')
    left_open.execute(f'CREATE TABLE "{schema}".kept (id int)')
    left_open.execute("CREATE TABLE public.stray (id int)")
    left_open.execute("CREATE SCHEMA other")
    with pytest.raises(StopIteration):
        next(first)  # the test's teardown

    assert _schemas(database) == {"public"}
    with psycopg.connect(database) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone() == (0,)
    assert left_open.closed or _ended(left_open)

    second = postgres_url(tmp_path, syncline_postgres_server)  # type: ignore[arg-type]
    url2 = next(second)
    assert _plain(url2) == database and url2.split("schema=")[1] != schema
    with pytest.raises(StopIteration):
        next(second)


def _ended(conn: psycopg.Connection[object]) -> bool:
    try:
        conn.execute("SELECT 1")
    except psycopg.OperationalError:
        return True
    return False


def test_a_refused_clear_drops_the_database_and_the_next_test_gets_a_new_one(
        syncline_postgres_server: str, monkeypatch: pytest.MonkeyPatch) -> None:
    url = postgres.scratch_database(syncline_postgres_server)
    with psycopg.connect(_plain(url), autocommit=True) as conn:
        conn.execute("CREATE TABLE public.stray (id int)")

    def refused(admin: object) -> None:
        raise psycopg.errors.InsufficientPrivilege("must be owner of schema public")

    monkeypatch.setattr(postgres, "_empty", refused)
    postgres.clear_scratch_database(syncline_postgres_server)
    monkeypatch.undo()
    with pytest.raises(psycopg.OperationalError, match="does not exist"):
        psycopg.connect(_plain(url)).close()

    again = postgres.scratch_database(syncline_postgres_server)
    with psycopg.connect(_plain(again)) as conn:
        assert conn.execute("SELECT count(*) FROM pg_tables WHERE schemaname = 'public'"
                            ).fetchone() == (0,)
