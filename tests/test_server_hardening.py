"""The reference server under hostile input, over HTTP against the real app (issue 13).

Finding 10: a cursor the server did not issue, or one beyond its committed sequence, is refused
with 400 ``invalid_cursor``, and a legitimate cursor never is (concurrent writers included).
Finding 8: no input makes the server answer 5xx; a stored change JSON cannot carry is left out
of pulls (and logged) instead of failing everyone's pulls; 503 + Retry-After only when the
store is unavailable. Finding 13: the server logs through ``syncline.server.*``, and a client
that goes away mid-request is one log line, not a traceback.
"""

from __future__ import annotations

import base64
import gzip
import itertools
import json
import logging
import socket
import sqlite3
import threading
import time
import uuid
from collections.abc import Callable, Iterator
from typing import Any
from urllib.parse import urlsplit, urlunsplit

import attrs
import httpx
import jwt
import pytest

import syncline
from syncline.server.app import MAX_BODY_DEPTH, ServerConfig
from syncline.server.cursor import encode_cursor
from syncline.testing.server import LiveServer

registry = syncline.EntityRegistry()
_n = itertools.count()
SECRET = "hardening-secret-0123456789-0123456789"
TOKENS = {"alice-token": "alice", "bob-token": "bob"}


@registry.entity("hard_docs", syncs=True)
@attrs.define
class Doc:
    id: str
    title: str
    pages: int = 0
    data: dict[str, Any] | None = None


@registry.entity("hard_board", syncs=True)
@attrs.define
class Pin:
    """Shared by every principal."""

    id: str
    text: str
    data: dict[str, Any] | None = None


def config(store: str, **options: Any) -> ServerConfig:
    return ServerConfig(store=store, tokens=TOKENS, jwt_key=SECRET, shared=["hard_board"],
                        max_body_bytes=256 * 1024, max_mutations=50, **options)


@pytest.fixture(params=["sqlite", "postgresql"])
def server_store(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/server.db"
    base: str = request.getfixturevalue("syncline_postgres_url")
    return f"{base}?schema=hard{next(_n)}"


@pytest.fixture
def server(server_store: str) -> Iterator[LiveServer]:
    with LiveServer(config(server_store), [Doc, Pin]) as live:
        yield live


@pytest.fixture
def sqlite_server(tmp_path: Any) -> Iterator[LiveServer]:
    with LiveServer(config(f"sqlite:///{tmp_path}/server.db"), [Doc, Pin]) as live:
        yield live


def post(server: LiveServer, path: str, body: Any = None, token: str = "alice-token",
         content: bytes | None = None, headers: dict[str, str] | None = None) -> httpx.Response:
    if content is None:
        content = json.dumps(body).encode()
    sent = {b"Authorization": f"Bearer {token}".encode(), b"Content-Type": b"application/json",
            **{k.encode(): v.encode() for k, v in (headers or {}).items()}}
    return httpx.post(server.url + path, content=content, timeout=30, headers=sent)


def pin(mid: str, rid: str, text: str = "t", **extra: Any) -> dict[str, Any]:
    return {"id": mid, "entity": "hard_board", "action": "create", "record_id": rid,
            "payload": {"id": rid, "text": text, **extra}}


def push(server: LiveServer, *mutations: dict[str, Any],
         token: str = "alice-token") -> list[dict[str, Any]]:
    answer = post(server, "v1/push", {"mutations": list(mutations)}, token)
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def pull_all(server: LiveServer, token: str = "alice-token",
             cursor: str | None = None) -> tuple[list[dict[str, Any]], str]:
    changes: list[dict[str, Any]] = []
    while True:
        answer = post(server, "v1/pull", {"cursor": cursor, "limit": 7}, token)
        assert answer.status_code == 200, answer.text
        page = answer.json()
        changes += page["changes"]
        cursor = page["cursor"]
        if not page["more"]:
            return changes, page["cursor"]


def assert_error(answer: httpx.Response, status: int, code: str) -> dict[str, Any]:
    assert answer.status_code == status, answer.text
    error: dict[str, Any] = answer.json()["error"]
    assert error["code"] == code and error["status"] == status, error
    assert set(error) == {"status", "code", "message", "field"}
    assert "Traceback" not in answer.text
    return error


def committed(server: LiveServer) -> int:
    value: int = server.sync.server.committed_seq()
    return value


def raw_cursor(data: Any) -> str:
    return base64.urlsafe_b64encode(json.dumps(data).encode()).decode().rstrip("=")


# -- finding 10: cursors ------------------------------------------------------------------


def test_a_cursor_beyond_the_committed_sequence_is_refused(server: LiveServer) -> None:
    push(server, pin("m1", "p1"), pin("m2", "p2"))
    changes, cursor = pull_all(server)
    assert len(changes) == 2
    epoch = server.sync.server.epoch
    top = committed(server)
    # the last cursor issued is at the top: an empty page (on PostgreSQL a cursor also
    # carries the writer's transaction id, so a bare (0, top) is not the top there)
    at_top = post(server, "v1/pull", {"cursor": cursor})
    assert at_top.status_code == 200 and at_top.json()["changes"] == []
    forged = encode_cursor(epoch, top + 1, "alice")
    error = assert_error(post(server, "v1/pull", {"cursor": forged}), 400, "invalid_cursor")
    assert error["field"] == "cursor" and "beyond the server's sequence" in error["message"]
    # a later change is delivered to the cursor it issued
    push(server, pin("m3", "p3"))
    later, _ = pull_all(server, cursor=cursor)
    assert [c["record_id"] for c in later] == ["p3"]


def test_cursors_the_server_did_not_issue_are_refused(server: LiveServer) -> None:
    push(server, pin("m1", "p1"))
    _, cursor = pull_all(server)
    epoch = server.sync.server.epoch
    tag = json.loads(base64.urlsafe_b64decode(cursor + "=" * (-len(cursor) % 4)))["p"]
    forged = [
        "garbage", "!!!!", cursor + "x", cursor[:-3], "a" * 5000, "\u00e9t\u00e9",
        raw_cursor({"e": epoch, "s": "1", "p": tag}),       # seq as a string
        raw_cursor({"e": epoch, "s": 1.0, "p": tag}),       # seq as a float
        raw_cursor({"e": epoch, "s": True, "p": tag}),      # seq as a bool
        raw_cursor({"e": epoch, "s": -1, "p": tag}),
        raw_cursor({"e": epoch, "s": 1, "p": tag, "x": 1}),  # a key too many
        raw_cursor({"e": epoch, "s": 1}), raw_cursor([epoch, 1, tag]), raw_cursor(None),
        raw_cursor({"e": epoch, "s": 10 ** 30, "p": tag}),
        base64.urlsafe_b64encode(b"[" * 600 + b"]" * 600).decode(),
    ]
    for bad in forged:
        error = assert_error(post(server, "v1/pull", {"cursor": bad}), 400, "invalid_cursor")
        assert error["field"] == "cursor"
    # a lone surrogate inside the cursor string (valid JSON escape, invalid Unicode)
    body = b'{"cursor": "abc\\ud800def"}'
    assert_error(post(server, "v1/pull", content=body), 400, "invalid_cursor")
    # another principal's cursor
    error = assert_error(post(server, "v1/pull", {"cursor": cursor}, "bob-token"), 400,
                         "invalid_cursor")
    assert "someone else" in error["message"]


def test_a_cursor_of_another_epoch_reads_from_the_start(server: LiveServer) -> None:
    push(server, pin("m1", "p1"), pin("m2", "p2"))
    everything, cursor = pull_all(server)
    old = encode_cursor(uuid.uuid4().hex, 10 ** 9, "alice")  # beyond the sequence: no matter
    again, _ = pull_all(server, cursor=old)
    assert again == everything
    server.sync.server.reset()  # a new epoch: the cursor it issued means "start over"
    push(server, pin("m9", "p9"))
    after_reset, _ = pull_all(server, cursor=cursor)
    assert [c["record_id"] for c in after_reset] == ["p9"]


def test_legitimate_cursors_are_never_refused_under_concurrent_writers(
        server: LiveServer) -> None:
    """Writers commit while readers page through with the cursors the server gave them; some
    batches take sequence numbers they leave unused (conflicts, rejections, duplicates)."""
    writers, batches, errors = 3, 12, []
    done = threading.Event()

    def write(w: int) -> None:
        try:
            for b in range(batches):
                rid, before = f"w{w}-{b}", f"w{w}-{b - 1}"
                push(server, pin(f"{rid}-c", rid),
                     {"id": f"{rid}-u", "entity": "hard_board", "action": "update",
                      "record_id": f"missing-{rid}", "base_version": 1,
                      "payload": {"id": f"missing-{rid}", "text": "x"}},  # a conflict
                     pin(f"{rid}-x", f"{rid}-x", text=5),                # rejected
                     *([pin(f"{before}-c", before)] if b else []))       # a duplicate
        except BaseException as exc:  # reported by the test thread
            errors.append(exc)

    def read(token: str, seen: list[int]) -> None:
        cursor = None
        try:
            while True:
                finished = done.is_set()
                answer = post(server, "v1/pull", {"cursor": cursor, "limit": 5}, token)
                assert answer.status_code == 200, answer.text
                page = answer.json()
                seen.extend(c["version"] for c in page["changes"])
                cursor = page["cursor"]
                if finished and not page["more"]:
                    return
        except BaseException as exc:
            errors.append(exc)

    seen: dict[str, list[int]] = {"alice-token": [], "bob-token": []}
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    readers = [threading.Thread(target=read, args=(t, s)) for t, s in seen.items()]
    for t in threads + readers:
        t.start()
    for t in threads:
        t.join(120)
    done.set()
    for t in readers:
        t.join(120)
    assert not errors, errors[0]
    expected = writers * batches
    for versions in seen.values():
        assert versions == sorted(versions) and len(set(versions)) == len(versions) == expected


# -- finding 8: no 5xx for any input --------------------------------------------------------


def test_hostile_credentials_answer_401(sqlite_server: LiveServer) -> None:
    def token(**claims: Any) -> str:
        return jwt.encode({"exp": int(time.time()) + 60, **claims}, SECRET)

    hostile = [token(sub="\ud800"), token(sub="a\udfffb"), token(sub=""), token(sub="x" * 300),
               token(sub="a\x00b"), token(sub="line\nbreak"), token(sub=7),
               token(sub=["alice"]), token(sub={"id": "alice"}), token(),
               "a.b.c", "\u00e9.\u00e9.\u00e9", "...", "e30.e30.e30", "e30." * 2 + "!"]
    for value in hostile:
        for path in ("v1/pull", "v1/push"):
            body: dict[str, Any] = {} if path == "v1/pull" else {"mutations": []}
            assert_error(post(sqlite_server, path, body, value), 401, "unauthenticated")
    ok = post(sqlite_server, "v1/pull", {}, token(sub="carol \u00e9\U0001f600"))
    assert ok.status_code == 200, ok.text


def test_hostile_bodies_never_answer_5xx(sqlite_server: LiveServer) -> None:
    deep = b'{"mutations": [' + b"[" * 1000 + b"]" * 1000 + b"]}"
    deep_payload = {"mutations": [pin("d1", "d1", data=json.loads(
        "{" + '"a":{' * (MAX_BODY_DEPTH + 5) + "}" * (MAX_BODY_DEPTH + 6)))]}
    bad_bodies: list[tuple[str, bytes, dict[str, str], int, str]] = [
        ("v1/push", deep, {}, 422, "too_deep"),
        ("v1/pull", b"[" * 100_000 + b"]" * 100_000, {}, 422, "too_deep"),
        ("v1/push", json.dumps(deep_payload).encode(), {}, 422, "too_deep"),
        ("v1/push", b"\xff\xfe{}", {}, 400, "bad_json"),
        ("v1/push", b'{"mutations": [', {}, 400, "bad_json"),
        ("v1/push", b"1" * 5000, {}, 400, "bad_json"),
        ("v1/push", b"null", {}, 422, "invalid"),
        ("v1/pull", b"[]", {}, 422, "invalid"),
        ("v1/pull", b'{"limit": 1e400}', {}, 422, "invalid"),
        ("v1/pull", b'{"limit": NaN}', {}, 422, "invalid"),
        ("v1/push", b"not gzip", {"Content-Encoding": "gzip"}, 400, "bad_encoding"),
        ("v1/push", b"{}", {"Content-Encoding": "br"}, 415, "bad_encoding"),
        ("v1/push", gzip.compress(b"[" * 5000), {"Content-Encoding": "gzip"}, 422,
         "too_deep"),
    ]
    for path, content, headers, status, code in bad_bodies:
        assert_error(post(sqlite_server, path, content=content, headers=headers), status, code)


@pytest.mark.parametrize(("field", "value"), [
    ("id", None), ("id", 7), ("record_id", 7), ("entity", ["hard_board"]),
    ("base_version", "6"), ("base_version", True), ("base_version", 1.5),
    ("action", "fly"), ("action", None), ("payload", "abc"), ("payload", [1]),
    ("command", 3), ("extra", 1),
])
def test_mutation_fields_of_the_wrong_json_type_are_refused_naming_them(
        sqlite_server: LiveServer, field: str, value: Any) -> None:
    good = pin("m1", "r1")
    mutation = {**good, field: value}
    body = json.dumps({"mutations": [pin("m0", "r0"), mutation]}).encode()
    error = assert_error(post(sqlite_server, "v1/push", content=body), 422, "invalid")
    assert error["field"] == "mutations[1]" and field in error["message"], error
    assert sqlite_server.sync.server.store.repository(Pin).count() == 0  # nothing applied


@pytest.mark.parametrize(("field", "value"), [
    ("id", ""), ("id", "a\x00b"), ("id", "a\ud800"), ("id", "x" * 5000),
    ("record_id", "r\udc00"), ("record_id", "r\x00"),
])
def test_mutation_fields_no_store_can_hold_reject_that_mutation_alone(
        server: LiveServer, field: str, value: str) -> None:
    mutation = {**pin("m1", "r1"), field: value}
    if field == "record_id":
        mutation["payload"] = {"id": value, "text": "t"}
    body = json.dumps({"mutations": [pin("m0", "r0"), mutation, pin("m2", "r2")]}).encode()
    answer = post(server, "v1/push", content=body)
    assert answer.status_code == 200, answer.text
    results = answer.json()["results"]
    assert [r["status"] for r in results] == ["applied", "rejected", "applied"]
    assert results[1]["id"] == mutation["id"]  # echoed (a lone surrogate as a JSON escape)
    changes, _ = pull_all(server)
    assert [c["record_id"] for c in changes] == ["r0", "r2"]


def test_hostile_payload_values_never_answer_5xx(server: LiveServer) -> None:
    """Whatever the values are, each mutation gets a result (the values' own checks decide
    which); the request never fails with a 5xx."""
    values = ["\ud800", "a\x00b", 2 ** 64, -(2 ** 63) - 1, float("nan"), float("inf"),
              json.loads("[" * 90 + "]" * 90), {"\udc00": 1}, "x" * 100_000]
    for i, value in enumerate(values):
        body = json.dumps({"mutations": [pin(f"v{i}", f"v{i}", data={"k": value}),
                                         pin(f"t{i}", f"t{i}", text=value)]}).encode()
        answer = post(server, "v1/push", content=body)
        assert answer.status_code < 500, (value, answer.text)
    changes, _ = pull_all(server)
    assert all(c["payload"] is not None for c in changes)


def _bad_rows_sql(server_store: str) -> tuple[Callable[[int, str], None], list[str]]:
    """A way to overwrite a stored change's payload with raw text, and odd payloads the store
    holds. SQLite holds any text: these cannot be read back or sent as JSON. PostgreSQL's jsonb
    refuses NaN, infinities, lone surrogates and NUL; what it holds can be sent."""
    if server_store.startswith("sqlite"):
        path = server_store.removeprefix("sqlite:///")

        def set_payload(seq: int, text: str) -> None:
            with sqlite3.connect(path) as conn:
                conn.execute("UPDATE _syncline_changes SET payload = ? WHERE seq = ?",
                             (text, seq))

        return set_payload, ['{"id": "bad", "text": "\\ud800"}', '{"id": "bad", "text": NaN}',
                             '{"id": "bad", "text": Infinity}', "{not json"]
    import psycopg

    url, _, schema = server_store.partition("?schema=")

    def set_payload_pg(seq: int, text: str) -> None:
        with psycopg.connect(url, autocommit=True) as conn:
            conn.execute(f'UPDATE "{schema}"._syncline_changes SET payload = %s::jsonb '
                         "WHERE seq = %s", (text, seq))

    return set_payload_pg, ['{"id": "bad", "text": 1e400}', '[1, 2]', '"text"']


def test_a_stored_change_json_cannot_carry_is_skipped_and_logged(
        server: LiveServer, server_store: str, caplog: pytest.LogCaptureFixture) -> None:
    set_payload, bad_payloads = _bad_rows_sql(server_store)
    push(server, pin("m0", "first"))
    victims = []
    for i, _ in enumerate(bad_payloads):
        victims.append(push(server, pin(f"b{i}", f"bad{i}"))[0]["version"])
    push(server, pin("m9", "last"))
    for seq, text in zip(victims, bad_payloads, strict=True):
        set_payload(seq, text)
    caplog.set_level(logging.WARNING, logger="syncline.server")
    for token in ("alice-token", "bob-token"):  # a shared record: everyone's pulls
        caplog.clear()
        changes, cursor = pull_all(server, token)
        got = [c["record_id"] for c in changes]
        skipped = [r for r in caplog.records if r.name == "syncline.server.pull"]
        assert all(r.levelno == logging.WARNING for r in skipped)
        if server_store.startswith("sqlite"):
            assert got == ["first", "last"]
        assert got[0] == "first" and got[-1] == "last"
        # each odd row is either sent or left out with a warning naming it
        for i in range(len(bad_payloads)):
            assert (f"bad{i}" in got) != any(f"'bad{i}'" in r.getMessage() for r in skipped)
        assert post(server, "v1/pull", {"cursor": cursor}, token).json()["changes"] == []
    # the record written again on the server reaches everyone
    push(server, {"id": "fix", "entity": "hard_board", "action": "update",
                  "record_id": "bad0", "base_version": victims[0],
                  "payload": {"id": "bad0", "text": "fixed"}})
    changes, _ = pull_all(server, "bob-token")
    assert changes[-1]["payload"]["text"] == "fixed"


def test_a_programming_error_is_a_logged_500(
        sqlite_server: LiveServer, monkeypatch: pytest.MonkeyPatch,
        caplog: pytest.LogCaptureFixture) -> None:
    def broken(*args: Any) -> Any:
        raise RuntimeError("a bug")

    monkeypatch.setattr(sqlite_server.sync.server, "pull", broken)
    caplog.set_level(logging.ERROR, logger="syncline.server")
    error = assert_error(post(sqlite_server, "v1/pull", {}), 500, "internal")
    assert "a bug" not in error["message"]
    assert any(r.name == "syncline.server" and r.exc_info for r in caplog.records)


def test_a_busy_sqlite_store_answers_503_with_retry_after(tmp_path: Any) -> None:
    store = f"sqlite:///{tmp_path}/server.db"
    with LiveServer(config(store, store_options={"busy_timeout": 0.2}), [Doc, Pin]) as live:
        assert post(live, "v1/pull", {}).status_code == 200
        locker = sqlite3.connect(f"{tmp_path}/server.db", isolation_level=None)
        try:
            locker.execute("BEGIN EXCLUSIVE")
            answer = post(live, "v1/push", {"mutations": [pin("m1", "p1")]})
            assert_error(answer, 503, "unavailable")
            assert int(answer.headers["Retry-After"]) > 0
        finally:
            locker.execute("ROLLBACK")
            locker.close()
        assert push(live, pin("m1", "p1"))[0]["status"] == "applied"


def test_a_lost_postgresql_database_answers_503(syncline_postgres_url: str) -> None:
    import psycopg

    name = f"hard_gone_{uuid.uuid4().hex[:8]}"
    parts = urlsplit(syncline_postgres_url)
    url = urlunsplit(parts._replace(path=f"/{name}"))
    with psycopg.connect(syncline_postgres_url, autocommit=True) as admin:
        admin.execute(f'CREATE DATABASE "{name}"')
    live = LiveServer(config(url), [Doc, Pin]).start()
    try:
        assert push(live, pin("m1", "p1"))[0]["status"] == "applied"
        with psycopg.connect(syncline_postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE "{name}" WITH (FORCE)')
        for path, body in (("v1/pull", {}), ("v1/push", {"mutations": [pin("m2", "p2")]}),):
            answer = post(live, path, body)
            assert_error(answer, 503, "unavailable")
            assert int(answer.headers["Retry-After"]) > 0
        assert httpx.get(live.url + "v1/health").status_code == 503
    finally:
        live.stop()
        with psycopg.connect(syncline_postgres_url, autocommit=True) as admin:
            admin.execute(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')


# -- limits -------------------------------------------------------------------------------


def test_limits_are_published_and_enforced_with_413(sqlite_server: LiveServer) -> None:
    limits = httpx.get(sqlite_server.url + "v1/schema").json()["limits"]
    assert limits == {"max_body_bytes": 256 * 1024, "max_mutations": 50, "max_page": 1000,
                      "max_depth": 100, "rate_limit": 0, "header_timeout": 10.0,
                      "body_timeout": 30.0, "keep_alive_timeout": 5.0,
                      "max_live_clients": 1000, "live_heartbeat": 15.0}
    many = {"mutations": [pin(f"m{i}", f"r{i}") for i in range(51)]}
    assert_error(post(sqlite_server, "v1/push", many), 413, "too_many")
    big = {"mutations": [pin("big", "big", text="x" * (256 * 1024))]}
    assert_error(post(sqlite_server, "v1/push", big), 413, "too_large")
    assert_error(post(sqlite_server, "v1/push", content=gzip.compress(json.dumps(big).encode()),
                      headers={"Content-Encoding": "gzip"}), 413, "too_large")


# -- finding 13: logging --------------------------------------------------------------------


def test_pushes_pulls_and_refusals_are_logged(
        sqlite_server: LiveServer, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG, logger="syncline.server")
    first = push(sqlite_server, pin("m1", "p1"))[0]
    push(sqlite_server, pin("m1", "p1"),                                     # duplicate
         {"id": "m2", "entity": "hard_board", "action": "update", "record_id": "p1",
          "base_version": first["version"] + 100, "payload": {"id": "p1", "text": "x"}},
         pin("m3", "x", text=["nope"]),                                       # rejected
         pin("m4", "p4"))
    pull_all(sqlite_server)
    post(sqlite_server, "v1/pull", {"cursor": "forged"})
    post(sqlite_server, "v1/pull", {}, "wrong-token")

    def lines(logger: str, level: int) -> list[str]:
        return [r.getMessage() for r in caplog.records if r.name == logger and
                r.levelno == level]

    summaries = [m for m in lines("syncline.server.push", logging.INFO) if "mutations:" in m]
    assert summaries[-1].startswith("push by 'alice': 4 mutations: 1 applied, 1 duplicate, "
                                    "1 conflict, 1 rejected, 0 retry in ")
    rejected = [m for m in lines("syncline.server.push", logging.INFO) if "rejected:" in m]
    assert len(rejected) == 1 and "'m3'" in rejected[0] and "nope" in rejected[0]
    assert any("conflicts" in m for m in lines("syncline.server.push", logging.DEBUG))
    assert any(m.startswith("pull by 'alice': 2 changes in ")
               for m in lines("syncline.server.pull", logging.DEBUG))
    refusals = lines("syncline.server.http", logging.INFO)
    assert any("400 invalid_cursor" in m and "'alice'" in m for m in refusals)
    assert any("401 unauthenticated" in m for m in refusals)
    assert lines("syncline.server.auth", logging.INFO)
    assert not any("wrong-token" in r.getMessage() for r in caplog.records)  # no secrets
    assert not any(r.exc_info for r in caplog.records)


class _Records(logging.Handler):
    def __init__(self) -> None:
        super().__init__(logging.DEBUG)
        self.records: list[logging.LogRecord] = []

    def emit(self, record: logging.LogRecord) -> None:
        self.records.append(record)

    def wait_for(self, predicate: Callable[[logging.LogRecord], bool],
                 timeout: float = 20.0) -> logging.LogRecord:
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            for record in list(self.records):
                if predicate(record):
                    return record
            time.sleep(0.01)
        raise AssertionError(f"no such log record; got {[r.getMessage() for r in self.records]}")


@pytest.fixture
def server_logs() -> Iterator[_Records]:
    """Every record of syncline's and uvicorn's loggers (uvicorn's do not propagate)."""
    handler = _Records()
    loggers = [logging.getLogger(name) for name in ("syncline", "uvicorn", "uvicorn.error")]
    levels = [logger.level for logger in loggers]
    for logger in loggers:
        logger.addHandler(handler)
        logger.setLevel(logging.DEBUG)
    yield handler
    for logger, level in zip(loggers, levels, strict=True):
        logger.removeHandler(handler)
        logger.setLevel(level)


def _send_raw(server: LiveServer, head: bytes, body: bytes) -> socket.socket:
    sock = socket.create_connection(("127.0.0.1", server.port), timeout=10)
    sock.sendall(head + body)
    return sock


def test_a_client_that_goes_away_mid_request_is_one_log_line(
        sqlite_server: LiveServer, server_logs: _Records) -> None:
    body = json.dumps({"mutations": [pin("m1", "p1")]}).encode()
    head = (b"POST /v1/push HTTP/1.1\r\nHost: 127.0.0.1\r\nAuthorization: Bearer alice-token\r\n"
            b"Content-Type: application/json\r\nContent-Length: %d\r\n\r\n" % len(body))
    sock = _send_raw(sqlite_server, head, body[: len(body) // 2])
    sock.close()  # half a body, then gone
    line = server_logs.wait_for(lambda r: "went away" in r.getMessage())
    assert line.name == "syncline.server.http" and line.levelno == logging.INFO
    assert "POST /v1/push" in line.getMessage() and "'alice'" in line.getMessage()
    # a whole request, then gone before the answer: applied, nothing logged as a failure
    sock = _send_raw(sqlite_server, head, body)
    sock.close()
    store = sqlite_server.sync.server.store
    deadline = time.monotonic() + 20
    while store.repository(Pin).get("p1") is None:
        assert time.monotonic() < deadline, "the whole request was not applied"
        time.sleep(0.01)
    server_logs.wait_for(lambda r: r.getMessage().startswith("push by 'alice'"))
    # then a normal request still works and nothing was logged as a failure
    assert post(sqlite_server, "v1/pull", {}).status_code == 200
    assert [r for r in server_logs.records if "went away" in r.getMessage()] == [line]
    assert not [r for r in server_logs.records
                if r.exc_info or r.levelno >= logging.WARNING], \
        [r.getMessage() for r in server_logs.records]


def test_syncline_serve_logs_the_server_loggers_at_the_chosen_level() -> None:
    import logging.config

    from syncline.server.app import log_config

    config = log_config("debug")
    assert config["loggers"]["syncline"]["level"] == "DEBUG"
    logging.config.dictConfig(log_config("warning"))  # a valid configuration
    try:
        assert logging.getLogger("syncline.server.push").getEffectiveLevel() == logging.WARNING
    finally:
        logging.getLogger("syncline").handlers.clear()
        logging.getLogger("syncline").setLevel(logging.NOTSET)
        logging.getLogger("syncline").propagate = True
