"""The seed's social app, every DAO method, on every bundled backend."""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Iterator
from typing import Any

import pytest

import syncline
from syncline import SyncStatus, new_id
from syncline.core.store import Store
from syncline.examples.social import (
    ENTITIES,
    Message,
    MessagesDao,
    Post,
    PostsDao,
    SyncQueueDao,
    User,
    UsersDao,
)

T0 = dt.datetime(2025, 3, 1, 9, 0, tzinfo=dt.UTC)


@pytest.fixture
def store(store_url: str) -> Iterator[Store]:
    with syncline.open(store_url, entities=ENTITIES) as s:
        yield s


def post(i: int, user: str = "u1") -> Post:
    when = T0 + dt.timedelta(minutes=i)
    return Post(f"p{i}", user, f"post {i}", when, when, image_urls=["https://img/1"])


def latest(watch: Any) -> Any:
    box: list[Any] = []
    got = threading.Event()
    sub = watch.subscribe(lambda r: (box.append(r), got.set()))
    sub.unsubscribe()
    return box[-1]


def test_posts_dao(store: Store) -> None:
    dao = PostsDao(store)
    dao.upsert_posts([post(1), post(2, "u2"), post(3)])
    dao.upsert_post(post(4))
    assert [p.id for p in latest(dao.watch_all_posts())] == ["p4", "p3", "p2", "p1"]
    assert [p.id for p in latest(dao.watch_user_posts("u1"))] == ["p4", "p3", "p1"]
    assert dao.get_post("p2") == post(2, "u2")
    assert [p.id for p in dao.get_pending_posts()] == ["p1", "p2", "p3", "p4"]
    dao.update_sync_status("p1", SyncStatus.FAILED, error_message="boom", retry_count=1)
    dao.update_sync_status("p2", SyncStatus.FAILED, retry_count=5)
    assert [p.id for p in dao.get_failed_posts()] == ["p1"]
    server_copy = Post("p3", "u1", "from server", T0, T0, likes_count=7)
    dao.update_from_server("p3", server_copy)
    assert dao.get_post("p3") == server_copy
    dao.delete_post("p4")
    assert dao.get_post("p4") is None


def test_messages_dao(store: Store) -> None:
    dao = MessagesDao(store)
    msgs = [Message(f"m{i}", "c1", "u1", "u2", f"hi {i}", T0 + dt.timedelta(seconds=i))
            for i in range(3)]
    dao.upsert_messages(msgs)
    dao.upsert_message(Message("m9", "c2", "u2", "u1", "other", T0))
    assert [m.id for m in latest(dao.watch_conversation("c1"))] == ["m0", "m1", "m2"]
    assert latest(dao.watch_unread_count("u2")) == 3
    assert dao.mark_read("c1", "u2") == 3
    assert latest(dao.watch_unread_count("u2")) == 0
    assert dao.get_message("m1") is not None and dao.get_message("m1").is_read  # type: ignore[union-attr]
    assert len(dao.get_pending_messages()) == 4
    dao.update_sync_status("m0", SyncStatus.FAILED, error_message="offline")
    assert [m.id for m in dao.get_failed_messages()] == ["m0"]
    dao.update_from_server("m9", Message("m9", "c2", "u2", "u1", "edited", T0))
    assert dao.get_message("m9").content == "edited"  # type: ignore[union-attr]
    dao.delete_message("m2")
    assert dao.get_message("m2") is None


def test_users_dao(store: Store) -> None:
    dao = UsersDao(store)
    dao.upsert_users([User("u1", "ann", "Ann", T0),
                      User("u2", "bo", "Bo", T0 + dt.timedelta(days=2))])
    dao.upsert_user(User("u3", "cy", "Cy", T0 + dt.timedelta(days=3)))
    assert dao.get_user("u1") == User("u1", "ann", "Ann", T0)
    now = T0 + dt.timedelta(days=3)
    assert [u.id for u in dao.stale_users(dt.timedelta(hours=12), now)] == ["u1", "u2"]
    assert [u.id for u in dao.stale_users(dt.timedelta(days=1), now)] == ["u1"]
    assert dao.set_following("u2", True).is_following
    assert latest(dao.watch_user("u2")).is_following


def test_sync_queue_dao(store: Store) -> None:
    dao = SyncQueueDao(store)
    PostsDao(store).upsert_post(post(1))
    assert latest(dao.watch_pending_count()) == 1
    like = dao.enqueue("like_post", {"post_id": "p1"}, priority=5)
    assert dao.get_next_batch()[0].id == like  # higher priority first
    assert dao.has_pending_action("posts", "p1")
    dao.mark_retry(like, "offline", max_retries=0)  # over the limit: a dead letter
    assert store.outbox.dead_letters()[0].id == like
    assert dao.remove_failed_items() == 1
    assert dao.clear_entity_actions("posts", "p1") == 1
    entry = dao.enqueue("follow_user", {"user_id": "u2"})
    dao.dequeue(entry)
    assert latest(dao.watch_pending_count()) == 0


def test_logout_clears_everything(store: Store) -> None:
    PostsDao(store).upsert_post(post(1))
    UsersDao(store).upsert_user(User("u1", "ann", "Ann", T0))
    SyncQueueDao(store).enqueue("like_post", {"post_id": new_id()})
    store.clear_all()
    assert store.repository(Post).count() == store.repository(User).count() == 0
    assert store.outbox.pending_count() == 0
