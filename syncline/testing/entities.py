"""Entities used by the conformance suites, declared in a registry of their own."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import uuid
from typing import Any

import attrs

from syncline.core.model.schema import EntityRegistry

registry = EntityRegistry()


class Color(enum.Enum):
    RED = "red"
    GREEN = "green"


class Level(enum.IntEnum):
    LOW = 1
    HIGH = 2


@registry.entity("suite_posts", indexes=[("user_id", "created_at")], unique=["local_id"])
@attrs.define
class Post:
    """Shaped like the seed's posts."""

    id: str
    user_id: str
    content: str
    created_at: dt.datetime
    likes_count: int = 0
    image_urls: list[str] | None = None
    local_id: str | None = None
    score: float | None = None


@registry.entity("suite_everything")
@attrs.define
class Everything:
    """One field of every supported type, plus optional forms."""

    id: int
    text: str
    number: int
    ratio: float
    flag: bool
    blob: bytes
    when: dt.datetime
    day: dt.date
    ident: uuid.UUID
    amount: decimal.Decimal
    color: Color
    level: Level
    tags: list[str]
    extra: dict[str, Any]
    maybe_text: str | None = None
    maybe_number: int | None = None
    maybe_when: dt.datetime | None = None
    maybe_day: dt.date | None = None
    maybe_ident: uuid.UUID | None = None
    maybe_amount: decimal.Decimal | None = None
    maybe_color: Color | None = None
    maybe_flag: bool | None = None
    maybe_blob: bytes | None = None
    maybe_json: list[Any] | None = None


@registry.entity("suite_counters")
@attrs.define
class Counter:
    id: str
    value: int = 0


ENTITIES: list[type] = [Post, Everything, Counter]
