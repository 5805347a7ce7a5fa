"""The reactive-query suite: ``watch`` on any backend (subclass, provide ``store_url``).

:class:`WatchSuite` is composed of two mixins: delivery within one store, and changes made
by other stores and processes (marked with the capabilities they need)."""

from __future__ import annotations

import asyncio
import logging
import subprocess
import sys
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import syncline
from syncline import F
from syncline.core.store import Store
from syncline.testing.backend.base import make_everything, make_post
from syncline.testing.entities import ENTITIES, Counter, Everything, Post
from syncline.testing.requirements import SuiteBase, requires
from syncline.testing.stores import opened_stores
from syncline.testing.waits import wait_until


class Collector:
    """Results a subscriber received, with a way to wait for the next ones."""

    def __init__(self) -> None:
        self.results: list[Any] = []
        self._cond = threading.Condition()

    def __call__(self, result: Any) -> None:
        with self._cond:
            self.results.append(result)
            self._cond.notify_all()

    def wait_for(self, n: int, timeout: float = 60.0) -> list[Any]:
        # Returns as soon as n results are in: the generous deadline only matters for a
        # failure, and a busy machine can take seconds to deliver.
        with self._cond:
            self._cond.wait_for(lambda: len(self.results) >= n, timeout)
            return list(self.results)


def settle(store: Store) -> None:
    """Return once the store's watch thread has handled every commit made so far, so that
    what a subscriber has not received by then it never will: commit a row of a table nobody
    else in these tests writes and wait for a watcher of it to see the row (one thread
    re-runs the watches, commit after commit in order)."""
    sentinel = store.repository(Everything)
    seen = Collector()
    with sentinel.watch_count().subscribe(seen):
        before = seen.wait_for(1)[0]
        sentinel.upsert(make_everything(before + 1))
        wait_until(lambda: seen.results[-1] == before + 1, "the watch thread to catch up")


class WatchFixtures(SuiteBase):
    """A store on ``store_url`` with the suite's entities."""

    @pytest.fixture
    def store(self, store_url: str) -> Iterator[Store]:
        with opened_stores(store_url, entities=ENTITIES) as open_store:
            yield open_store()


class WatchDeliverySuite(WatchFixtures):
    """What one store's watchers receive, when, and what they never receive."""

    def test_the_seeds_three_watchers(self, store: Store) -> None:
        posts = store.repository(Post)
        everything, mine, pending = Collector(), Collector(), Collector()
        posts.watch(order_by="-created_at").subscribe(everything)
        posts.watch(F.user_id == "u1", order_by=F.created_at.desc()).subscribe(mine)
        store.outbox.watch_pending_count().subscribe(pending)
        assert everything.results == [[]] and mine.results == [[]] and pending.results == [0]
        posts.upsert(make_post(1))  # user u1
        assert everything.wait_for(2)[-1] == [make_post(1)]
        assert mine.wait_for(2)[-1] == [make_post(1)]
        posts.upsert(make_post(2))  # user u2: the user watch's result does not change
        assert [p.id for p in everything.wait_for(3)[-1]] == ["p002", "p001"]
        settle(store)
        assert len(mine.results) == 2
        store.enqueue_command("like_post", {"post": "p001"})
        assert pending.wait_for(2)[-1] == 1

    def test_a_rollback_notifies_nothing(self, store: Store) -> None:
        seen = Collector()
        store.repository(Post).watch().subscribe(seen)
        with pytest.raises(RuntimeError), store.transaction():
            store.repository(Post).upsert(make_post(1))
            raise RuntimeError
        settle(store)
        assert seen.results == [[]]

    def test_a_transaction_of_1000_writes_notifies_once(self, store: Store) -> None:
        seen = Collector()
        counts = store.repository(Post).watch_count()
        counts.subscribe(seen)
        with store.transaction():
            for i in range(1000):
                store.repository(Post).upsert(make_post(i))
        assert seen.wait_for(2)[-1] == 1000
        settle(store)
        assert seen.results == [0, 1000]

    def test_writes_to_other_tables_deliver_nothing(self, store: Store) -> None:
        seen = Collector()
        store.repository(Post).watch_count().subscribe(seen)
        store.repository(Counter).upsert(Counter("c"))
        store.repository(Post).update_where(F.id == "none", content="x")  # changes nothing
        settle(store)
        assert seen.results == [0]

    def test_a_failing_subscriber_is_logged_and_does_not_stop_others(
            self, store: Store, caplog: pytest.LogCaptureFixture) -> None:
        good = Collector()

        def bad(result: Any) -> None:
            if result:
                raise ValueError("subscriber bug")

        watch = store.repository(Post).watch_count()
        watch.subscribe(bad)
        watch.subscribe(good)
        with caplog.at_level(logging.ERROR, logger="syncline.watch"):
            store.repository(Post).upsert(make_post(1))
            assert good.wait_for(2)[-1] == 1
        assert "subscriber bug" in caplog.text
        store.repository(Post).upsert(make_post(2))
        assert good.wait_for(3)[-1] == 2

    def test_unsubscribing_stops_delivery(self, store: Store) -> None:
        seen = Collector()
        with store.repository(Post).watch_one("p001").subscribe(seen):
            store.repository(Post).upsert(make_post(1))
            assert seen.wait_for(2)[-1] == make_post(1)
        store.repository(Post).update("p001", content="after")
        settle(store)
        assert seen.results == [None, make_post(1)]

    def test_async_for(self, store: Store) -> None:
        async def main() -> list[int]:
            got: list[int] = []
            async for count in store.repository(Post).watch_count():
                got.append(count)
                if count == 0:
                    await asyncio.to_thread(store.repository(Post).upsert, make_post(1))
                else:
                    return got
            return got

        assert asyncio.run(asyncio.wait_for(main(), 60)) == [0, 1]

    def test_no_thread_is_left_after_close(self, store_url: str) -> None:
        before = set(threading.enumerate())
        store = syncline.open(store_url, entities=ENTITIES)
        store.repository(Post).watch().subscribe(lambda _: None)
        store.repository(Post).upsert(make_post(1))
        store.close()
        wait_until(lambda: set(threading.enumerate()) <= before, "the store's threads to end")

    def test_subscribe_returns_current_result_at_once(self, store: Store) -> None:
        store.repository(Post).upsert_many([make_post(i) for i in range(3)])
        got: list[Any] = []
        store.repository(Post).watch(limit=2).subscribe(got.append)
        assert [len(r) for r in got] == [2]
        assert store.repository(Post).watch_count().get() == 3


class WatchAcrossStoresSuite(WatchFixtures):
    """Commits of other stores on the same data, in this process or another, reach watchers."""

    @pytest.fixture
    def shared_store_url(self, store_url: str) -> str:
        """``store_url``, when a second store can open the same data through it."""
        if not store_url.partition("://")[2]:
            pytest.skip("a private store (a URL without a name or path) cannot be opened twice")
        return store_url

    @requires("multi_process", "external_changes")
    def test_writes_from_another_process_reach_watchers(self, store: Store,
                                                        store_url: str) -> None:
        seen = Collector()
        store.repository(Post).watch_count().subscribe(seen)
        code = (
            "import sys, syncline\n"
            "from syncline.testing.entities import ENTITIES, Post\n"
            "from syncline.testing.backend.base import make_post\n"
            "with syncline.open(sys.argv[1], entities=ENTITIES) as s:\n"
            "    s.repository(Post).upsert(make_post(7))\n"
        )
        subprocess.run([sys.executable, "-c", code, store_url], check=True, timeout=60)
        assert seen.wait_for(2)[-1] == 1  # a deadline, not a speed: a busy machine is slow

    @requires("external_changes")
    def test_another_store_on_the_same_data_is_seen(self, store: Store,
                                                    shared_store_url: str) -> None:
        seen = Collector()
        store.repository(Post).watch_count().subscribe(seen)
        with syncline.open(shared_store_url, entities=ENTITIES) as second:
            second.repository(Post).upsert(make_post(3))
        assert seen.wait_for(2)[-1] == 1


class WatchSuite(WatchDeliverySuite, WatchAcrossStoresSuite):
    """Subclass and provide a ``store_url`` fixture to run the watch suite on a backend."""
