"""syncline.aio over PostgreSQL: the I/O awaits on the event loop (psycopg's async connections
through SQLAlchemy's greenlets), no store thread. Each loop runs in debug mode with 10 ms
slow-callback detection (run_async). The shared suites' cases run this way in test_aio_suite."""

from __future__ import annotations

import asyncio
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psycopg
import pytest
import sqlalchemy as sa

import syncline
import syncline.aio
from syncline.aio.loop import LoopRunner
from syncline.aio.thread import StoreThread
from syncline.backends.postgres.on_loop import LoopConnection
from syncline.plugins.mock import MockServer
from syncline.testing.aio.bridge import run_async
from syncline.testing.backend.base import make_post
from syncline.testing.entities import ENTITIES, Post
from syncline.testing.stores import postgres_url
from syncline.testing.syncing.entities import NOTES, Note


@pytest.fixture
def pg_url(tmp_path: Path, syncline_postgres_server: str) -> Iterator[str]:
    yield from postgres_url(tmp_path, syncline_postgres_server)  # a database of its own


def _sleep(store: syncline.Store, seconds: float) -> str:
    """A slow statement; returns the class of the connection it ran on."""
    with store.backend.connection() as conn:  # type: ignore[attr-defined]
        conn.execute("SELECT pg_sleep(%s)", (seconds,))
        return type(conn).__name__


def test_calls_run_on_the_loop_through_async_connections(pg_url: str) -> None:
    async def main() -> None:
        before = {t.name for t in threading.enumerate()}
        async with syncline.aio.open(pg_url, entities=ENTITIES) as store:
            assert isinstance(store._thread, LoopRunner)
            checkouts: dict[bool, list[int]] = {False: [], True: []}
            for loop_io, engine in store.sync_store.backend._engines.items():  # type: ignore[attr-defined]
                sa.event.listen(engine, "checkout", lambda *_, k=loop_io: checkouts[k].append(
                    threading.get_ident()))
            posts = store.repository(Post)
            await posts.insert(make_post(0))
            async with store.transaction():
                await posts.update("p000", content="changed")
            seen: list[tuple[int, Any]] = []

            def look(sync_store: syncline.Store) -> None:
                with sync_store.backend.connection() as conn:  # type: ignore[attr-defined]
                    seen.append((threading.get_ident(), conn))

            await store.run(look)
            (ident, conn), = seen
            assert ident == threading.get_ident()  # the loop's own thread
            assert isinstance(conn, LoopConnection)
            assert isinstance(conn.async_connection, psycopg.AsyncConnection)
            assert (await posts.get("p000")).content == "changed"  # type: ignore[union-attr]
            # no store thread was started; the synchronous pool (which opened the store in
            # the loop's executor) was not used on the loop, the async one was, on the loop
            assert not any(t.name.startswith("syncline-aio") for t in threading.enumerate())
            assert checkouts[False] == []
            assert set(checkouts[True]) == {threading.get_ident()}
        assert {t.name for t in threading.enumerate()
                if t.name.startswith("syncline")} <= before

    run_async(main)


def test_the_loop_serves_other_tasks_while_a_statement_runs(pg_url: str) -> None:
    async def main() -> None:
        async with syncline.aio.open(pg_url, entities=ENTITIES) as store:
            slow = asyncio.create_task(store.run(lambda s: _sleep(s, 1.0)))
            ticks = 0
            while not slow.done():
                await asyncio.sleep(0.01)
                ticks += 1
            assert await slow == "LoopConnection"
            # A blocked loop would have ticked once or twice, not dozens of times.
            assert ticks >= 10, ticks

    run_async(main)


def test_a_blocked_statement_is_released_by_another_task(pg_url: str) -> None:
    """Deterministic: the statement waits for a lock that only another task of the same loop
    releases; a loop blocked by the statement would never run that task."""

    async def main() -> None:
        key = 424242
        async with syncline.aio.open(pg_url, entities=ENTITIES) as holder, \
                syncline.aio.open(pg_url, entities=ENTITIES) as waiter:
            def lock(store: syncline.Store, verb: str) -> None:
                with store.backend.connection() as conn:  # type: ignore[attr-defined]
                    conn.execute(f"SELECT {verb}(%s)", (key,))

            async with holder.transaction():
                await holder.run(lambda s: lock(s, "pg_advisory_xact_lock"))
                waiting = asyncio.create_task(
                    waiter.run(lambda s: lock(s, "pg_advisory_xact_lock")))
                await asyncio.sleep(0.1)
                assert not waiting.done()  # blocked in PostgreSQL, the loop free
            await asyncio.wait_for(waiting, 30)  # the commit released it

    run_async(main)


def test_concurrent_tasks_never_share_a_transaction(pg_url: str) -> None:
    async def main() -> None:
        async with syncline.aio.open(pg_url, entities=ENTITIES) as store:
            posts = store.repository(Post)
            inside = asyncio.Event()

            async def rolled_back() -> None:
                async with store.transaction():
                    await posts.insert(make_post(1))
                    inside.set()
                    await asyncio.sleep(0.05)  # the other task's write is under way
                    raise RuntimeError("roll back")

            async def outside() -> None:
                await inside.wait()
                await posts.insert(make_post(2))  # waits for the transaction, then commits

            results = await asyncio.gather(rolled_back(), outside(), return_exceptions=True)
            assert isinstance(results[0], RuntimeError) and results[1] is None
            assert [p.id for p in await posts.all()] == ["p002"]

    run_async(main)


def test_a_cancelled_statement_finishes_and_the_store_goes_on(pg_url: str) -> None:
    async def main() -> None:
        async with syncline.aio.open(pg_url, entities=ENTITIES) as store:
            posts = store.repository(Post)

            async def body() -> None:
                async with store.transaction():
                    await posts.insert(make_post(1))
                    await store.run(lambda s: _sleep(s, 0.3))

            task = asyncio.create_task(body())
            await asyncio.sleep(0.1)
            task.cancel()  # mid-statement: the statement ends, then the rollback
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await posts.count() == 0
            await posts.insert(make_post(2))
            assert [p.id for p in await posts.all()] == ["p002"]

    run_async(main)


def test_io_chooses_where_the_calls_run(pg_url: str, tmp_path: Path) -> None:
    async def main() -> None:
        async with syncline.aio.open(pg_url, entities=ENTITIES, io="thread") as store:
            assert isinstance(store._thread, StoreThread)
            await store.repository(Post).insert(make_post(0))
            names = await store.run(lambda s: threading.current_thread().name)
            assert names.startswith("syncline-aio")
        async with syncline.aio.open(pg_url, entities=ENTITIES, io="loop") as store:
            assert isinstance(store._thread, LoopRunner)
            assert await store.repository(Post).count() == 1
        with pytest.raises(syncline.ConfigurationError, match="event_loop_io"):
            await syncline.aio.open(f"sqlite:///{tmp_path}/a.db", entities=ENTITIES, io="loop")
        with pytest.raises(syncline.ConfigurationError, match="io='fast'"):
            syncline.aio.open(pg_url, io="fast")  # type: ignore[arg-type]

    run_async(main)


def test_two_stores_of_one_database_sync_at_once(pg_url: str) -> None:
    """Their rounds take the same process lock on the same loop: the second waits without
    blocking the loop, so the first (pushing meanwhile) finishes."""
    with MockServer("aio-pg-two", entities=NOTES) as server:
        server.latency = 0.1

        async def main() -> None:
            url = f"mock://{server.name}"
            async with syncline.aio.open(pg_url, entities=NOTES, transport=url) as a, \
                    syncline.aio.open(pg_url, entities=NOTES, transport=url) as b:
                await a.repository(Note).insert(Note("n1", "me", "from a"))
                reports = await asyncio.wait_for(asyncio.gather(a.sync(), b.sync()), 60)
                assert all(r.ok for r in reports)
                assert await a.pending_count() == 0

        run_async(main)
        assert server.server.store.repository(Note).get("n1") == Note("n1", "me", "from a")


def test_pipelined_reads_and_writes_on_the_loop(pg_url: str) -> None:
    """What the sync server's push uses (``get_many_after``, ``pipeline()``, the multi-row
    writes through a raw cursor) works on the loop's async connections too."""
    async def main() -> None:
        async with syncline.aio.open(pg_url, entities=ENTITIES) as store:
            def work(sync_store: syncline.Store) -> tuple[Any, ...]:
                backend: Any = sync_store.backend
                table = sync_store.repository(Post).table
                to_tuple = sync_store.codec(Post).to_tuple
                rows = [to_tuple(make_post(i)) for i in range(100)]

                def write() -> tuple[Any, ...]:
                    with backend.pipeline():
                        sync_store.writer.insert_values(table, rows[:10])  # multi-row
                        sync_store.writer.insert_values(table, rows[10:])  # no COPY
                    return backend.get_many_after(("SELECT 41 + 1", ()), [
                        (table, ["p000", "p099", "nope"]), (table, [])])

                row, found = sync_store.run_transaction(write)
                with backend.connection() as conn:
                    assert isinstance(conn, LoopConnection)
                return row, [[r[0] for r in rs] for rs in found]

            assert await store.run(work) == ((42,), [["p000", "p099"], []])
            assert await store.repository(Post).count() == 100

    run_async(main)
