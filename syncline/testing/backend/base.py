"""What every backend suite mixin shares: the suite's records and store fixtures."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid
from collections.abc import Iterator
from typing import Any, ClassVar

import pytest

import syncline
from syncline.core.store import Store
from syncline.testing.entities import ENTITIES, Color, Everything, Level, Post
from syncline.testing.requirements import SuiteBase, skip_unless
from syncline.testing.stores import StoreFactory, opened_stores

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)


def make_post(i: int, **kw: Any) -> Post:
    values: dict[str, Any] = dict(
        id=f"p{i:03d}", user_id=f"u{i % 3}", content=f"post {i}",
        created_at=T0 + dt.timedelta(minutes=i), likes_count=i % 7,
        image_urls=[f"https://img/{i}"] if i % 2 else None,
        local_id=f"l{i}" if i % 4 else None, score=None if i % 5 == 0 else i / 4,
    )
    values.update(kw)
    return Post(**values)


def make_everything(i: int, **kw: Any) -> Everything:
    values: dict[str, Any] = dict(
        id=i, text=f"héllo ☃ {i}\n\ttab", number=2**62 - i, ratio=1 / 3 + i,
        flag=bool(i % 2), blob=b"\x00\xff" + bytes([i % 256]) * 3,
        when=dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=5)))
        + dt.timedelta(days=i),
        day=dt.date(1999, 12, 31) + dt.timedelta(days=i), ident=uuid.UUID(int=i + 1),
        amount=decimal.Decimal("12345678901234567890.123456789") + i * 10**6,
        color=Color.GREEN if i % 2 else Color.RED, level=Level.HIGH, tags=["a", "b", str(i)],
        extra={"nested": {"list": [1, 2.5, None, True]}, "n": i},
    )
    values.update(kw)
    return Everything(**values)


class StoreSuite(SuiteBase):
    """The backend suites' fixtures: a store factory on ``store_url``, a store, its posts."""

    #: what ``open_store()`` opens a store with unless told otherwise
    entities: ClassVar[list[type]] = ENTITIES

    @pytest.fixture
    def open_store(self, store_url: str) -> Iterator[StoreFactory]:
        with opened_stores(store_url, entities=self.entities) as factory:
            yield factory

    @pytest.fixture
    def store(self, open_store: StoreFactory) -> Store:
        return open_store()

    @pytest.fixture
    def posts(self, store: Store) -> syncline.Repository[Post]:
        return store.repository(Post)

    @pytest.fixture
    def filled(self, posts: syncline.Repository[Post]) -> list[Post]:
        items = [make_post(i) for i in range(30)]
        posts.upsert_many(items)
        return items

    @staticmethod
    def require(store: Store, capability: str) -> None:
        """Skip unless ``store``'s backend has ``capability`` (prefer ``@requires``)."""
        skip_unless(store.backend.capabilities, capability)
