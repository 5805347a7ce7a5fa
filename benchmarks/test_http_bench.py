"""Cases H1-H2: sync over HTTP on loopback, split into HTTP, storage and syncline's own share.

H1. Push throughput at batch 1, 50 and 500 (server store: a SQLite file). One round = one
    ``HTTPTransport.push(batch)`` of fresh create mutations (``http_load.HttpPost``, the seed's
    post shape) against a ``LiveServer`` (uvicorn in a thread). Beside it, in the same group:

    * ``ref-http`` (a): a bare Starlette app on the same uvicorn settings (and the same
      ``GZipMiddleware``) with one POST endpoint that parses the same JSON body (gunzip +
      ``json.loads``) and answers a same-sized JSON body (one result per mutation), called
      through the same httpx client settings (the transport's own ``httpx.Client``) with the
      transport's encoding (compact ``json.dumps``, gzip from 1 KiB). The request dicts are
      built beforehand (untimed): turning ``Mutation`` objects into wire dicts is syncline's.
    * ``ref-storage`` (b): plain ``sqlite3`` doing the server-side writes of the batch in one
      transaction: per mutation, bump the counter row (``RETURNING``), upsert the entity row,
      insert the change-log row, upsert the server record, insert the mutation result; the same
      tables (syncline's DDL), pragmas and row text (asserted by ``test_plain_push_*``).
    * ``ref-storage-same-sql``: (b) plus the statements syncline also runs per mutation (look up
      the mutation id, a savepoint, read the server record and the entity row): syncline's SQL
      by hand, to tell extra SQL from Python overhead.
    * ``baseline``: a hand-written server: the bare app's endpoint doing (b)'s writes, so
      ``syncline / baseline`` is the whole-request ratio.

    syncline's own share = total - (a) - (b), per mutation, from the minimums (and medians) of
    the rounds; the target is <= 30 % of the total at batch 500.

H2. Pull throughput: a server prefilled (untimed) with ``N_PULL`` changes, pulled into a fresh
    SQLite client file by ``store.sync_engine.pull()`` (``page_size`` 1000). Beside it: ``ref-http``
    (a) the bare app answering the same pages' JSON (captured from the server beforehand);
    ``ref-storage`` (b) plain ``sqlite3`` reading the same pages from the server's file and
    applying them to a fresh client file (``executemany`` of the entity rows and of the record
    states, cursor and epoch, one transaction per page); ``ref-storage-same-sql`` the statements
    syncline's client runs per page, by hand; ``baseline`` the bare app reading pages with
    plain SQL and the client applying them with plain SQL.

H3 (concurrent clients on several server processes) is in ``test_scale_bench.py``.

The split tables are printed at the end of the run (``HTTP sync: split``). Servers listen on
127.0.0.1 on free ports and are stopped at the end; data lives under pytest's tmp paths.
"""

from __future__ import annotations

import datetime as dt
import gzip
import hashlib
import itertools
import json
import os
import shutil
import sqlite3
import threading
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import bench_server
import pytest
import uvicorn
from http_load import ENTITY, HttpPost, create_mutations, make_http_posts
from starlette.applications import Starlette
from starlette.middleware import Middleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import syncline
from syncline.core.spi.transport import to_wire
from syncline.plugins.http import GZIP_FROM, HTTPTransport
from syncline.server.app import ServerConfig, server_store_options
from syncline.server.engine import SyncServer
from syncline.server.store import open_server_store
from syncline.testing.server import LiveServer, free_port

HERE = Path(__file__).parent
TOKEN, PRINCIPAL = "t", "team"

PUSH_BATCHES = [1, 50, 500]
PUSH_ROUNDS = {1: 60, 50: 20, 500: 6}
PUSH_SIDES = ["syncline", "baseline", "ref-http", "ref-storage", "ref-storage-same-sql"]
GROUP_PUSH = {b: f"H1 http push: batch {b} (sqlite server)" for b in PUSH_BATCHES}
PG_PUSH_BATCHES = [50, 500]
PG_PUSH_ROUNDS = {50: 8, 500: 3}
PG_PUSH_SIDES = ["syncline", "ref-storage", "ref-storage-same-sql", "ref-storage-batched"]
GROUP_PG_PUSH = {b: f"H1 http push: batch {b} (postgresql server)" for b in PG_PUSH_BATCHES}

N_PULL = 20_000
PAGE_SIZE = 1_000
PULL_ROUNDS = {"syncline": 2, "baseline": 3, "ref-http": 3, "ref-storage": 3,
               "ref-storage-same-sql": 3}
PULL_SIDES = list(PULL_ROUNDS)
GROUP_PULL = f"H2 http pull: {N_PULL // 1000}k changes into sqlite"


# -- hand-written SQL (syncline's tables; see the module docstring) ----------------------------

TEXT_TIME = "%Y-%m-%dT%H:%M:%S.%f+00:00"
INCREMENT = ('INSERT INTO _syncline_server_meta ("key", value) VALUES (\'seq\', 1) '
             'ON CONFLICT ("key") DO UPDATE SET value = value + 1 RETURNING value')
UPSERT_POST = (
    "INSERT INTO http_posts (id, user_id, content, created_at, likes_count, image_urls) "
    "VALUES (?, ?, ?, ?, ?, ?) ON CONFLICT (id) DO UPDATE SET user_id = excluded.user_id, "
    "content = excluded.content, created_at = excluded.created_at, "
    "likes_count = excluded.likes_count, image_urls = excluded.image_urls")
INSERT_CHANGE = ("INSERT INTO _syncline_changes (seq, owner, entity, record_id, op, updated_at, "
                 "payload, mutation_id) VALUES (?, ?, ?, ?, ?, ?, ?, ?)")
UPSERT_RECORD = (
    'INSERT INTO _syncline_server_records ("key", owner, entity, record_id, version, '
    "updated_at, deleted) VALUES (?, ?, ?, ?, ?, ?, ?) ON CONFLICT (\"key\") DO UPDATE SET "
    "owner = excluded.owner, entity = excluded.entity, record_id = excluded.record_id, "
    "version = excluded.version, updated_at = excluded.updated_at, deleted = excluded.deleted")
INSERT_APPLIED = 'INSERT INTO _syncline_mutations ("key", fingerprint, result) VALUES (?, ?, ?)'
# what syncline reads besides (ref-storage-same-sql)
GET_APPLIED = 'SELECT "key", fingerprint, result FROM _syncline_mutations WHERE "key" = ?'
GET_RECORD = ('SELECT "key", owner, entity, record_id, version, updated_at, deleted '
              'FROM _syncline_server_records WHERE "key" = ?')
GET_POST = ("SELECT id, user_id, content, created_at, likes_count, image_urls FROM http_posts "
            "WHERE id = ?")
# pull: the server's page, the client's writes
READ_PAGE = ("SELECT seq, entity, record_id, op, updated_at, payload, mutation_id "
             "FROM _syncline_changes WHERE owner IN (?, '*') AND seq > ? AND entity IN (?) "
             "ORDER BY seq LIMIT ?")
UPSERT_STATE = (
    'INSERT INTO _syncline_records ("key", entity, record_id, status, error, retry_count, '
    "local_id, server_version, local_modified_at, deleted, conflict_record, conflict_version) "
    "VALUES (?, ?, ?, 'synced', NULL, 0, NULL, ?, NULL, 0, NULL, NULL) ON CONFLICT (\"key\") "
    "DO UPDATE SET entity = excluded.entity, record_id = excluded.record_id, "
    "status = excluded.status, error = excluded.error, retry_count = excluded.retry_count, "
    "local_id = excluded.local_id, server_version = excluded.server_version, "
    "local_modified_at = excluded.local_modified_at, deleted = excluded.deleted, "
    "conflict_record = excluded.conflict_record, conflict_version = excluded.conflict_version")
UPSERT_META = ('INSERT INTO _syncline_sync_meta ("key", value) VALUES (?, ?) '
               'ON CONFLICT ("key") DO UPDATE SET value = excluded.value')
GET_STATE = ('SELECT "key", entity, record_id, status, error, retry_count, local_id, '
             "server_version, local_modified_at, deleted, conflict_record, conflict_version "
             'FROM _syncline_records WHERE "key" = ?')


def _json(value: Any) -> str:
    return json.dumps(value, sort_keys=True, separators=(",", ":"))


def _time_text(value: str) -> str:
    return dt.datetime.fromisoformat(value).astimezone(dt.UTC).strftime(TEXT_TIME)


def _post_row(p: dict[str, Any]) -> tuple[Any, ...]:
    urls = p.get("image_urls")
    return (p["id"], p["user_id"], p["content"], _time_text(p["created_at"]), p["likes_count"],
            None if urls is None else _json(urls))


def plain_connect(path: Path) -> sqlite3.Connection:
    """syncline's SQLite settings: autocommit mode (explicit BEGIN), WAL, synchronous=NORMAL."""
    conn = sqlite3.connect(path, isolation_level=None, check_same_thread=False, timeout=30)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    return conn


class PlainServerStore:
    """The server-side writes of a push by hand, one transaction per batch."""

    def __init__(self, path: Path, *, same_sql: bool = False) -> None:
        self.conn = plain_connect(path)
        self.same_sql = same_sql

    def push(self, mutations: list[dict[str, Any]], owner: str) -> list[dict[str, Any]]:
        conn, same_sql = self.conn, self.same_sql
        now = dt.datetime.now(dt.UTC).strftime(TEXT_TIME)
        results = []
        conn.execute("BEGIN IMMEDIATE")
        try:
            for m in mutations:
                seq = conn.execute(INCREMENT).fetchone()[0]
                key = f"{owner}/{m['id']}"
                rid = m["record_id"]
                record_key = f"{owner}/{ENTITY}/{rid}"
                if same_sql:
                    conn.execute(GET_APPLIED, (key,)).fetchone()
                    conn.execute("SAVEPOINT sp1")
                    conn.execute(GET_RECORD, (record_key,)).fetchone()
                    conn.execute(GET_POST, (rid,)).fetchone()
                payload = m["payload"]
                payload_text = _json(payload)
                conn.execute(UPSERT_POST, _post_row(payload))
                conn.execute(INSERT_CHANGE, (seq, owner, ENTITY, rid, "upsert", now,
                                             payload_text, m["id"]))
                conn.execute(UPSERT_RECORD, (record_key, owner, ENTITY, rid, seq, now, 0))
                if same_sql:
                    conn.execute("RELEASE sp1")
                result = {"id": m["id"], "reason": None, "record": None, "retry_after": None,
                          "server_id": rid, "status": "applied", "updated_at": None,
                          "version": seq}
                body = f"{m['entity']}|{m['action']}|{rid}|{payload_text}"
                fingerprint = hashlib.sha256(body.encode()).hexdigest()
                conn.execute(INSERT_APPLIED, (key, fingerprint, _json(result)))
                results.append(result)
            conn.execute("COMMIT")
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        return results

    def close(self) -> None:
        self.conn.close()


PG_INCREMENT = ("INSERT INTO _syncline_server_meta (key, value) VALUES ('seq', 1) "
                "ON CONFLICT (key) DO UPDATE SET value = _syncline_server_meta.value + 1 "
                "RETURNING value")
PG_ADVANCE = "UPDATE _syncline_server_meta SET value = value + %s WHERE key = 'seq' RETURNING value"
PG_GET_APPLIED_ANY = "SELECT key FROM _syncline_mutations WHERE key = ANY(%s)"
PG_GET_RECORDS_ANY = ("SELECT key, version, deleted FROM _syncline_server_records "
                      "WHERE key = ANY(%s)")


def _pg(sql: str) -> str:
    return sql.replace("?", "%s")


class PlainPostgresStore:
    """The server-side writes of a push on plain psycopg 3, one transaction per batch.

    ``mode``: ``plain`` (one statement per write, like ``PlainServerStore``), ``same-sql``
    (plus syncline's reads and savepoint per mutation), ``batched`` (the counter moved once
    per batch, one read of known mutation ids and records, ``executemany`` per table)."""

    def __init__(self, url: str, schema: str, mode: str) -> None:
        import psycopg

        self.conn = psycopg.connect(url, options=f"-c timezone=UTC -c search_path={schema}")
        self.mode = mode

    def push(self, mutations: list[dict[str, Any]], owner: str) -> list[dict[str, Any]]:
        from psycopg.types.json import Jsonb

        conn, mode = self.conn, self.mode
        now = dt.datetime.now(dt.UTC)
        results, posts, changes, records, applied = [], [], [], [], []
        try:
            if mode == "batched":
                top = conn.execute(PG_ADVANCE, (len(mutations),)).fetchone()[0]
                seqs = range(top - len(mutations) + 1, top + 1)
                keys = [f"{owner}/{m['id']}" for m in mutations]
                conn.execute(PG_GET_APPLIED_ANY, (keys,)).fetchall()
                conn.execute(PG_GET_RECORDS_ANY, (
                    [f"{owner}/{ENTITY}/{m['record_id']}" for m in mutations],)).fetchall()
            for i, m in enumerate(mutations):
                key = f"{owner}/{m['id']}"
                rid = m["record_id"]
                record_key = f"{owner}/{ENTITY}/{rid}"
                if mode == "batched":
                    seq = seqs[i]
                else:
                    seq = conn.execute(PG_INCREMENT, prepare=True).fetchone()[0]
                if mode == "same-sql":
                    conn.execute(_pg(GET_APPLIED), (key,), prepare=True).fetchone()
                    conn.execute("SAVEPOINT sp1")
                    conn.execute(_pg(GET_RECORD), (record_key,), prepare=True).fetchone()
                    conn.execute(_pg(GET_POST), (rid,), prepare=True).fetchone()
                p = m["payload"]
                urls = p.get("image_urls")
                post = (rid, p["user_id"], p["content"], dt.datetime.fromisoformat(
                    p["created_at"]), p["likes_count"], None if urls is None else Jsonb(urls))
                change = (seq, owner, ENTITY, rid, "upsert", now, Jsonb(p), m["id"])
                record = (record_key, owner, ENTITY, rid, seq, now, False)
                result = {"id": m["id"], "reason": None, "record": None, "retry_after": None,
                          "server_id": rid, "status": "applied", "updated_at": None,
                          "version": seq}
                body = f"{m['entity']}|{m['action']}|{rid}|{_json(p)}"
                done = (key, hashlib.sha256(body.encode()).hexdigest(), Jsonb(result))
                if mode == "batched":
                    posts.append(post)
                    changes.append(change)
                    records.append(record)
                    applied.append(done)
                else:
                    conn.execute(_pg(UPSERT_POST), post, prepare=True)
                    conn.execute(_pg(INSERT_CHANGE), change, prepare=True)
                    conn.execute(_pg(UPSERT_RECORD), record, prepare=True)
                    if mode == "same-sql":
                        conn.execute("RELEASE sp1")
                    conn.execute(_pg(INSERT_APPLIED), done, prepare=True)
                results.append(result)
            if mode == "batched":
                with conn.cursor() as cur:
                    cur.executemany(_pg(UPSERT_POST), posts)
                    cur.executemany(_pg(INSERT_CHANGE), changes)
                    cur.executemany(_pg(UPSERT_RECORD), records)
                    cur.executemany(_pg(INSERT_APPLIED), applied)
            conn.commit()
        except BaseException:
            conn.rollback()
            raise
        return results

    def close(self) -> None:
        self.conn.close()


def read_page(conn: sqlite3.Connection, owner: str, after: int,
              limit: int = PAGE_SIZE) -> tuple[list[dict[str, Any]], int, bool]:
    """The server's side of a pull by hand: the page's changes, the last seq, more."""
    rows = conn.execute(READ_PAGE, (owner, after, ENTITY, limit + 1)).fetchall()
    more = len(rows) > limit
    rows = rows[:limit]
    changes = [{"entity": r[1], "record_id": r[2], "op": r[3], "version": r[0],
                "payload": None if r[5] is None else json.loads(r[5]), "updated_at": r[4],
                "mutation_id": r[6]} for r in rows]
    return changes, (rows[-1][0] if rows else after), more


def apply_page(conn: sqlite3.Connection, page: dict[str, Any]) -> None:
    """The client's side of a pull by hand: one transaction per page."""
    posts, states = [], []
    for change in page["changes"]:
        assert change["op"] == "upsert"
        rid = change["record_id"]
        posts.append(_post_row(change["payload"]))
        states.append((f"{ENTITY}/{rid}", ENTITY, rid, change["version"]))
    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.executemany(UPSERT_POST, posts)
        conn.executemany(UPSERT_STATE, states)
        conn.executemany(UPSERT_META, [("cursor", page["cursor"]), ("epoch", page["epoch"])])
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


def apply_page_same_sql(conn: sqlite3.Connection, page: dict[str, Any]) -> None:
    """``apply_page`` with the statements syncline's client runs per page (as of ``2787b8a``:
    the page's record states, queued entries and own mutations read with ``IN`` lists, the
    entity rows in one ``executemany``, the states and the cursor each in a savepoint)."""
    changes = page["changes"]
    rids = [c["record_id"] for c in changes]
    keys = [f"{ENTITY}/{r}" for r in rids]
    mids = [c["mutation_id"] for c in changes if c["mutation_id"]]

    def marks(values: list[Any]) -> str:
        return ", ".join("?" * len(values))

    conn.execute("BEGIN IMMEDIATE")
    try:
        conn.execute(f'{GET_STATE.split(" WHERE ")[0]} WHERE "key" IN ({marks(keys)})',
                     keys).fetchall()
        conn.execute(f"SELECT * FROM _syncline_outbox WHERE record_id IN ({marks(rids)}) "
                     "AND state = 'pending' ORDER BY id", rids).fetchall()
        conn.execute(f"SELECT * FROM _syncline_outbox WHERE group_id IN ({marks(mids)}) "
                     "ORDER BY id", mids).fetchall()
        conn.executemany(UPSERT_POST, [_post_row(c["payload"]) for c in changes])
        conn.execute("SAVEPOINT sp1")
        conn.executemany(UPSERT_STATE, [(f"{ENTITY}/{c['record_id']}", ENTITY, c["record_id"],
                                         c["version"]) for c in changes])
        conn.execute("RELEASE sp1")
        for item in (("cursor", page["cursor"]), ("epoch", page["epoch"])):
            conn.execute("SAVEPOINT sp1")
            conn.execute(UPSERT_META, item)
            conn.execute("RELEASE sp1")
        conn.execute("COMMIT")
    except BaseException:
        conn.execute("ROLLBACK")
        raise


# -- the bare app ------------------------------------------------------------------------------

class BareApp:
    """A bare Starlette app: ``/echo/v1/push`` and ``/echo/v1/pull`` do the JSON round trip
    only; ``/hand/v1/push`` and ``/hand/v1/pull`` are a hand-written server on plain sqlite3."""

    def __init__(self) -> None:
        self.seq = itertools.count(1_000_000)
        self.pages: dict[str | None, dict[str, Any]] = {}
        self.hand_push: PlainServerStore | None = None
        self.hand_pull: sqlite3.Connection | None = None
        self.epoch = "hand"
        self.app = Starlette(
            routes=[Route("/echo/v1/push", self.echo_push, methods=["POST"]),
                    Route("/echo/v1/pull", self.echo_pull, methods=["POST"]),
                    Route("/hand/v1/push", self.hand_push_endpoint, methods=["POST"]),
                    Route("/hand/v1/pull", self.hand_pull_endpoint, methods=["POST"])],
            middleware=[Middleware(GZipMiddleware, minimum_size=1024)])

    @staticmethod
    async def body(request: Request) -> Any:
        raw = await request.body()
        if request.headers.get("content-encoding") == "gzip":
            raw = gzip.decompress(raw)
        return json.loads(raw)

    @staticmethod
    def principal(request: Request) -> str:
        if request.headers.get("authorization") != f"Bearer {TOKEN}":
            raise PermissionError("unknown token")
        return PRINCIPAL

    @staticmethod
    def now() -> str:
        return dt.datetime.now(dt.UTC).isoformat()

    async def echo_push(self, request: Request) -> Response:
        body = await self.body(request)
        results = [{"id": m["id"], "reason": None, "record": None, "retry_after": None,
                    "server_id": m["record_id"], "status": "applied", "updated_at": None,
                    "version": next(self.seq)} for m in body["mutations"]]
        return JSONResponse({"results": results, "server_time": self.now()})

    async def echo_pull(self, request: Request) -> Response:
        body = await self.body(request)
        return JSONResponse(self.pages[body["cursor"]])

    async def hand_push_endpoint(self, request: Request) -> Response:
        owner = self.principal(request)
        body = await self.body(request)
        assert self.hand_push is not None
        results = self.hand_push.push(body["mutations"], owner)
        return JSONResponse({"results": results, "server_time": self.now()})

    async def hand_pull_endpoint(self, request: Request) -> Response:
        owner = self.principal(request)
        body = await self.body(request)
        assert self.hand_pull is not None
        after = int(body["cursor"] or 0)
        changes, last, more = read_page(self.hand_pull, owner, after, int(body["limit"]))
        return JSONResponse({"changes": changes, "cursor": str(last), "more": more,
                             "epoch": self.epoch, "server_time": self.now()})


class BareServer:
    """uvicorn in a thread with ``LiveServer``'s settings."""

    def __init__(self, app: Any) -> None:
        self.port = free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self._server = uvicorn.Server(uvicorn.Config(
            app, host="127.0.0.1", port=self.port, log_level="warning", lifespan="on",
            access_log=False))
        self._thread = threading.Thread(target=self._server.run, name="bare-server",
                                        daemon=True)

    def __enter__(self) -> BareServer:
        self._thread.start()
        deadline = time.monotonic() + 20
        while not self._server.started:
            if not self._thread.is_alive() or time.monotonic() > deadline:
                raise RuntimeError("the bare server did not start")
            time.sleep(0.01)
        return self

    def __exit__(self, *exc: object) -> None:
        self._server.should_exit = True
        self._thread.join(20)


def post_json(client: Any, path: str, body: dict[str, Any]) -> Any:
    """What ``HTTPTransport._post`` does on the wire: compact JSON, gzip from 1 KiB."""
    data = json.dumps(body, separators=(",", ":")).encode()
    headers = {}
    if len(data) >= GZIP_FROM:
        data = gzip.compress(data, compresslevel=5)
        headers["Content-Encoding"] = "gzip"
    response = client.post(path, content=data, headers=headers)
    response.raise_for_status()
    return response.json()


# -- the split report ---------------------------------------------------------------------------

#: (case, side) -> (min, median) seconds per unit (mutation or change)
RESULTS: dict[tuple[str, str], tuple[float, float]] = {}


def _record(benchmark: Any, case: str, side: str, units: int) -> None:
    stats = benchmark.stats.stats
    per_min, per_median = stats.min / units, stats.median / units
    RESULTS[(case, side)] = (per_min, per_median)
    benchmark.extra_info["us_per_unit_min"] = round(per_min * 1e6, 1)
    benchmark.extra_info["us_per_unit_median"] = round(per_median * 1e6, 1)
    benchmark.extra_info["units_per_s_best"] = round(1 / per_min)


def split_rows() -> list[tuple[str, ...]]:
    rows = []
    cases = [(f"push batch {b}", f"push batch {b}") for b in PUSH_BATCHES]
    cases += [(f"push batch {b} (postgresql)", f"push batch {b}") for b in PG_PUSH_BATCHES]
    cases += [("pull", "pull")]

    def us(value: tuple[float, float] | None, i: int) -> str:
        return "-" if value is None else f"{value[i] * 1e6:.0f} us"

    for case, http_case in cases:
        got = {side: RESULTS.get((case, side)) for side in [*PUSH_SIDES, "ref-storage-batched"]}
        total, storage = got["syncline"], got["ref-storage"]
        http = RESULTS.get((http_case, "ref-http"))
        if total is None or http is None or storage is None:
            continue
        same, base = got["ref-storage-same-sql"], got["baseline"]
        for i, stat in enumerate(("min", "median")):
            own = total[i] - http[i] - storage[i]
            beyond = "-" if same is None else f"{(total[i] - http[i] - same[i]) / total[i]:.0%}"
            target = "<= 30%" if case.startswith("push batch 500") else "-"
            status = "-" if target == "-" else ("met" if own / total[i] <= 0.30 else "NOT MET")
            rows.append((case, stat, f"{total[i] * 1e6:.0f} us", f"{1 / total[i]:.0f}/s",
                         f"{http[i] * 1e6:.0f} us ({http[i] / total[i]:.0%})",
                         f"{storage[i] * 1e6:.0f} us ({storage[i] / total[i]:.0%})",
                         f"{own * 1e6:.0f} us ({own / total[i]:.0%})", us(same, i), beyond,
                         us(got["ref-storage-batched"], i),
                         "-" if base is None else f"{total[i] / base[i]:.2f}x", target, status))
    return rows


class _SplitReport:
    @pytest.hookimpl(trylast=True)
    def pytest_terminal_summary(self, terminalreporter: Any) -> None:
        rows = split_rows()
        if rows:
            header = ("case", "stat", "total/unit", "rate", "HTTP (a)", "storage (b)",
                      "syncline own", "same SQL (b')", "own beyond b'", "batched SQL",
                      "vs baseline", "target", "status")
            widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
            terminalreporter.section("HTTP sync: split (per mutation / change)", sep="-",
                                     bold=True)
            for row in [header, *rows]:
                terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(
                    row, widths, strict=True)))


@pytest.fixture(scope="module", autouse=True)
def _split_report(request: pytest.FixtureRequest) -> None:
    manager = request.config.pluginmanager
    if not manager.has_plugin("syncline-http-bench-split"):
        manager.register(_SplitReport(), "syncline-http-bench-split")


# -- fixtures -----------------------------------------------------------------------------------

def _syncline_server_file(path: Path) -> None:
    """An empty server database with syncline's tables and meta rows (closed again)."""
    store = open_server_store(f"sqlite:///{path}", [HttpPost],
                              options=server_store_options({}))
    SyncServer(store)
    store.close()


def _client_file(path: Path) -> None:
    store = syncline.open(f"sqlite:///{path}", entities=[HttpPost])
    store.close()


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".sync-lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


@attrs.define
class PushEnv:
    live: LiveServer
    transport: HTTPTransport
    bare: BareApp
    bare_client: Any
    plain: dict[str, PlainServerStore]
    wire: Any


@pytest.fixture(scope="module")
def push_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PushEnv]:
    folder = tmp_path_factory.mktemp("http-push")
    config = ServerConfig(store=f"sqlite:///{folder / 'server.db'}", tokens={TOKEN: PRINCIPAL})
    bare = BareApp()
    plain: dict[str, PlainServerStore] = {}
    for name in ("ref-storage", "ref-storage-same-sql", "baseline"):
        _syncline_server_file(folder / f"{name}.db")
        plain[name] = PlainServerStore(folder / f"{name}.db",
                                       same_sql=name == "ref-storage-same-sql")
    bare.hand_push = plain["baseline"]
    with LiveServer(config, [HttpPost]) as live, BareServer(bare.app) as bare_server:
        transport = HTTPTransport(live.url, {"token": TOKEN})
        bare_transport = HTTPTransport(bare_server.url, {"token": TOKEN})
        try:
            yield PushEnv(live, transport, bare, bare_transport.client, plain,
                          live.sync.store.wire)
        finally:
            transport.close()
            bare_transport.close()
            for store in plain.values():
                store.close()


@attrs.define
class PgPushEnv:
    live: LiveServer
    transport: HTTPTransport
    plain: dict[str, PlainPostgresStore]
    wire: Any


@pytest.fixture(scope="module")
def pg_push_env(syncline_postgres_url: str) -> Iterator[PgPushEnv]:
    pytest.importorskip("psycopg")
    import psycopg

    base = f"h1pg{os.getpid()}"
    schemas = {"syncline": base, "ref-storage": f"{base}_plain",
               "ref-storage-same-sql": f"{base}_same", "ref-storage-batched": f"{base}_batched"}
    plain: dict[str, PlainPostgresStore] = {}
    for side, schema in schemas.items():
        if side != "syncline":
            store = open_server_store(f"{syncline_postgres_url}?schema={schema}", [HttpPost],
                                      options=server_store_options({}))
            SyncServer(store)
            store.close()
            plain[side] = PlainPostgresStore(syncline_postgres_url, schema, {
                "ref-storage": "plain", "ref-storage-same-sql": "same-sql",
                "ref-storage-batched": "batched"}[side])
    config = ServerConfig(store=f"{syncline_postgres_url}?schema={base}",
                          tokens={TOKEN: PRINCIPAL})
    try:
        with LiveServer(config, [HttpPost]) as live:
            transport = HTTPTransport(live.url, {"token": TOKEN})
            try:
                yield PgPushEnv(live, transport, plain, live.sync.store.wire)
            finally:
                transport.close()
    finally:
        for store in plain.values():
            store.close()
        with psycopg.connect(syncline_postgres_url, autocommit=True) as admin:
            for schema in schemas.values():
                admin.execute(f'DROP SCHEMA IF EXISTS "{schema}" CASCADE')


def prefill(store: syncline.Store, server: SyncServer, objs: list[HttpPost],
            owner: str) -> None:
    """Write ``objs`` on the server as pushes of creates by ``owner`` would (mutation ids
    included); ``test_prefill_matches_push`` checks it against ``SyncServer.push``."""
    bench_server.prefill(store, server, HttpPost, objs, owner, mutation_ids=True)


@attrs.define
class PullEnv:
    live: LiveServer
    bare: BareApp
    bare_client: Any
    folder: Path
    server_file: Path
    client_template: Path


@pytest.fixture(scope="module")
def pull_env(tmp_path_factory: pytest.TempPathFactory) -> Iterator[PullEnv]:
    folder = tmp_path_factory.mktemp("http-pull")
    server_file = folder / "server.db"
    config = ServerConfig(store=f"sqlite:///{server_file}", tokens={TOKEN: PRINCIPAL})
    template = folder / "client-template.db"
    _client_file(template)
    bare = BareApp()
    with LiveServer(config, [HttpPost]) as live, BareServer(bare.app) as bare_server:
        prefill(live.sync.store, live.sync.server, make_http_posts(N_PULL, "p"), PRINCIPAL)
        # the pages syncline's server sends, for the bare app to answer (untimed)
        cursor = None
        while True:
            page = live.sync.server.pull(cursor, PAGE_SIZE, [ENTITY], PRINCIPAL)
            bare.pages[cursor] = to_wire(page)
            cursor = page.cursor
            if not page.more:
                break
        bare.hand_pull = plain_connect(server_file)
        bare.epoch = live.sync.server.epoch
        bare_transport = HTTPTransport(bare_server.url, {"token": TOKEN})
        try:
            yield PullEnv(live, bare, bare_transport.client, folder, server_file, template)
        finally:
            bare_transport.close()
            bare.hand_pull.close()


# -- sanity (not timed) -------------------------------------------------------------------------

def _rows(conn: sqlite3.Connection, sql: str) -> list[tuple[Any, ...]]:
    return conn.execute(sql).fetchall()


def test_plain_push_writes_what_syncline_writes(tmp_path: Path) -> None:
    """(b) leaves the same rows as ``SyncServer.push`` (bar times and fingerprints)."""
    ours, theirs = tmp_path / "syncline.db", tmp_path / "plain.db"
    store = open_server_store(f"sqlite:///{ours}", [HttpPost],
                              options=server_store_options({}))
    try:
        mutations = create_mutations(make_http_posts(7, "s"), store.wire)
        mutations[3] = attrs.evolve(mutations[3], payload={**mutations[3].payload,
                                                           "image_urls": None})
        response = SyncServer(store).push(mutations, PRINCIPAL)
    finally:
        store.close()
    _syncline_server_file(theirs)
    for same_sql in (False, True):
        plain = PlainServerStore(theirs, same_sql=same_sql)
        try:
            plain.conn.execute("DELETE FROM _syncline_mutations")
            plain.conn.execute("DELETE FROM _syncline_changes")
            plain.conn.execute("UPDATE _syncline_server_meta SET value = 0 WHERE key = 'seq'")
            results = plain.push([to_wire(m) for m in mutations], PRINCIPAL)
        finally:
            plain.close()
        assert results == [to_wire(r) for r in response.results]
        a, b = sqlite3.connect(ours), sqlite3.connect(theirs)
        try:
            for sql in ("SELECT * FROM http_posts ORDER BY id",
                        "SELECT seq, owner, entity, record_id, op, payload, mutation_id "
                        "FROM _syncline_changes ORDER BY seq",
                        'SELECT "key", owner, entity, record_id, version, deleted '
                        "FROM _syncline_server_records ORDER BY 1",
                        'SELECT "key", result FROM _syncline_mutations ORDER BY 1',
                        "SELECT key, value FROM _syncline_server_meta WHERE key = 'seq'"):
                assert _rows(a, sql) == _rows(b, sql), sql
        finally:
            a.close()
            b.close()


def test_prefill_matches_push(tmp_path: Path) -> None:
    """``prefill`` leaves the change log and records ``SyncServer.push`` leaves."""
    posts = make_http_posts(5, "q")
    folders = []
    for name in ("push", "prefill"):
        path = tmp_path / f"{name}.db"
        store = open_server_store(f"sqlite:///{path}", [HttpPost],
                                  options=server_store_options({}))
        server = SyncServer(store)
        if name == "push":
            mutations = create_mutations(posts, store.wire)
            server.push([attrs.evolve(m, id=f"m-{m.record_id}") for m in mutations],
                        PRINCIPAL)
        else:
            prefill(store, server, posts, PRINCIPAL)
        store.close()
        folders.append(sqlite3.connect(path))
    for sql in ("SELECT * FROM http_posts ORDER BY id",
                "SELECT seq, owner, entity, record_id, op, payload, mutation_id "
                "FROM _syncline_changes ORDER BY seq",
                'SELECT "key", owner, entity, record_id, version, deleted '
                "FROM _syncline_server_records ORDER BY 1",
                "SELECT key, value FROM _syncline_server_meta WHERE key = 'seq'"):
        assert _rows(folders[0], sql) == _rows(folders[1], sql), sql
    for conn in folders:
        conn.close()


def test_plain_pull_writes_what_syncline_writes(tmp_path: Path) -> None:
    """(b) and the same-SQL variant leave the client rows syncline's pull leaves."""
    server_file = tmp_path / "server.db"
    config = ServerConfig(store=f"sqlite:///{server_file}", tokens={TOKEN: PRINCIPAL})
    with LiveServer(config, [HttpPost]) as live:
        prefill(live.sync.store, live.sync.server, make_http_posts(30, "v"), PRINCIPAL)
        store = syncline.open(f"sqlite:///{tmp_path / 'syncline.db'}", entities=[HttpPost],
                              transport=live.url, transport_options={"token": TOKEN},
                              sync_options={"page_size": 7})
        try:
            assert store.sync_engine.pull().pulled == 30
        finally:
            store.close()
    template = tmp_path / "template.db"
    _client_file(template)
    for name, apply in (("plain", apply_page), ("same", apply_page_same_sql)):
        shutil.copyfile(template, tmp_path / f"{name}.db")
        conn, server = plain_connect(tmp_path / f"{name}.db"), plain_connect(server_file)
        after, more = 0, True
        while more:
            changes, after, more = read_page(server, PRINCIPAL, after, 7)
            apply(conn, {"changes": changes, "cursor": str(after), "epoch": "e"})
        conn.close()
        server.close()
        a, b = sqlite3.connect(tmp_path / "syncline.db"), sqlite3.connect(tmp_path / f"{name}.db")
        try:
            for sql in ("SELECT * FROM http_posts ORDER BY id",
                        "SELECT * FROM _syncline_records ORDER BY 1"):
                assert _rows(a, sql) == _rows(b, sql), sql
        finally:
            a.close()
            b.close()


def test_bare_answers_are_the_same_size(push_env: PushEnv) -> None:
    """(a)'s answer has syncline's shape and size (versions aside)."""
    env = push_env
    mutations = create_mutations(make_http_posts(50, "size-"), env.wire)
    body = {"mutations": [to_wire(m) for m in mutations]}
    ours = env.transport.client.post(
        "v1/push", content=json.dumps(body).encode(),
        headers={"Accept-Encoding": "identity"})
    theirs = env.bare_client.post(
        "echo/v1/push", content=json.dumps(
            {"mutations": [to_wire(m) for m in create_mutations(
                make_http_posts(50, "size2-"), env.wire)]}).encode(),
        headers={"Accept-Encoding": "identity"})
    assert ours.status_code == theirs.status_code == 200
    a, b = ours.json(), theirs.json()
    assert list(a) == list(b) and sorted(a["results"][0]) == sorted(b["results"][0])
    assert abs(len(ours.content) - len(theirs.content)) < 0.05 * len(ours.content)


# -- H1 push -------------------------------------------------------------------------------------

def bench_push(benchmark: Any, wire: Any, side: str, batch: int,
               push: Callable[[Any], list[str]], rounds: int) -> None:
    """Time ``push`` of a fresh batch each round (made untimed: syncline's mutations for the
    syncline side, their wire dicts for the others) after one untimed warm-up; every
    mutation must come back applied."""
    names = itertools.count()
    statuses: list[list[str]] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        mutations = create_mutations(
            make_http_posts(batch, f"{side}-{batch}-{next(names)}-"), wire)
        return ((mutations if side == "syncline" else [to_wire(m) for m in mutations]),), {}

    def run(mutations: Any) -> None:
        statuses.append(push(mutations))

    run(*setup()[0])
    benchmark.pedantic(run, setup=setup, rounds=rounds, iterations=1)
    assert statuses == [["applied"] * batch] * (rounds + 1)


@pytest.mark.parametrize("side", PUSH_SIDES)
@pytest.mark.parametrize("batch", PUSH_BATCHES)
def test_push(benchmark: Any, push_env: PushEnv, batch: int, side: str) -> None:
    env = push_env
    benchmark.group = GROUP_PUSH[batch]
    runs: dict[str, Callable[[Any], list[str]]] = {
        "syncline": lambda ms: [r.status for r in env.transport.push(ms).results],
        "ref-http": lambda ms: [r["status"] for r in post_json(
            env.bare_client, "echo/v1/push", {"mutations": ms})["results"]],
        "baseline": lambda ms: [r["status"] for r in post_json(
            env.bare_client, "hand/v1/push", {"mutations": ms})["results"]],
        "ref-storage": lambda ms: [r["status"] for r in env.plain[side].push(ms, PRINCIPAL)],
        "ref-storage-same-sql": lambda ms: [
            r["status"] for r in env.plain[side].push(ms, PRINCIPAL)],
    }
    bench_push(benchmark, env.wire, side, batch, runs[side], PUSH_ROUNDS[batch])
    _record(benchmark, f"push batch {batch}", side, batch)


@pytest.mark.parametrize("side", PG_PUSH_SIDES)
@pytest.mark.parametrize("batch", PG_PUSH_BATCHES)
def test_push_pg(benchmark: Any, pg_push_env: PgPushEnv, batch: int, side: str) -> None:
    """H1 on a PostgreSQL server store; (a) is the SQLite groups' ``ref-http`` (the bare
    endpoint does not touch storage)."""
    env = pg_push_env
    benchmark.group = GROUP_PG_PUSH[batch]

    def push(mutations: Any) -> list[str]:
        if side == "syncline":
            return [r.status for r in env.transport.push(mutations).results]
        return [r["status"] for r in env.plain[side].push(mutations, PRINCIPAL)]

    bench_push(benchmark, env.wire, side, batch, push, PG_PUSH_ROUNDS[batch])
    _record(benchmark, f"push batch {batch} (postgresql)", side, batch)


# -- H2 pull -------------------------------------------------------------------------------------

@pytest.mark.parametrize("side", PULL_SIDES)
def test_pull(benchmark: Any, pull_env: PullEnv, side: str) -> None:
    env = pull_env
    benchmark.group = GROUP_PULL
    names = itertools.count()
    pulled: list[int] = []

    def fresh_plain_client() -> tuple[sqlite3.Connection, Path]:
        path = env.folder / f"{side}-{next(names)}.db"
        shutil.copyfile(env.client_template, path)
        return plain_connect(path), path

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        if side == "syncline":
            path = env.folder / f"{side}-{next(names)}.db"
            store = syncline.open(f"sqlite:///{path}", entities=[HttpPost],
                                  transport=env.live.url, transport_options={"token": TOKEN},
                                  sync_options={"page_size": PAGE_SIZE})
            assert store.sync_engine is not None  # the transport's httpx.Client: untimed
            return (store, path), {}
        if side == "ref-http":
            return (None, None), {}
        conn, path = fresh_plain_client()
        return (conn, path), {}

    def syncline_pull(store: syncline.Store, _path: Path) -> None:
        report = store.sync_engine.pull()
        assert report.ok and report.pulled == N_PULL, report

    def http_only(_conn: None, _path: None) -> None:
        cursor, n = None, 0
        while True:
            page = post_json(env.bare_client, "echo/v1/pull",
                             {"cursor": cursor, "limit": PAGE_SIZE, "entities": [ENTITY]})
            n += len(page["changes"])
            cursor = page["cursor"]
            if not page["more"]:
                break
        pulled.append(n)

    def hand_written(conn: sqlite3.Connection, _path: Path) -> None:
        cursor = None
        while True:
            page = post_json(env.bare_client, "hand/v1/pull",
                             {"cursor": cursor, "limit": PAGE_SIZE, "entities": [ENTITY]})
            apply_page(conn, page)
            cursor = page["cursor"]
            if not page["more"]:
                break

    def storage(apply: Callable[[sqlite3.Connection, dict[str, Any]], None]) -> Callable[
            [sqlite3.Connection, Path], None]:
        def run(conn: sqlite3.Connection, _path: Path) -> None:
            server = plain_connect(env.server_file)
            try:
                after = 0
                while True:
                    changes, after, more = read_page(server, PRINCIPAL, after)
                    apply(conn, {"changes": changes, "cursor": str(after), "more": more,
                                 "epoch": "plain"})
                    if not more:
                        break
            finally:
                server.close()
        return run

    def teardown(handle: Any, path: Path | None) -> None:
        if side == "ref-http":
            return
        if side == "syncline":
            pulled.append(handle.repository(HttpPost).count())
            handle.close()
        else:
            pulled.append(handle.execute("SELECT count(*) FROM http_posts").fetchone()[0])
            assert handle.execute("SELECT count(*) FROM _syncline_records").fetchone()[0] \
                == N_PULL
            handle.close()
        assert path is not None
        _remove(path)

    run = {"syncline": syncline_pull, "ref-http": http_only, "baseline": hand_written,
           "ref-storage": storage(apply_page),
           "ref-storage-same-sql": storage(apply_page_same_sql)}[side]
    rounds = PULL_ROUNDS[side]
    benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=rounds, iterations=1)
    assert pulled == [N_PULL] * rounds
    _record(benchmark, "pull", side, N_PULL)
