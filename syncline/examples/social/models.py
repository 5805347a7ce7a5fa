"""The seed's tables as syncline entities (sync state is kept by syncline, not declared)."""

from __future__ import annotations

import datetime as dt

import attrs

import syncline
from syncline.core.storage.migration import Schema

registry = syncline.EntityRegistry()


@registry.entity("posts", syncs=True, indexes=[("user_id", "created_at"), "created_at"])
@attrs.define
class Post:
    id: str
    user_id: str
    content: str
    created_at: dt.datetime
    updated_at: dt.datetime
    image_urls: list[str] | None = None
    local_image_paths: list[str] | None = None
    likes_count: int = 0
    comments_count: int = 0
    is_liked_by_me: bool = False


@registry.entity("messages", syncs=True, indexes=[("conversation_id", "created_at")])
@attrs.define
class Message:
    id: str
    conversation_id: str
    sender_id: str
    receiver_id: str
    content: str
    created_at: dt.datetime
    media_url: str | None = None
    local_media_path: str | None = None
    media_type: str | None = None  # image, video, audio
    is_read: bool = False


@registry.entity("users")
@attrs.define
class User:
    """A local cache of profiles (the seed does not sync it either)."""

    id: str
    username: str
    display_name: str
    last_fetched: dt.datetime  # cache invalidation
    avatar_url: str | None = None
    bio: str | None = None
    followers_count: int = 0
    following_count: int = 0
    posts_count: int = 0
    is_following: bool = False


ENTITIES: list[type] = [Post, Message, User]

#: The app's schema: ``syncline migrate --schema syncline.examples.social.models``.
schema = Schema(1, ENTITIES)
