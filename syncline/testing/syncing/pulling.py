"""Issue 13, findings 9 to 13: quarantine, foreign cursors, page order, logging."""

from __future__ import annotations

import logging
from collections.abc import Callable
from typing import Any

import attrs
import pytest

from syncline.core.spi.transport import (
    Change,
    PullPage,
)
from syncline.core.store import Store
from syncline.plugins.mock import MockServer
from syncline.server.cursor import encode_cursor
from syncline.server.tables import ChangeEntry
from syncline.testing.syncing.base import TrustFixtures
from syncline.testing.syncing.entities import Comment, Post


class PullSuite(TrustFixtures):
    """What the client pulls: set aside when unreadable, never skipped, logged."""

    # -- finding 9: quarantine ---------------------------------------------------------------

    def test_finding_9_a_pulled_record_the_store_cannot_hold_is_quarantined(
            self, client: Store, server: MockServer) -> None:
        server.server.write(Post("before", "x"))
        self._log_bad_change(server, "bad", {"id": "bad", "text": "x", "likes": "many"})
        server.server.write(Post("after", "x"))
        report = client.sync()
        assert not report.failures and not report.ok  # ok is False: something was set aside
        assert len(report.quarantined) == 1 and "likes" in report.quarantined[0]
        posts = client.repository(Post)
        assert posts.get("before") == Post("before", "x")
        assert posts.get("after") == Post("after", "x")
        assert posts.get("bad") is None
        [q] = client.quarantined()
        assert (q.entity, q.record_id) == ("trust_posts", "bad") and "likes" in q.error
        server.server.write(Post("later", "x"))
        assert client.sync().pulled == 1  # later changes still arrive
        server.server.write(Post("bad", "fixed"))
        client.sync()
        assert posts.get("bad") == Post("bad", "fixed") and client.quarantined() == []

    def test_a_change_whose_payload_no_store_can_hold_is_quarantined_without_it(
            self, client: Store, server: MockServer, monkeypatch: pytest.MonkeyPatch) -> None:
        # Another server implementation sends what syncline's own never stores.
        bad = Change("trust_posts", "nul", "upsert", 1,
                     {"id": "nul", "text": "a\x00b\ud800", "likes": float("nan")})
        real_pull = server.pull

        def pull(*args: Any, **kwargs: Any) -> PullPage:
            page = real_pull(*args, **kwargs)
            return attrs.evolve(page, changes=[bad, *page.changes])

        monkeypatch.setattr(server, "pull", pull)
        server.server.write(Post("after", "x"))
        report = client.sync()
        assert not report.failures and len(report.quarantined) == 1
        [q] = client.quarantined()
        assert q.record_id == "nul" and (q.payload is None or q.payload["id"] == "nul")
        assert client.repository(Post).get("after") == Post("after", "x")

    @staticmethod
    def _log_bad_change(server: MockServer, record_id: str, payload: dict[str, Any]) -> None:
        """A change the server logged that this client's schema cannot read."""
        sync = server.server

        def work() -> None:
            seq = sync._next_seq()
            sync.changes.insert(ChangeEntry(seq, "anonymous", "trust_posts", record_id,
                                            "upsert", sync.now(), payload))

        server.store.run_transaction(work)

    # -- finding 10: a cursor the server did not issue ---------------------------------------

    def test_finding_10_a_cursor_from_the_future_makes_the_client_pull_from_the_start(
            self, client: Store, server: MockServer) -> None:
        server.server.write(Post("s1", "x"))
        client.repository(Post).insert(Post("mine", "queued"))
        client.outbox.set_meta("cursor", encode_cursor(server.server.epoch, 10**9,
                                                       "anonymous"))
        client.sync()
        client.network_available()
        report = client.sync()
        assert report.ok, report
        assert client.repository(Post).get("s1") == Post("s1", "x")
        assert server.server.store.repository(Post).get("mine") == Post("mine", "queued")
        server.server.write(Post("s2", "x"))
        assert client.sync().pulled == 1

    def test_a_resync_drops_what_the_server_deleted_meanwhile(
            self, client_factory: Callable[..., Store], server: MockServer) -> None:
        """A pull from the start returns the server's current records, not its history: a
        synced record deleted on the server while the client was away must go here too."""
        client = client_factory(page_size=2)
        posts, comments = client.repository(Post), client.repository(Comment)
        for i in range(5):
            posts.insert(Post(f"keep{i}", "x"))
        posts.insert(Post("gone", "x"))
        comments.insert(Comment("gone-child", "gone", "x"))
        assert client.sync().ok
        server.server.delete(Comment, "gone-child")
        server.server.delete(Post, "gone")
        posts.insert(Post("queued", "not pushed yet"))  # and a write waiting to be pushed
        client.outbox.set_meta("cursor", encode_cursor(server.server.epoch, 10**9,
                                                       "anonymous"))
        server.fail_next(1)  # pushed, then the first pull page fails: the pass resumes later
        client.sync()
        client.network_available()
        client.sync()
        assert posts.get("gone") is None and comments.get("gone-child") is None
        assert sorted(p.id for p in posts.all()) == [*(f"keep{i}" for i in range(5)), "queued"]
        assert server.server.store.repository(Post).get("queued") is not None

    # -- finding 12: parents before children in a pulled page --------------------------------

    def test_finding_12_a_page_with_children_first_applies_whole(
            self, client: Store, server: MockServer) -> None:
        server.server.write(Comment("c1", "p1", "first!"))  # logged before its parent
        server.server.write(Post("p1", "x"))
        report = client.sync()
        assert report.ok and client.quarantined() == []
        assert client.repository(Comment).get("c1") == Comment("c1", "p1", "first!")
        server.server.delete(Post, "p1")  # and a delete of the parent before the child's
        server.server.delete(Comment, "c1")
        assert client.sync().ok
        assert client.repository(Post).count() == 0 == client.repository(Comment).count()

    def test_a_child_pulled_pages_before_its_parent_applies_when_the_parent_arrives(
            self, client_factory: Callable[..., Store], server: MockServer) -> None:
        """The compacted log keeps one entry per record at its latest change: a parent updated
        after its child was written comes later in the log, pages after the child. The child
        is set aside when its page applies and must apply as soon as the parent is here."""
        client = client_factory(page_size=1)
        server.server.write(Post("p1", "v1"))
        server.server.write(Comment("c1", "p1", "first!"))
        server.server.write(Post("p1", "v2"))  # the parent's entry now follows the child's
        report = client.sync()
        assert report.ok, report
        assert client.quarantined() == []
        assert client.repository(Comment).get("c1") == Comment("c1", "p1", "first!")
        assert client.repository(Post).get("p1") == Post("p1", "v2")
        # and across syncs: the parent arrives in a later pull than its child
        server.server.write(Post("p2", "v1"))
        server.server.write(Comment("c2", "p2", "x"))
        server.server.write(Post("p2", "v2"))
        real_pull = server.pull
        calls = 0

        def pull_one_page_per_sync(*args: Any, **kwargs: Any) -> PullPage:
            nonlocal calls
            calls += 1
            page = real_pull(*args, **kwargs)
            return attrs.evolve(page, more=False)  # the client stops after each page

        server.pull = pull_one_page_per_sync  # type: ignore[method-assign]
        client.sync()  # the child's page: set aside where foreign keys are enforced
        second = client.sync()  # the parent's page
        assert calls == 2
        assert second.ok, second
        assert client.repository(Comment).get("c2") == Comment("c2", "p2", "x")
        assert client.quarantined() == []

    # -- finding 13: logging -----------------------------------------------------------------

    def test_finding_13_sync_logs_what_it_does(self, client: Store, server: MockServer,
                                               caplog: pytest.LogCaptureFixture) -> None:
        caplog.set_level(logging.INFO, logger="syncline.sync")
        client.repository(Post).insert(Post("a", "x"))
        server.lose_next_responses(1)
        client.sync()
        client.network_available()
        client.sync()
        client.enqueue_command("no_such_command")
        client.sync()
        self._log_bad_change(server, "bad", {"id": "bad", "text": 5})
        client.sync()
        text = "\n".join(r.getMessage() for r in caplog.records if r.name == "syncline.sync")
        for expected in ("failed", "next attempt", "pushed", "pulled", "dead letter",
                         "quarantined"):
            assert expected in text, (expected, text)
