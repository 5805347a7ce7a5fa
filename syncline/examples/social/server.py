"""Server-side logic of the seed app: record hooks that run on the sync server.

``users.posts_count`` is kept by the server, in the transaction that applies a post's
creation or deletion, whoever pushed it; a post is accepted only from its author. Install
with ``syncline.core.plugins.register_plugin(PostsCount(), "posts-count")`` in the server's
process (or an entry point in the ``syncline`` group).
"""

from __future__ import annotations

from typing import Any

import attrs

import syncline
from syncline.examples.social.models import User


class PostsCount:
    """Keeps ``users.posts_count`` on the server and refuses posts written for someone else."""

    @syncline.hookimpl
    def syncline_before_record_write(self, server: Any, principal: str, entity: str,
                                     action: str, record_id: str,
                                     before: dict[str, Any] | None,
                                     after: dict[str, Any] | None) -> dict[str, Any] | None:
        if entity == "posts" and after is not None and after["user_id"] != principal:
            raise ValueError(f"post {record_id!r} names user {after['user_id']!r}; "
                             f"a post is written by its author ({principal!r})")
        return None

    @syncline.hookimpl
    def syncline_after_record_write(self, server: Any, principal: str, entity: str,
                                    action: str, record_id: str,
                                    before: dict[str, Any] | None,
                                    after: dict[str, Any] | None, version: int) -> None:
        if entity != "posts":
            return
        old = before["user_id"] if before else None
        new = after["user_id"] if after else None
        if old == new:
            return
        for user_id, delta in ((old, -1), (new, 1)):
            if user_id is not None:
                add_posts(server, user_id, delta)


def add_posts(server: Any, user_id: str, delta: int) -> None:
    """Move ``user_id``'s counter by ``delta`` (its row made on first use)."""
    server.lock(f"users/{user_id}")  # read-modify-write: one writer of the row at a time
    users = server.store.repository(User)
    user = users.get(user_id) or User(user_id, user_id, user_id, server.now())
    users.upsert(attrs.evolve(user, posts_count=user.posts_count + delta))
