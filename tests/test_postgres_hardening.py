"""Issue 14, PostgreSQL: quoted identifiers, listeners that reconnect, opens that take no lock
writers wait on, errors that are not about the link, and sync under concurrent writes."""

from __future__ import annotations

import itertools
import secrets
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import psycopg
import pytest
from sqlalchemy.engine import make_url

import syncline
from syncline import F
from syncline.core.store import Store
from syncline.plugins.mock import MockServer

registry = syncline.EntityRegistry()
_n = itertools.count()


@registry.entity("hard_docs", indexes=["title"], syncs=True)
@attrs.define
class Doc:
    id: str
    title: str
    body: str = ""
    n: int = 0


@registry.entity("hard_tags", indexes=["name"])
@attrs.define
class Tag:
    id: str
    name: str


def _plain(url: str) -> str:
    return make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)


@pytest.fixture
def admin(postgres_url: str) -> Iterator[psycopg.Connection[Any]]:
    with psycopg.connect(_plain(postgres_url), autocommit=True) as conn:
        yield conn


def _schemas(admin: psycopg.Connection[Any], like: str) -> list[str]:
    rows = admin.execute("SELECT nspname FROM pg_namespace WHERE nspname LIKE %s ORDER BY 1",
                         (like,)).fetchall()
    return [r[0] for r in rows]


def _drop_schema(admin: psycopg.Connection[Any], name: str) -> None:
    admin.execute(psycopg.sql.SQL("DROP SCHEMA IF EXISTS {} CASCADE").format(
        psycopg.sql.Identifier(name)))


def _wait(check: Callable[[], bool], what: str, timeout: float = 60.0) -> None:
    deadline = time.monotonic() + timeout
    while not check():
        assert time.monotonic() < deadline, f"timed out waiting for {what}"
        time.sleep(0.02)


# -- 1. identifiers ---------------------------------------------------------------------------


def test_a_crafted_schema_name_is_quoted_not_run(postgres_url: str,
                                                 admin: psycopg.Connection[Any]) -> None:
    victim = f"victim_{uuid.uuid4().hex[:8]}"
    admin.execute(psycopg.sql.SQL("CREATE TABLE {} (id int)").format(
        psycopg.sql.Identifier(victim)))
    crafted = f'x{next(_n)}"; DROP TABLE {victim}; --'
    try:
        with syncline.open(f"{postgres_url}?schema={crafted}", entities=[Doc]) as store:
            store.repository(Doc).insert(Doc("a", "t"))
            assert store.repository(Doc).get("a") == Doc("a", "t")
        # the victim is untouched, and the store lives in a schema of exactly that name
        assert admin.execute("SELECT to_regclass(%s)", (victim,)).fetchone() == (victim,)
        assert _schemas(admin, crafted) == [crafted]
        with syncline.open(f"{postgres_url}?schema={crafted}", entities=[Doc]) as store:
            assert store.repository(Doc).get("a") == Doc("a", "t")
    finally:
        _drop_schema(admin, crafted)
        admin.execute(psycopg.sql.SQL("DROP TABLE IF EXISTS {}").format(
            psycopg.sql.Identifier(victim)))


def test_a_mixed_case_schema_works_and_reopens(postgres_url: str,
                                               admin: psycopg.Connection[Any]) -> None:
    name = f"MixedCase{next(_n)}_{uuid.uuid4().hex[:6]}"
    try:
        with syncline.open(f"{postgres_url}?schema={name}", entities=[Doc, Tag]) as store:
            store.repository(Doc).insert(Doc("a", "t"))
        assert _schemas(admin, name) == [name]
        assert _schemas(admin, name.lower()) == []  # nothing left behind under another name
        with syncline.open(postgres_url, entities=[Doc], options={"schema": name}) as store:
            assert store.repository(Doc).all() == [Doc("a", "t")]
    finally:
        _drop_schema(admin, name)


@pytest.mark.parametrize("bad", ["", "x" * 64, "é" * 32])
def test_a_schema_name_postgresql_would_change_is_refused_before_anything(
        postgres_url: str, admin: psycopg.Connection[Any], bad: str) -> None:
    before = _schemas(admin, "%")
    with pytest.raises(syncline.ConfigurationError, match="schema"):
        syncline.open(f"{postgres_url}?schema={bad}", entities=[Doc])
    assert _schemas(admin, "%") == before


# -- 2. listeners reconnect ---------------------------------------------------------------------


def _listener_pids(admin: psycopg.Connection[Any], channel: str) -> list[int]:
    rows = admin.execute(
        "SELECT pid FROM pg_stat_activity WHERE query = %s AND pid <> pg_backend_pid()",
        (psycopg.sql.SQL("LISTEN {}").format(psycopg.sql.Identifier(channel))
         .as_string(admin),)).fetchall()
    return [r[0] for r in rows]


def test_watchers_hear_commits_again_after_the_listen_connection_is_killed(
        postgres_url: str, admin: psycopg.Connection[Any],
        monkeypatch: pytest.MonkeyPatch) -> None:
    from syncline.backends.postgres import backend as postgres

    # A long first pause: the write below most likely lands while the watcher is deaf, which
    # only the re-run after reconnecting can show.
    monkeypatch.setattr(postgres, "_LISTEN_BACKOFF", (1.0, 2.0))
    url = f"{postgres_url}?schema=listen{next(_n)}_{uuid.uuid4().hex[:6]}"
    seen: list[list[str]] = []
    cond = threading.Condition()

    def heard(docs: list[Doc]) -> None:
        with cond:
            seen.append([d.id for d in docs])
            cond.notify_all()

    def wait_for(ids: list[str]) -> None:
        with cond:
            assert cond.wait_for(lambda: bool(seen) and seen[-1] == ids, 60), (ids, seen)

    with syncline.open(url, entities=[Doc]) as watcher, \
            syncline.open(url, entities=[Doc]) as writer:
        channel = watcher.backend.channel  # type: ignore[attr-defined]
        watcher.repository(Doc).watch(order_by="id").subscribe(heard)
        wait_for([])
        writer.repository(Doc).insert(Doc("a", "1"))
        wait_for(["a"])
        _wait(lambda: len(_listener_pids(admin, channel)) == 1, "the listener")
        for pid in _listener_pids(admin, channel):
            admin.execute("SELECT pg_terminate_backend(%s, 60000)", (pid,))
        writer.repository(Doc).insert(Doc("b", "2"))  # while the watcher is deaf
        wait_for(["a", "b"])
        writer.repository(Doc).insert(Doc("c", "3"))  # heard through the new connection
        wait_for(["a", "b", "c"])
    _drop_schema(admin, make_url(url).query["schema"])  # type: ignore[arg-type]


# -- 3. opening takes no lock writers wait on ---------------------------------------------------


def test_opening_an_up_to_date_store_does_not_wait_for_a_writer(
        postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    schema = f"openlock{next(_n)}_{uuid.uuid4().hex[:6]}"
    url = f"{postgres_url}?schema={schema}"
    syncline.open(url, entities=[Doc, Tag]).close()
    opened = threading.Event()
    failed: list[BaseException] = []
    with psycopg.connect(_plain(postgres_url)) as writer:  # a transaction, left open
        writer.execute(psycopg.sql.SQL("SET search_path TO {}").format(
            psycopg.sql.Identifier(schema)))
        writer.execute("INSERT INTO hard_tags (id, name) VALUES ('w', 'writer')")

        def open_it() -> None:
            try:
                syncline.open(url, entities=[Doc, Tag]).close()
                opened.set()
            except BaseException as exc:
                failed.append(exc)

        thread = threading.Thread(target=open_it, daemon=True)
        thread.start()
        # Before the fix the open waited (CREATE INDEX IF NOT EXISTS: a SHARE lock) until
        # this transaction ended; now it finishes while the writer holds its lock.
        ok = opened.wait(60)
        writer.rollback()
    thread.join(60)
    assert failed == [] and ok, "the open waited for a writer's transaction"
    _drop_schema(admin, schema)


def test_stores_opening_over_and_over_while_threads_write(
        postgres_url: str, admin: psycopg.Connection[Any]) -> None:
    schema = f"opens{next(_n)}_{uuid.uuid4().hex[:6]}"
    url = f"{postgres_url}?schema={schema}"
    errors: list[BaseException] = []
    done = threading.Event()
    with syncline.open(url, entities=[Doc, Tag]) as store:
        docs, tags = store.repository(Doc), store.repository(Tag)

        def write(n: int) -> None:
            try:
                i = 0
                while not done.is_set():
                    def both(i: int = i) -> None:
                        tags.upsert(Tag(f"t{n}-{i % 5}", f"tag {i}"))
                        docs.upsert(Doc(f"d{n}-{i % 5}", f"doc {i}", n=i))
                    store.run_transaction(both)
                    i += 1
            except BaseException as exc:
                errors.append(exc)

        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        for t in writers:
            t.start()
        try:
            for _ in range(15):
                syncline.open(url, entities=[Doc, Tag]).close()
        except BaseException as exc:
            errors.append(exc)
        finally:
            done.set()
            for t in writers:
                t.join(120)
    assert [repr(e) for e in errors] == []
    _drop_schema(admin, schema)


# -- 4. errors that are not about the link --------------------------------------------------------


@pytest.fixture
def store(postgres_url: str, admin: psycopg.Connection[Any]) -> Iterator[Store]:
    schema = f"harderr{next(_n)}_{uuid.uuid4().hex[:6]}"
    with syncline.open(f"{postgres_url}?schema={schema}", entities=[Doc, Tag]) as s:
        yield s
    _drop_schema(admin, schema)


def test_a_ten_thousand_character_id_is_a_serialization_error(store: Store) -> None:
    docs = store.repository(Doc)
    with pytest.raises(syncline.SerializationError, match="255"):
        docs.upsert(Doc("x" * 10_000, "t"))
    assert docs.count() == 0 and store.outbox.entries.count() == 0


def test_a_value_postgresql_refuses_is_not_cannot_reach(store: Store) -> None:
    # Past the codec (straight to the backend): PostgreSQL's own refusal ("index row
    # requires 10016 bytes") is a BackendError about the value, not BackendUnavailableError.
    table = store.repository(Tag).table
    with pytest.raises(syncline.BackendError) as info:
        # incompressible: PostgreSQL compresses index entries before it measures them
        store.backend.upsert_many(table, [{"id": "big", "name": secrets.token_urlsafe(9_000)}])
    assert not isinstance(info.value, syncline.BackendUnavailableError)
    assert "cannot reach" not in str(info.value)
    assert store.repository(Tag).count() == 0


def test_a_statement_the_driver_refuses_is_not_cannot_reach(store: Store) -> None:
    # psycopg refuses more than 65,535 parameters before sending: an OperationalError on a
    # connection that is fine, which used to read "cannot reach PostgreSQL".
    backend: Any = store.backend
    with pytest.raises(syncline.BackendError) as info, backend._connection() as conn:
        conn.execute("SELECT " + ", ".join(["%s"] * 70_000), list(range(70_000)))
    assert not isinstance(info.value, syncline.BackendUnavailableError), info.value
    assert store.repository(Tag).count() == 0  # and the pool's connections still work


def test_in_with_more_values_than_postgresql_takes_parameters(store: Store) -> None:
    tags = store.repository(Tag)
    tags.upsert_many([Tag(f"t{i}", f"n{i % 3}") for i in range(10)])
    many = [f"t{i}" for i in range(70_000)]
    assert tags.count(F.id.in_(many)) == 10
    assert tags.count(F.id.not_in(many)) == 0
    assert [t.id for t in tags.find(F.id.in_(many) & (F.name == "n1"), order_by="id")] == \
        ["t1", "t4", "t7"]
    assert tags.delete_where(F.id.in_(many[5:])) == 5


# -- 5. sync() under concurrent writes to the same records -----------------------------------


def test_sync_while_threads_write_the_same_records(postgres_url: str,
                                                   admin: psycopg.Connection[Any]) -> None:
    schema = f"syncrace{next(_n)}_{uuid.uuid4().hex[:6]}"
    name = f"hard-sync-{next(_n)}"
    errors: list[BaseException] = []
    done = threading.Event()
    with MockServer(name, entities=[Doc]) as server, \
            syncline.open(f"{postgres_url}?schema={schema}", entities=[Doc],
                          transport=f"mock://{name}") as client:
        docs = client.repository(Doc)
        docs.upsert_many([Doc(f"d{i}", "start") for i in range(5)])

        def write(n: int) -> None:
            try:
                for i in range(40):
                    docs.upsert(Doc(f"d{i % 5}", f"writer {n}", n=i))
            except BaseException as exc:
                errors.append(exc)

        def sync() -> None:
            try:
                while not done.is_set():
                    client.sync()
            except BaseException as exc:
                errors.append(exc)

        syncer = threading.Thread(target=sync)
        writers = [threading.Thread(target=write, args=(n,)) for n in range(4)]
        syncer.start()
        for t in writers:
            t.start()
        for t in writers:
            t.join(300)
        done.set()
        syncer.join(300)
        assert [repr(e) for e in errors] == []
        for _ in range(5):  # drain the queue
            if client.outbox.entries.count() == 0:
                break
            client.sync()
        on_server = {d.id: d for d in server.server.store.repository(Doc).all()}
        assert on_server == {d.id: d for d in docs.all()}
    _drop_schema(admin, schema)
