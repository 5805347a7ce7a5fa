"""Live sync through ``syncline.aio``: an asyncio device's worker task pulls as soon as the
server's stream tells it, polls while the stream is refused or down, and resumes from its
cursor after reconnecting (docs/async.md, Live sync).

Subclass :class:`AsyncLiveSuite` with a ``store_url`` fixture (a fresh store URL on the
backend under test): it becomes the asyncio device's store. Each case runs on the suite's
event loop (debug mode, 10 ms slow-callback detection, the backend guarded against calls from
the loop). The asyncio device polls only every :data:`NEVER` seconds unless a case says
otherwise, so a change that arrives came through the stream.
"""

from __future__ import annotations

import asyncio
import contextlib
import itertools
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from pathlib import Path
from typing import Any

import pytest

import syncline
import syncline.aio
from syncline.aio.store import AsyncStore
from syncline.aio.worker import AsyncSyncWorker
from syncline.plugins.mock import MockServer
from syncline.server.app import ServerConfig
from syncline.testing.aio.bridge import LoopThread, guard_backend
from syncline.testing.aio.suite import AsyncLoop
from syncline.testing.live_suite import DEADLINE, NEVER, TOKENS
from syncline.testing.server import LiveServer
from syncline.testing.transport_suite import ENTITIES, Item

_names = itertools.count()


async def until(condition: Callable[[], Awaitable[bool]], what: str,
                deadline: float = DEADLINE) -> None:
    """Wait until ``await condition()`` (a generous deadline: the machine may be busy)."""
    end = time.monotonic() + deadline
    while not await condition():
        if time.monotonic() > end:
            raise AssertionError(f"timed out waiting for {what}")
        await asyncio.sleep(0.01)


async def seen(store: AsyncStore, record_id: str, name: str | None = None) -> bool:
    item = await store.repository(Item).get(record_id)
    return item is not None and (name is None or item.name == name)


def worker(store: AsyncStore) -> AsyncSyncWorker:
    assert store._worker is not None
    return store._worker


async def streaming(store: AsyncStore) -> bool:
    return worker(store).streaming


async def down(store: AsyncStore) -> bool:
    return not worker(store).streaming


class Writer:
    """Device A: a synchronous store whose writes the case pushes itself."""

    def __init__(self, store: syncline.Store) -> None:
        self.store = store

    async def write(self, *items: Item) -> None:
        """Upsert ``items`` and push them (off the loop)."""
        def write() -> None:
            self.store.repository(Item).upsert_many(list(items))
            self.store.sync()

        await asyncio.to_thread(write)


class AsyncLiveSuite(AsyncLoop):
    """An asyncio device on the backend under test, live over HTTP and the mock transport."""

    @pytest.fixture
    def live(self, tmp_path: Path) -> Iterator[LiveServer]:
        config = ServerConfig(store=f"sqlite:///{tmp_path}/server.db", tokens=TOKENS,
                              live_heartbeat=0.5)
        with LiveServer(config, ENTITIES) as server:
            yield server

    @pytest.fixture
    def mock(self) -> Iterator[MockServer]:
        with MockServer(f"aio-live-{next(_names)}", entities=ENTITIES) as server:
            yield server

    @staticmethod
    async def device(store_url: str, transport: str, loop: LoopThread,
                     **worker_options: Any) -> AsyncStore:
        """The asyncio device B on ``store_url``, its worker polling every NEVER seconds."""
        options = {"interval": NEVER, "fallback": NEVER, **worker_options}
        store = await syncline.aio.open(store_url, entities=ENTITIES, transport=transport,
                                        transport_options={"token": "alice-2"})
        guard_backend(store.sync_store.backend, loop.loop)
        await store.start_sync_worker(**options)
        return store

    @contextlib.asynccontextmanager
    async def devices(self, store_url: str, url: str, loop: LoopThread,
                      **worker_options: Any) -> AsyncIterator[tuple[Writer, AsyncStore]]:
        """Device A (synchronous, pushing when the case says) and the asyncio device B."""
        a = Writer(await asyncio.to_thread(  # opening blocks: off the loop
            lambda: syncline.open("memory://", entities=ENTITIES, transport=url,
                                  transport_options={"token": "alice-token"})))
        try:
            b = await self.device(store_url, url, loop, **worker_options)
            try:
                yield a, b
            finally:
                await b.close()
        finally:
            await asyncio.to_thread(a.store.close)

    def test_a_write_on_another_device_reaches_an_asyncio_watcher_without_polling(
            self, store_url: str, live: LiveServer, aio_loop: LoopThread) -> None:
        async def case() -> None:
            async with self.devices(store_url, live.url, aio_loop) as (a, b):
                await until(lambda: streaming(b), "B's stream to open")
                rounds = worker(b).rounds

                async def watch() -> None:
                    async for items in b.repository(Item).watch():
                        if any(i.id == "x" and i.name == "second" for i in items):
                            return

                watcher = asyncio.create_task(watch())
                await a.write(Item("x", "first"))
                await a.write(Item("x", "second", 2))
                await asyncio.wait_for(watcher, DEADLINE)
                assert await b.repository(Item).all() == [Item("x", "second", 2)]
                assert worker(b).rounds > rounds and worker(b).opened == 1

        aio_loop.call(case)

    def test_a_refused_stream_falls_back_to_polling(
            self, store_url: str, tmp_path: Path, aio_loop: LoopThread) -> None:
        config = ServerConfig(store=f"sqlite:///{tmp_path}/full.db", tokens=TOKENS,
                              max_live_clients=0)  # every stream is answered 503

        async def case() -> None:
            async with self.devices(store_url, server.url, aio_loop, fallback=0.2) as (a, b):
                await a.write(Item("polled", "while refused"))
                await until(lambda: seen(b, "polled"), "a poll to bring A's write")
                assert not worker(b).streaming and worker(b).opened == 0
                assert worker(b).state.listening  # it keeps trying

        with LiveServer(config, ENTITIES) as server:
            aio_loop.call(case)

    def test_the_stream_is_back_after_the_server_restarts_and_nothing_is_missed(
            self, store_url: str, live: LiveServer, aio_loop: LoopThread) -> None:
        async def case() -> None:
            async with self.devices(store_url, live.url, aio_loop) as (a, b):
                await until(lambda: streaming(b), "B's stream to open")
                await a.write(Item("before", "1"))
                await until(lambda: seen(b, "before"), "the first write")
                await asyncio.to_thread(live.stop)
                await until(lambda: down(b), "B to notice its stream is gone")
                await asyncio.to_thread(live.restart)  # on the same port
                # pushed before B's stream reopens (it backs off 0.5 s at least): the stream's
                # first event brings it
                await a.write(Item("during", "2"), Item("before", "1 again", 1))
                await until(lambda: streaming(b), "B's stream to reopen")
                await until(lambda: seen(b, "during"), "B to catch up")
                await until(lambda: seen(b, "before", "1 again"), "B to catch up")
                await a.write(Item("after", "3"))
                await until(lambda: seen(b, "after"), "the stream to bring a later write")
                assert worker(b).opened == 2
                assert await b.repository(Item).all() == await asyncio.to_thread(
                    a.store.repository(Item).all)
                assert await b.quarantined() == []

        aio_loop.call(case)

    def test_the_async_mock_transport_streams_breaks_and_catches_up(
            self, store_url: str, mock: MockServer, aio_loop: LoopThread) -> None:
        url = f"mock://{mock.name}"

        async def case() -> None:
            b = await self.device(store_url, url, aio_loop)
            try:
                await until(lambda: streaming(b), "B's stream")
                await asyncio.to_thread(mock.server.write, Item("told", "by the stream"))
                await until(lambda: seen(b, "told"), "the stream to bring it")
                mock.offline = True  # the stream breaks; B has nothing to poll with
                await until(lambda: down(b),
                            "the stream to break")
                await asyncio.to_thread(mock.server.write, Item("missed", "while away"))
                mock.offline = False
                await until(lambda: seen(b, "missed"), "B to catch up")
                await until(lambda: streaming(b), "the stream to reopen")
                assert worker(b).opened == 2
                mock.live.max_clients = 0  # streams refused (503): poll meanwhile
                worker(b).fallback = 0.2
                mock.drop_live_streams()
                await until(lambda: down(b),
                            "the stream to end")
                await asyncio.to_thread(mock.server.write, Item("polled", "no stream"))
                await until(lambda: seen(b, "polled"), "a poll to bring it")
                assert {i.id for i in await b.repository(Item).all()} == {
                    "told", "missed", "polled"}
                assert worker(b).state.listening and not worker(b).streaming
            finally:
                await b.close()

        aio_loop.call(case)

    def test_a_worker_without_live_only_polls(
            self, store_url: str, mock: MockServer, aio_loop: LoopThread) -> None:
        async def case() -> None:
            b = await self.device(store_url, f"mock://{mock.name}", aio_loop, live=False)
            try:
                assert worker(b)._listener is None and not worker(b).state.listening
                assert mock.live.clients == 0
            finally:
                await b.close()

        aio_loop.call(case)
