"""Cases 1 and 2: writes through syncline's SQLite backend vs plain sqlite3."""

from __future__ import annotations

import itertools
from collections.abc import Callable
from pathlib import Path
from typing import Any

import bench_common as base
import pytest
from bench_common import GROUP_BATCH, GROUP_SINGLE, Post

import syncline

SIDES = ["syncline", "baseline"]
SINGLE_BATCH = 200  # single-record upserts per round
SINGLE_ROUNDS = 20


def _fresh_db(tmp_path: Path, side: str) -> Callable[[], Any]:
    """Open (untimed) a fresh empty database for one side; returns the opener."""
    counter = itertools.count()

    def open_db() -> Any:
        path = tmp_path / f"{side}-{next(counter)}.db"
        if side == "syncline":
            return syncline.open(f"sqlite:///{path}", entities=[Post])
        return base.connect(path)

    return open_db


@pytest.mark.parametrize("side", SIDES)
def test_batch_upsert(benchmark: Any, side: str, tmp_path: Path, posts: list[Post]) -> None:
    """100k posts upserted in one transaction into an empty table (fresh file each round)."""
    benchmark.group = GROUP_BATCH
    open_db = _fresh_db(tmp_path, side)
    opened: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        db = open_db()
        opened.append(db)
        return (db,), {}

    def teardown(db: Any) -> None:
        db.close()

    if side == "syncline":
        def run(store: syncline.Store) -> None:
            store.repository(Post).upsert_many(posts)
    else:
        def run(conn: Any) -> None:
            base.upsert_many(conn, posts)

    benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=3)
    # The last round really wrote every post.
    last = opened[-1]
    if side == "syncline":
        with syncline.open(last.backend.url, entities=[Post]) as store:
            assert store.repository(Post).count() == len(posts)
    else:
        conn = base.connect(tmp_path / f"{side}-{len(opened) - 1}.db")
        assert conn.execute("SELECT count(*) FROM posts").fetchone()[0] == len(posts)
        conn.close()


@pytest.mark.parametrize("side", SIDES)
def test_single_upserts(benchmark: Any, side: str, tmp_path: Path, posts: list[Post]) -> None:
    """200 upserts of new posts, each its own commit, on a file database in WAL mode."""
    benchmark.group = GROUP_SINGLE
    db = _fresh_db(tmp_path, side)()
    batches = (posts[i:i + SINGLE_BATCH] for i in itertools.count(0, SINGLE_BATCH))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (next(batches),), {}

    if side == "syncline":
        repo = db.repository(Post)

        def run(batch: list[Post]) -> None:
            for post in batch:
                repo.upsert(post)
    else:
        def run(batch: list[Post]) -> None:
            for post in batch:
                base.upsert(db, post)

    try:
        benchmark.pedantic(run, setup=setup, rounds=SINGLE_ROUNDS, warmup_rounds=1)
    finally:
        db.close()
