"""Cases 3, 4 and 5: reads through syncline's SQLite backend vs plain sqlite3.

Both sides read a 100k-post file they wrote themselves (module-scoped ``sqlite_dbs``).
"""

from __future__ import annotations

from typing import Any

import bench_common as base
import pytest
from bench_common import GROUP_ALL, GROUP_GET, GROUP_LATEST, Post

from syncline import F

SIDES = ["syncline", "baseline"]


def test_sides_return_the_same_posts(sqlite_dbs: Any, sample_ids: list[str],
                                     sample_users: list[str]) -> None:
    """Sanity check (not timed): both sides hold and return the same data."""
    store, conn = sqlite_dbs
    posts = store.repository(Post)
    assert [posts.get(k) for k in sample_ids[:50]] == [base.get(conn, k) for k in sample_ids[:50]]
    for user in sample_users[:10]:
        want = posts.find(F.user_id == user, order_by=F.created_at.desc(), limit=50)
        assert want == base.latest(conn, user)
        assert want == base.latest(conn, user, sql=base.LATEST_SYNCLINE_SQL)
    assert posts.count() == base.N_POSTS


@pytest.mark.benchmark(min_rounds=30, max_time=3.0)
@pytest.mark.parametrize("side", SIDES)
def test_get_by_id(benchmark: Any, side: str, sqlite_dbs: Any, sample_ids: list[str]) -> None:
    """1000 random ids per round, each returned as a Post."""
    benchmark.group = GROUP_GET
    store, conn = sqlite_dbs
    if side == "syncline":
        get = store.repository(Post).get

        def run() -> list[Any]:
            return [get(k) for k in sample_ids]
    else:
        def run() -> list[Any]:
            return [base.get(conn, k) for k in sample_ids]

    found = benchmark(run)
    assert len(found) == len(sample_ids) and all(found)


@pytest.mark.benchmark(min_rounds=30, max_time=3.0)
@pytest.mark.parametrize("side", [*SIDES, "ref-sqlite3-with-syncline-sql"])
def test_latest_posts_of_user(benchmark: Any, side: str, sqlite_dbs: Any,
                              sample_users: list[str]) -> None:
    """The 50 newest posts of each of 100 users (index on (user_id, created_at)).

    ``ref-sqlite3-with-syncline-sql`` is plain sqlite3 running syncline's exact SQL (with its
    ``id`` tie-break), to tell SQL-plan cost from Python overhead.
    """
    benchmark.group = GROUP_LATEST
    store, conn = sqlite_dbs
    if side == "syncline":
        find = store.repository(Post).find

        def run() -> list[Any]:
            return [find(F.user_id == u, order_by=F.created_at.desc(), limit=50)
                    for u in sample_users]
    else:
        sql = base.LATEST if side == "baseline" else base.LATEST_SYNCLINE_SQL

        def run() -> list[Any]:
            return [base.latest(conn, u, 50, sql) for u in sample_users]

    found = benchmark(run)
    assert all(len(page) == 50 for page in found)


@pytest.mark.parametrize("side", SIDES)
def test_read_all(benchmark: Any, side: str, sqlite_dbs: Any) -> None:
    """Every one of the 100k posts as Post objects, in primary-key order."""
    benchmark.group = GROUP_ALL
    store, conn = sqlite_dbs
    if side == "syncline":
        find = store.repository(Post).find

        def run() -> list[Any]:
            return find()
    else:
        def run() -> list[Any]:
            return base.find_all(conn)

    found = benchmark.pedantic(run, rounds=10, warmup_rounds=1)
    assert len(found) == base.N_POSTS
