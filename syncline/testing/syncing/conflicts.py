"""Conflicts: every strategy, manual resolution, resolver plugins."""

from __future__ import annotations

from typing import Any

import attrs
import pytest

import syncline
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.store import Store
from syncline.core.sync.engine import Resolution, Strategy
from syncline.core.sync.outbox import SyncStatus
from syncline.plugins.mock import MockServer
from syncline.testing.syncing.base import ClientFactory, NoteSuite
from syncline.testing.syncing.entities import Note


class ConflictSuite(NoteSuite):
    """Client and server changed the same record: each strategy decides."""

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

    @pytest.mark.parametrize("strategy", ["server_wins", "client_wins", "manual"])
    def test_deleting_what_the_server_does_not_have_is_no_conflict(
            self, client_factory: Any, server: MockServer, strategy: str) -> None:
        """The server answers a delete of a record it does not have with a conflict carrying
        no record; both sides agree the record is gone, so there is nothing to decide."""
        client = client_factory(strategy=strategy)
        notes = client.repository(Note)
        notes.upsert_from_server([Note("g", "me", "never pushed")])
        notes.delete("g")
        report = client.sync()
        assert report.ok and report.conflicts == [], report
        assert notes.get("g") is None and client.outbox.next_batch() == []
        assert notes.sync_state("g").status is SyncStatus.SYNCED
        assert server.server.store.repository(Note).get("g") is None

    def test_a_failing_before_push_changes_nothing(self, client: Store,
                                                   server: MockServer) -> None:
        notes = client.repository(Note)
        notes.insert(Note("v", "me", "vetoed"))
        [before] = client.outbox.next_batch()
        seen: list[Any] = []

        class Veto:
            @syncline.hookimpl
            def syncline_before_push(self, store: Store, mutations: list[Any]) -> None:
                seen.append(notes.sync_state("v").status)  # type: ignore[union-attr]
                raise RuntimeError("not now")

        register_plugin(Veto(), "suite-veto")
        try:
            with pytest.raises(RuntimeError, match="not now"):
                client.sync()
        finally:
            unregister_plugin("suite-veto")
        assert seen == [SyncStatus.PENDING]  # fired before the batch was marked
        assert client.outbox.next_batch() == [before]  # no group, no attempt recorded
        assert notes.sync_state("v").status is SyncStatus.PENDING  # type: ignore[union-attr]
        assert server.server.store.repository(Note).get("v") is None
        client.sync()
        assert notes.sync_state("v").status is SyncStatus.SYNCED  # type: ignore[union-attr]
        assert server.server.store.repository(Note).get("v") == Note("v", "me", "vetoed")
