"""Pushing and pulling: convergence, coalescing, idempotency, pages, resets."""

from __future__ import annotations

import threading
from typing import Any

import attrs
import pytest

from syncline.core.model.clock import FakeClock
from syncline.core.model.schema import spec_of
from syncline.core.spi.transport import Mutation
from syncline.core.store import Store
from syncline.core.sync.outbox import SyncStatus, new_id
from syncline.plugins.mock import MockServer
from syncline.server.engine import SyncServer
from syncline.server.store import open_server_store
from syncline.server.tables import ChangeEntry
from syncline.testing.syncing.base import ClientFactory, NoteSuite
from syncline.testing.syncing.entities import NOTES, Note


class ExchangeSuite(NoteSuite):
    """Two clients converge through the server, each write applied once."""

    def test_two_clients_converge(self, client: Store, other: Store) -> None:
        mine, theirs = client.repository(Note), other.repository(Note)
        note = Note(new_id(), "me", "hello", tags=["x"])
        mine.insert(note)
        report = client.sync()
        assert report.ok and report.pushed == 1
        state = mine.sync_state(note.id)
        assert state is not None and state.status is SyncStatus.SYNCED
        assert state.server_version is not None
        assert other.sync().pulled == 1
        assert theirs.get(note.id) == note
        theirs.update(note.id, likes=4)
        other.sync()
        client.sync()
        assert mine.get(note.id) == attrs.evolve(note, likes=4)
        theirs.delete(note.id)
        other.sync()
        client.sync()
        assert mine.get(note.id) is None
        assert client.outbox.pending_count() == other.outbox.pending_count() == 0

    def test_coalescing_create_update(self, client: Store, server: MockServer) -> None:
        notes = client.repository(Note)
        notes.insert(Note("c", "me", "v1"))
        notes.update("c", text="v2")
        notes.update("c", text="v3")
        assert client.sync().pushed == 1
        [change] = self.server_changes(server, "c")
        assert change.payload is not None and change.payload["text"] == "v3"

    def test_coalescing_update_update_and_update_delete(self, client: Store,
                                                        server: MockServer) -> None:
        notes = client.repository(Note)
        notes.insert(Note("u", "me", "v1"))
        notes.insert(Note("d", "me", "v1"))
        client.sync()
        notes.update("u", text="v2")
        notes.update("u", text="v3")
        notes.update("d", text="v2")
        notes.delete("d")
        assert client.sync().pushed == 2
        # the log keeps a record's latest change; its mutation results say what was applied
        assert [c.op for c in self.server_changes(server, "u")] == ["upsert"]
        assert [c.op for c in self.server_changes(server, "d")] == ["delete"]
        assert self.applied_count(server, "u") == self.applied_count(server, "d") == 2

    def test_create_then_delete_in_one_batch_sends_nothing(self, client: Store,
                                                           server: MockServer) -> None:
        notes = client.repository(Note)
        notes.insert(Note("gone", "me", "oops"))
        notes.delete("gone")
        calls = server.calls
        report = client.sync()
        assert report.pushed == 0 and self.server_changes(server, "gone") == []
        assert server.calls == calls + 1  # the pull only
        assert client.outbox.pending_count() == 0
        assert notes.sync_state("gone") is None

    def test_create_delete_surviving_a_lost_response(self, client: Store,
                                                     server: MockServer) -> None:
        notes = client.repository(Note)
        notes.insert(Note("ghost", "me", "boo"))
        server.lose_next_responses(1)
        assert not client.sync().ok  # the create was applied, its answer lost
        notes.delete("ghost")
        client.clock.sleep(120)
        assert client.sync().ok
        client.clock.sleep(120)
        client.sync()
        assert server.server.store.repository(Note).get("ghost") is None
        assert client.outbox.pending_count() == 0 and notes.get("ghost") is None

    def test_duplicate_push_after_a_crash_applies_once(self, client: Store,
                                                       server: MockServer) -> None:
        notes = client.repository(Note)
        notes.insert(Note("once", "me", "x"))
        server.lose_next_responses(1)
        report = client.sync_engine.push()  # applied on the server, the answer lost
        assert report.failures and client.outbox.pending_count() == 1
        client.clock.sleep(120)
        assert client.sync_engine.push().pushed == 1  # answered "duplicate"
        assert len(self.server_changes(server, "once")) == 1
        notes.insert(Note("twice", "me", "x"))
        server.lose_next_responses(1)
        assert client.sync().conflicts == []  # the pull recognises our own write
        assert client.outbox.pending_count() == 0
        assert len(self.server_changes(server, "twice")) == 1
        state = notes.sync_state("once")
        assert state is not None and state.status is SyncStatus.SYNCED

    def test_writes_made_while_sync_was_paused_are_pushed(self, client: Store,
                                                          server: MockServer) -> None:
        notes = client.repository(Note)
        server.offline = True
        for i in range(5):
            notes.insert(Note(f"p{i}", "me", "offline"))
            client.sync()
        server.offline = False
        client.clock.sleep(1000)
        assert client.sync().pushed == 5
        assert server.server.store.repository(Note).count() == 5

    def test_pages_apply_with_their_cursor(self, client: Store, other: Store,
                                           server: MockServer) -> None:
        notes = other.repository(Note)
        notes.upsert_many([Note(f"n{i:03d}", "me", str(i)) for i in range(30)])
        other.sync()
        client.sync_engine.page_size = 7
        server.repeat_pages = True
        report = client.sync()
        assert report.ok and client.repository(Note).count() == 30
        assert client.outbox.get_meta("cursor") is not None

    def test_checkpoint_is_never_saved_before_its_data(self, client: Store, other: Store,
                                                       monkeypatch: pytest.MonkeyPatch) -> None:
        other.repository(Note).upsert_many([Note(f"k{i}", "me", "x") for i in range(4)])
        other.sync()
        engine = client.sync_engine
        original = engine._entity  # every pulled record goes through it
        seen = []

        def failing(entity: str, payload: Any) -> Any:
            seen.append(payload)
            if len(seen) == 3:
                raise RuntimeError("crash while applying")
            return original(entity, payload)

        engine._entity = failing  # type: ignore[method-assign]
        try:
            with pytest.raises(RuntimeError):
                client.sync()
        finally:
            del engine._entity  # the class's method again (also through the aio suite's proxy)
        assert client.outbox.get_meta("cursor") is None
        assert client.repository(Note).count() == 0
        client.sync()
        assert client.repository(Note).count() == 4

    def test_server_reset_pulls_again_and_keeps_queued_changes(self, client: Store,
                                                               other: Store,
                                                               server: MockServer) -> None:
        other.repository(Note).insert(Note("old", "me", "x"))
        other.sync()
        client.sync()
        server.server.reset()
        other.repository(Note).upsert(Note("new", "me", "y"))
        other.sync()
        client.repository(Note).insert(Note("mine", "me", "queued"))
        server.offline = True
        client.sync()
        server.offline = False
        client.clock.sleep(1000)
        report = client.sync()
        assert report.pushed == 1
        assert client.repository(Note).get("new") is not None
        assert server.server.store.repository(Note).get("mine") is not None

    def test_an_edit_waits_for_its_records_create(self, client: Store,
                                                  server: MockServer) -> None:
        notes = client.repository(Note)
        notes.insert(Note("w", "me", "v1"))
        server.offline = True
        client.sync()  # the create now waits out its backoff
        server.offline = False
        notes.update("w", text="v2")
        client.sync()  # the edit must not overtake its create
        assert notes.get("w") == Note("w", "me", "v2")
        client.clock.sleep(120)
        report = client.sync()
        assert report.ok and report.conflicts == []
        assert server.server.store.repository(Note).get("w") == Note("w", "me", "v2")

    def test_server_reset_forgets_what_the_old_epoch_had(self, client: Store, other: Store,
                                                         server: MockServer) -> None:
        other.repository(Note).upsert_many([Note("stays", "me", "x"), Note("goes", "me", "y")])
        other.sync()
        client.sync()
        server.server.reset()
        server.server.write(Note("stays", "me", "x again"))
        report = client.sync()
        assert report.ok
        assert client.repository(Note).all() == [Note("stays", "me", "x again")]

    def test_the_servers_writes_reach_watchers(self, store_url: str, clock: FakeClock) -> None:
        store = open_server_store(store_url, NOTES, clock=clock)
        try:
            delivered = threading.Event()

            def seen(note: Note | None) -> None:
                if note is not None:
                    delivered.set()

            store.repository(Note).watch_one("w").subscribe(seen)
            heard: list[frozenset[str]] = []
            store.on_commit(heard.append)
            [result] = SyncServer(store, purge_interval=None).push([Mutation(
                new_id(), "sync_notes", "create", "w",
                {"id": "w", "owner": "me", "text": "t", "likes": 0, "tags": None})]).results
            assert result.status == "applied"
            assert delivered.wait(60)  # the server writes through the store's writer
            written = frozenset().union(*heard)
            assert {"sync_notes", spec_of(ChangeEntry).table.name} <= written
        finally:
            store.close()

    def test_the_server_store_queues_nothing(self, client: Store, server: MockServer) -> None:
        client.repository(Note).insert(Note("s", "me", "x"))
        client.sync()
        server.server.write(Note("t", "me", "y"))
        assert server.store.outbox.pending_count() == 0

    def test_a_pushed_delete_is_not_pulled_back(self, client: Store) -> None:
        notes = client.repository(Note)
        notes.insert(Note("del", "me", "x"))
        client.sync()
        notes.delete("del")
        assert client.sync().pushed == 1
        assert client.sync().pulled == 0

    def test_principals_cannot_take_over_each_others_ids(self, client_factory: ClientFactory,
                                                         server: MockServer) -> None:
        alice = client_factory()
        alice.transport_options = {"principal": "alice"}
        bob = client_factory("sqlite://")
        bob.transport_options = {"principal": "bob"}
        alice.repository(Note).insert(Note("shared-id", "alice", "mine"))
        alice.sync()
        bob.repository(Note).insert(Note("shared-id", "bob", "hijack"))
        report = bob.sync()
        assert report.rejected and "taken" in report.rejected[0]
        assert server.server.store.repository(Note).get("shared-id") == Note(
            "shared-id", "alice", "mine")
        assert alice.sync().pulled == 0 and bob.repository(Note).count() == 1
