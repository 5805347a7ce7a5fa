"""Sync you can trust: order, retries, poison, quarantine and cursors, on any client backend.

Each test is a named regression of a finding of issue 13 (a write committed on a device
reaches the server exactly once, in order, whatever the network does, and never costs another
write its way). Subclass :class:`TrustSuite` and provide a ``store_url`` fixture, as for
:mod:`syncline.testing.sync_suite`.
"""

from __future__ import annotations

import datetime as dt
import itertools
import logging
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.spi.transport import (
    Change,
    Mutation,
    PermanentTransportError,
    PullPage,
    PushLimits,
    PushResponse,
    RetryableTransportError,
    to_wire,
)
from syncline.core.store import Store
from syncline.core.sync.outbox import SyncStatus
from syncline.plugins.mock import MockServer
from syncline.server.cursor import encode_cursor
from syncline.server.tables import ChangeEntry
from syncline.testing.sync_suite import clients

registry = syncline.EntityRegistry()
_names = itertools.count()


@registry.entity("trust_posts", syncs=True)
@attrs.define
class Post:
    id: str
    text: str
    likes: int = 0


@registry.entity("trust_comments", syncs=True, foreign_keys={"post_id": "trust_posts.id"})
@attrs.define
class Comment:
    id: str
    post_id: str
    text: str


ENTITIES = [Post, Comment]


class TickingClock(FakeClock):
    """Advances 1 ms on every read: a retry falls due in the middle of planning a push."""

    def now(self) -> dt.datetime:
        self.advance(0.001)
        return super().now()


class Likes:
    """The server's ``like_post``: refused when the post does not exist (yet)."""

    def __init__(self) -> None:
        self.applied: list[str] = []

    @syncline.hookimpl
    def syncline_handle_command(self, server: Any, principal: str, name: str,
                                payload: Any) -> Any:
        if name != "like_post":
            return None
        post = server.store.repository(Post).get(payload["post"])
        if post is None:
            raise ValueError(f"no such post {payload['post']!r}")
        self.applied.append(payload["post"])
        return {}


class TrustSuite:
    """Subclass and provide a ``store_url`` fixture (a fresh, empty store each time)."""

    @pytest.fixture
    def clock(self) -> FakeClock:
        return TickingClock(dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))

    @pytest.fixture
    def server(self, clock: FakeClock) -> Iterator[MockServer]:
        with MockServer(f"trust-{next(_names)}", entities=ENTITIES, clock=clock) as server:
            yield server

    @pytest.fixture
    def likes(self) -> Iterator[Likes]:
        plugin = Likes()
        name = register_plugin(plugin, f"trust-likes-{next(_names)}")
        yield plugin
        unregister_plugin(name)

    @pytest.fixture
    def client_factory(self, store_url: str, server: MockServer,
                       clock: FakeClock) -> Iterator[Callable[..., Store]]:
        yield from clients(store_url, server, clock, ENTITIES)

    @pytest.fixture
    def client(self, client_factory: Callable[..., Store]) -> Store:
        return client_factory()

    @staticmethod
    def history(server: MockServer, record_id: str) -> list[str]:
        return [c.op for c in server.server.changes.find({"record_id": record_id},
                                                         order_by="seq")]

    @staticmethod
    def applied_count(server: MockServer, record_id: str) -> int:
        """How many mutations the server applied to the record (its results say)."""
        return sum(1 for a in server.server.applied.all()
                   if a.result.get("status") == "applied"
                   and a.result.get("server_id") == record_id)

    @staticmethod
    def drain(client: Store, rounds: int = 50) -> None:
        """Sync until the queue is empty (the fake clock skips every wait)."""
        for _ in range(rounds):
            client.network_available()
            client.sync()
            if client.outbox.pending_count() == 0:
                return
            client.clock.sleep(3600)
        raise AssertionError(f"still queued: {client.outbox.all_pending()}")

    # -- finding 1: a record's changes in commit order ---------------------------------------

    @pytest.mark.parametrize("later", ["update", "delete"])
    def test_finding_1_a_change_never_overtakes_its_create(
            self, client: Store, server: MockServer, later: str) -> None:
        posts = client.repository(Post)
        for lost in (False, True):
            pid = f"p-{later}-{lost}"
            posts.insert(Post(pid, "first"))
            if lost:
                server.lose_next_responses(1)  # applied, but the client does not know
            else:
                server.fail_next(1)
            assert not client.sync().ok
            if later == "update":
                posts.update(pid, text="second")
            else:
                posts.delete(pid)
            client.clock.sleep(0.5)  # a retry falls due in the middle of the next planning
            self.drain(client)
            on_server = server.server.store.repository(Post).get(pid)
            if later == "update":
                assert on_server == Post(pid, "second")
                assert self.history(server, pid) == ["upsert"]  # the latest change only
                assert self.applied_count(server, pid) == 2  # the create, then the update
                state = posts.sync_state(pid)
                assert state is not None and state.status is SyncStatus.SYNCED
            else:
                assert on_server is None
                assert self.history(server, pid) == ["delete"]
                assert self.applied_count(server, pid) == 2  # the create, then the delete
        assert client.outbox.dead_letters() == []

    # -- finding 2: commands after the writes they depend on ---------------------------------

    def test_finding_2_a_command_never_overtakes_its_record(
            self, client_factory: Callable[..., Store], server: MockServer,
            likes: Likes) -> None:
        client = client_factory(batch_size=1)
        posts = client.repository(Post)
        for i in range(20):
            with client.transaction():
                posts.insert(Post(f"l{i}", "x"))
                client.enqueue_command("like_post", {"post": f"l{i}"})
            if i % 3 == 0:
                server.fail_next(1 + i % 2)
            client.sync()
            client.clock.sleep(0.3)
        self.drain(client)
        assert client.outbox.dead_letters() == []
        assert sorted(likes.applied) == sorted(f"l{i}" for i in range(20))

    def test_a_command_with_after_waits_only_for_its_records(
            self, client: Store, server: MockServer, likes: Likes) -> None:
        posts = client.repository(Post)
        posts.insert(Post("held", "x"))
        client.sync()
        posts.update("held", text="mine")
        server.server.write(Post("held", "theirs"))  # a conflict, settled by hand
        client.sync_engine.strategy = syncline.Strategy.MANUAL
        client.sync()
        assert posts.sync_state("held").status is SyncStatus.CONFLICT  # type: ignore[union-attr]
        posts.update("held", text="mine again")  # held with its record
        posts.insert(Post("free", "x"))
        default = client.enqueue_command("like_post", {"post": "free"})
        narrow = client.enqueue_command("like_post", {"post": "free"}, after=[(Post, "free")])
        report = client.sync()
        assert report.command_results.keys() == {narrow}
        assert [e.id for e in client.outbox.all_pending() if e.action == "command"] == [default]
        client.sync_engine.resolve_conflict(Post, "held", "local")
        self.drain(client)
        assert likes.applied == ["free", "free"]

    def test_parents_go_before_children_when_the_parent_waits(
            self, client: Store, server: MockServer) -> None:
        posts, comments = client.repository(Post), client.repository(Comment)
        posts.insert(Post("parent", "x"))
        server.lose_next_responses(1)
        client.sync()
        comments.insert(Comment("child", "parent", "hi"))
        self.drain(client)
        assert server.server.store.repository(Comment).get("child") is not None
        assert client.outbox.dead_letters() == []

    # -- finding 5: one bad mutation never blocks the others ---------------------------------

    def test_finding_5_a_poison_mutation_is_isolated_and_the_rest_flow(
            self, client_factory: Callable[..., Store], server: MockServer,
            monkeypatch: pytest.MonkeyPatch) -> None:
        client = client_factory(max_retries=3)
        real_push = server.push

        def push(mutations: Sequence[Mutation], principal: str = "anonymous") -> PushResponse:
            if any(m.record_id == "poison" for m in mutations):
                raise RetryableTransportError("500 the server failed", status=500)
            return real_push(mutations, principal)

        monkeypatch.setattr(server, "push", push)
        posts = client.repository(Post)
        for i in range(10):
            posts.insert(Post(f"ok{i}", "x"))
            if i == 4:
                posts.insert(Post("poison", "x"))
        client.sync()
        on_server = server.server.store.repository(Post)
        assert on_server.count() == 10  # the first round already pushed every valid one
        for _ in range(10):
            client.clock.sleep(3600)
            client.sync()
        [dead] = client.outbox.dead_letters()
        assert dead.record_id == "poison" and "500 the server failed" in (dead.error or "")
        assert client.outbox.pending_count() == 0
        assert posts.failed() == [Post("poison", "x")]

    def test_a_server_outage_is_not_a_poison(self, client_factory: Callable[..., Store],
                                             server: MockServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
        client = client_factory(max_retries=1)

        def down(*args: Any, **kwargs: Any) -> Any:
            raise RetryableTransportError("500 the database is down", status=500)

        monkeypatch.setattr(server, "push", down)
        monkeypatch.setattr(server, "pull", down)
        client.repository(Post).insert(Post("a", "x"))
        for _ in range(20):
            client.sync()
            client.clock.sleep(3600)
        assert client.outbox.dead_letters() == []
        monkeypatch.undo()
        self.drain(client)
        assert server.server.store.repository(Post).get("a") == Post("a", "x")

    # -- finding 6: batches sized by bytes, split on 413 -------------------------------------

    @pytest.mark.parametrize("published", [True, False])
    def test_finding_6_batches_over_the_body_limit_are_split(
            self, client: Store, server: MockServer, monkeypatch: pytest.MonkeyPatch,
            published: bool) -> None:
        limit = 40_000
        real_push = server.push
        sizes: list[int] = []

        def push(mutations: Sequence[Mutation], principal: str = "anonymous") -> PushResponse:
            import json

            size = len(json.dumps({"mutations": [to_wire(m) for m in mutations]}))
            if size > limit:
                raise PermanentTransportError(f"413 the body exceeds {limit} bytes", status=413)
            sizes.append(size)
            return real_push(mutations, principal)

        monkeypatch.setattr(server, "push", push)
        if published:
            monkeypatch.setattr(server, "limits", PushLimits(max_bytes=limit), raising=False)
        posts = client.repository(Post)
        posts.insert_many([Post(f"big{i}", "x" * 5_000) for i in range(30)])
        posts.insert(Post("huge", "y" * (limit + 1)))
        report = client.sync()
        assert server.server.store.repository(Post).count() == 30
        assert all(s <= limit for s in sizes)
        [dead] = client.outbox.dead_letters()
        assert dead.record_id == "huge" and report.rejected

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


__all__ = ["ENTITIES", "Comment", "Likes", "Post", "TickingClock", "TrustSuite"]
