"""Protocol versions over HTTP: a protocol 1 client (whole records, no header) and a protocol 2
client against one server, and a protocol 2 client against a protocol 1 server."""

from __future__ import annotations

import asyncio
from collections.abc import Iterator
from typing import Any

import attrs
import httpx
import pytest

import syncline
from syncline.server import app as server_app
from syncline.server.app import ServerConfig
from syncline.testing.server import LiveServer

registry = syncline.EntityRegistry()
TOKENS = {"alice-token": "alice"}
AUTH = {"Authorization": "Bearer alice-token"}
#: the keys of a protocol 1 answer to a mutation (its parsers refuse others)
V1_RESULT = {"id", "status", "server_id", "version", "record", "updated_at", "reason",
             "retry_after"}


@registry.entity("hpatch_notes", syncs=True)
@attrs.define
class Note:
    id: str
    title: str
    body: str = ""
    count: int = 0


# The server's store on each bundled backend, from the suites' test stores (store_url).
pytestmark = pytest.mark.syncline_backends("memory", "sqlite", "postgresql")


@pytest.fixture
def server(store_url: str) -> Iterator[LiveServer]:
    with LiveServer(ServerConfig(store=store_url, tokens=TOKENS), [Note]) as live:
        yield live


def client(server: LiveServer, **options: Any) -> syncline.Store:
    return syncline.open("memory://", entities=[Note], transport=server.url,
                         transport_options={"token": "alice-token", **options})


def push(server: LiveServer, *mutations: dict[str, Any],
         headers: dict[str, str] | None = None) -> httpx.Response:
    return httpx.post(server.url + "v1/push", json={"mutations": list(mutations)},
                      headers={**AUTH, **(headers or {})})


def test_a_protocol_1_client_without_the_header_updates_whole_records(
        server: LiveServer) -> None:
    create = {"id": "m1", "entity": "hpatch_notes", "action": "create", "record_id": "n1",
              "payload": {"id": "n1", "title": "t", "body": "b", "count": 5}}
    made = push(server, create).json()["results"][0]
    update = {"id": "m2", "entity": "hpatch_notes", "action": "update", "record_id": "n1",
              "base_version": made["version"], "payload": {"id": "n1", "title": "t2"}}
    stale = {**update, "id": "m3", "payload": {"id": "n1", "title": "t3"}}
    results = push(server, update, stale).json()["results"]
    assert [r["status"] for r in results] == ["applied", "conflict"]
    assert all(set(r) == V1_RESULT for r in [made, *results])
    # protocol 1: the update is the whole record (left-out fields take their defaults)
    stored = server.sync.server.store.repository(Note).get("n1")
    assert attrs.astuple(stored) == ("n1", "t2", "", 0)


def test_a_patch_needs_protocol_2(server: LiveServer) -> None:
    patch = {"id": "m1", "entity": "hpatch_notes", "action": "update", "record_id": "n1",
             "base_version": 1, "payload": {"title": "x"}, "base": {"title": "t"}}
    answer = push(server, patch)
    error = answer.json()["error"]
    assert answer.status_code == 422 and error["field"] == "mutations[0]"
    assert "Syncline-Protocol 2" in error["message"]


def test_protocol_1_and_2_clients_sync_through_one_server(server: LiveServer) -> None:
    old, new = client(server, protocol=1), client(server)
    try:
        old.repository(Note).upsert(Note("n1", "title", "body", 5))
        assert old.sync().ok and new.sync().ok
        old.repository(Note).update("n1", title="old's title")
        new.repository(Note).update("n1", count=6)
        assert old.sync().ok
        report = new.sync()  # a patch: merged with the old client's whole record
        assert report.ok and report.conflicts == []
        assert old.sync().ok
        both = Note("n1", "old's title", "body", 6)
        assert old.repository(Note).get("n1") == new.repository(Note).get("n1") == both
        # the old client's concurrent whole-record update conflicts, as protocol 1 says
        new.repository(Note).update("n1", body="new's body")
        assert new.sync().ok
        old.repository(Note).update("n1", title="again")
        assert len(old.sync().conflicts) == 1
    finally:
        old.close()
        new.close()


def test_a_protocol_2_client_speaks_1_to_a_protocol_1_server(
        server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(server_app, "PROTOCOLS", {"min": 1, "max": 1})
    phone = client(server)
    try:
        assert phone.sync().ok  # a pull first: refused as version 2, then spoken as 1
        transport: Any = phone.sync_engine.transport
        assert transport.protocol == 1
        phone.repository(Note).upsert(Note("n1", "title", "body", 5))
        phone.repository(Note).update("n1", title="changed")
        assert phone.sync().ok  # whole records (a patch would be a 422 here)
        stored = server.sync.server.store.repository(Note).get("n1")
        assert attrs.astuple(stored) == ("n1", "changed", "body", 5)
    finally:
        phone.close()


def test_an_asyncio_client_sends_patches_and_speaks_1_to_a_protocol_1_server(
        server: LiveServer, monkeypatch: pytest.MonkeyPatch) -> None:
    import syncline.aio
    from syncline.testing.aio.bridge import run_async

    first = client(server)
    first.repository(Note).upsert(Note("n1", "title", "body", 5))
    assert first.sync().ok
    first.close()

    async def edit(body: str) -> Any:
        phone = await asyncio.to_thread(client, server)  # sync calls stay off the loop
        try:
            async with syncline.aio.open(
                    "memory://", entities=[Note], transport=server.url,
                    transport_options={"token": "alice-token"}) as store:
                assert (await store.sync()).ok and (await asyncio.to_thread(phone.sync)).ok
                await store.repository(Note).update("n1", body=body)
                await asyncio.to_thread(phone.repository(Note).update, "n1",
                                        title=f"title {body}")
                assert (await asyncio.to_thread(phone.sync)).ok
                report = await store.sync()  # a patch of body: merged with the title
                assert report.ok
                return report.conflicts, await store.repository(Note).get("n1")
        finally:
            await asyncio.to_thread(phone.close)

    assert run_async(lambda: edit("async")) == ([], Note("n1", "title async", "async", 5))
    monkeypatch.setattr(server_app, "PROTOCOLS", {"min": 1, "max": 1})
    # protocol 1: whole records, so the same edits conflict (server wins)
    conflicts, kept = run_async(lambda: edit("v1"))
    assert len(conflicts) == 1 and kept == Note("n1", "title v1", "async", 5)
