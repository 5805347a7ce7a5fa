"""Issue 13, findings 1 and 2: a record's changes and commands in commit order."""

from __future__ import annotations

from collections.abc import Callable

import pytest

import syncline
from syncline.core.store import Store
from syncline.core.sync.outbox import SyncStatus
from syncline.plugins.mock import MockServer
from syncline.testing.syncing.base import TrustFixtures
from syncline.testing.syncing.entities import Comment, Likes, Post


class OrderSuite(TrustFixtures):
    """Nothing overtakes what it depends on, whatever fails on the way."""

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
