"""Retries, backoff and dead letters: offline is normal, a rejection is final."""

from __future__ import annotations

import datetime as dt

from syncline.core.store import Store
from syncline.core.sync.outbox import EntryState, SyncStatus
from syncline.plugins.mock import MockServer
from syncline.testing.syncing.base import ClientFactory, NoteSuite
from syncline.testing.syncing.entities import Note


class RetrySuite(NoteSuite):
    """Failed pushes are retried under one backoff, rejections dead-lettered."""

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
