"""docs/protocol.md's tables are the truth: one test per row of the MutationResult status table
and of the error table, over HTTP, on memory, SQLite and PostgreSQL server stores."""

from __future__ import annotations

import gzip
import itertools
import json
import time
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import jwt
import pytest

import syncline
from syncline.server.app import ServerConfig
from syncline.server.tables import AppliedMutation, ChangeEntry, ServerRecord
from syncline.testing.server import LiveServer

registry = syncline.EntityRegistry()
SECRET = "s" * 32
TOKENS = {"alice-token": "alice", "bob-token": "bob"}
_schemas = itertools.count()


@registry.entity("st_docs", syncs=True)
@attrs.define
class Doc:
    id: str
    title: str
    pages: int = 0


@pytest.fixture(scope="module", params=["memory", "sqlite", "postgresql"])
def server(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    if request.param == "memory":
        store = "memory://"
    elif request.param == "sqlite":
        store = f"sqlite:///{tmp_path_factory.mktemp('statuses')}/server.db"
    else:
        base: str = request.getfixturevalue("syncline_postgres_url")
        store = f"{base}?schema=statuses{next(_schemas)}"
    config = ServerConfig(store=store, tokens=TOKENS, jwt_key=SECRET, max_mutations=5,
                          max_body_bytes=8 * 1024, rate_limit=600,
                          permissions={"carol": []})
    with LiveServer(config, [Doc]) as live:
        yield live


_ids = itertools.count()


def uid(prefix: str) -> str:
    return f"{prefix}-{next(_ids)}"


def post(server: LiveServer, path: str, body: Any = None, token: str = "alice-token",
         content: bytes | None = None, **headers: str) -> httpx.Response:
    sent = {"Authorization": f"Bearer {token}", "Content-Type": "application/json", **headers}
    return httpx.post(server.url + path, timeout=30, headers=sent,
                      content=json.dumps(body).encode() if content is None else content)


def push(server: LiveServer, *mutations: dict[str, Any],
         token: str = "alice-token") -> list[dict[str, Any]]:
    answer = post(server, "v1/push", {"mutations": list(mutations)}, token)
    assert answer.status_code == 200, answer.text
    results: list[dict[str, Any]] = answer.json()["results"]
    return results


def create(rid: str, title: str = "t", mid: str | None = None) -> dict[str, Any]:
    return {"id": mid or uid("m"), "entity": "st_docs", "action": "create", "record_id": rid,
            "payload": {"id": rid, "title": title}}


def update(rid: str, base: int | None, title: str = "u") -> dict[str, Any]:
    return {"id": uid("m"), "entity": "st_docs", "action": "update", "record_id": rid,
            "base_version": base, "payload": {"id": rid, "title": title}}


def delete(rid: str, base: int | None) -> dict[str, Any]:
    return {"id": uid("m"), "entity": "st_docs", "action": "delete", "record_id": rid,
            "base_version": base}


def snapshot(server: LiveServer) -> tuple[Any, ...]:
    store = server.sync.server.store
    return (store.repository(Doc).all(), store.repository(ChangeEntry).count(),
            store.repository(AppliedMutation).count(), store.repository(ServerRecord).count())


# -- MutationResult statuses ------------------------------------------------------------------


def test_applied_carries_the_server_id_and_the_new_version(server: LiveServer) -> None:
    rid = uid("r")
    [made] = push(server, create(rid))
    assert made["status"] == "applied" and made["server_id"] == rid
    [changed] = push(server, update(rid, made["version"]))
    assert changed["status"] == "applied" and changed["version"] > made["version"]


def test_duplicate_answers_a_replay_of_an_applied_mutation_with_its_first_answer(
        server: LiveServer) -> None:
    mutation = create(uid("r"))
    [first] = push(server, mutation)
    before = snapshot(server)
    [again] = push(server, mutation)
    assert again == {**first, "status": "duplicate"}
    assert snapshot(server) == before


@pytest.mark.parametrize("case", ["changed since base_version", "missing", "exists for a create"])
def test_conflict_rows(server: LiveServer, case: str) -> None:
    rid = uid("r")
    [made] = push(server, create(rid, "first"))
    if case == "changed since base_version":
        push(server, update(rid, made["version"], "second"))
        [result] = push(server, update(rid, made["version"], "third"))
        assert result["record"]["title"] == "second"
    elif case == "missing":
        [result] = push(server, update(uid("never"), 1))
        assert result["record"] is None and result["version"] is None
    else:
        [result] = push(server, create(rid, "again"))
        assert result["record"]["title"] == "first" and result["version"] == made["version"]
    assert result["status"] == "conflict"


@pytest.mark.parametrize("whose", ["never created", "already deleted", "another principal's"])
def test_a_delete_of_a_record_the_principal_does_not_have_is_a_conflict(
        server: LiveServer, whose: str) -> None:
    rid = uid("r")
    if whose == "already deleted":
        [made] = push(server, create(rid))
        [gone] = push(server, delete(rid, made["version"]))
        assert gone["status"] == "applied"
        [result] = push(server, delete(rid, made["version"]))
        assert result["version"] == gone["version"]  # the tombstone's
    elif whose == "another principal's":
        [made] = push(server, create(rid), token="bob-token")
        before = snapshot(server)
        [result] = push(server, delete(rid, made["version"]))
        assert snapshot(server)[:2] == before[:2]
        assert result["version"] is None and result["updated_at"] is None  # nothing of bob's
    else:
        [result] = push(server, delete(rid, 3))
    assert result["status"] == "conflict" and result["record"] is None


@pytest.mark.parametrize("case", ["invalid payload", "unknown command", "id reused"])
def test_rejected_rows(server: LiveServer, case: str) -> None:
    if case == "invalid payload":
        mutation = {**create(uid("r")), "payload": {"id": "x", "title": 5}}
    elif case == "unknown command":
        mutation = {"id": uid("m"), "entity": "", "action": "command", "command": "fly"}
    else:
        first = create(uid("r"))
        push(server, first)
        mutation = create(uid("r"), mid=first["id"])
    before = snapshot(server)
    [result] = push(server, mutation)
    assert result["status"] == "rejected" and result["reason"]
    if case != "invalid payload":  # its answer is stored, for replays
        assert snapshot(server)[:2] == before[:2]


@pytest.mark.parametrize("first_status", ["conflict", "rejected"])
def test_a_replay_gets_the_first_outcome_back(server: LiveServer, first_status: str) -> None:
    """A replay must tell the client what became of its mutation: a conflict or a refusal
    answered again as "duplicate" would read as applied."""
    rid = uid("r")
    if first_status == "conflict":
        mutation = update(rid, 7)
    else:
        mutation = {**create(rid), "payload": {"id": rid, "title": None}}
    [first] = push(server, mutation)
    assert first["status"] == first_status
    push(server, create(rid, "later"))  # the record changes meanwhile
    [again] = push(server, mutation)
    assert again == first


# -- errors -----------------------------------------------------------------------------------


def token(**claims: Any) -> str:
    return jwt.encode({"sub": "alice", "exp": time.time() + 3600, **claims}, SECRET)


ERROR_ROWS: list[tuple[str, dict[str, Any], int, str]] = [
    ("not JSON", {"content": b"{nope"}, 400, "bad_json"),
    ("broken gzip", {"content": b"not gzip", "Content-Encoding": "gzip"}, 400,
     "bad_encoding"),
    ("forged cursor", {"path": "v1/pull", "body": {"cursor": "forged"}}, 400,
     "invalid_cursor"),
    ("unknown protocol", {"Syncline-Protocol": "99"}, 400, "unsupported_protocol"),
    ("bad schema header", {"Syncline-Schema": "v2"}, 400, "invalid"),
    ("schema version outside the range", {"Syncline-Schema": "9"}, 409, "upgrade_required"),
    ("no credentials", {"token": ""}, 401, "unauthenticated"),
    ("expired JWT", {"token": token(exp=time.time() - 1)}, 401, "unauthenticated"),
    ("JWT exp as a string", {"token": token(exp=str(int(time.time() + 3600)))}, 401,
     "unauthenticated"),
    ("JWT with a blank sub", {"token": token(sub=" ")}, 401, "unauthenticated"),
    ("entity not permitted", {"token": token(sub="carol"), "path": "v1/pull", "body": {}},
     403, "forbidden"),
    ("unknown endpoint", {"path": "v1/nothing"}, 404, "not_found"),
    ("duplicate id", {"body": {"mutations": [create("a", mid="same"),
                                             create("b", mid="same")]}}, 409, "duplicate_id"),
    ("body too large", {"body": {"mutations": [create("big", "x" * 9000)]}}, 413,
     "too_large"),
    ("too many", {"body": {"mutations": [create(f"r{i}") for i in range(6)]}}, 413,
     "too_many"),
    ("unknown encoding", {"Content-Encoding": "br"}, 415, "bad_encoding"),
    ("JSON as text/plain", {"Content-Type": "text/plain"}, 415, "bad_media_type"),
    ("no Content-Type", {"Content-Type": ""}, 415, "bad_media_type"),
    ("wrong field type", {"body": {"mutations": [{**create("r"), "base_version": "6"}]}},
     422, "invalid"),
    ("too deep", {"content": b"[" * 200 + b"]" * 200}, 422, "too_deep"),
    ("unknown entity in a push", {"body": {"mutations": [{**create("r"), "entity": "nope"}]}},
     422, "unknown_entity"),
    ("unknown entity in a pull", {"path": "v1/pull", "body": {"entities": ["nope"]}}, 422,
     "unknown_entity"),
]


@pytest.mark.parametrize(("request_", "status", "code"),
                         [(r[1], r[2], r[3]) for r in ERROR_ROWS],
                         ids=[r[0] for r in ERROR_ROWS])
def test_error_rows(server: LiveServer, request_: dict[str, Any], status: int,
                    code: str) -> None:
    options = dict(request_)
    path = options.pop("path", "v1/push")
    body = options.pop("body", {"mutations": []})
    content = options.pop("content", None)
    bearer = options.pop("token", "alice-token")
    headers = {"Content-Type": "application/json", **options}
    if bearer:
        headers["Authorization"] = f"Bearer {bearer}"
    headers = {k: v for k, v in headers.items() if v}
    before = snapshot(server)
    answer = httpx.post(server.url + path, headers=headers, timeout=30,
                        content=json.dumps(body).encode() if content is None else content)
    assert answer.status_code == status, answer.text
    error = answer.json()["error"]
    assert error["status"] == status and error["code"] == code and error["message"]
    assert set(error) == {"status", "code", "message", "field"}
    assert snapshot(server) == before


def test_a_method_the_endpoint_does_not_take_is_405(server: LiveServer) -> None:
    answer = httpx.get(server.url + "v1/push")
    assert answer.status_code == 405 and answer.json()["error"]["code"] == "bad_request"


def test_the_rate_limit_is_429_with_retry_after(tmp_path: Any) -> None:
    config = ServerConfig(store=f"sqlite:///{tmp_path}/s.db", tokens=TOKENS, rate_limit=2)
    with LiveServer(config, [Doc]) as live:
        answers = [post(live, "v1/pull", {}) for _ in range(4)]
    assert answers[-1].status_code == 429 and int(answers[-1].headers["retry-after"]) >= 1
    assert answers[-1].json()["error"]["code"] == "rate_limited"


def test_gzip_bodies_pass_the_media_type_check(server: LiveServer) -> None:
    body = gzip.compress(json.dumps({"mutations": []}).encode())
    answer = post(server, "v1/push", content=body, **{"Content-Encoding": "gzip"})
    assert answer.status_code == 200


@pytest.mark.parametrize("media", ["application/json; charset=utf-8",
                                   "Application/JSON", 'application/json;charset="UTF-8"'])
def test_json_media_types_are_accepted(server: LiveServer, media: str) -> None:
    answer = post(server, "v1/pull", {}, **{"Content-Type": media})
    assert answer.status_code == 200, answer.text


def test_a_jwt_leeway_is_off_by_default_and_configurable(tmp_path: Any) -> None:
    late = token(exp=time.time() - 5)
    for leeway, status in ((0.0, 401), (60.0, 200)):
        config = ServerConfig(store="memory://", jwt_key=SECRET, jwt_leeway=leeway)
        with LiveServer(config, [Doc]) as live:
            assert post(live, "v1/pull", {}, token=late).status_code == status
