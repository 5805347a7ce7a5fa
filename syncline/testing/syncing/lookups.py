"""Server-assigned ids, the seed's look-ups, watchers and the sync worker."""

from __future__ import annotations

import threading

import attrs
import pytest

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.store import Store
from syncline.core.sync.outbox import SyncStatus, new_id
from syncline.plugins.mock import MockServer
from syncline.testing.syncing.base import ClientFactory, NoteSuite, names
from syncline.testing.syncing.entities import Note


class LookupSuite(NoteSuite):
    """Ids remapped, sync-state look-ups, pulled changes reaching watchers."""

    def test_server_assigned_ids_are_remapped_everywhere(self, client_factory: ClientFactory,
                                                         clock: FakeClock) -> None:
        with MockServer(f"ids-{next(names)}", entities=self.sync_entities, assign_ids=True,
                        clock=clock) as server:
            client = client_factory()
            client.transport_url = f"mock://{server.name}"
            notes = client.repository(Note)
            local = new_id()
            notes.insert(Note(local, "me", "x"))
            client.sync()
            [stored] = notes.all()
            assert stored.id.startswith("s-") and notes.get(local) is None
            assert notes.by_local_id(local) == stored
            state = notes.sync_state(stored.id)
            assert state is not None and state.local_id == local
            notes.update(stored.id, text="y")
            client.sync()
            assert server.server.store.repository(Note).get(stored.id) == attrs.evolve(
                stored, text="y")

    # -- the seed's look-ups -----------------------------------------------------------------

    def test_pulled_changes_reach_watchers(self, client: Store, other: Store) -> None:
        seen: list[list[Note]] = []
        done = threading.Event()

        def collect(notes: list[Note]) -> None:
            seen.append(notes)
            if notes:
                done.set()

        client.repository(Note).watch().subscribe(collect)
        other.repository(Note).insert(Note("w", "them", "hello"))
        other.sync()
        client.sync()
        assert done.wait(5) and seen[-1] == [Note("w", "them", "hello")]

    def test_seed_lookups(self, client: Store) -> None:
        notes = client.repository(Note)
        notes.insert(Note("a", "me", "x"))
        notes.update_sync_status("a", SyncStatus.FAILED, error="boom", retry_count=2)
        assert notes.failed(max_retries=3) == [Note("a", "me", "x")]
        assert notes.failed(max_retries=2) == []
        state = notes.sync_state("a")
        assert state is not None and state.error == "boom"
        notes.update_from_server("a", Note("a", "me", "from server", 10))
        assert notes.get("a") == Note("a", "me", "from server", 10)
        state = notes.sync_state("a")  # its create is still queued: not synced yet
        assert state is not None and state.status is SyncStatus.PENDING
        client.outbox.clear_entity("sync_notes", "a")
        notes.update_from_server("a", Note("a", "me", "from server", 11))
        state = notes.sync_state("a")
        assert state is not None and state.status is SyncStatus.SYNCED
        with pytest.raises(syncline.NotFoundError):
            notes.update_from_server("nope", Note("nope", "me", "x"))

    def test_clear_all_clears_queue_and_state(self, client: Store) -> None:
        client.repository(Note).insert(Note("a", "me", "x"))
        client.enqueue_command("ping")
        client.clear_all()
        assert client.outbox.pending_count() == 0
        assert client.repository(Note).sync_state("a") is None


class WorkerSuite(NoteSuite):
    """The background worker pushes soon after writes and stops cleanly."""

    def test_worker_pushes_soon_after_writes_and_stops_cleanly(self, client: Store,
                                                               server: MockServer) -> None:
        before = set(threading.enumerate())
        worker = client.start_sync_worker(interval=60, debounce=0.01)
        with pytest.raises(syncline.SynclineError, match="already"):
            from syncline.core.sync.worker import SyncWorker

            SyncWorker(client.sync_engine).start()
        note = Note(new_id(), "me", "background")
        client.repository(Note).insert(note)
        assert client.wait_synced(Note, note.id, timeout=60)  # returns once synced
        assert server.server.store.repository(Note).get(note.id) == note
        client.stop_sync_worker()
        assert not worker.running
        assert set(threading.enumerate()) <= before

    def test_wait_synced_times_out_while_offline(self, client: Store,
                                                 server: MockServer) -> None:
        server.offline = True
        client.repository(Note).insert(Note("o", "me", "x"))
        assert client.wait_synced(Note, "o", timeout=0.1) is False
