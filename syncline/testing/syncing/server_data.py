"""Applying server data in bulk (``upsert_from_server``): written as the server's state,
``synced``, nothing queued."""

from __future__ import annotations

from typing import Any

import pytest

import syncline
from syncline.core.store import Store
from syncline.core.sync.outbox import SyncStatus
from syncline.testing.syncing.base import NoteSuite
from syncline.testing.syncing.entities import FeedPost, Note


class ServerDataSuite(NoteSuite):
    """The seed's ``upsertPosts`` from an API response."""

    def test_records_from_the_server_are_synced_and_queue_nothing(
            self, client: Store, other: Store) -> None:
        notes = client.repository(Note)
        batch = [Note(f"s{i}", "srv", f"from the api {i}") for i in range(300)]
        assert notes.upsert_from_server([*batch, Note("s0", "srv", "twice: the last wins")]) == 300
        assert client.outbox.pending_count() == 0
        assert notes.count() == 300 and notes.get("s0") == Note("s0", "srv", "twice: the last wins")
        assert {notes.sync_state(n.id).status for n in batch[:20]} == {  # type: ignore[union-attr]
            SyncStatus.SYNCED}
        assert client.sync().pushed == 0
        other.sync()
        assert other.repository(Note).count() == 0  # nothing went to the server
        assert notes.upsert_from_server([]) == 0

    def test_a_record_with_queued_changes_stays_pending_and_they_still_go_out(
            self, client: Store, other: Store) -> None:
        notes = client.repository(Note)
        notes.insert(Note("a", "me", "mine"))  # queued, not sent yet
        notes.upsert_from_server([Note("a", "srv", "from the api"), Note("b", "srv", "new")])
        assert notes.get("a") == Note("a", "srv", "from the api")
        state = notes.sync_state("a")
        assert state is not None and state.status is SyncStatus.PENDING
        assert notes.sync_state("b").status is SyncStatus.SYNCED  # type: ignore[union-attr]
        assert client.outbox.pending_count() == 1
        assert client.sync().pushed == 1  # the queued create, as it was queued
        other.sync()
        assert other.repository(Note).get("a") == Note("a", "me", "mine")

    def test_local_only_fields_are_kept_and_defaulted(self, client: Store) -> None:
        posts = client.repository(FeedPost)
        posts.upsert_from_server([FeedPost("f1", "v1", 1)])
        posts.update("f1", liked_by_me=True, image_paths=["/a.jpg"])
        posts.upsert_from_server([FeedPost("f1", "v2", 5), FeedPost("f2", "new", 0)])
        assert posts.get("f1") == FeedPost("f1", "v2", 5, liked_by_me=True,
                                           image_paths=["/a.jpg"])
        assert posts.get("f2") == FeedPost("f2", "new", 0)
        assert client.outbox.pending_count() == 0

    def test_a_refused_record_writes_none_of_the_batch(self, client: Store) -> None:
        notes = client.repository(Note)
        notes.upsert_from_server([Note("k", "srv", "kept")])
        bad = Note("z", "srv", 5)  # type: ignore[arg-type]  # a malformed API answer
        with pytest.raises(syncline.SerializationError, match=r"Note\.text"):
            notes.upsert_from_server([Note("k", "srv", "changed"), bad])
        assert notes.all() == [Note("k", "srv", "kept")]
        assert notes.sync_state("z") is None

    @pytest.mark.parametrize("strategy", ["server_wins", "manual"])
    def test_a_server_version_given_is_the_base_of_the_next_change(
            self, client_factory: Any, other: Store, strategy: str) -> None:
        """Records fetched with their versions are edited and pushed without a conflict
        (without a version the server would see an update with no base)."""
        theirs = other.repository(Note)
        theirs.insert_many([Note("v", "srv", "first"), Note("w", "srv", "first")])
        other.sync()
        theirs.update("v", text="second")
        other.sync()
        versions = {rid: theirs.sync_state(rid).server_version  # type: ignore[union-attr]
                    for rid in ("v", "w")}
        client = client_factory(strategy=strategy)
        notes = client.repository(Note)
        notes.upsert_from_server([Note("v", "srv", "second"), Note("w", "srv", "first")],
                                 versions=versions)
        assert notes.sync_state("v").server_version == versions["v"]
        notes.update("v", text="mine")
        report = client.sync()
        assert report.ok and report.conflicts == [] and report.pushed == 1, report
        other.sync()
        assert theirs.get("v") == Note("v", "srv", "mine")

    def test_a_wrong_server_version_writes_nothing(self, client: Store) -> None:
        notes = client.repository(Note)
        for bad in (-1, "3", 2.0, None):
            with pytest.raises(syncline.SerializationError, match="non-negative int"):
                notes.upsert_from_server([Note("x", "srv", "t")], versions={"x": bad})  # type: ignore[dict-item]
        assert notes.get("x") is None and notes.sync_state("x") is None

    def test_update_from_server_takes_the_version_too(self, client: Store,
                                                      other: Store) -> None:
        notes = client.repository(Note)
        notes.insert(Note("u", "me", "draft"))
        client.sync()
        state = notes.sync_state("u")
        assert state is not None and state.local_id is not None
        theirs = other.repository(Note)
        other.sync()
        theirs.update("u", text="edited elsewhere")
        other.sync()
        version = theirs.sync_state("u").server_version  # type: ignore[union-attr]
        notes.update_from_server(state.local_id, Note("u", "me", "edited elsewhere"),
                                 version=version)
        assert notes.sync_state("u").server_version == version  # type: ignore[union-attr]
        notes.update("u", text="mine")
        report = client.sync()
        assert report.ok and report.conflicts == [], report
        with pytest.raises(syncline.SerializationError, match="non-negative int"):
            notes.update_from_server(state.local_id, Note("u", "me", "x"), version=-2)
        assert notes.get("u") == Note("u", "me", "mine")
