"""Transactions, savepoints, commit listeners and threads."""

from __future__ import annotations

import threading

import pytest

import syncline
from syncline.core.store import Store
from syncline.testing.backend.base import StoreSuite, make_post
from syncline.testing.entities import Counter, Post
from syncline.testing.requirements import requires


class TransactionSuite(StoreSuite):
    """Commit, rollback, savepoints, isolation from other threads, listeners."""

    def test_transaction_commits(self, store: Store, posts: syncline.Repository[Post]) -> None:
        with store.transaction():
            posts.insert(make_post(1))
            posts.insert(make_post(2))
            assert posts.count() == 2  # sees its own writes
        assert posts.count() == 2

    def test_transaction_rolls_back_on_exception(self, store: Store,
                                                 posts: syncline.Repository[Post]) -> None:
        posts.insert(make_post(0))
        with pytest.raises(RuntimeError), store.transaction():
            posts.insert(make_post(1))
            posts.update("p000", content="changed")
            posts.delete("p000") if False else None
            raise RuntimeError("boom")
        assert [p.id for p in posts.all()] == ["p000"]
        assert posts.get("p000") == make_post(0)

    @requires("savepoints")
    def test_nested_transaction_is_a_savepoint(self, store: Store,
                                               posts: syncline.Repository[Post]) -> None:
        with store.transaction():
            posts.insert(make_post(1))
            with pytest.raises(ValueError), store.transaction():
                posts.insert(make_post(2))
                raise ValueError("inner only")
            with store.transaction():
                posts.insert(make_post(3))
            with pytest.raises(syncline.IntegrityError):
                posts.insert(make_post(1))  # a failed statement leaves the transaction usable
        assert [p.id for p in posts.all()] == ["p001", "p003"]

    def test_other_threads_never_see_uncommitted_rows(self, store: Store,
                                                      posts: syncline.Repository[Post]) -> None:
        seen: list[Post | None] = []
        with pytest.raises(RuntimeError), store.transaction():
            posts.insert(make_post(1))
            reader = threading.Thread(target=lambda: seen.append(posts.get("p001")))
            reader.start()
            reader.join(0.3)  # a backend may block the reader until the transaction ends
            raise RuntimeError("roll back")
        reader.join(10)
        assert seen == [None]

    def test_commit_listeners_hear_tables_once_per_transaction(
            self, store: Store, posts: syncline.Repository[Post]) -> None:
        heard: list[frozenset[str]] = []
        undo = store.on_commit(heard.append)
        with store.transaction():
            for i in range(5):
                posts.insert(make_post(i))
            store.repository(Counter).insert(Counter("c"))
        with pytest.raises(RuntimeError), store.transaction():
            posts.insert(make_post(99))
            raise RuntimeError
        posts.delete("p000")
        undo()
        posts.delete("p001")
        assert heard == [frozenset({"suite_posts", "suite_counters"}), frozenset({"suite_posts"})]


class ConcurrencySuite(StoreSuite):
    """Several threads writing at once."""

    @requires("concurrent_writers")
    def test_threads_writing_at_once(self, store: Store) -> None:
        counters = store.repository(Counter)
        counters.insert(Counter("shared"))
        errors: list[BaseException] = []

        def increment() -> None:
            current = counters.get("shared")
            assert current is not None
            counters.update("shared", value=current.value + 1)

        def work(n: int) -> None:
            try:
                for i in range(20):
                    counters.upsert(Counter(f"t{n}-{i}", i))
                    store.run_transaction(increment)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [repr(e) for e in errors] == []
        assert counters.count() == 6 * 20 + 1
        shared = counters.get("shared")
        assert shared is not None and shared.value == 6 * 20  # no lost update
