"""The sync conformance suite: the queue, the engine and conflicts, on any client backend.

Like :mod:`syncline.testing.backend_suite`, subclass it and provide a ``store_url`` fixture
(a fresh, empty store each time). The server is a :class:`MockServer` on ``memory://``.
"""

from __future__ import annotations

import datetime as dt
import itertools
import threading
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.store import Store
from syncline.core.sync.engine import Backoff, Resolution, Strategy
from syncline.core.sync.outbox import EntryState, SyncStatus, new_id
from syncline.plugins.mock import MockServer
from syncline.server.tables import ChangeEntry

registry = syncline.EntityRegistry()
_names = itertools.count()


@registry.entity("sync_notes", syncs=True, indexes=["owner"])
@attrs.define
class Note:
    id: str
    owner: str
    text: str
    likes: int = 0
    tags: list[str] | None = None


ENTITIES = [Note]
ClientFactory = Callable[..., Store]


def clients(store_url: str, server: MockServer, clock: FakeClock,
            entities: Sequence[type]) -> Iterator[ClientFactory]:
    """A factory of client stores syncing with ``server`` (``factory(url=None,
    **sync_options)``), all closed after the test: the suites' ``client_factory``."""
    opened: list[Store] = []

    def factory(url: str | None = None, **sync_options: Any) -> Store:
        sync_options.setdefault("backoff", Backoff(base=1.0, cap=60.0))
        store = syncline.open(url or store_url, entities=list(entities),
                              transport=f"mock://{server.name}", clock=clock,
                              sync_options=sync_options)
        opened.append(store)
        return store

    yield factory
    for store in opened:
        store.close()


class SyncSuite:
    """Subclass and provide a ``store_url`` fixture to run the sync suite on a backend."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return FakeClock(dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))

    @pytest.fixture
    def server(self, clock: FakeClock) -> Iterator[MockServer]:
        with MockServer(f"suite-{next(_names)}", entities=ENTITIES, clock=clock) as server:
            yield server

    @pytest.fixture
    def client_factory(self, store_url: str, server: MockServer, clock: FakeClock,
                       tmp_path: Any) -> Iterator[ClientFactory]:
        yield from clients(store_url, server, clock, ENTITIES)

    @pytest.fixture
    def client(self, client_factory: ClientFactory) -> Store:
        return client_factory()

    @pytest.fixture
    def other(self, client_factory: ClientFactory) -> Store:
        """A second client, always on a private in-memory SQLite store."""
        return client_factory("sqlite://")

    @staticmethod
    def server_changes(server: MockServer, record_id: str) -> list[ChangeEntry]:
        return server.server.changes.find({"record_id": record_id}, order_by="seq")

    @staticmethod
    def applied_count(server: MockServer, record_id: str) -> int:
        """How many mutations the server applied to the record (its results say)."""
        return sum(1 for a in server.server.applied.all()
                   if a.result.get("status") == "applied"
                   and a.result.get("server_id") == record_id)

    # -- the queue ---------------------------------------------------------------------------

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

    # -- pushing and pulling -----------------------------------------------------------------

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

    def test_failed_push_is_retried_without_a_new_write(self, client: Store,
                                                        server: MockServer) -> None:
        client.repository(Note).insert(Note("r", "me", "x"))
        server.offline = True
        report = client.sync()
        assert report.failures and client.outbox.pending_count() == 1
        [entry] = client.outbox.next_batch(due_only=False)
        assert entry.retry_count == 0  # a network failure is nobody's fault: not counted
        engine = client.sync_engine
        assert engine.not_before is not None and engine.not_before > client.clock.now()
        server.offline = False
        assert client.sync().pushed == 0  # backing off: one backoff for the whole store
        client.clock.sleep(61)
        assert client.sync().pushed == 1
        assert client.outbox.pending_count() == 0
        assert engine.failures == 0 and engine.not_before is None

    def test_network_available_ends_the_backoff(self, client: Store,
                                                server: MockServer) -> None:
        client.repository(Note).insert(Note("n", "me", "x"))
        server.offline = True
        client.sync()
        server.offline = False
        assert client.sync().pushed == 0
        client.network_available()
        assert client.sync().pushed == 1

    def test_retry_after_is_honoured(self, client: Store, server: MockServer) -> None:
        client.repository(Note).insert(Note("w", "me", "x"))
        server.retry_after_next(1, seconds=600)
        client.sync()
        engine = client.sync_engine
        assert engine.not_before is not None
        assert engine.not_before >= client.clock.now() + dt.timedelta(seconds=600)
        client.clock.sleep(300)
        assert client.sync().pushed == 0
        client.clock.sleep(301)
        assert client.sync().pushed == 1

    def test_rejection_is_dead_lettered_not_retried_forever(self, client: Store,
                                                            server: MockServer) -> None:
        mutation_id = client.enqueue_command("no_such_command", {"x": 1})
        report = client.sync()
        assert report.rejected and "unknown command" in report.rejected[0]
        [dead] = client.outbox.dead_letters()
        assert dead.id == mutation_id and dead.state is EntryState.DEAD and dead.error
        calls = server.calls
        client.clock.sleep(10_000)
        client.sync()
        assert server.calls == calls + 1  # only the pull: the rejection is never re-sent
        assert client.outbox.requeue([mutation_id]) == 1
        assert client.outbox.pending_count() == 1
        client.sync()
        assert client.outbox.purge_dead() == 1 and client.outbox.dead_letters() == []

    def test_offline_writes_are_never_dead_lettered(self, client_factory: ClientFactory,
                                                    server: MockServer) -> None:
        """Issue 13, finding 3: being offline is the normal state, never a reason to give up."""
        client = client_factory(max_retries=2)
        notes = client.repository(Note)
        notes.insert(Note("x", "me", "x"))
        server.offline = True
        for i in range(200):  # two days offline, a sync every 15 minutes
            notes.upsert(Note("x", "me", f"v{i}"))
            client.sync()
            client.clock.sleep(900)
        assert client.outbox.dead_letters() == []
        assert notes.failed() == []
        state = notes.sync_state("x")
        assert state is not None and state.status is SyncStatus.PENDING
        server.offline = False
        client.network_available()
        assert client.sync().ok
        assert server.server.store.repository(Note).get("x") == Note("x", "me", "v199")
        state = notes.sync_state("x")
        assert state is not None and state.status is SyncStatus.SYNCED

    def test_no_retry_storm_while_offline(self, client: Store, server: MockServer) -> None:
        """Issue 13, finding 4: 50 queued records offline for a minute, a sync every 100 ms,
        are a handful of requests (one backoff per store), not hundreds."""
        notes = client.repository(Note)
        for i in range(50):
            notes.insert(Note(f"s{i}", "me", "x"))
        server.offline = True
        calls = server.calls
        for _ in range(600):
            client.sync()
            client.clock.sleep(0.1)
        assert server.calls - calls <= 20, server.calls - calls
        server.offline = False
        client.network_available()
        assert client.sync().pushed == 50

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

        monkeypatch.setattr(engine, "_entity", failing)
        with pytest.raises(RuntimeError):
            client.sync()
        assert client.outbox.get_meta("cursor") is None
        assert client.repository(Note).count() == 0
        monkeypatch.setattr(engine, "_entity", original)
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

    def test_retry_answers_never_dead_letter(self, client_factory: ClientFactory,
                                             server: MockServer) -> None:
        client = client_factory(max_retries=1)
        notes = client.repository(Note)
        notes.insert(Note("busy", "me", "x"))
        for _ in range(5):
            server.retry_after_next(1, seconds=1)
            report = client.sync()
            assert report.failures and not report.rejected
            client.clock.sleep(100)
        assert client.outbox.dead_letters() == [] and notes.failed() == []
        assert client.sync().pushed == 1

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

    # -- commands ----------------------------------------------------------------------------

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

    # -- conflicts ---------------------------------------------------------------------------

    def _conflict(self, client: Store, server: MockServer) -> None:
        """Client and server both change record "c" from the same version."""
        notes = client.repository(Note)
        notes.insert(Note("c", "me", "base"))
        client.sync()
        client.clock.sleep(5)
        server.server.write(Note("c", "me", "server"))
        client.clock.sleep(5)
        notes.update("c", text="client")

    def test_server_wins(self, client: Store, server: MockServer) -> None:
        self._conflict(client, server)
        report = client.sync()
        assert len(report.conflicts) == 1 and report.conflicts[0].origin == "push"
        assert client.repository(Note).get("c") == Note("c", "me", "server")
        assert client.outbox.pending_count() == 0

    def test_client_wins(self, client_factory: ClientFactory, server: MockServer) -> None:
        client = client_factory(strategy=Strategy.CLIENT_WINS)
        self._conflict(client, server)
        client.sync()
        client.sync()
        assert server.server.store.repository(Note).get("c") == Note("c", "me", "client")
        assert client.repository(Note).get("c") == Note("c", "me", "client")

    def test_last_write_wins_by_server_order(self, client_factory: ClientFactory,
                                             server: MockServer) -> None:
        client = client_factory(strategy="last_write_wins")
        self._conflict(client, server)  # the local write came after the server's
        client.sync()
        client.sync()
        assert server.server.store.repository(Note).get("c") == Note("c", "me", "client")
        notes = client.repository(Note)
        notes.update("c", text="older local")
        client.clock.sleep(5)
        server.server.write(Note("c", "me", "newer server"))
        client.sync()
        assert notes.get("c") == Note("c", "me", "newer server")

    def test_manual_conflicts_keep_both_versions(self, client_factory: ClientFactory,
                                                 server: MockServer) -> None:
        client = client_factory(strategy="manual")
        notes = client.repository(Note)
        self._conflict(client, server)
        client.sync()
        state = notes.sync_state("c")
        assert state is not None and state.status is SyncStatus.CONFLICT
        assert state.conflict_record is not None and state.conflict_record["text"] == "server"
        assert notes.get("c") == Note("c", "me", "client")
        assert notes.conflicts() == [Note("c", "me", "client")]
        client.sync()  # held: nothing is pushed while in conflict
        assert server.server.store.repository(Note).get("c") == Note("c", "me", "server")
        assert len(client.sync_engine.push().conflicts) == 0  # reported once, not again
        client.sync_engine.resolve_conflict(Note, "c", Note("c", "me", "merged"))
        client.sync()
        assert server.server.store.repository(Note).get("c") == Note("c", "me", "merged")
        assert notes.conflicts() == []

    def test_pulled_change_to_a_pending_record_is_a_conflict(self, client: Store,
                                                             other: Store) -> None:
        client.repository(Note).insert(Note("p", "me", "base"))
        client.sync()
        other.sync()
        other.repository(Note).update("p", text="theirs")
        other.sync()
        client.repository(Note).update("p", text="mine")
        engine = client.sync_engine
        report = engine.pull()
        assert [c.origin for c in report.conflicts] == ["pull"]
        assert client.repository(Note).get("p") == Note("p", "me", "theirs")

    def test_conflict_resolver_plugin_and_events_are_not_skipped(self, client: Store,
                                                                 server: MockServer) -> None:
        asked: list[Any] = []
        events: list[Any] = []

        class Merge:
            @syncline.hookimpl
            def syncline_resolve_conflict(self, store: Store, conflict: Any) -> Any:
                asked.append(conflict)
                return Resolution.merge(attrs.evolve(conflict.local, text="merged",
                                                     likes=conflict.server.likes + 1))

        register_plugin(Merge(), "suite-merge")
        try:
            client.sync_engine.on_conflict(events.append)
            self._conflict(client, server)
            client.sync()
            client.sync()
        finally:
            unregister_plugin("suite-merge")
        assert len(asked) == 1 and events == asked
        assert server.server.store.repository(Note).get("c") == Note("c", "me", "merged", 1)

    # -- ids ---------------------------------------------------------------------------------

    def test_server_assigned_ids_are_remapped_everywhere(self, client_factory: ClientFactory,
                                                         clock: FakeClock) -> None:
        with MockServer(f"ids-{next(_names)}", entities=ENTITIES, assign_ids=True,
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

    # -- the worker --------------------------------------------------------------------------

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
