"""Case 6: the memory backend (``memory://``) vs a plain dict of copied Post objects.

Both sides copy on the way in and out (syncline's memory backend stores rows and JSON text, so
changing a post you passed in or got back never changes the store); the dict copies each Post
and its image_urls list. No target: the ratio is reported.
"""

from __future__ import annotations

from typing import Any

import bench_common as base
import pytest
from bench_common import GROUP_MEM_GET, GROUP_MEM_UPSERT, Post

import syncline

SIDES = ["syncline", "baseline"]


@pytest.mark.parametrize("side", SIDES)
def test_memory_batch_upsert(benchmark: Any, side: str, posts: list[Post]) -> None:
    """100k posts upserted into an empty store / dict (fresh each round)."""
    benchmark.group = GROUP_MEM_UPSERT
    copy = base.copy_post

    if side == "syncline":
        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return (syncline.open("memory://", entities=[Post]),), {}

        def run(store: syncline.Store) -> None:
            store.repository(Post).upsert_many(posts)

        def teardown(store: syncline.Store) -> None:
            assert store.repository(Post).count() == len(posts)
            store.close()
    else:
        def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
            return ({},), {}

        def run(d: dict[str, Post]) -> None:
            for p in posts:
                d[p.id] = copy(p)

        def teardown(d: dict[str, Post]) -> None:
            assert len(d) == len(posts)

    benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=7)


@pytest.mark.benchmark(min_rounds=30, max_time=3.0)
@pytest.mark.parametrize("side", SIDES)
def test_memory_get_by_id(benchmark: Any, side: str, posts: list[Post],
                          sample_ids: list[str]) -> None:
    """1000 random ids per round from 100k, each returned as a (copied) Post."""
    benchmark.group = GROUP_MEM_GET
    if side == "syncline":
        store = syncline.open("memory://", entities=[Post])
        store.repository(Post).upsert_many(posts)
        get = store.repository(Post).get

        def run() -> list[Any]:
            return [get(k) for k in sample_ids]
    else:
        copy = base.copy_post
        d = {p.id: copy(p) for p in posts}

        def run() -> list[Any]:
            return [copy(d[k]) for k in sample_ids]

    try:
        found = benchmark(run)
    finally:
        if side == "syncline":
            store.close()
    assert found == [posts[int(k[1:])] for k in sample_ids]
