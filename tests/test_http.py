"""The HTTP transport and the reference server, end to end over real uvicorn on 127.0.0.1."""

from __future__ import annotations

import datetime as dt
import gzip
import itertools
import json
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import jwt
import pytest

import syncline
from syncline.core.store import Store
from syncline.plugins.http import HTTPTransport
from syncline.server.app import ServerConfig
from syncline.server.tables import ChangeEntry
from syncline.testing.server import LiveServer
from syncline.testing.transport_suite import ENTITIES as SUITE_ENTITIES
from syncline.testing.transport_suite import TransportEnv, TransportSuite

registry = syncline.EntityRegistry()
_n = itertools.count()
SECRET = "test-secret-0123456789-0123456789-0123"


@registry.entity("http_notes", syncs=True)
@attrs.define
class Note:
    id: str
    owner_tag: str
    text: str
    likes: int = 0


@registry.entity("http_board", syncs=True)
@attrs.define
class Pin:
    """Shared by every principal."""

    id: str
    text: str


TOKENS = {"alice-token": "alice", "bob-token": "bob"}


class TestHTTPTransport(TransportSuite):
    @pytest.fixture
    def transport_env(self) -> Iterator[TransportEnv]:
        config = ServerConfig(tokens={"t": "suite"})
        server = LiveServer(config, SUITE_ENTITIES).start()
        transport = HTTPTransport(server.url, {"token": "t", "timeout": 5})
        try:
            yield TransportEnv(transport, server.sync.server, server.stop)
        finally:
            transport.close()
            server.stop()


@pytest.fixture(params=["sqlite", "postgresql"])
def server_store(request: pytest.FixtureRequest, tmp_path: Any) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/server.db"
    base: str = request.getfixturevalue("syncline_postgres_url")
    return f"{base}?schema=http{next(_n)}"


@pytest.fixture
def server(server_store: str) -> Iterator[LiveServer]:
    config = ServerConfig(store=server_store, tokens=TOKENS, jwt_key=SECRET,
                          jwt_audience="syncline-tests", max_body_bytes=256 * 1024,
                          max_mutations=50)
    with LiveServer(config, [Note]) as live:
        yield live


def client(server: LiveServer, token: str | None, url: str = "memory://") -> Store:
    options = {"token": token, "timeout": 5} if token else {"timeout": 5}
    return syncline.open(url, entities=[Note], transport=server.url, transport_options=options,
                         sync_options={"batch_size": 20, "page_size": 25})


def test_two_users_share_nothing_and_converge(server: LiveServer) -> None:
    alice1, alice2 = client(server, "alice-token"), client(server, "alice-token", "sqlite://")
    bob = client(server, "bob-token")
    try:
        for i in range(30):  # offline writes on both of alice's devices and bob's
            alice1.repository(Note).insert(Note(f"a1-{i}", "alice", "one"))
            alice2.repository(Note).insert(Note(f"a2-{i}", "alice", "two"))
            bob.repository(Note).insert(Note(f"b-{i}", "bob", "secret"))
        for _ in range(2):
            for store in (alice1, alice2, bob):
                report = store.sync()
                assert report.ok, report
        assert alice1.repository(Note).all() == alice2.repository(Note).all()
        assert alice1.repository(Note).count() == 60
        assert {n.owner_tag for n in bob.repository(Note).all()} == {"bob"}
        assert bob.repository(Note).count() == 30
    finally:
        for store in (alice1, alice2, bob):
            store.close()


def test_shared_entities_are_seen_by_all_private_ones_by_their_owner(server_store: str) -> None:
    config = ServerConfig(store=server_store, tokens=TOKENS, shared=["http_board"])
    with LiveServer(config, [Note, Pin]) as live:
        stores = [syncline.open("memory://", entities=[Note, Pin], transport=live.url,
                                transport_options={"token": token})
                  for token in ("alice-token", "bob-token")]
        try:
            alice, bob = stores
            alice.repository(Pin).insert(Pin("p1", "alice's pin"))
            alice.repository(Note).insert(Note("n1", "alice", "alice's diary"))
            bob.repository(Pin).insert(Pin("p2", "bob's pin"))
            bob.repository(Note).insert(Note("n2", "bob", "bob's diary"))
            for _ in range(2):
                for store in stores:
                    assert store.sync().ok
            for store in stores:
                assert [p.id for p in store.repository(Pin).all()] == ["p1", "p2"]
            assert [n.id for n in alice.repository(Note).all()] == ["n1"]
            assert [n.id for n in bob.repository(Note).all()] == ["n2"]
            bob.repository(Pin).update("p1", text="bob edited alice's pin")
            assert bob.sync().ok and alice.sync().ok
            assert alice.repository(Pin).get("p1") == Pin("p1", "bob edited alice's pin")
        finally:
            for store in stores:
                store.close()


def test_a_server_restart_and_dropped_connections_lose_nothing(server: LiveServer) -> None:
    store = client(server, "alice-token")
    try:
        notes = store.repository(Note)
        notes.upsert_many([Note(f"r{i}", "alice", "x") for i in range(40)])
        server.stop()
        assert store.sync().failures  # refused connections: retryable, nothing lost
        server.restart()
        assert store.outbox.dead_letters() == []
        store.network_available()  # the real clock: end the backoff instead of waiting it out
        report = store.sync()
        assert report.ok and report.pushed == 40
        assert server.sync.server.store.repository(Note).count() == 40
    finally:
        store.close()


@pytest.mark.parametrize("closed", [
    httpx.RemoteProtocolError("Server disconnected without sending a response."),
    httpx.ReadError("[Errno 104] Connection reset by peer")])
def test_a_keep_alive_connection_closed_under_a_request_is_retried_at_once(
        server: LiveServer, closed: httpx.TransportError) -> None:
    """The server's keep-alive timeout closes a connection as a request goes out on it: sent
    again on a new one, not a failed sync; a push whose answer was lost so is a duplicate."""
    store = client(server, "alice-token")
    try:
        transport = store.sync_engine.transport
        assert isinstance(transport, HTTPTransport)
        post = transport.client.post
        lost: list[str] = []

        def closing(path: str, **kwargs: Any) -> httpx.Response:
            answer = post(path, **kwargs)  # the server did it; its answer is lost
            if path not in lost:  # the first of each: the push's, the pull's
                lost.append(path)
                raise closed
            return answer

        transport.client.post = closing  # type: ignore[method-assign]
        store.repository(Note).insert(Note("k", "alice", "x"))
        report = store.sync()  # the push's first answer and the pull's are lost
        assert report.ok and report.pushed == 1 and report.failures == []
        assert lost == ["v1/push", "v1/pull"]
        assert server.sync.server.store.repository(Note).count() == 1
        assert store.outbox.pending_count() == 0
    finally:
        store.close()


def test_jwt_principals(server: LiveServer) -> None:
    now = dt.datetime.now(dt.UTC)

    def token(**claims: Any) -> str:
        body = {"sub": "carol", "aud": "syncline-tests", "exp": now + dt.timedelta(hours=1)}
        body.update(claims)
        return jwt.encode(body, SECRET, algorithm="HS256")

    good = client(server, token())
    try:
        good.repository(Note).insert(Note("c1", "carol", "jwt"))
        assert good.sync().ok
    finally:
        good.close()
    for bad in (token(exp=now - dt.timedelta(hours=1)), token(aud="someone-else"),
                jwt.encode({"sub": "carol", "aud": "syncline-tests",
                            "exp": now + dt.timedelta(hours=1)}, None, algorithm="none"),
                token()[:-4] + "AAAA"):
        response = httpx.post(server.url + "v1/pull", json={},
                              headers={"Authorization": f"Bearer {bad}"})
        assert response.status_code == 401, bad


def push(server: LiveServer, body: Any, token: str = "alice-token",
         **headers: str) -> httpx.Response:
    return httpx.post(server.url + "v1/push", json=body,
                      headers={"Authorization": f"Bearer {token}", **headers})


def mutation(mid: str, rid: str, **payload: Any) -> dict[str, Any]:
    return {"id": mid, "entity": "http_notes", "action": "create", "record_id": rid,
            "payload": {"id": rid, "owner_tag": "x", "text": "t", **payload}}


def test_error_answers(server: LiveServer) -> None:
    assert push(server, {"mutations": []}, token="wrong").status_code == 401
    assert httpx.post(server.url + "v1/push", json={"mutations": []}).status_code == 401
    too_many = {"mutations": [mutation(f"m{i}", f"r{i}") for i in range(51)]}
    assert push(server, too_many).status_code == 413
    big = httpx.post(server.url + "v1/push", content=b"x" * (300 * 1024),
                     headers={"Authorization": "Bearer alice-token"})
    assert big.status_code == 413
    bomb = gzip.compress(b"[" + b" " * (2 * 1024 * 1024) + b"]")
    assert httpx.post(server.url + "v1/push", content=bomb, headers={
        "Authorization": "Bearer alice-token", "Content-Encoding": "gzip",
        "Content-Type": "application/json"}).status_code == 413
    bad = push(server, {"mutations": [{"id": "m1", "entity": "http_notes", "action": "fly"}]})
    assert bad.status_code == 422 and bad.json()["error"]["field"] == "mutations[0]"
    twice = push(server, {"mutations": [mutation("m1", "r1"), mutation("m1", "r2")]})
    assert twice.status_code == 409
    missing = httpx.post(server.url + "v1/pull", json={"entities": ["nope"]},
                         headers={"Authorization": "Bearer alice-token"})
    assert missing.status_code == 422 and missing.json()["error"]["code"] == "unknown_entity"
    assert httpx.get(server.url + "v1/nothing").status_code == 404
    body = httpx.post(server.url + "v1/pull", content=b"{not json",
                      headers={"Authorization": "Bearer alice-token",
                               "Content-Type": "application/json"})
    assert body.status_code == 400 and "Traceback" not in body.text
    # none of these changed anything
    assert server.sync.server.store.repository(ChangeEntry).count() == 0


def test_payload_fields_are_checked_and_owner_comes_from_the_token(server: LiveServer) -> None:
    answer = push(server, {"mutations": [mutation("m1", "r1", owner="bob", version=99)]})
    result = answer.json()["results"][0]
    assert result["status"] == "rejected" and "owner" in result["reason"]
    ok = push(server, {"mutations": [mutation("m2", "r2")]}).json()["results"][0]
    assert ok["status"] == "applied"
    theirs = httpx.post(server.url + "v1/pull", json={},
                        headers={"Authorization": "Bearer bob-token"}).json()
    assert theirs["changes"] == []


def test_rate_limit_answers_429_with_retry_after(server_store: str) -> None:
    config = ServerConfig(store=server_store, tokens=TOKENS, rate_limit=3)
    with LiveServer(config, [Note]) as live:
        codes = [httpx.post(live.url + "v1/pull", json={},
                            headers={"Authorization": "Bearer alice-token"}) for _ in range(5)]
        assert [r.status_code for r in codes[:3]] == [200, 200, 200]
        assert codes[-1].status_code == 429 and int(codes[-1].headers["retry-after"]) >= 1
        other = httpx.post(live.url + "v1/pull", json={},
                           headers={"Authorization": "Bearer bob-token"})
        assert other.status_code == 200  # limits are per principal


def test_gzip_both_ways(server: LiveServer) -> None:
    body = {"mutations": [mutation(f"g{i}", f"g{i}", text="y" * 200) for i in range(20)]}
    packed = gzip.compress(json.dumps(body).encode())
    answer = httpx.post(server.url + "v1/push", content=packed, headers={
        "Authorization": "Bearer alice-token", "Content-Encoding": "gzip",
        "Accept-Encoding": "gzip", "Content-Type": "application/json"})
    assert answer.status_code == 200
    assert answer.headers.get("content-encoding") == "gzip"
    assert [r["status"] for r in answer.json()["results"]] == ["applied"] * 20


def test_health_schema_and_openapi(server: LiveServer) -> None:
    assert httpx.get(server.url + "v1/health").json()["status"] == "ok"
    schema = httpx.get(server.url + "v1/schema").json()
    assert schema["entities"][0]["name"] == "http_notes"
    assert schema["limits"]["max_mutations"] == 50
    doc = httpx.get(server.url + "v1/openapi.json").json()
    assert set(doc["paths"]) == {"/v1/health", "/v1/schema", "/v1/whoami", "/v1/push",
                                 "/v1/pull", "/v1/changes/live"}
