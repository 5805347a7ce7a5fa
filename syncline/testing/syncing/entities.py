"""The sync suites' entities, and the server's side of the command they send."""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

import syncline
from syncline.core.model.clock import FakeClock

registry = syncline.EntityRegistry()


@registry.entity("sync_notes", syncs=True, indexes=["owner"])
@attrs.define
class Note:
    id: str
    owner: str
    text: str
    likes: int = 0
    tags: list[str] | None = None


@registry.entity("sync_feed", syncs=True)
@attrs.define
class FeedPost:
    """The seed's posts: the server's fields, and this device's own (never synced)."""

    id: str
    text: str = syncline.field(column="body")  # renamed in Python: the wire says "text"
    likes: int = 0
    liked_by_me: bool = syncline.field(local=True, default=False)
    image_paths: list[str] | None = syncline.field(local=True, default=None)
    last_fetched: dt.datetime | None = syncline.field(local=True, default=None)


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
    post_id: str = syncline.field(column="post_ref")  # the key's column, the payload's field
    text: str = ""


#: the sync suite's entities
NOTES: list[type] = [Note, FeedPost]
#: the trust suite's entities
ENTITIES: list[type] = [Post, Comment]


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
