"""Record hooks on the sync server: before/after a pushed record write, in its transaction."""

from __future__ import annotations

import datetime as dt
import threading
import uuid
from collections.abc import Iterator
from typing import Any

import pytest

import syncline
from syncline.core.model.query import F
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.spi.transport import Mutation
from syncline.examples.social.models import ENTITIES, Post, User
from syncline.examples.social.server import PostsCount
from syncline.plugins.mock import MockServer
from syncline.server.tables import ChangeEntry

NOW = dt.datetime(2026, 1, 1, tzinfo=dt.UTC)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[MockServer]:
    kind = request.param
    url = {"memory": "memory://", "sqlite": f"sqlite:///{tmp_path}/server.db"}.get(kind)
    if url is None:
        url = f"{request.getfixturevalue('postgres_url')}?schema=h{uuid.uuid4().hex[:12]}"
    name = f"hooks-{uuid.uuid4().hex[:8]}"
    yield MockServer(name, entities=ENTITIES, store_url=url)


@pytest.fixture(autouse=True)
def posts_count() -> Iterator[None]:
    register_plugin(PostsCount(), "test-posts-count")
    yield
    unregister_plugin("test-posts-count")


def device(server: MockServer, principal: str) -> syncline.Store:
    return syncline.open("memory://", entities=ENTITIES, transport=f"mock://{server.name}",
                         transport_options={"principal": principal})


def post(user: str, text: str = "hi") -> Post:
    return Post(syncline.new_id(), user, text, NOW, NOW)


def count(server: MockServer, user: str) -> int | None:
    row = server.store.repository(User).get(user)
    return None if row is None else row.posts_count


def test_posts_count_follows_creates_and_deletes_from_two_clients(server: MockServer) -> None:
    phone, laptop, bob = (device(server, p) for p in ("alice", "alice", "bob"))
    mine = [post("alice") for _ in range(3)]
    theirs = [post("alice") for _ in range(2)]
    for p in mine:
        phone.repository(Post).upsert(p)
    for p in theirs:
        laptop.repository(Post).upsert(p)
    bob.repository(Post).upsert(post("bob"))
    # The two devices push at once: the counter's lock keeps both increments.
    reports: list[Any] = []
    threads = [threading.Thread(target=lambda s=s: reports.append(s.sync()))
               for s in (phone, laptop, bob)]
    for t in threads:
        t.start()
    for t in threads:
        t.join(120)
    assert len(reports) == 3 and all(r.ok for r in reports), reports
    assert (count(server, "alice"), count(server, "bob")) == (5, 1)

    phone.sync()  # the laptop's posts arrive
    phone.repository(Post).delete(theirs[0].id)
    laptop.repository(Post).delete(theirs[1].id)
    laptop.repository(Post).upsert(post("alice"))
    assert phone.sync().ok and laptop.sync().ok
    assert count(server, "alice") == 4
    # An update moves no counter; a replayed create is a duplicate and counts nothing.
    edited = mine[0]
    edited.content = "edited"
    phone.repository(Post).upsert(edited)
    assert phone.sync().ok
    extra = post("alice")
    replay = Mutation("again", "posts", "create", extra.id, server.store.wire.unstructure(extra))
    assert server.server.push([replay], "alice").results[0].status == "applied"
    assert server.server.push([replay], "alice").results[0].status == "duplicate"
    assert count(server, "alice") == 5
    for s in (phone, laptop, bob):
        s.close()


def test_a_refusing_hook_stores_nothing_of_the_mutation(server: MockServer) -> None:
    wire = server.store.wire
    good = post("alice")
    forged = post("bob")  # alice writing a post as bob
    batch = [Mutation("m1", "posts", "create", good.id, wire.unstructure(good)),
             Mutation("m2", "posts", "create", forged.id, wire.unstructure(forged))]
    results = server.server.push(batch, "alice").results
    assert [r.status for r in results] == ["applied", "rejected"]
    assert "a post is written by its author ('alice')" in (results[1].reason or "")
    assert server.store.repository(Post).get(forged.id) is None
    assert server.store.repository(ChangeEntry).find(F.record_id == forged.id) == []
    assert (count(server, "alice"), count(server, "bob")) == (1, None)
    # The replay answers the same refusal, and still stores nothing.
    replay = server.server.push(batch, "alice").results
    assert [r.status for r in replay] == ["duplicate", "rejected"]
    assert replay[1].reason == results[1].reason
    assert server.store.repository(Post).get(forged.id) is None
    assert count(server, "alice") == 1

    # A client sees it rejected, dead-letters it, and keeps syncing the rest.
    phone = device(server, "alice")
    phone.repository(Post).upsert(post("bob"))
    phone.repository(Post).upsert(post("alice"))
    report = phone.sync()
    assert len(report.rejected) == 1 and "written by its author" in report.rejected[0]
    assert count(server, "alice") == 2
    phone.close()


class ServerOwnsLikes:
    """A before-hook that sets a field (the server owns ``likes_count``) and an after-hook
    that refuses once written (its effect must vanish too)."""

    @syncline.hookimpl
    def syncline_before_record_write(self, entity: str, action: str,
                                     after: dict[str, Any] | None) -> dict[str, Any] | None:
        if entity == "posts" and action == "create":
            return {"likes_count": 0}
        return None

    @syncline.hookimpl
    def syncline_after_record_write(self, entity: str, after: dict[str, Any] | None,
                                    principal: str) -> None:
        if entity == "posts" and after is not None and after["content"] == "boom":
            raise ValueError("no booms")


def test_hooks_set_fields_the_client_keeps_and_an_after_hook_can_refuse(
        server: MockServer) -> None:
    register_plugin(ServerOwnsLikes(), "test-owns-likes")
    try:
        phone = device(server, "alice")
        liked = post("alice")
        liked.likes_count = 99
        boom = post("alice", "boom")
        phone.repository(Post).upsert(liked)
        phone.repository(Post).upsert(boom)
        report = phone.sync()
        assert report.rejected and "no booms" in report.rejected[0]
        stored, kept = server.store.repository(Post).get(liked.id), phone.repository(Post).get(
            liked.id)
        assert stored is not None and kept is not None
        assert (stored.likes_count, kept.likes_count) == (0, 0)
        state = phone.repository(Post).sync_state(liked.id)
        assert state is not None and state.status.value == "synced"
        assert phone.sync().pulled == 0  # its version is the one it holds
        # The refused post left nothing: no row, no log entry, no count.
        assert server.store.repository(Post).get(boom.id) is None
        assert server.store.repository(ChangeEntry).find(F.record_id == boom.id) == []
        assert count(server, "alice") == 1
        phone.close()
    finally:
        unregister_plugin("test-owns-likes")
