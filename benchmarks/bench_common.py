"""Shared pieces of the benchmarks: the seed's Post entity, its data and the plain-sqlite3 baseline.

The baseline is what an application would write by hand on ``sqlite3``: the same table, index,
pragmas and upsert SQL syncline uses, starting from the same ``Post`` objects (so it encodes
datetimes and JSON itself) and building ``Post`` objects by hand when reading.
"""

from __future__ import annotations

import datetime as dt
import json
import random
import sqlite3
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import attrs

import syncline

N_POSTS = 100_000
N_USERS = 1_000
SEED = 20240601

# Groups (shared by a case's sides) and their targets, as syncline/baseline time ratios.
GROUP_BATCH = "1 sqlite: batch upsert 100k"
GROUP_SINGLE = "2 sqlite: 200 single-record upsert commits"
GROUP_GET = "3 sqlite: get 1000 ids"
GROUP_LATEST = "4 sqlite: latest 50 posts of 100 users"
GROUP_ALL = "5 sqlite: read all 100k"
GROUP_MEM_UPSERT = "6a memory: batch upsert 100k"
GROUP_MEM_GET = "6b memory: get 1000 ids"

TARGETS: dict[str, float | None] = {
    GROUP_BATCH: 1.3,
    GROUP_SINGLE: 2.0,
    GROUP_GET: 1.5,
    GROUP_LATEST: None,
    GROUP_ALL: 1.5,
    GROUP_MEM_UPSERT: None,
    GROUP_MEM_GET: None,
}

registry = syncline.EntityRegistry()


@registry.entity("posts", indexes=[("user_id", "created_at")])
@attrs.define
class Post:
    id: str
    user_id: str
    content: str
    created_at: dt.datetime
    likes_count: int = 0
    image_urls: list[str] | None = None


# -- data ------------------------------------------------------------------------------------

_WORDS = (
    "offline", "sync", "queue", "local", "first", "photo", "coffee", "morning", "trip",
    "weekend", "train", "city", "park", "lunch", "friends", "music", "concert", "book",
    "review", "code", "release", "deploy", "garden", "rain", "sunny", "walk", "dinner",
    "family", "movie", "beach", "mountain", "bike", "run", "update", "news", "team", "game",
    "night",
)


def make_posts(n: int = N_POSTS, users: int = N_USERS, seed: int = SEED) -> list[Post]:
    """``n`` posts shaped like the seed's: ids ``p000000``..., ``users`` distinct authors,
    ~100-character content, created_at spread over a year (aware UTC), likes, and
    image_urls None or a one/two-element list."""
    rng = random.Random(seed)
    start = dt.datetime(2024, 1, 1, tzinfo=dt.UTC)
    year_us = 365 * 24 * 3600 * 1_000_000
    out = []
    for i in range(n):
        words: list[str] = []
        length = -1
        while length < 95:
            word = rng.choice(_WORDS)
            words.append(word)
            length += len(word) + 1
        n_images = rng.choice((0, 0, 0, 1, 1, 2))
        out.append(Post(
            id=f"p{i:06d}",
            user_id=f"u{rng.randrange(users):04d}",
            content=" ".join(words),
            created_at=start + dt.timedelta(microseconds=rng.randrange(year_us)),
            likes_count=rng.randrange(5_000),
            image_urls=[f"https://img.example.org/{i}/{k}.jpg" for k in range(n_images)]
            if n_images else None,
        ))
    return out


# -- the hand-written sqlite3 baseline -------------------------------------------------------

# The same DDL syncline generates for Post (see SQLiteBuilder.ddl).
DDL = (
    "CREATE TABLE IF NOT EXISTS posts (id TEXT NOT NULL, user_id TEXT NOT NULL, "
    "content TEXT NOT NULL, created_at TEXT NOT NULL, likes_count INTEGER NOT NULL, "
    "image_urls TEXT, PRIMARY KEY (id))",
    "CREATE INDEX IF NOT EXISTS ix_posts_user_id_created_at ON posts (user_id, created_at)",
)
COLUMNS = "id, user_id, content, created_at, likes_count, image_urls"
UPSERT = (
    f"INSERT INTO posts ({COLUMNS}) VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET "
    "user_id = excluded.user_id, content = excluded.content, created_at = excluded.created_at, "
    "likes_count = excluded.likes_count, image_urls = excluded.image_urls"
)
GET = f"SELECT {COLUMNS} FROM posts WHERE id = ?"
# What an app would write for "latest 50 posts of a user" ...
LATEST = f"SELECT {COLUMNS} FROM posts WHERE user_id = ? ORDER BY created_at DESC LIMIT ?"
# ... and the exact SQL syncline generates for it (a primary-key tie-break, NULLS LAST/FIRST).
LATEST_SYNCLINE_SQL = (
    f"SELECT {COLUMNS} FROM posts WHERE posts.user_id = ? "
    "ORDER BY posts.created_at DESC NULLS LAST, posts.id ASC NULLS FIRST LIMIT ? OFFSET ?"
)
# Every post in primary-key order, the order ``posts.find()`` returns.
ALL = f"SELECT {COLUMNS} FROM posts ORDER BY id"

DT_FORMAT = "%Y-%m-%dT%H:%M:%S.%f+00:00"
UTC = dt.UTC
_fromisoformat = dt.datetime.fromisoformat
_dumps = json.dumps
_loads = json.loads


def connect(path: str | Path) -> sqlite3.Connection:
    """A plain sqlite3 connection with syncline's pragmas (WAL, synchronous=NORMAL)."""
    conn = sqlite3.connect(str(path))
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    for stmt in DDL:
        conn.execute(stmt)
    conn.commit()
    return conn


def to_params(p: Post) -> tuple[Any, ...]:
    """Encode a Post by hand: UTC fixed-width ISO text, canonical JSON."""
    urls = p.image_urls
    return (
        p.id, p.user_id, p.content, p.created_at.astimezone(UTC).strftime(DT_FORMAT),
        p.likes_count,
        None if urls is None else _dumps(urls, sort_keys=True, separators=(",", ":")),
    )


def from_row(r: Sequence[Any]) -> Post:
    """The hand-written constructor."""
    return Post(id=r[0], user_id=r[1], content=r[2], created_at=_fromisoformat(r[3]),
                likes_count=r[4], image_urls=_loads(r[5]) if r[5] else None)


def upsert_many(conn: sqlite3.Connection, posts: Sequence[Post]) -> None:
    conn.executemany(UPSERT, [to_params(p) for p in posts])
    conn.commit()


def upsert(conn: sqlite3.Connection, post: Post) -> None:
    conn.execute(UPSERT, to_params(post))
    conn.commit()


def get(conn: sqlite3.Connection, key: str) -> Post | None:
    row = conn.execute(GET, (key,)).fetchone()
    return None if row is None else from_row(row)


def latest(conn: sqlite3.Connection, user_id: str, limit: int = 50,
           sql: str = LATEST) -> list[Post]:
    params = (user_id, limit) if sql is LATEST else (user_id, limit, 0)
    return [from_row(r) for r in conn.execute(sql, params).fetchall()]


def find_all(conn: sqlite3.Connection) -> list[Post]:
    return [from_row(r) for r in conn.execute(ALL).fetchall()]


def copy_post(p: Post) -> Post:
    """The dict baseline's copy: a new Post that shares no mutable list with ``p``."""
    urls = p.image_urls
    return attrs.evolve(p, image_urls=None if urls is None else list(urls))
