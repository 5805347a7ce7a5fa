"""Cases 1 and 2: writes through syncline's SQLite backend vs plain sqlite3."""

from __future__ import annotations

import itertools
import sqlite3
from pathlib import Path
from typing import Any

import bench_common as base
import pytest
from bench_common import GROUP_BATCH, GROUP_SINGLE, Post

import syncline

SIDES = ["syncline", "baseline"]
BATCH_ROUNDS = 7
SINGLE_BATCH = 200  # single-record upserts per round, each its own commit
SINGLE_ROUNDS = 40


def _open(path: Path, side: str) -> Any:
    if side == "syncline":
        return syncline.open(f"sqlite:///{path}", entities=[Post])
    return base.connect(path)


def _count_and_remove(path: Path) -> int:
    conn = sqlite3.connect(path)
    try:
        return int(conn.execute("SELECT count(*) FROM posts").fetchone()[0])
    finally:
        conn.close()
        for suffix in ("", "-wal", "-shm"):
            Path(f"{path}{suffix}").unlink(missing_ok=True)


@pytest.mark.parametrize("side", SIDES)
def test_batch_upsert(benchmark: Any, side: str, tmp_path: Path, posts: list[Post]) -> None:
    """100k posts upserted in one transaction into an empty table (a fresh file each round;
    opening it is not timed)."""
    benchmark.group = GROUP_BATCH
    paths = (tmp_path / f"{side}-{i}.db" for i in itertools.count())
    counts: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        path = next(paths)
        return (_open(path, side), path), {}

    def teardown(db: Any, path: Path) -> None:
        db.close()
        counts.append(_count_and_remove(path))

    if side == "syncline":
        def run(store: syncline.Store, _path: Path) -> None:
            store.repository(Post).upsert_many(posts)
    else:
        def run(conn: sqlite3.Connection, _path: Path) -> None:
            base.upsert_many(conn, posts)

    benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=BATCH_ROUNDS)
    assert counts == [len(posts)] * BATCH_ROUNDS


@pytest.mark.parametrize("side", SIDES)
def test_single_upserts(benchmark: Any, side: str, tmp_path: Path, posts: list[Post]) -> None:
    """200 upserts of new posts per round, each its own commit, on a WAL file database."""
    benchmark.group = GROUP_SINGLE
    path = tmp_path / f"{side}.db"
    db = _open(path, side)
    batches = (posts[i:i + SINGLE_BATCH] for i in itertools.count(0, SINGLE_BATCH))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (next(batches),), {}

    if side == "syncline":
        upsert = db.repository(Post).upsert

        def run(batch: list[Post]) -> None:
            for post in batch:
                upsert(post)
    else:
        def run(batch: list[Post]) -> None:
            for post in batch:
                base.upsert(db, post)

    try:
        benchmark.pedantic(run, setup=setup, rounds=SINGLE_ROUNDS, warmup_rounds=2)
    finally:
        db.close()
    assert _count_and_remove(path) == SINGLE_BATCH * (SINGLE_ROUNDS + 2)
