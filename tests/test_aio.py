"""syncline.aio beyond the shared suites: cancellation, transactions, watches, the worker task,
the async transports, on every bundled backend (store_url in conftest). Every test runs its
loop in debug mode with 10 ms slow-callback detection (run_async)."""

from __future__ import annotations

import asyncio
import contextlib
import gc
import itertools
import logging
import threading
import time
from collections.abc import Iterator

import pytest

import syncline
import syncline.aio
from syncline import F
from syncline.aio.loop import LoopRunner
from syncline.plugins.mock import MockServer
from syncline.server.app import ServerConfig
from syncline.testing.aio.bridge import LoopThread, guard_backend, run_async
from syncline.testing.backend.base import make_post
from syncline.testing.entities import ENTITIES, Post
from syncline.testing.server import LiveServer
from syncline.testing.syncing.entities import NOTES, Note

names = itertools.count()


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(f"aio-{next(names)}", entities=NOTES) as server:
        yield server


def test_transaction_commits_and_rolls_back_as_a_whole(store_url: str) -> None:
    async def main() -> None:
        async with syncline.aio.open(store_url, entities=ENTITIES) as store:
            posts = store.repository(Post)
            await posts.insert(make_post(0))
            with pytest.raises(RuntimeError):
                async with store.transaction():
                    await posts.insert(make_post(1))
                    await posts.update("p000", content="changed")
                    assert await posts.count() == 2  # sees its own writes
                    raise RuntimeError("boom")
            assert await posts.all() == [make_post(0)]
            async with store.transaction():
                await posts.insert(make_post(2))
                with pytest.raises(ValueError):
                    async with store.transaction():  # a savepoint
                        await posts.insert(make_post(3))
                        raise ValueError("inner only")
                with pytest.raises(syncline.IntegrityError):
                    await posts.insert(make_post(2))  # a failed call leaves it usable
            assert [p.id for p in await posts.all()] == ["p000", "p002"]

    run_async(main)


def test_a_cancelled_transaction_leaves_nothing_and_frees_the_thread(store_url: str) -> None:
    async def main() -> None:
        async with syncline.aio.open(store_url, entities=ENTITIES) as store:
            posts = store.repository(Post)
            inside = asyncio.Event()

            async def body() -> None:
                async with store.transaction():
                    await posts.insert_many([make_post(i) for i in range(50)])
                    inside.set()
                    await asyncio.Event().wait()  # until cancelled

            task = asyncio.create_task(body())
            await inside.wait()
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await posts.count() == 0
            await posts.insert(make_post(99))  # the thread is free again
            assert await posts.count() == 1

    run_async(main)


def test_a_cancelled_write_is_whole_or_never_runs(store_url: str) -> None:
    async def main() -> None:
        async with syncline.aio.open(store_url, entities=ENTITIES) as store:
            posts = store.repository(Post)
            # cancelled while it runs on the store's thread: it finishes, all of it
            task = asyncio.create_task(posts.insert_many([make_post(i) for i in range(300)]))
            await asyncio.sleep(0)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            assert await posts.count() in (0, 300)
            await posts.clear()
            # cancelled while it waits behind another task's transaction: it never runs
            holding, release = asyncio.Event(), asyncio.Event()

            async def hold() -> None:
                async with store.transaction():
                    await posts.insert(make_post(1))
                    holding.set()
                    await release.wait()

            holder = asyncio.create_task(hold())
            await holding.wait()
            waiting = asyncio.create_task(posts.insert(make_post(2)))
            await asyncio.sleep(0.05)
            waiting.cancel()
            release.set()
            await holder
            with pytest.raises(asyncio.CancelledError):
                await waiting
            assert [p.id for p in await posts.all()] == ["p001"]

    run_async(main)


def test_the_same_errors_as_the_synchronous_api(store_url: str) -> None:
    async def main() -> None:
        store = await syncline.aio.open(store_url, entities=ENTITIES)
        posts = store.repository(Post)
        await posts.insert(make_post(1))
        with pytest.raises(syncline.IntegrityError):
            await posts.insert(make_post(1))
        with pytest.raises(syncline.NotFoundError):
            await posts.update("missing", content="x")
        with pytest.raises(syncline.QueryError):
            await posts.delete_where(None)
        with pytest.raises(syncline.QueryError, match="no_such_field"):
            await posts.find(F.no_such_field == 1)
        with pytest.raises(syncline.EntityDefinitionError):
            store.repository(Note)
        with pytest.raises(syncline.ConfigurationError, match="no transport"):
            await store.sync()
        await store.close()
        with pytest.raises(syncline.TransactionError, match="closed"):
            await posts.get("p001")

    run_async(main)


def test_async_for_over_a_watch(store_url: str) -> None:
    async def main() -> None:
        async with syncline.aio.open(store_url, entities=ENTITIES) as store:
            posts = store.repository(Post)
            seen: list[list[str]] = []
            async for result in posts.watch(F.user_id == "u1", order_by="id"):
                seen.append([p.id for p in result])
                if len(seen) == 1:
                    await posts.insert(make_post(1))  # user u1
                if len(seen) == 2:
                    break
            assert seen == [[], ["p001"]]
            assert await posts.watch_count().get() == 1

    run_async(main)


def test_the_worker_task_and_the_sync_status(store_url: str, server: MockServer) -> None:
    async def main() -> None:
        async with syncline.aio.open(store_url, entities=NOTES,
                                     transport=f"mock://{server.name}") as store:
            notes = store.repository(Note)
            statuses = store.sync_status()
            first = await anext(statuses)
            assert first.pending == 0 and first.last_report is None
            worker = await store.start_sync_worker(interval=30, debounce=0.01)
            await notes.insert(Note("n1", "me", "hello"))
            assert await store.wait_synced(Note, "n1", timeout=30)
            progress = await anext(statuses)
            while progress.pending or progress.last_report is None:
                progress = await anext(statuses)
            assert progress.last_report.ok
            state = await notes.sync_state("n1")
            assert state is not None and state.status == syncline.SyncStatus.SYNCED
            await statuses.aclose()
            await store.stop_sync_worker()
            assert not worker.running and worker.rounds >= 1
            assert server.server.store.repository(Note).get("n1") == Note("n1", "me", "hello")

    run_async(main)


def test_a_sync_cancelled_mid_push_applies_once(store_url: str, server: MockServer) -> None:
    async def main() -> None:
        async with syncline.aio.open(store_url, entities=NOTES,
                                     transport=f"mock://{server.name}") as store:
            await store.repository(Note).insert(Note("n1", "me", "once"))
            server.latency = 0.2
            task = asyncio.create_task(store.sync())
            while server.calls == 0:
                await asyncio.sleep(0.01)
            task.cancel()
            with pytest.raises(asyncio.CancelledError):
                await task
            server.latency = 0
            for _ in range(20):
                await store.network_available()
                await store.sync()
                if await store.pending_count() == 0:
                    break
            assert await store.pending_count() == 0
        applied = [a for a in server.server.applied.all() if a.result.get("status") == "applied"]
        assert len(applied) == 1

    run_async(main)


def test_the_async_http_transport_against_a_live_server(store_url: str) -> None:
    config = ServerConfig(tokens={"secret": "alice"})
    with LiveServer(config, NOTES) as live:
        async def main() -> None:
            async with syncline.aio.open(
                    store_url, entities=NOTES, transport=live.url,
                    transport_options={"token": "secret"}) as store:
                await store.repository(Note).insert(Note("n1", "alice", "over http"))
                report = await store.sync()
                assert report.pushed == 1 and report.ok
            async with syncline.aio.open("sqlite://", entities=NOTES, transport=live.url,
                                         transport_options={"token": "wrong"}) as stranger:
                refused = await stranger.sync()  # reported, as the synchronous API does
                assert not refused.ok and "401" in str(refused.failures)
            async with syncline.aio.open("sqlite://", entities=NOTES, transport=live.url,
                                         transport_options={"token": "secret"}) as other:
                assert (await other.sync()).pulled == 1
                assert await other.repository(Note).get("n1") == Note("n1", "alice",
                                                                      "over http")

        run_async(main)


def test_the_async_http_transport_resends_on_a_keep_alive_connection_closed_under_it(
        store_url: str) -> None:
    """As the synchronous transport: the request goes again at once; a push whose answer
    was lost so is answered duplicate, and nothing is applied twice."""
    import httpx

    class Closing(httpx.AsyncBaseTransport):
        def __init__(self) -> None:
            self.network = httpx.AsyncHTTPTransport()
            self.lost: list[str] = []

        async def handle_async_request(self, request: httpx.Request) -> httpx.Response:
            answer = await self.network.handle_async_request(request)
            if request.method == "POST" and request.url.path not in self.lost:
                await answer.aread()  # the server did it; its answer is lost
                self.lost.append(request.url.path)
                raise httpx.RemoteProtocolError(
                    "Server disconnected without sending a response.")
            return answer

    closing = Closing()
    with LiveServer(ServerConfig(tokens={"secret": "alice"}), NOTES) as live:
        async def main() -> None:
            async with syncline.aio.open(
                    store_url, entities=NOTES, transport=live.url,
                    transport_options={"token": "secret", "httpx_transport": closing}
            ) as store:
                await store.repository(Note).insert(Note("n1", "alice", "once"))
                report = await store.sync()
                assert report.ok and report.pushed == 1 and report.failures == []
            await closing.network.aclose()

        run_async(main)
        assert closing.lost == ["/v1/push", "/v1/pull"]
        assert live.sync.server.store.repository(Note).count() == 1


def test_the_checks_can_fail() -> None:
    """The slow-callback check catches a loop that works for too long, and the backend guard a
    store call made on the loop's thread."""

    async def busy() -> None:
        deadline = asyncio.get_running_loop().time() + 0.05
        while asyncio.get_running_loop().time() < deadline:
            pass  # 50 ms of CPU in one callback

    with pytest.raises(AssertionError, match="took"):
        run_async(busy)

    async def blocking() -> None:
        async with syncline.aio.open("memory://", entities=ENTITIES) as store:
            guard_backend(store.sync_store.backend, asyncio.get_running_loop())
            store.sync_store.repository(Post).count()  # the synchronous API, on the loop

    with pytest.raises(AssertionError, match="ran on the event loop's thread"):
        run_async(blocking)


def test_the_suite_loop_reports_warnings() -> None:
    loop = LoopThread()

    async def warn() -> None:
        logging.getLogger("asyncio").warning("something is wrong")

    loop.call(warn)
    warnings, _ = loop.close()
    assert warnings == ["something is wrong"]
    assert threading.active_count() >= 1


def test_a_transaction_abandoned_with_its_loop_is_rolled_back(store_url: str) -> None:
    loop = asyncio.new_event_loop()
    inside = asyncio.Event()
    tasks: list[asyncio.Task[None]] = []

    async def body(store: syncline.aio.AsyncStore) -> None:
        async with store.transaction():
            await store.repository(Post).insert(make_post(1))
            inside.set()
            await asyncio.Event().wait()

    async def start() -> syncline.aio.AsyncStore:
        store = await syncline.aio.open(store_url, entities=ENTITIES)
        tasks.append(loop.create_task(body(store)))
        await inside.wait()
        return store

    store = loop.run_until_complete(start())
    loop.close()  # no cancellation: the task is simply gone (a crashed or killed loop)
    try:
        async def count() -> int:
            return await store.repository(Post).count()

        if isinstance(store._thread, LoopRunner):
            # PostgreSQL: the store and its connections belong to their loop; PostgreSQL
            # rolls the transaction back when its connection goes (checked below).
            with pytest.raises(syncline.TransactionError, match="event loop it was opened on"):
                asyncio.run(count())
            return
        deadline = time.monotonic() + 30
        while True:  # the store's thread notices, rolls back and is free again
            try:
                assert asyncio.run(asyncio.wait_for(count(), 1.0)) == 0
                break
            except TimeoutError:
                assert time.monotonic() < deadline
    finally:
        store.sync_store.close()
        store._thread.stop()
        # Let the abandoned task go now, quietly, not in a later test's loop.
        for task in tasks:
            task._log_destroy_pending = False  # type: ignore[attr-defined]
            with contextlib.suppress(RuntimeError):  # its `async with` cannot exit
                task.get_coro().close()
        tasks.clear()
        gc.collect()
    if isinstance(store._thread, LoopRunner):  # the abandoned connection is closed: rolled back
        with syncline.open(store_url, entities=ENTITIES) as fresh:
            with fresh.transaction():
                with fresh.backend.connection() as conn:  # type: ignore[attr-defined]
                    conn.execute("SET LOCAL lock_timeout = '30s'")  # fails rather than hangs
                fresh.repository(Post).insert(make_post(1))  # no row lock left behind
            assert fresh.repository(Post).count() == 1
