"""What a client can learn from the server before syncing: the protocol versions it accepts
(and a clear sync error outside them), who the credentials stand for, the limits, the
OpenAPI document; and CORS for browser clients."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest
from openapi_spec_validator import validate

import syncline
from syncline.core.spi.transport import PROTOCOL_VERSION, ProtocolMismatchError
from syncline.plugins.http import HTTPTransport
from syncline.server import app as server_app
from syncline.server.app import ServerConfig
from syncline.testing.server import LiveServer

registry = syncline.EntityRegistry()
TOKENS = {"alice-token": "alice", "carol-token": "carol"}


@registry.entity("disc_notes", syncs=True)
@attrs.define
class Note:
    id: str
    text: str
    stars: int | None = None


@registry.entity("disc_board", syncs=True)
@attrs.define
class Pin:
    id: str
    text: str


@pytest.fixture(scope="module")
def server(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = ServerConfig(store=f"sqlite:///{tmp_path_factory.mktemp('disc')}/server.db",
                          tokens=TOKENS, shared=["disc_board"], rate_limit=1000,
                          permissions={"carol": ["disc_board"]},
                          cors_origins=["https://app.example.org"])
    with LiveServer(config, [Note, Pin]) as live:
        yield live


def test_health_and_schema_publish_the_accepted_protocol_versions(server: LiveServer) -> None:
    health = httpx.get(server.url + "v1/health").json()
    schema = httpx.get(server.url + "v1/schema").json()
    assert health["protocol"] == schema["protocol"] == {"min": 1, "max": PROTOCOL_VERSION}
    assert health["schema_version"] == schema["schema_version"] == 1


def test_limits_are_published(server: LiveServer) -> None:
    limits = httpx.get(server.url + "v1/schema").json()["limits"]
    assert limits == {"max_body_bytes": 4 * 1024 * 1024, "max_mutations": 500,
                      "max_page": 1000, "max_depth": 100, "rate_limit": 1000,
                      "header_timeout": 10.0, "body_timeout": 30.0,
                      "keep_alive_timeout": 5.0, "max_live_clients": 1000,
                      "live_heartbeat": 15.0}


@pytest.mark.parametrize(("token", "entities", "shared"), [
    ("alice-token", ["disc_notes", "disc_board"], ["disc_board"]),
    ("carol-token", ["disc_board"], ["disc_board"]),
])
def test_whoami_names_the_principal_and_what_it_may_sync(
        server: LiveServer, token: str, entities: list[str], shared: list[str]) -> None:
    answer = httpx.get(server.url + "v1/whoami", headers={"Authorization": f"Bearer {token}"})
    assert answer.json() == {"principal": TOKENS[token], "entities": entities,
                             "shared": shared}


def test_whoami_needs_credentials(server: LiveServer) -> None:
    answer = httpx.get(server.url + "v1/whoami")
    assert answer.status_code == 401 and answer.json()["error"]["code"] == "unauthenticated"


@pytest.mark.parametrize("sent", ["0", "3", "x", "1.0", "", "99999999999"])
def test_a_protocol_version_outside_the_range_is_refused(server: LiveServer,
                                                          sent: str) -> None:
    answer = httpx.post(server.url + "v1/pull", json={}, headers={
        "Authorization": "Bearer alice-token", "Syncline-Protocol": sent})
    error = answer.json()["error"]
    assert answer.status_code == 400 and error["code"] == "unsupported_protocol"
    assert error["field"] == "Syncline-Protocol" and "1 to 2" in error["message"]


def test_a_client_without_the_header_is_taken_as_version_1(server: LiveServer) -> None:
    answer = httpx.post(server.url + "v1/pull", json={},
                        headers={"Authorization": "Bearer alice-token"})
    assert answer.status_code == 200


def test_a_client_outside_the_servers_range_gets_a_sync_error_and_keeps_its_queue(
        server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_app, "PROTOCOLS", {"min": 3, "max": 4})
    client = syncline.open("memory://", entities=[Note], transport=server.url,
                           transport_options={"token": "alice-token"})
    try:
        client.repository(Note).insert(Note("n1", "kept"))
        report = client.sync()
        assert not report.ok and not report.rejected
        assert any("protocol" in f and "upgrade" in f for f in report.failures), report
        assert client.outbox.pending_count() == 1 and client.outbox.dead_letters() == []
    finally:
        client.close()
    # and one that skips reading the range is refused by the server itself
    transport = HTTPTransport(server.url, {"token": "alice-token"})
    try:
        with pytest.raises(ProtocolMismatchError, match="versions 3 to 4"):
            transport.pull(None, 10)
    finally:
        transport.close()


def test_the_client_sends_its_protocol_and_schema_versions(server: LiveServer) -> None:
    transport = HTTPTransport(server.url, {"token": "t", "schema_version": 4})
    try:
        assert transport.client.headers["syncline-protocol"] == str(PROTOCOL_VERSION)
        assert transport.client.headers["syncline-schema"] == "4"
    finally:
        transport.close()


def test_cors_preflight_and_answers_for_a_configured_origin(server: LiveServer) -> None:
    origin = "https://app.example.org"
    preflight = httpx.options(server.url + "v1/push", headers={
        "Origin": origin, "Access-Control-Request-Method": "POST",
        "Access-Control-Request-Headers": "authorization,content-type,syncline-protocol"})
    assert preflight.status_code == 200
    assert preflight.headers["access-control-allow-origin"] == origin
    assert "syncline-protocol" in preflight.headers["access-control-allow-headers"].lower()
    answer = httpx.post(server.url + "v1/pull", json={}, headers={
        "Origin": origin, "Authorization": "Bearer alice-token"})
    assert answer.headers["access-control-allow-origin"] == origin
    other = httpx.options(server.url + "v1/push", headers={
        "Origin": "https://evil.example", "Access-Control-Request-Method": "POST"})
    assert "access-control-allow-origin" not in other.headers


def test_no_cors_unless_configured(tmp_path: Any) -> None:
    with LiveServer(ServerConfig(store="memory://", tokens=TOKENS), [Note]) as live:
        answer = httpx.post(live.url + "v1/pull", json={}, headers={
            "Origin": "https://app.example.org", "Authorization": "Bearer alice-token"})
    assert answer.status_code == 200 and "access-control-allow-origin" not in answer.headers


def test_the_openapi_document_is_valid_and_typed_per_entity(server: LiveServer) -> None:
    doc = httpx.get(server.url + "v1/openapi.json").json()
    validate(doc)
    schemas = doc["components"]["schemas"]
    assert schemas["Mutation_disc_notes"]["properties"]["entity"]["enum"] == ["disc_notes"]
    assert schemas["Mutation_disc_notes"]["properties"]["base"]["allOf"] == [
        {"$ref": "#/components/schemas/Patch_disc_notes"}]
    assert schemas["Patch_disc_notes"]["properties"] == schemas["Record_disc_notes"][
        "properties"]
    record = schemas["Record_disc_notes"]["properties"]
    assert record["stars"] == {"type": "integer", "nullable": True}
    codes = schemas["Error"]["properties"]["error"]["properties"]["code"]["enum"]
    assert {"unknown_entity", "unsupported_protocol", "bad_media_type", "timeout"} <= set(codes)
    for path in ("/v1/health", "/v1/schema", "/v1/whoami"):
        assert "schema" in doc["paths"][path]["get"]["responses"]["200"]["content"][
            "application/json"]
    assert doc["x-syncline-limits"]["max_mutations"] == 500


def test_every_answer_of_a_session_matches_the_openapi_document(server: LiveServer) -> None:
    import schemathesis
    from schemathesis.specs.openapi.checks import response_schema_conformance

    headers = {"Authorization": "Bearer alice-token"}
    schema = schemathesis.openapi.from_url(server.url + "v1/openapi.json")
    start = httpx.post(server.url + "v1/pull", json={}, headers=headers).json()["cursor"]
    note = {"id": "oa-1", "entity": "disc_notes", "action": "create", "record_id": "oa-1",
            "payload": {"id": "oa-1", "text": "x", "stars": 2}}
    made = httpx.post(server.url + "v1/push", json={"mutations": [note]},
                      headers=headers).json()["results"][0]
    gone = {"id": "oa-2", "entity": "disc_notes", "action": "delete", "record_id": "oa-1",
            "base_version": made["version"]}
    stale = {"id": "oa-3", "entity": "disc_notes", "action": "update", "record_id": "oa-1",
             "base_version": made["version"], "payload": {"id": "oa-1", "text": "y"}}
    bad = {**note, "id": "oa-4", "record_id": "oa-4", "payload": {"id": "oa-4", "text": 1}}
    # protocol 2: a patch merged with a later change (applied with the record), and one
    # whose field changed concurrently (a conflict naming it)
    other = {**note, "id": "oa-5", "record_id": "oa-5",
             "payload": {"id": "oa-5", "text": "x", "stars": 1}}
    first = httpx.post(server.url + "v1/push", json={"mutations": [other]},
                       headers=headers).json()["results"][0]
    moved = {"id": "oa-6", "entity": "disc_notes", "action": "update", "record_id": "oa-5",
             "base_version": first["version"], "payload": {"text": "moved"},
             "base": {"text": "x"}}
    merged = {**moved, "id": "oa-7", "payload": {"stars": 3}, "base": {"stars": 1}}
    clash = {**moved, "id": "oa-8", "payload": {"text": "clash"}}
    calls: list[tuple[str, str, Any]] = [
        ("/v1/push", "POST", {"mutations": [note, gone, stale, bad]}),   # every status
        ("/v1/push", "POST", {"mutations": [moved, merged, clash]}),     # patches
        ("/v1/pull", "POST", {"cursor": start}),                          # with a tombstone
        ("/v1/pull", "POST", {"entities": ["nope"]}),                      # an error
        ("/v1/whoami", "GET", None), ("/v1/health", "GET", None), ("/v1/schema", "GET", None)]
    for path, method, body in calls:
        operation = schema[path][method]
        case = operation.Case(body=body) if body is not None else operation.Case()
        answer = case.call(base_url=server.url.rstrip("/"),
                           headers={**headers, "Syncline-Protocol": "2"})
        case.validate_response(answer, checks=[response_schema_conformance])
        if body is not None and body.get("mutations", [{}])[0].get("base"):
            results = answer.json()["results"]
            assert [r["status"] for r in results] == ["applied", "applied", "conflict"]
            assert results[1]["record"] == {"id": "oa-5", "text": "moved", "stars": 3}
            assert results[2]["fields"] == ["text"]
        if body == {"cursor": start}:
            assert "delete" in [c["op"] for c in answer.json()["changes"]]
