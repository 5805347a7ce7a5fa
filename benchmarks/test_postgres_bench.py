"""Cases P1-P4: syncline's PostgreSQL backend vs plain psycopg 3, on 100,000 seed-shaped posts.

The baseline is what an application would write by hand on psycopg 3: the same table and index
DDL syncline generates (text ``COLLATE "C"``, timestamptz, jsonb, bigint, an index on
``(user_id, created_at, id)``; ``test_pg_sides_have_the_same_tables`` checks it), the same
``INSERT ... ON CONFLICT (id) DO UPDATE`` SQL, the same session settings (``timezone=UTC``,
``search_path`` = the schema). It starts from the same ``Post`` objects (datetimes go in as
they are, ``image_urls`` wrapped in ``Jsonb``) and builds ``Post`` objects by hand when reading.

Writes commit with ``conn.commit()`` on a non-autocommit connection (psycopg's default: ``BEGIN``
before the first statement); reads run on an autocommit connection (one round trip per query),
with ``ref-psycopg-tx-per-call`` wrapping every read in its own ``BEGIN``/``COMMIT`` too.

The server: ``SYNCLINE_TEST_POSTGRES_URL`` if set, else a throwaway one from
``syncline.testing.postgres.start_postgres()`` (fsync and synchronous_commit off). Every case
works in schemas of its own in one new database, dropped at the end (a throwaway server is
deleted with its data instead).

``python benchmarks/test_postgres_bench.py [multiplier]`` runs the same cases with the sides
alternating round by round (a second opinion on a busy machine; ratios of minimums/medians).
"""

from __future__ import annotations

import itertools
import os
import random
import statistics
import sys
import time
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import pytest
from bench_common import N_POSTS, N_USERS, SEED, Post, make_posts

import syncline
from syncline import F

psycopg = pytest.importorskip("psycopg")
Jsonb = psycopg.types.json.Jsonb

GROUP_PG_BATCH = "P1 postgres: batch upsert 100k"
GROUP_PG_SINGLE = "P2 postgres: 200 single-record upsert commits"
GROUP_PG_GET = "P3 postgres: get 1000 ids"
GROUP_PG_LATEST = "P4 postgres: latest 50 posts of 100 users"

# Targets (syncline / psycopg time ratios). Not in bench_common.TARGETS: the ratio table shows
# these groups with status "-"; benchmarks/README.md compares them with these targets.
PG_TARGETS = {GROUP_PG_BATCH: 1.0, GROUP_PG_SINGLE: 1.5, GROUP_PG_GET: 1.3,
              GROUP_PG_LATEST: 1.3}

BATCH_ROUNDS = 3
SINGLE_BATCH = 200
SINGLE_ROUNDS = 15
READ_ROUNDS = 10

# -- the hand-written psycopg 3 baseline ------------------------------------------------------

# The same DDL syncline generates for Post (PostgresBuilder; the index ends with the key).
DDL = (
    'CREATE TABLE posts (id TEXT COLLATE "C" NOT NULL, user_id TEXT COLLATE "C" NOT NULL, '
    'content TEXT COLLATE "C" NOT NULL, created_at TIMESTAMP WITH TIME ZONE NOT NULL, '
    "likes_count BIGINT NOT NULL, image_urls JSONB, PRIMARY KEY (id))",
    "CREATE INDEX ix_posts_user_id_created_at ON posts (user_id, created_at, id)",
)
COLUMNS = "id, user_id, content, created_at, likes_count, image_urls"
UPSERT = (
    f"INSERT INTO posts ({COLUMNS}) VALUES (%s, %s, %s, %s, %s, %s) ON CONFLICT (id) DO UPDATE "
    "SET user_id = excluded.user_id, content = excluded.content, "
    "created_at = excluded.created_at, likes_count = excluded.likes_count, "
    "image_urls = excluded.image_urls"
)
COPY = f"COPY posts ({COLUMNS}) FROM STDIN"
GET = f"SELECT {COLUMNS} FROM posts WHERE id = %s"
# "Latest 50 posts of a user" as an app would write it, with the same (created_at, id) order.
LATEST = (f"SELECT {COLUMNS} FROM posts WHERE user_id = %s "
          "ORDER BY created_at DESC, id DESC LIMIT %s")


def pg_connect(url: str, schema: str, *, autocommit: bool = False) -> Any:
    """A plain psycopg connection with syncline's session settings."""
    return psycopg.connect(url, autocommit=autocommit,
                           options=f"-c timezone=UTC -c search_path={schema}")


def create_schema(url: str, schema: str) -> Any:
    """A new schema holding the posts table; returns a (non-autocommit) connection to it."""
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'CREATE SCHEMA "{schema}"')
    conn = pg_connect(url, schema)
    for stmt in DDL:
        conn.execute(stmt)
    conn.commit()
    return conn


def drop_schema(url: str, schema: str) -> None:
    with psycopg.connect(url, autocommit=True) as admin:
        admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def count_posts(url: str, schema: str) -> int:
    with psycopg.connect(url, autocommit=True) as admin:
        return int(admin.execute(f'SELECT count(*) FROM "{schema}".posts').fetchone()[0])


def to_params(p: Post) -> tuple[Any, ...]:
    urls = p.image_urls
    return (p.id, p.user_id, p.content, p.created_at, p.likes_count,
            None if urls is None else Jsonb(urls))


def from_row(r: Sequence[Any]) -> Post:
    """The hand-written constructor (psycopg already gives datetimes and parsed JSON)."""
    return Post(id=r[0], user_id=r[1], content=r[2], created_at=r[3], likes_count=r[4],
                image_urls=r[5])


def upsert_many(conn: Any, posts: Sequence[Post]) -> None:
    with conn.cursor() as cur:
        cur.executemany(UPSERT, [to_params(p) for p in posts])
    conn.commit()


def copy_many(conn: Any, posts: Sequence[Post]) -> None:
    """COPY straight into the (empty) table: the reference for bulk loading."""
    with conn.cursor() as cur, cur.copy(COPY) as copy:
        for p in posts:
            copy.write_row(to_params(p))
    conn.commit()


def upsert(conn: Any, post: Post) -> None:
    conn.execute(UPSERT, to_params(post))
    conn.commit()


def get(conn: Any, key: str) -> Post | None:
    row = conn.execute(GET, (key,), prepare=True).fetchone()
    return None if row is None else from_row(row)


def get_in_tx(conn: Any, key: str) -> Post | None:
    """``get`` on a non-autocommit connection, committing after every read."""
    row = conn.execute(GET, (key,), prepare=True).fetchone()
    conn.commit()
    return None if row is None else from_row(row)


def latest(conn: Any, user_id: str, limit: int = 50, sql: str = LATEST) -> list[Post]:
    params = (user_id, limit) if sql is LATEST else (user_id, limit, 0)
    return [from_row(r) for r in conn.execute(sql, params).fetchall()]


def open_store(url: str, schema: str) -> syncline.Store:
    return syncline.open(f"{url}?schema={schema}", entities=[Post])


def syncline_latest_sql(store: syncline.Store) -> str:
    """The exact SQL syncline runs for ``find(user_id == u, order_by=-created_at, limit=50)``."""
    repo = store.repository(Post)
    query = repo.query(F.user_id == "u", F.created_at.desc(), 50, 0)
    sql: str = store.backend.sql.select(repo.table, query)[0]  # type: ignore[attr-defined]
    return sql


# -- fixtures ---------------------------------------------------------------------------------

def start_database() -> tuple[str, Callable[[], None]]:
    """A new database on SYNCLINE_TEST_POSTGRES_URL's server or a throwaway one; (url, stop)."""
    from sqlalchemy.engine import make_url
    from sqlalchemy_utils import create_database, drop_database

    from syncline.testing.postgres import start_postgres

    given = os.environ.get("SYNCLINE_TEST_POSTGRES_URL")
    server = None if given else start_postgres()
    base_url = given or server.url  # type: ignore[union-attr]
    url = make_url(base_url).set(database=f"syncline_bench_{os.getpid()}")
    sa_url = url.set(drivername="postgresql+psycopg")
    create_database(sa_url)

    def stop() -> None:
        if server is not None:
            server.stop()  # its data directory goes with it
        else:
            drop_database(sa_url)

    return url.render_as_string(hide_password=False), stop


@pytest.fixture(scope="module")
def pg_bench_url() -> Iterator[str]:
    from syncline.testing.postgres import PostgresUnavailable

    try:
        url, stop = start_database()
    except PostgresUnavailable as exc:
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    try:
        yield url
    finally:
        stop()


class Reads:
    """Two 100k-post schemas: one written through syncline, one by COPY on plain psycopg."""

    def __init__(self, url: str, posts: Sequence[Post]) -> None:
        self.url = url
        self.store = open_store(url, "reads_s")
        self.store.repository(Post).upsert_many(posts)
        create_schema(url, "reads_b").close()
        with pg_connect(url, "reads_b") as conn:
            copy_many(conn, posts)
        with psycopg.connect(url, autocommit=True) as admin:
            admin.execute("VACUUM ANALYZE reads_s.posts")
            admin.execute("VACUUM ANALYZE reads_b.posts")
        self.conn = pg_connect(url, "reads_b", autocommit=True)
        self.tx_conn = pg_connect(url, "reads_b")
        self.syncline_sql = syncline_latest_sql(self.store)

    def close(self) -> None:
        self.store.close()
        self.conn.close()
        self.tx_conn.close()


@pytest.fixture(scope="module")
def pg_reads(pg_bench_url: str, posts: list[Post]) -> Iterator[Reads]:
    reads = Reads(pg_bench_url, posts)
    try:
        yield reads
    finally:
        reads.close()


# -- sanity -----------------------------------------------------------------------------------

def _table_shape(conn: Any, schema: str) -> tuple[Any, ...]:
    cols = conn.execute(
        "SELECT column_name, data_type, collation_name, is_nullable "
        "FROM information_schema.columns WHERE table_schema = %s AND table_name = 'posts' "
        "ORDER BY ordinal_position", (schema,)).fetchall()
    indexes = conn.execute(
        "SELECT replace(indexdef, %s, '') FROM pg_indexes "
        "WHERE schemaname = %s AND tablename = 'posts' ORDER BY indexname",
        (f"{schema}.", schema)).fetchall()
    return tuple(cols), tuple(indexes)


def test_pg_sides_have_the_same_tables(pg_reads: Reads) -> None:
    with psycopg.connect(pg_reads.url, autocommit=True) as admin:
        assert _table_shape(admin, "reads_s") == _table_shape(admin, "reads_b")


def test_pg_sides_return_the_same_posts(pg_reads: Reads, sample_ids: list[str],
                                        sample_users: list[str]) -> None:
    """Not timed: both sides hold and return the same data."""
    repo = pg_reads.store.repository(Post)
    conn = pg_reads.conn
    assert [repo.get(k) for k in sample_ids[:50]] == [get(conn, k) for k in sample_ids[:50]]
    for user in sample_users[:10]:
        want = repo.find(F.user_id == user, order_by=F.created_at.desc(), limit=50)
        assert want == latest(conn, user)
        assert want == latest(conn, user, sql=pg_reads.syncline_sql)
    assert repo.count() == count_posts(pg_reads.url, "reads_b") == N_POSTS


# -- P1: batch upsert -------------------------------------------------------------------------

_schemas = itertools.count()


@pytest.mark.parametrize("side", ["syncline", "baseline", "ref-psycopg-copy"])
def test_pg_batch_upsert(benchmark: Any, side: str, pg_bench_url: str,
                         posts: list[Post]) -> None:
    """100k posts upserted in one transaction into an empty table (a new schema each round;
    creating it and connecting are not timed). ``baseline``: psycopg ``executemany`` of the
    upsert (pipelined); ``ref-psycopg-copy``: COPY straight into the table, no upsert."""
    benchmark.group = GROUP_PG_BATCH
    url = pg_bench_url
    counts: list[int] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        schema = f"batch{next(_schemas)}"
        if side == "syncline":
            return (open_store(url, schema), schema), {}
        return (create_schema(url, schema), schema), {}

    def teardown(db: Any, schema: str) -> None:
        db.close()
        counts.append(count_posts(url, schema))
        drop_schema(url, schema)

    if side == "syncline":
        def run(store: syncline.Store, _schema: str) -> None:
            store.repository(Post).upsert_many(posts)
    elif side == "baseline":
        def run(conn: Any, _schema: str) -> None:
            upsert_many(conn, posts)
    else:
        def run(conn: Any, _schema: str) -> None:
            copy_many(conn, posts)

    benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=BATCH_ROUNDS)
    assert counts == [len(posts)] * BATCH_ROUNDS


# -- P2: single-record commits ----------------------------------------------------------------

@pytest.mark.parametrize("side", ["syncline", "baseline"])
def test_pg_single_upserts(benchmark: Any, side: str, pg_bench_url: str,
                           posts: list[Post]) -> None:
    """200 upserts of new posts per round, each its own transaction."""
    benchmark.group = GROUP_PG_SINGLE
    url = pg_bench_url
    schema = f"single{next(_schemas)}"
    db = open_store(url, schema) if side == "syncline" else create_schema(url, schema)
    batches = (posts[i:i + SINGLE_BATCH] for i in itertools.count(0, SINGLE_BATCH))

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return (next(batches),), {}

    if side == "syncline":
        one = db.repository(Post).upsert

        def run(batch: list[Post]) -> None:
            for post in batch:
                one(post)
    else:
        def run(batch: list[Post]) -> None:
            for post in batch:
                upsert(db, post)

    try:
        benchmark.pedantic(run, setup=setup, rounds=SINGLE_ROUNDS, warmup_rounds=2)
    finally:
        db.close()
    assert count_posts(url, schema) == SINGLE_BATCH * (SINGLE_ROUNDS + 2)
    drop_schema(url, schema)


# -- P3, P4: reads ----------------------------------------------------------------------------

@pytest.mark.parametrize("side", ["syncline", "baseline", "ref-psycopg-tx-per-call"])
def test_pg_get_by_id(benchmark: Any, side: str, pg_reads: Reads,
                      sample_ids: list[str]) -> None:
    """1000 random ids per round, each returned as a Post. ``baseline``: a prepared
    ``SELECT ... WHERE id = %s`` on an autocommit connection."""
    benchmark.group = GROUP_PG_GET
    if side == "syncline":
        one = pg_reads.store.repository(Post).get

        def run() -> list[Any]:
            return [one(k) for k in sample_ids]
    else:
        conn = pg_reads.conn if side == "baseline" else pg_reads.tx_conn
        fetch = get if side == "baseline" else get_in_tx

        def run() -> list[Any]:
            return [fetch(conn, k) for k in sample_ids]

    found = benchmark.pedantic(run, rounds=READ_ROUNDS, warmup_rounds=1)
    assert len(found) == len(sample_ids) and all(found)


@pytest.mark.parametrize("side", ["syncline", "baseline", "ref-psycopg-with-syncline-sql"])
def test_pg_latest_posts_of_user(benchmark: Any, side: str, pg_reads: Reads,
                                 sample_users: list[str]) -> None:
    """The 50 newest posts of each of 100 users. ``ref-psycopg-with-syncline-sql`` runs
    syncline's exact SQL (casts, ``NULLS LAST``, ``LIMIT``/``OFFSET`` parameters) by hand."""
    benchmark.group = GROUP_PG_LATEST
    if side == "syncline":
        find = pg_reads.store.repository(Post).find

        def run() -> list[Any]:
            return [find(F.user_id == u, order_by=F.created_at.desc(), limit=50)
                    for u in sample_users]
    else:
        sql = LATEST if side == "baseline" else pg_reads.syncline_sql
        conn = pg_reads.conn

        def run() -> list[Any]:
            return [latest(conn, u, 50, sql) for u in sample_users]

    found = benchmark.pedantic(run, rounds=READ_ROUNDS, warmup_rounds=1)
    assert all(len(page) == 50 for page in found)


# -- interleaved second opinion ---------------------------------------------------------------

def _compare(group: str, sides: dict[str, Callable[[], float]], rounds: int) -> None:
    times: dict[str, list[float]] = {name: [] for name in sides}
    for _ in range(rounds):
        for name, once in sides.items():
            times[name].append(once())
    base_min = min(times["baseline"])
    base_median = statistics.median(times["baseline"])
    for name, got in times.items():
        if name == "baseline":
            continue
        target = PG_TARGETS.get(group) if name == "syncline" else None
        fastest = min(got) / base_min
        status = "" if target is None else ("met" if fastest <= target else "NOT MET")
        print(f"{group:46s} {name:30s} min {min(got) * 1e3:8.1f} / {base_min * 1e3:8.1f} ms  "
              f"ratio min {fastest:4.2f}x median "
              f"{statistics.median(got) / base_median:4.2f}x  "
              f"target {'-' if target is None else target}  {status}", flush=True)


def main(scale: int = 1) -> None:
    posts = make_posts()
    rng = random.Random(SEED + 1)
    ids = [f"p{i:06d}" for i in rng.sample(range(N_POSTS), 1000)]
    users = [f"u{u:04d}" for u in random.Random(SEED + 2).sample(range(N_USERS), 100)]
    url, stop = start_database()
    try:
        def batch(side: str) -> Callable[[], float]:
            def once() -> float:
                schema = f"batch{next(_schemas)}"
                db: Any = (open_store(url, schema) if side == "syncline"
                           else create_schema(url, schema))
                start = time.perf_counter()
                if side == "syncline":
                    db.repository(Post).upsert_many(posts)
                elif side == "baseline":
                    upsert_many(db, posts)
                else:
                    copy_many(db, posts)
                took = time.perf_counter() - start
                db.close()
                drop_schema(url, schema)
                return took
            return once

        _compare(GROUP_PG_BATCH, {s: batch(s) for s in
                                  ("syncline", "baseline", "ref-psycopg-copy")}, 2 * scale)

        store, conn = open_store(url, "single_s"), create_schema(url, "single_b")
        batches = (posts[i:i + SINGLE_BATCH] for i in itertools.count(0, SINGLE_BATCH))
        one = store.repository(Post).upsert

        def single(write: Callable[[Post], Any]) -> Callable[[], float]:
            def once() -> float:
                chunk = next(batches)
                start = time.perf_counter()
                for p in chunk:
                    write(p)
                return time.perf_counter() - start
            return once

        _compare(GROUP_PG_SINGLE, {"syncline": single(one),
                                   "baseline": single(lambda p: upsert(conn, p))}, 15 * scale)
        store.close()
        conn.close()

        reads = Reads(url, posts)
        repo = reads.store.repository(Post)

        def timed(work: Callable[[], Any]) -> Callable[[], float]:
            def once() -> float:
                start = time.perf_counter()
                work()
                return time.perf_counter() - start
            return once

        _compare(GROUP_PG_GET, {
            "syncline": timed(lambda: [repo.get(k) for k in ids]),
            "baseline": timed(lambda: [get(reads.conn, k) for k in ids]),
            "ref-psycopg-tx-per-call": timed(lambda: [get_in_tx(reads.tx_conn, k) for k in ids]),
        }, 15 * scale)
        _compare(GROUP_PG_LATEST, {
            "syncline": timed(lambda: [
                repo.find(F.user_id == u, order_by=F.created_at.desc(), limit=50)
                for u in users]),
            "baseline": timed(lambda: [latest(reads.conn, u) for u in users]),
            "ref-psycopg-with-syncline-sql": timed(
                lambda: [latest(reads.conn, u, 50, reads.syncline_sql) for u in users]),
        }, 15 * scale)
        reads.close()
    finally:
        stop()


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 1)
