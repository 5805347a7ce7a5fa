"""Queries: every operator, NULL semantics, ordering, paging, many values."""

from __future__ import annotations

import datetime as dt
from collections.abc import Callable
from typing import Any

import pytest

import syncline
from syncline import F
from syncline.testing.backend.base import T0, StoreSuite
from syncline.testing.entities import Post


class QuerySuite(StoreSuite):
    """find, count and delete_where with every kind of condition."""

    @pytest.mark.parametrize(
        ("where", "check"),
        [
            (F.likes_count == 3, lambda p: p.likes_count == 3),
            (F.likes_count != 3, lambda p: p.likes_count != 3),
            (F.likes_count < 3, lambda p: p.likes_count < 3),
            (F.likes_count <= 3, lambda p: p.likes_count <= 3),
            (F.likes_count > 3, lambda p: p.likes_count > 3),
            (F.likes_count >= 3, lambda p: p.likes_count >= 3),
            (F.user_id.in_(["u0", "u2"]), lambda p: p.user_id in ("u0", "u2")),
            (F.user_id.not_in(["u0", "u2"]), lambda p: p.user_id not in ("u0", "u2")),
            (F.user_id.in_([]), lambda p: False),
            (F.user_id.not_in([]), lambda p: True),
            (F.content.like("post 1%"), lambda p: p.content.startswith("post 1")),
            (F.content.like("post _"), lambda p: len(p.content) == 6),
            (F.content.like("POST%"), lambda p: False),
            (F.image_urls.is_null(), lambda p: p.image_urls is None),
            (F.image_urls.is_not_null(), lambda p: p.image_urls is not None),
            (F.image_urls == None, lambda p: p.image_urls is None),  # noqa: E711
            (F.created_at >= T0 + dt.timedelta(minutes=20),
             lambda p: p.created_at >= T0 + dt.timedelta(minutes=20)),
            ((F.user_id == "u1") & (F.likes_count > 2),
             lambda p: p.user_id == "u1" and p.likes_count > 2),
            ((F.user_id == "u1") | (F.likes_count > 5),
             lambda p: p.user_id == "u1" or p.likes_count > 5),
            (~(F.user_id == "u1"), lambda p: p.user_id != "u1"),
            (~((F.user_id == "u1") | (F.likes_count < 2)),
             lambda p: not (p.user_id == "u1" or p.likes_count < 2)),
            ({"user_id": "u0", "likes_count": 3},
             lambda p: p.user_id == "u0" and p.likes_count == 3),
        ],
    )
    def test_query_operators(self, filled: list[Post], posts: syncline.Repository[Post],
                             where: Any, check: Callable[[Post], bool]) -> None:
        expected = sorted(p.id for p in filled if check(p))
        assert [p.id for p in posts.find(where)] == expected
        assert posts.count(where) == len(expected)

    def test_comparisons_with_null_are_unknown(self, filled: list[Post],
                                               posts: syncline.Repository[Post]) -> None:
        # SQL semantics: neither score != 1 nor NOT(score == 1) matches a NULL score.
        with_score = [p for p in filled if p.score is not None]
        assert posts.count(F.score != 1.0) == sum(1 for p in with_score if p.score != 1.0)
        assert posts.count(~(F.score == 1.0)) == sum(1 for p in with_score if p.score != 1.0)
        assert posts.count(F.score.not_in([1.0])) == sum(
            1 for p in with_score if p.score != 1.0)

    def test_order_by_several_fields_with_nulls(self, filled: list[Post],
                                                posts: syncline.Repository[Post]) -> None:
        found = posts.find(order_by=["user_id", F.score.desc()])
        def key(p: Post) -> tuple[Any, ...]:
            # descending score with NULLs last, then primary key descending (the last term's way)
            return (p.user_id, p.score is None, -(p.score or 0), [-ord(c) for c in p.id])
        assert [p.id for p in found] == [p.id for p in sorted(filled, key=key)]
        asc = posts.find(order_by=F.score.asc())
        assert all(p.score is None for p in asc[:6])  # NULLs first ascending
        assert asc[6].score is not None

    def test_limit_and_offset(self, filled: list[Post], posts: syncline.Repository[Post]) -> None:
        ordered = [p.id for p in sorted(filled, key=lambda p: p.created_at, reverse=True)]
        assert [p.id for p in posts.find(order_by="-created_at", limit=5)] == ordered[:5]
        page = posts.find(order_by="-created_at", limit=5, offset=5)
        assert [p.id for p in page] == ordered[5:10]
        assert [p.id for p in posts.find(order_by="-created_at", offset=25)] == ordered[25:]
        assert posts.find(limit=0) == []
        assert posts.first(order_by="created_at") == filled[0]

    def test_latest_posts_of_a_user(self, filled: list[Post],
                                    posts: syncline.Repository[Post]) -> None:
        mine = posts.find(F.user_id == "u1", order_by=F.created_at.desc(), limit=3)
        expected = sorted((p for p in filled if p.user_id == "u1"),
                          key=lambda p: p.created_at, reverse=True)[:3]
        assert mine == expected

    def test_bad_queries_are_query_errors(self, filled: list[Post],
                                          posts: syncline.Repository[Post]) -> None:
        with pytest.raises(syncline.QueryError, match="no field 'nope'"):
            posts.find(F.nope == 1)
        with pytest.raises(syncline.QueryError, match="likes_count"):
            posts.find(F.likes_count == "many")
        with pytest.raises(syncline.QueryError):
            posts.find(order_by="-nope")
        with pytest.raises(syncline.QueryError):
            posts.find(F.likes_count.like("1%"))
        with pytest.raises(syncline.QueryError):
            posts.find(limit=-1)
        with pytest.raises(syncline.QueryError):
            posts.find(F.image_urls > ["a"])

    def test_in_with_seventy_thousand_values(self, filled: list[Post],
                                             posts: syncline.Repository[Post]) -> None:
        """More values than PostgreSQL takes parameters (65,535): it just works."""
        many = [f"p{i:03d}" for i in range(70_000)]
        assert posts.count(F.id.in_(many)) == len(filled)
        assert posts.count(F.id.not_in(many)) == 0
        odd = [f"p{i:03d}" for i in range(1, 70_000, 2)]
        assert [p.id for p in posts.find(F.id.in_(odd) & (F.user_id == "u1"),
                                         order_by="id")] == \
            [p.id for p in filled if int(p.id[1:]) % 2 and p.user_id == "u1"]
        assert posts.count(F.id.not_in(odd)) == sum(1 for p in filled if int(p.id[1:]) % 2 == 0)
        likes = list(range(-40_000, 40_000))
        assert posts.count(F.likes_count.in_(likes)) == len(filled)
        assert posts.delete_where(F.id.in_(odd)) == sum(1 for p in filled if int(p.id[1:]) % 2)
