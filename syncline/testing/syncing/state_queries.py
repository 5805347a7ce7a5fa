"""Sync state in queries: ``find()`` filters and orders by ``F.sync.status``,
``F.sync.retry_count`` and ``F.sync.modified_at``, with the same answers on every backend."""

from __future__ import annotations

import pytest

from syncline import F
from syncline.core.model.clock import FakeClock
from syncline.core.model.errors import QueryError
from syncline.core.store import Store
from syncline.core.sync.outbox import SyncStatus
from syncline.testing.syncing.base import NoteSuite
from syncline.testing.syncing.entities import Note
from syncline.testing.watch_suite import Collector


class SyncStateQuerySuite(NoteSuite):
    """The seed's posts carry ``syncStatus``; here it is queryable."""

    @staticmethod
    def _notes(client: Store, clock: FakeClock) -> None:
        """n1, n2 synced; n3 failed (2 retries); n4 and n5 pending, written in that order."""
        notes = client.repository(Note)
        for i in (1, 2, 3):
            notes.insert(Note(f"n{i}", "me" if i % 2 else "you", f"note {i}"))
            clock.advance(1)
        assert client.sync().pushed == 3
        notes.update_sync_status("n3", SyncStatus.FAILED, error="refused", retry_count=2)
        for i in (5, 4):
            clock.advance(1)
            notes.insert(Note(f"n{i}", "me", f"note {i}"))

    def test_filter_by_status_retry_count_and_modification_time(
            self, client: Store, clock: FakeClock) -> None:
        self._notes(client, clock)
        notes = client.repository(Note)

        def ids(where: object, order_by: object = None) -> list[str]:
            return [n.id for n in notes.find(where, order_by=order_by)]  # type: ignore[arg-type]

        assert ids(F.sync.status == "failed") == ["n3"]
        assert ids(F.sync.status == SyncStatus.SYNCED) == ["n1", "n2"]
        assert ids(F.sync.status.in_(["pending", SyncStatus.FAILED])) == ["n3", "n4", "n5"]
        assert ids((F.sync.status != "synced") & (F.owner == "me")) == ["n3", "n4", "n5"]
        assert ids(F.sync.retry_count >= 1) == ["n3"]
        assert notes.count(F.sync.status == "pending") == 2
        assert notes.count((F.sync.status == "synced") | (F.sync.retry_count > 1)) == 3
        assert notes.exists(where=F.sync.status == "failed")
        last = notes.sync_state("n5")
        assert last is not None and last.local_modified_at is not None
        assert ids(F.sync.modified_at >= last.local_modified_at) == ["n4", "n5"]

    def test_order_by_modification_time_and_status(self, client: Store,
                                                   clock: FakeClock) -> None:
        self._notes(client, clock)
        notes = client.repository(Note)
        newest = notes.find(order_by=F.sync.modified_at.desc())
        assert [n.id for n in newest] == ["n4", "n5", "n3", "n2", "n1"]
        by_status = notes.find(order_by=[F.sync.status, F.sync.modified_at.desc()], limit=3)
        assert [n.id for n in by_status] == ["n3", "n4", "n5"]  # failed < pending < synced
        page = notes.find(F.owner == "me", order_by=F.sync.retry_count.desc(), limit=1,
                          offset=0)
        assert [n.id for n in page] == ["n3"]

    def test_a_watch_of_sync_state_sees_the_state_change(self, client: Store,
                                                         clock: FakeClock) -> None:
        self._notes(client, clock)
        notes = client.repository(Note)
        seen, counts = Collector(), Collector()
        with notes.watch(F.sync.status == "failed").subscribe(seen), \
                notes.watch_count(F.sync.status == "failed").subscribe(counts):
            notes.update_sync_status("n1", SyncStatus.FAILED, error="no")
            assert [n.id for n in seen.wait_for(2)[-1]] == ["n1", "n3"]
            assert counts.wait_for(2) == [1, 2]
        assert [n.id for n in seen.results[0]] == ["n3"]

    def test_bad_sync_state_queries_are_refused(self, client: Store, clock: FakeClock) -> None:
        self._notes(client, clock)
        notes = client.repository(Note)
        with pytest.raises(QueryError, match="'lost' is no sync status"):
            notes.find(F.sync.status == "lost")
        with pytest.raises(QueryError, match=r"F\.sync\.retry_count"):
            notes.find(F.sync.retry_count > "many")
        with pytest.raises(QueryError, match="reads only"):
            notes.update_where(F.sync.status == "failed", text="x")
        with pytest.raises(QueryError, match="reads only"):
            notes.delete_where(F.sync.status == "failed")
        assert notes.count() == 5
