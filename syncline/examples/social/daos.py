"""The seed's DAOs, method for method, as small classes of plain methods."""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from syncline import Dao, F, SyncStatus
from syncline.core.storage.watch import Watch
from syncline.core.sync.outbox import OutboxEntry
from syncline.examples.social.models import Message, Post, User


class PostsDao(Dao):
    def watch_all_posts(self) -> Watch[list[Post]]:
        return self.repo(Post).watch(order_by=F.created_at.desc())

    def watch_user_posts(self, user_id: str) -> Watch[list[Post]]:
        return self.repo(Post).watch(F.user_id == user_id, order_by=F.created_at.desc())

    def get_post(self, post_id: str) -> Post | None:
        return self.repo(Post).get(post_id)

    def get_pending_posts(self) -> list[Post]:
        return self.repo(Post).pending()

    def upsert_post(self, post: Post) -> None:
        self.repo(Post).upsert(post)

    def upsert_posts(self, posts: Iterable[Post]) -> None:
        self.repo(Post).upsert_many(posts)

    def update_sync_status(self, post_id: str, status: SyncStatus, *,
                           error_message: str | None = None,
                           retry_count: int | None = None) -> None:
        self.repo(Post).update_sync_status(post_id, status, error=error_message,
                                           retry_count=retry_count)

    def delete_post(self, post_id: str) -> None:
        self.repo(Post).delete(post_id)

    def get_failed_posts(self, max_retries: int = 3) -> list[Post]:
        return self.repo(Post).failed(max_retries=max_retries)

    def update_from_server(self, local_id: str, server_post: Post) -> None:
        self.repo(Post).update_from_server(local_id, server_post)


class MessagesDao(Dao):
    def watch_conversation(self, conversation_id: str) -> Watch[list[Message]]:
        return self.repo(Message).watch(F.conversation_id == conversation_id,
                                        order_by="created_at")

    def watch_unread_count(self, user_id: str) -> Watch[int]:
        return self.repo(Message).watch_count((F.receiver_id == user_id) & (F.is_read == False))  # noqa: E712

    def get_message(self, message_id: str) -> Message | None:
        return self.repo(Message).get(message_id)

    def get_pending_messages(self) -> list[Message]:
        return self.repo(Message).pending()

    def upsert_message(self, message: Message) -> None:
        self.repo(Message).upsert(message)

    def upsert_messages(self, messages: Iterable[Message]) -> None:
        self.repo(Message).upsert_many(messages)

    def mark_read(self, conversation_id: str, user_id: str) -> int:
        return self.repo(Message).update_where(
            (F.conversation_id == conversation_id) & (F.receiver_id == user_id)
            & (F.is_read == False), is_read=True)  # noqa: E712

    def update_sync_status(self, message_id: str, status: SyncStatus, *,
                           error_message: str | None = None) -> None:
        self.repo(Message).update_sync_status(message_id, status, error=error_message)

    def delete_message(self, message_id: str) -> None:
        self.repo(Message).delete(message_id)

    def get_failed_messages(self, max_retries: int = 3) -> list[Message]:
        return self.repo(Message).failed(max_retries=max_retries)

    def update_from_server(self, local_id: str, server_message: Message) -> None:
        self.repo(Message).update_from_server(local_id, server_message)


class UsersDao(Dao):
    def get_user(self, user_id: str) -> User | None:
        return self.repo(User).get(user_id)

    def watch_user(self, user_id: str) -> Watch[User | None]:
        return self.repo(User).watch_one(user_id)

    def upsert_user(self, user: User) -> None:
        self.repo(User).upsert(user)

    def upsert_users(self, users: Iterable[User]) -> None:
        self.repo(User).upsert_many(users)

    def stale_users(self, older_than: dt.timedelta, now: dt.datetime) -> list[User]:
        return self.repo(User).find(F.last_fetched < now - older_than, order_by="last_fetched")

    def set_following(self, user_id: str, following: bool) -> User:
        return self.repo(User).update(user_id, is_following=following)


class SyncQueueDao(Dao):
    """The seed's SyncQueueDao: the queue syncline keeps for every syncing entity."""

    def watch_pending_count(self) -> Watch[int]:
        return self.store.outbox.watch_pending_count()

    def get_next_batch(self, limit: int = 10) -> list[OutboxEntry]:
        return self.store.outbox.next_batch(limit)

    def enqueue(self, command: str, payload: dict[str, Any], priority: int = 0) -> str:
        """Likes, follows and comments travel as commands (the seed's non-row entity types)."""
        return self.store.enqueue_command(command, payload, priority=priority)

    def dequeue(self, entry_id: str) -> None:
        self.store.outbox.dequeue([entry_id])

    def mark_retry(self, entry_id: str, error: str, max_retries: int = 5) -> None:
        self.store.outbox.mark_retry([entry_id], error, None, max_retries=max_retries)

    def has_pending_action(self, entity: str, entity_id: str) -> bool:
        return self.store.outbox.has_pending(entity, entity_id)

    def clear_entity_actions(self, entity: str, entity_id: str) -> int:
        return self.store.outbox.clear_entity(entity, entity_id)

    def remove_failed_items(self) -> int:
        return self.store.outbox.purge_dead()
