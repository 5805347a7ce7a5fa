"""Local-only fields (``syncline.field(local=True)``): stored on the device, never pushed,
never overwritten by a pull, queried like any field."""

from __future__ import annotations

import datetime as dt

import attrs
import cattrs
import pytest

from syncline import F
from syncline.core.store import Store
from syncline.core.sync.outbox import SyncStatus
from syncline.testing.syncing.base import NoteSuite
from syncline.testing.syncing.entities import FeedPost

LOCAL = {"liked_by_me", "image_paths", "last_fetched"}
FETCHED = dt.datetime(2025, 1, 1, 9, tzinfo=dt.UTC)


def mine(i: int) -> FeedPost:
    return FeedPost(f"f{i}", f"text {i}", i, liked_by_me=bool(i % 2),
                    image_paths=[f"/cache/{i}.jpg"], last_fetched=FETCHED)


class LocalFieldSuite(NoteSuite):
    """The seed's ``isLikedByMe``, ``localImagePaths`` and ``lastFetched``."""

    def test_local_fields_are_never_pushed_and_a_pulled_create_gets_their_defaults(
            self, client: Store, other: Store) -> None:
        client.repository(FeedPost).insert(mine(1))
        [entry] = client.outbox.entries.all()
        assert entry.payload is not None and not LOCAL & set(entry.payload)
        assert client.sync().pushed == 1
        other.sync()
        assert other.repository(FeedPost).get("f1") == FeedPost("f1", "text 1", 1)
        assert not LOCAL & set(client.wire.unstructure(mine(1)))
        with pytest.raises(cattrs.BaseValidationError) as info:  # a payload cannot set one
            client.wire.structure({"id": "x", "text": "t", "likes": 0, "liked_by_me": True},
                                  FeedPost)
        assert "liked_by_me" in repr(info.value.exceptions)

    def test_the_wire_names_fields_not_columns(self, client: Store, other: Store) -> None:
        """``text`` is stored in the column ``body``: payloads and pulls say ``text``."""
        posts = client.repository(FeedPost)
        posts.insert(mine(1))
        [entry] = client.outbox.entries.all()
        assert entry.payload is not None and entry.payload["text"] == "text 1"
        assert "body" not in entry.payload
        assert client.backend.get(posts.table, "f1")["body"] == "text 1"  # type: ignore[index]
        client.sync()
        other.sync()
        theirs = other.repository(FeedPost)
        assert theirs.find(F.text == "text 1") == [FeedPost("f1", "text 1", 1)]
        theirs.update("f1", text="renamed")
        other.sync()
        client.sync()
        assert posts.get("f1") == attrs.evolve(mine(1), text="renamed")

    def test_a_pulled_change_keeps_the_local_values(self, client: Store, other: Store) -> None:
        posts = client.repository(FeedPost)
        posts.insert_many([mine(1), mine(2)])
        client.sync()
        other.sync()
        theirs = other.repository(FeedPost)
        theirs.update("f1", text="edited", likes=40)
        theirs.upsert(FeedPost("f2", "also edited", 2))
        other.sync()
        assert client.sync().pulled == 2
        assert posts.get("f1") == attrs.evolve(mine(1), text="edited", likes=40)
        assert posts.get("f2") == attrs.evolve(mine(2), text="also edited")
        state = posts.sync_state("f1")
        assert state is not None and state.status is SyncStatus.SYNCED

    def test_changing_only_local_fields_queues_nothing(self, client: Store) -> None:
        posts = client.repository(FeedPost)
        posts.insert(mine(1))
        client.sync()
        posts.update("f1", liked_by_me=False, image_paths=None)
        assert posts.update_where(F.id == "f1", last_fetched=None) == 1
        assert client.outbox.pending_count() == 0
        assert posts.get("f1") == FeedPost("f1", "text 1", 1)
        posts.update("f1", liked_by_me=True, likes=2)  # with a synced field: queued
        [entry] = client.outbox.entries.all()
        assert entry.payload is not None and entry.payload["likes"] == 2
        assert not LOCAL & set(entry.payload)

    def test_an_upsert_changing_only_local_fields_queues_nothing(self, client: Store) -> None:
        posts = client.repository(FeedPost)
        posts.insert(mine(1))
        client.sync()
        posts.upsert(attrs.evolve(mine(1), liked_by_me=False, image_paths=["/b.jpg"]))
        posts.upsert_many([attrs.evolve(mine(1), liked_by_me=True), mine(2)])
        [entry] = client.outbox.entries.all()  # the create of f2 only
        assert entry.action == "create" and entry.record_id == "f2"
        assert posts.get("f1") == attrs.evolve(mine(1), liked_by_me=True)
        posts.upsert(attrs.evolve(mine(1), text="edited", liked_by_me=False))
        assert {(e.action, e.record_id) for e in client.outbox.entries.all()} == {
            ("create", "f2"), ("update", "f1")}

    def test_local_fields_are_usable_in_queries(self, client: Store) -> None:
        posts = client.repository(FeedPost)
        posts.insert_many([mine(i) for i in range(6)])
        liked = posts.find(F.liked_by_me == True, order_by=F.likes.desc())  # noqa: E712
        assert [p.id for p in liked] == ["f5", "f3", "f1"]
        assert posts.count(F.last_fetched == FETCHED) == 6
        posts.update_where(F.liked_by_me == False, last_fetched=None)  # noqa: E712
        assert [p.id for p in posts.find(F.last_fetched.is_null())] == ["f0", "f2", "f4"]
