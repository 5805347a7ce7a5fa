"""PostgreSQL beyond the shared suite: concurrency, killed connections, connection errors."""

from __future__ import annotations

import threading
import time
from collections.abc import Iterator

import attrs
import psycopg
import pytest
from click.testing import CliRunner
from sqlalchemy.engine import make_url

import syncline
from syncline.cli import main
from syncline.core.store import Store

registry = syncline.EntityRegistry()


@registry.entity("pg_rows")
@attrs.define
class Row:
    id: str
    writer: int
    copy: int  # always equal to writer: a mixed row would show a torn write
    hits: int = 0


@pytest.fixture
def store(postgres_url: str) -> Iterator[Store]:
    name = f"pg{threading.get_ident() % 100000}"
    with syncline.open(f"{postgres_url}?schema={name}", entities=[Row]) as s:
        s.repository(Row).clear()
        yield s


def test_eight_threads_upserting_and_reading_the_same_rows(store: Store) -> None:
    rows = store.repository(Row)
    rows.upsert_many([Row(f"r{i}", -1, -1) for i in range(10)])
    errors: list[BaseException] = []

    def bump() -> None:
        current = rows.get("r0")
        assert current is not None
        rows.update("r0", hits=current.hits + 1)

    def work(n: int) -> None:
        try:
            for _ in range(15):
                rows.upsert_many([Row(f"r{i}", n, n, hits=0) for i in range(1, 10)])
                for got in rows.get_many([f"r{i}" for i in range(10)]):
                    assert got.writer == got.copy
                store.run_transaction(bump)
        except BaseException as exc:
            errors.append(exc)

    threads = [threading.Thread(target=work, args=(n,)) for n in range(8)]
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    assert [repr(e) for e in errors] == []
    first = rows.get("r0")
    assert first is not None and first.hits == 8 * 15  # no lost update
    assert all(r.writer == r.copy for r in rows.all())


def _backend_pid(store: Store) -> int:
    conn = store.backend._local.conn.driver_connection  # type: ignore[attr-defined]
    row = conn.execute("SELECT pg_backend_pid()").fetchone()
    return int(row[0])


def test_killed_connection_leaves_no_partial_write_and_reconnects(store: Store,
                                                                   postgres_url: str) -> None:
    rows = store.repository(Row)
    with pytest.raises(syncline.BackendUnavailableError), store.transaction():
        rows.insert(Row("a", 1, 1))
        pid = _backend_pid(store)
        with psycopg.connect(make_url(postgres_url).set(
                drivername="postgresql").render_as_string(False), autocommit=True) as admin:
            # With a timeout it returns once the backend is gone, not when it was signalled.
            admin.execute("SELECT pg_terminate_backend(%s, 60000)", (pid,))
        rows.insert(Row("b", 2, 2))
    assert rows.get("a") is None and rows.get("b") is None
    rows.insert(Row("c", 3, 3))  # the pool hands out a fresh connection
    assert [r.id for r in rows.all()] == ["c"]


def _kill_pooled_connection(store: Store, postgres_url: str) -> None:
    proxy = store.backend._raw()  # type: ignore[attr-defined]
    try:
        row = proxy.driver_connection.execute("SELECT pg_backend_pid()").fetchone()
    finally:
        proxy.close()  # back to the pool, where it will be found dead
    url = make_url(postgres_url).set(drivername="postgresql").render_as_string(False)
    with psycopg.connect(url, autocommit=True) as admin:
        # With a timeout it returns once the backend is gone, not when it was signalled.
        admin.execute("SELECT pg_terminate_backend(%s, 60000)", (row[0],))


@pytest.mark.parametrize("ping_after", [0, 3600])
def test_pooled_connections_the_server_dropped_are_replaced(
        postgres_url: str, ping_after: float) -> None:
    # ping_after=0: pinged at every checkout; 3600: never pinged here, so a transaction's
    # BEGIN meets the dead connection and takes another one.
    with syncline.open(f"{postgres_url}?schema=ping{int(ping_after)}", entities=[Row],
                       options={"ping_after": ping_after, "pool_size": 1}) as store:
        rows = store.repository(Row)
        rows.clear()
        rows.insert(Row("a", 1, 1))
        _kill_pooled_connection(store, postgres_url)
        rows.insert(Row("b", 2, 2))  # a write: its own transaction
        _kill_pooled_connection(store, postgres_url)
        with store.transaction():
            rows.update("a", hits=5)
        assert rows.get("a") == Row("a", 1, 1, 5)
        assert rows.count() == 2


def test_unreachable_server_names_host_and_port() -> None:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        port = sock.getsockname()[1]
    with pytest.raises(syncline.BackendUnavailableError, match=f"127.0.0.1:{port}"):
        syncline.open(f"postgresql://nobody@127.0.0.1:{port}/db", entities=[Row],
                      options={"connect_timeout": 2})


def test_missing_database_suggests_init_and_init_creates_it(postgres_url: str) -> None:
    missing = make_url(postgres_url).set(database="syncline_created_by_init")
    url = missing.render_as_string(hide_password=False)
    with pytest.raises(syncline.BackendUnavailableError, match="syncline init"):
        syncline.open(url, entities=[Row])
    result = CliRunner().invoke(main, ["init", url])
    assert result.exit_code == 0, result.output
    assert "created database" in result.output
    again = CliRunner().invoke(main, ["init", url])
    assert "already exists" in again.output
    with syncline.open(url, entities=[Row]) as s:
        s.repository(Row).upsert(Row("x", 1, 1))
        assert s.repository(Row).count() == 1
    from sqlalchemy_utils import drop_database

    drop_database(missing.set(drivername="postgresql+psycopg"))


def test_bad_credentials(postgres_url: str) -> None:
    admin_url = make_url(postgres_url).set(drivername="postgresql")
    with psycopg.connect(admin_url.render_as_string(False), autocommit=True) as admin:
        hba = admin.execute("SHOW hba_file").fetchone()
        assert hba is not None
        try:
            with open(hba[0]) as f:
                original = f.read()
        except PermissionError:
            pytest.skip("cannot edit pg_hba.conf of a server this test did not start")
        admin.execute("DROP ROLE IF EXISTS pwuser")
        admin.execute("CREATE ROLE pwuser LOGIN PASSWORD 'right'")
        try:
            with open(hba[0], "w") as f:
                f.write("host all pwuser 127.0.0.1/32 scram-sha-256\n" + original)
            admin.execute("SELECT pg_reload_conf()")
            bad = make_url(postgres_url).set(username="pwuser", password="wrong")
            # pg_reload_conf() only signals the server: until it has reread pg_hba.conf (a
            # while on a busy machine), pwuser still gets in by the trust rule.
            deadline = time.monotonic() + 60
            while True:
                try:
                    syncline.open(bad.render_as_string(False), entities=[Row]).close()
                except syncline.BackendUnavailableError as exc:
                    assert "authentication failed" in str(exc)
                    break
                assert time.monotonic() < deadline, "pg_hba.conf was not reloaded in 60 s"
                time.sleep(0.05)
        finally:
            with open(hba[0], "w") as f:
                f.write(original)
            admin.execute("SELECT pg_reload_conf()")


def test_writes_in_a_pipeline_go_together_and_fail_together(store: Store) -> None:
    """``PostgresBackend.pipeline()`` (the sync server's batch writes): writes of any size
    (no COPY in pipeline mode), sent at the end of the block; a refused one aborts the
    transaction with syncline's error and leaves nothing written."""
    backend, table, repo = store.backend, store.repository(Row).table, store.repository(Row)
    to_tuple = store.codec(Row).to_tuple
    rows = [to_tuple(Row(f"r{i:03d}", i, i)) for i in range(200)]  # above the COPY threshold

    def write(extra: list[tuple[object, ...]]) -> None:
        with backend.pipeline():  # type: ignore[attr-defined]
            store.writer.insert_values(table, rows[:100])
            store.writer.upsert_values(table, rows[100:])
            store.writer.insert_values(table, extra)

    store.run_transaction(lambda: write([]))
    assert repo.count() == 200
    repo.clear()
    with pytest.raises(syncline.IntegrityError):
        store.run_transaction(lambda: write([rows[0]]))  # a key written twice
    assert repo.count() == 0
