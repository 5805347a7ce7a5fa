"""Writing and reading records: CRUD on one table."""

from __future__ import annotations

import attrs
import pytest

import syncline
from syncline import F
from syncline.core.store import Store
from syncline.testing.backend.base import StoreSuite, make_post
from syncline.testing.entities import Counter, Post


class CrudSuite(StoreSuite):
    """insert, upsert, update, delete, count and their errors."""

    def test_get_returns_what_was_inserted(self, posts: syncline.Repository[Post]) -> None:
        post = make_post(1)
        posts.insert(post)
        assert posts.get(post.id) == post
        assert posts.get("missing") is None

    def test_increment_creates_adds_and_returns_the_new_value(self, store: Store) -> None:
        table = store.repository(Counter).table
        backend = store.backend
        assert backend.increment(table, "seq", "value") == 1
        assert backend.increment(table, "seq", "value", by=5) == 6
        with store.transaction():
            assert backend.increment(table, "seq", "value", by=3) == 9
            assert backend.increment(table, "other", "value", by=2) == 2
        assert store.repository(Counter).get("seq") is not None
        assert [c.value for c in store.repository(Counter).get_many(["seq", "other"])] == [9, 2]

    def test_get_many_keeps_order_and_skips_missing(self, filled: list[Post],
                                                    posts: syncline.Repository[Post]) -> None:
        keys = ["p005", "nope", "p001", "p020"]
        assert [p.id for p in posts.get_many(keys)] == ["p005", "p001", "p020"]
        assert len(posts.get_many([p.id for p in filled])) == len(filled)

    def test_upsert_replaces_every_field(self, posts: syncline.Repository[Post]) -> None:
        posts.upsert(make_post(1))
        changed = make_post(1, content="edited", image_urls=None, likes_count=99)
        posts.upsert(changed)
        assert posts.get(changed.id) == changed
        assert posts.count() == 1

    def test_insert_existing_key_is_an_integrity_error(self,
                                                       posts: syncline.Repository[Post]) -> None:
        posts.insert(make_post(1))
        with pytest.raises(syncline.IntegrityError):
            posts.insert(make_post(1, content="other"))
        assert posts.get("p001") == make_post(1)

    def test_insert_many_with_one_duplicate_writes_nothing(
            self, posts: syncline.Repository[Post]) -> None:
        posts.insert(make_post(5))
        with pytest.raises(syncline.IntegrityError):
            posts.insert_many([make_post(1), make_post(5), make_post(9)])
        assert [p.id for p in posts.all()] == ["p005"]

    def test_unique_key_is_enforced(self, posts: syncline.Repository[Post]) -> None:
        posts.insert(make_post(1, local_id="same"))
        with pytest.raises(syncline.IntegrityError):
            posts.upsert(make_post(2, local_id="same"))
        posts.upsert_many([make_post(3, local_id=None), make_post(4, local_id=None)])
        assert posts.count() == 3

    def test_upsert_many_with_a_key_twice_keeps_the_last(
            self, posts: syncline.Repository[Post]) -> None:
        posts.upsert_many([make_post(1), make_post(2), make_post(1, content="last")])
        assert posts.get("p001") == make_post(1, content="last")
        assert posts.count() == 2

    def test_update_sets_only_given_fields(self, filled: list[Post],
                                           posts: syncline.Repository[Post]) -> None:
        updated = posts.update("p003", content="new", likes_count=42)
        expected = attrs.evolve(filled[3], content="new", likes_count=42)
        assert updated == expected
        assert posts.get("p003") == expected
        assert posts.get("p004") == filled[4]

    def test_update_missing_key_raises_not_found(self, posts: syncline.Repository[Post]) -> None:
        with pytest.raises(syncline.NotFoundError):
            posts.update("missing", content="x")

    def test_update_where_counts_rows(self, filled: list[Post],
                                      posts: syncline.Repository[Post]) -> None:
        n = posts.update_where(F.user_id == "u1", likes_count=0)
        assert n == sum(1 for p in filled if p.user_id == "u1")
        assert posts.count(F.likes_count == 0) == sum(
            1 for p in filled if p.user_id == "u1" or p.likes_count == 0)

    def test_update_values_sets_each_row_its_own_values(
            self, filled: list[Post], posts: syncline.Repository[Post]) -> None:
        n = posts.update_values(["content", "likes_count"],
                                [("p001", "one", 100), ("p002", "two", 200), ("zzz", "x", 0)])
        assert n == 2
        assert posts.get("p001") == attrs.evolve(filled[1], content="one", likes_count=100)
        assert posts.get("p002") == attrs.evolve(filled[2], content="two", likes_count=200)
        assert posts.get("p003") == filled[3]
        assert posts.count() == len(filled)
        assert posts.update_values(["likes_count"], []) == 0

    def test_update_values_is_all_or_nothing(self, filled: list[Post],
                                             posts: syncline.Repository[Post]) -> None:
        with pytest.raises(syncline.QueryError):
            posts.update_values(["id"], [("p001", "p999")])
        with pytest.raises(syncline.QueryError):
            posts.update_values(["content"], [("p001", "a"), ("p002",)])
        with pytest.raises(syncline.SerializationError):
            posts.update_values(["likes_count"], [("p001", 1), ("p002", "not an int")])
        with pytest.raises(syncline.IntegrityError):  # the second row breaks a unique index
            posts.update_values(["local_id"], [("p001", "same"), ("p002", "same")])
        assert posts.all() == sorted(filled, key=lambda p: p.id)

    def test_delete_and_delete_many(self, filled: list[Post],
                                    posts: syncline.Repository[Post]) -> None:
        assert posts.delete("p001") is True
        assert posts.delete("p001") is False
        assert posts.delete_many(["p002", "p003", "zzz"]) == 2
        assert posts.count() == len(filled) - 3

    def test_delete_where_and_clear(self, filled: list[Post],
                                    posts: syncline.Repository[Post]) -> None:
        n = posts.delete_where(F.user_id == "u0")
        assert n == sum(1 for p in filled if p.user_id == "u0")
        assert posts.count(F.user_id == "u0") == 0
        with pytest.raises(syncline.QueryError):
            posts.delete_where(None)
        assert posts.clear() == len(filled) - n
        assert posts.count() == 0

    def test_count_and_exists(self, filled: list[Post], posts: syncline.Repository[Post]) -> None:
        assert posts.count() == len(filled)
        assert posts.count({"user_id": "u2"}) == sum(1 for p in filled if p.user_id == "u2")
        assert posts.exists("p000") and not posts.exists("zzz")
        assert posts.exists(where=F.likes_count == 6)
        assert not posts.exists(where=F.likes_count == 600)
