"""The sync queue: what a write queues, in which order, and commands."""

from __future__ import annotations

from collections.abc import Callable
from typing import Any

import pytest

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.store import Store
from syncline.core.sync.outbox import SyncStatus, new_id
from syncline.testing.syncing.base import ClientFactory, NoteSuite
from syncline.testing.syncing.entities import Note


class QueueSuite(NoteSuite):
    """Writes and their queue entries commit together; commands travel through it."""

    def test_write_and_queue_entry_commit_together(self, client: Store) -> None:
        notes = client.repository(Note)
        with pytest.raises(RuntimeError), client.transaction():
            notes.insert(Note(new_id(), "me", "rolled back"))
            raise RuntimeError
        assert client.outbox.pending_count() == 0 and notes.pending() == []
        note = Note(new_id(), "me", "kept")
        notes.insert(note)
        [entry] = client.outbox.next_batch()
        assert (entry.entity, entry.record_id, entry.action) == ("sync_notes", note.id, "create")
        assert entry.payload == {"id": note.id, "owner": "me", "text": "kept", "likes": 0,
                                 "tags": None}
        assert entry.retry_count == 0 and entry.error is None and entry.last_attempt is None
        assert entry.created_at == client.clock.now()
        state = notes.sync_state(note.id)
        assert state is not None and state.status is SyncStatus.PENDING
        assert state.local_id == note.id and state.local_modified_at == client.clock.now()
        assert notes.pending() == [note]

    @staticmethod
    def count_backend_calls(store: Store) -> tuple[dict[str, int], Callable[[], None]]:
        """Count the store's outermost calls of its backend's row methods (the statements it
        asks for, whatever each costs inside); returns the counts and an undo."""
        backend = store.backend
        counts: dict[str, int] = {}
        depth = [0]
        names = ["get", "get_many", "get_values", "get_many_values", "query", "query_values",
                 "count", "insert_many", "insert_values", "upsert_many",
                 "upsert_values", "update", "update_where", "update_values", "delete_many",
                 "delete_where"]

        def wrap(name: str) -> Callable[..., Any]:
            method = getattr(backend, name)

            def counted(*args: Any, **kwargs: Any) -> Any:
                if depth[0] == 0:
                    counts[name] = counts.get(name, 0) + 1
                depth[0] += 1
                try:
                    return method(*args, **kwargs)
                finally:
                    depth[0] -= 1

            return counted

        for name in names:
            setattr(backend, name, wrap(name))

        def undo() -> None:
            for name in names:
                delattr(backend, name)

        return counts, undo

    def test_a_pushed_batch_costs_the_same_backend_calls_whatever_its_size(
            self, client_factory: ClientFactory) -> None:
        """One mutation or a hundred in a batch: the same reads and writes of the queue and
        the record states (bulk, never one per mutation)."""
        calls = []
        for size in (1, 100):
            client = client_factory(batch_size=size)
            notes = client.repository(Note)
            notes.insert_many([Note(f"n{size}-{i}", "me", "x") for i in range(size)])
            counts, undo = self.count_backend_calls(client)
            try:
                report = client.sync_engine.push()
            finally:
                undo()
            assert report.ok and report.pushed == size
            assert client.outbox.pending_count() == 0
            assert all(notes.sync_state(f"n{size}-{i}").status is SyncStatus.SYNCED  # type: ignore[union-attr]
                       for i in range(size))
            calls.append(counts)
        assert calls[0] == calls[1]

    def test_next_batch_by_priority_then_age(self, client: Store, clock: FakeClock) -> None:
        notes = client.repository(Note)
        notes.insert(Note("a", "me", "first"))
        clock.advance(1)
        low = client.enqueue_command("ping", {"n": 1}, priority=0)
        clock.advance(1)
        high = client.enqueue_command("ping", {"n": 2}, priority=5)
        order = [e.id for e in client.outbox.next_batch()]
        assert order[0] == high and order[-1] == low
        assert client.outbox.has_pending("sync_notes", "a")
        assert client.outbox.pending_count() == 3
        assert client.outbox.clear_entity("sync_notes", "a") == 1
        assert not client.outbox.has_pending("sync_notes", "a")

    def test_every_write_kind_is_queued(self, client: Store) -> None:
        notes = client.repository(Note)
        notes.upsert_many([Note("a", "me", "x"), Note("b", "me", "y")])
        notes.upsert(Note("a", "me", "x2"))
        notes.update_where(syncline.F.id == "b", likes=3)
        notes.delete("a")
        notes.delete_where(syncline.F.id == "b")
        actions = [(e.record_id, e.action) for e in client.outbox.all_pending()]
        assert actions == [("a", "create"), ("b", "create"), ("a", "update"), ("b", "update"),
                           ("a", "delete"), ("b", "delete")]

    def test_commands_travel_through_the_queue(self, client: Store) -> None:
        handled: list[tuple[str, Any]] = []

        class Likes:
            @syncline.hookimpl
            def syncline_handle_command(self, server: Any, principal: str, name: str,
                                        payload: Any) -> Any:
                if name != "like_post":
                    return None
                handled.append((principal, payload))
                return {"likes": len(handled)}

        register_plugin(Likes(), "suite-likes")
        try:
            with client.transaction():
                client.repository(Note).insert(Note("post", "me", "x"))
                first = client.enqueue_command("like_post", {"post": "post"}, priority=3)
                second = client.enqueue_command("like_post", {"post": "post"}, priority=3)
            report = client.sync()
            assert report.ok and len(handled) == 2  # commands are not coalesced by default
            assert report.command_results[first] == {"likes": 1}
            assert report.command_results[second] == {"likes": 2}
            client.enqueue_command("like_post", {"post": "x"}, coalesce=True)
            client.enqueue_command("like_post", {"post": "x"}, coalesce=True)
            client.sync()
            assert len(handled) == 3
        finally:
            unregister_plugin("suite-likes")
        client.enqueue_command("like_post", {"post": "y"})
        assert client.sync().rejected  # no handler any more: dead-lettered
        register_plugin(Likes(), "suite-likes")
        try:
            assert client.outbox.requeue() == 1  # with a new mutation id
            assert client.sync().ok and len(handled) == 4
        finally:
            unregister_plugin("suite-likes")
