"""Every field type round trips, and wrong values are refused naming the field."""

from __future__ import annotations

import datetime as dt
import decimal
import uuid

import pytest

import syncline
from syncline import F
from syncline.core.store import Store
from syncline.testing.backend.base import T0, StoreSuite, make_everything, make_post
from syncline.testing.entities import Color, Everything, Level, Post
from syncline.testing.requirements import requires


class FieldTypeSuite(StoreSuite):
    """Field types, exact decimals, refused values, isolation of objects."""

    def test_every_field_type_round_trips(self, store: Store) -> None:
        repo = store.repository(Everything)
        items = [make_everything(i) for i in range(3)]
        items.append(make_everything(
            3, maybe_text="x", maybe_number=-(2**63), maybe_when=T0, maybe_day=dt.date(2000, 2, 29),
            maybe_ident=uuid.uuid4(), maybe_amount=decimal.Decimal("-0.000001"),
            maybe_color=Color.RED, maybe_flag=False, maybe_blob=b"", maybe_json=[{"a": []}],
        ))
        repo.upsert_many(items)
        for item in items:
            got = repo.get(item.id)
            assert got == item
            assert got is not None
            assert got.when.utcoffset() == dt.timedelta(0)  # stored and returned as UTC
            assert type(got.amount) is decimal.Decimal and got.amount == item.amount
            assert type(got.flag) is bool and type(got.color) is Color
            assert type(got.level) is Level
        assert repo.find(F.ident == uuid.UUID(int=2))[0].id == 1
        assert [e.id for e in repo.find(F.amount > decimal.Decimal("12345678901236067890"))] \
            == [2, 3]
        assert [e.id for e in repo.find(F.color == Color.GREEN)] == [1, 3]
        assert [e.id for e in repo.find(F.day <= dt.date(2000, 1, 1))] == [0, 1]
        assert [e.id for e in repo.find(F.flag == True)] == [1, 3]  # noqa: E712
        assert [e.id for e in repo.find(F.maybe_flag == False)] == [3]  # noqa: E712
        assert [e.id for e in repo.find(F.tags == ["a", "b", "2"])] == [2]
        assert [e.id for e in repo.find(order_by=F.when.desc())] == [3, 2, 1, 0]

    @requires("exact_decimals")
    def test_decimals_compare_exactly(self, store: Store) -> None:
        repo = store.repository(Everything)
        base = decimal.Decimal("12345678901234567890.1")
        repo.upsert_many([make_everything(i, amount=base + decimal.Decimal(i) / 100)
                          for i in range(3)])
        assert [e.id for e in repo.find(F.amount > base)] == [1, 2]
        assert [e.id for e in repo.find(order_by=F.amount.desc())] == [2, 1, 0]

    def test_naive_datetime_is_refused_and_nothing_written(
            self, posts: syncline.Repository[Post]) -> None:
        with pytest.raises(syncline.SerializationError, match=r"created_at.*time zone"):
            posts.upsert_many([make_post(1), make_post(2, created_at=dt.datetime(2024, 1, 1))])
        assert posts.count() == 0

    def test_wrong_types_are_refused_naming_the_field(self,
                                                      posts: syncline.Repository[Post]) -> None:
        posts.upsert(make_post(1))
        with pytest.raises(syncline.SerializationError, match="likes_count"):
            posts.upsert(make_post(1, likes_count="many"))
        with pytest.raises(syncline.SerializationError, match="content"):
            posts.upsert(make_post(1, content=None))
        with pytest.raises(syncline.SerializationError, match="image_urls"):
            posts.upsert(make_post(1, image_urls="not a list"))
        with pytest.raises(syncline.SerializationError):
            posts.update("p001", likes_count="x")
        with pytest.raises(syncline.QueryError, match="no field"):
            posts.update("p001", nope=1)
        with pytest.raises(syncline.QueryError, match="primary key"):
            posts.update("p001", id="p002")
        assert posts.get("p001") == make_post(1)

    def test_isolation_from_objects_passed_and_returned(self,
                                                        posts: syncline.Repository[Post]) -> None:
        post = make_post(1, image_urls=["a"])
        posts.upsert(post)
        post.image_urls.append("b")  # type: ignore[union-attr]
        post.content = "changed after writing"
        got = posts.get("p001")
        assert got is not None and got.image_urls == ["a"] and got.content == "post 1"
        assert got.image_urls is not None
        got.image_urls.append("c")
        again = posts.get("p001")
        assert again is not None and again.image_urls == ["a"]
