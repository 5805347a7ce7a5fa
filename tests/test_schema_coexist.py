"""Schema versions that coexist: a server at schema version 2 serves a client of version 1
beside one of version 2 (pushes upgraded, answers and pulls downgraded, by what the migration
declares), and refuses with "upgrade required" what it cannot translate, the client keeping
its queue until it is upgraded. On memory, SQLite and PostgreSQL server stores through the mock
transport, and through the real HTTP server (its OpenAPI document checked on every request and
answer)."""

from __future__ import annotations

import logging
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import attrs
import httpx
import pytest
from openapi_schema_validator import OAS30Validator

import syncline
from syncline.core.spi.transport import UpgradeRequiredError
from syncline.plugins.mock import MockServer
from syncline.server import open_server_store
from syncline.server.app import ServerConfig
from syncline.server.versions import Versions
from syncline.testing.server import LiveServer

v1, v2 = syncline.EntityRegistry(), syncline.EntityRegistry()


@v1.entity("cx_notes", syncs=True)
@attrs.define
class Note1:
    id: str
    text: str
    mood: str = "calm"                 # dropped in version 2


@v1.entity("cx_tasks", syncs=True)
@attrs.define
class Task1:
    id: str
    title: str
    priority: str                      # a number, as text


@v2.entity("cx_notes", syncs=True)
@attrs.define
class Note2:
    id: str
    body: str                          # was: text
    stars: int = 0                     # new


@v2.entity("cx_tasks", syncs=True)
@attrs.define
class Task2:
    id: str
    title: str
    priority: int                      # was: str


NOTES_2 = syncline.TableMigration(Note2, renamed={"body": "text"}, new_columns=["stars"])
TASKS_2 = syncline.TableMigration(Task2, column_transformer={
    "priority": lambda row: int(row["priority"])})


def to_2(m: syncline.Migrator) -> None:
    m.alter_table(NOTES_2)
    m.alter_table(TASKS_2)


def priority_up(payload: dict[str, Any]) -> dict[str, Any]:
    """Version 1's task (or patch of one) in version 2's shape: the priority as a number."""
    if "priority" in payload:
        payload["priority"] = int(payload["priority"])
    return payload


def priority_down(record: dict[str, Any]) -> dict[str, Any]:
    return {**record, "priority": str(record["priority"])}


MIGRATION = syncline.MigrationStrategy(on_upgrade=syncline.steps({2: to_2}))
SCHEMA_1 = syncline.Schema(1, [Note1, Task1])
PREVIOUS = syncline.PreviousSchema(1, [Note1, Task1], tables=[NOTES_2],
                                   upgrade_payload={"cx_tasks": priority_up},
                                   downgrade_payload={"cx_tasks": priority_down})
SCHEMA_2 = syncline.Schema(2, [Note2, Task2], migration=MIGRATION, previous=PREVIOUS)
#: version 2 alone: a server that no longer serves version 1
ONLY_2 = syncline.Schema(2, [Note2, Task2], migration=MIGRATION)


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def server_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "memory":
        return "memory://"
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/server.db"
    url: str = request.getfixturevalue("postgres_url")
    return f"{url}?schema=cx{uuid.uuid4().hex[:12]}"


@pytest.fixture
def serve(server_url: str) -> Iterator[Callable[[syncline.Schema], MockServer]]:
    """Starts a MockServer over a server store at a schema (one at a time)."""
    servers: list[MockServer] = []

    def start(schema: syncline.Schema) -> MockServer:
        store = open_server_store(server_url, schema=schema,
                                  options={"isolation": "read committed"})
        servers.append(MockServer("coexist", store=store))
        return servers[-1]

    yield start
    for server in servers:
        server.close()


def client(path: Path, name: str, schema: syncline.Schema, **options: Any) -> syncline.Store:
    return syncline.open(f"sqlite:///{path}/{name}.db", schema=schema,
                         transport=options.pop("transport", "mock://coexist"),
                         transport_options=options)


def test_a_v1_and_a_v2_client_sync_through_one_server(
        serve: Callable[[syncline.Schema], MockServer], tmp_path: Path,
        caplog: pytest.LogCaptureFixture) -> None:
    server = serve(SCHEMA_2)
    old, new = client(tmp_path, "old", SCHEMA_1), client(tmp_path, "new", SCHEMA_2)
    try:
        with caplog.at_level(logging.INFO, logger="syncline.server"):
            old.repository(Note1).insert(Note1("n1", "from v1", mood="happy"))
            old.repository(Task1).insert(Task1("t1", "file taxes", "3"))
            assert old.sync().pushed == 2
        assert "serving a client of schema version 1 (the server is at 2)" in caplog.text
        new.repository(Note2).insert(Note2("n2", "from v2", stars=4))
        assert new.sync().pushed == 1
        # the server holds version 2's shape; each client reads its own
        assert server.store.repository(Note2).get("n1") == Note2("n1", "from v1", 0)
        assert server.store.repository(Task2).get("t1") == Task2("t1", "file taxes", 3)
        assert new.repository(Task2).get("t1") == Task2("t1", "file taxes", 3)
        old.sync()
        assert old.repository(Note1).get("n2") == Note1("n2", "from v2", "calm")
        # a field version 1 does not know keeps its value through version 1's update
        new.repository(Note2).update("n1", stars=5)
        new.repository(Task2).update("t1", priority=7)
        assert new.sync().pushed == 2
        old.sync()
        assert old.repository(Task1).get("t1") == Task1("t1", "file taxes", "7")
        old.repository(Note1).update("n1", text="edited in v1")
        old.repository(Task1).update("t1", priority="8")
        assert old.sync().pushed == 2
        new.sync()
        assert new.repository(Note2).get("n1") == Note2("n1", "edited in v1", 5)
        assert new.repository(Task2).get("t1") == Task2("t1", "file taxes", 8)
        # and deletes go both ways
        old.repository(Note1).delete("n2")
        assert old.sync().pushed == 1
        new.sync()
        assert new.repository(Note2).get("n2") is None
    finally:
        old.close()
        new.close()


def test_a_v1_client_without_patches_keeps_the_fields_it_does_not_know(
        serve: Callable[[syncline.Schema], MockServer], tmp_path: Path) -> None:
    server = serve(SCHEMA_2)
    old = client(tmp_path, "old", SCHEMA_1, protocol=1)   # whole records for updates
    new = client(tmp_path, "new", SCHEMA_2)
    try:
        new.repository(Note2).insert(Note2("n1", "v2", stars=9))
        new.sync()
        old.sync()
        old.repository(Note1).update("n1", text="whole record from v1")
        report = old.sync()
        assert report.pushed == 1 and report.ok, report
        assert server.store.repository(Note2).get("n1") == Note2("n1", "whole record from v1", 9)
    finally:
        old.close()
        new.close()


def test_a_conflict_is_answered_in_the_old_clients_shape(
        serve: Callable[[syncline.Schema], MockServer], tmp_path: Path) -> None:
    serve(SCHEMA_2)
    old = syncline.open(f"sqlite:///{tmp_path}/old.db", schema=SCHEMA_1,
                        transport="mock://coexist", sync_options={"strategy": "server_wins"})
    new = client(tmp_path, "new", SCHEMA_2)
    try:
        new.repository(Note2).insert(Note2("n1", "first", stars=2))
        new.sync()
        old.sync()
        new.repository(Note2).update("n1", body="server side")
        new.sync()
        old.repository(Note1).update("n1", text="client side")
        report = old.sync()
        assert len(report.conflicts) == 1 and not report.rejected, report
        [conflict] = report.conflicts
        assert conflict.fields == ("text",)           # named as version 1 names it
        assert old.repository(Note1).get("n1") == Note1("n1", "server side", "calm")
        assert old.outbox.dead_letters() == []
    finally:
        old.close()
        new.close()


def test_a_payload_the_declared_transform_cannot_upgrade_is_rejected_alone(
        serve: Callable[[syncline.Schema], MockServer], tmp_path: Path) -> None:
    server = serve(SCHEMA_2)
    old = client(tmp_path, "old", SCHEMA_1)
    try:
        old.repository(Task1).insert(Task1("t1", "fine", "1"))
        old.repository(Task1).insert(Task1("t2", "not a number", "high"))
        report = old.sync()
        assert report.pushed == 1
        [rejected] = report.rejected
        assert "t2" in rejected and "cannot be upgraded to 2" in rejected
        assert "ValueError" in rejected
        assert [t.id for t in server.store.repository(Task2).all()] == ["t1"]
    finally:
        old.close()


def test_a_client_older_than_the_range_is_told_to_upgrade_and_its_queue_goes_after(
        serve: Callable[[syncline.Schema], MockServer], tmp_path: Path) -> None:
    server = serve(ONLY_2)
    old = client(tmp_path, "old", SCHEMA_1)
    old.repository(Note1).insert(Note1("n1", "queued in v1"))
    report = old.sync()
    assert not report.ok and not report.rejected
    [failure] = {f for f in report.failures}
    assert "schema version 1" in failure and "upgrade the app to schema version 2" in failure
    assert old.outbox.pending_count() == 1 and old.outbox.dead_letters() == []
    assert server.store.repository(Note2).all() == []
    with pytest.raises(UpgradeRequiredError, match="accepts schema versions 2 to 2"):
        old.sync_engine.transport.pull(None, 10)
    old.close()
    # the app is upgraded: its queue takes the new shape and goes
    upgraded = client(tmp_path, "old", SCHEMA_2)
    try:
        assert upgraded.sync().pushed == 1
        assert server.store.repository(Note2).get("n1") == Note2("n1", "queued in v1", 0)
        assert upgraded.outbox.dead_letters() == []
    finally:
        upgraded.close()


def test_a_push_whose_answer_was_lost_before_the_app_upgraded_is_a_duplicate_after(
        serve: Callable[[syncline.Schema], MockServer], tmp_path: Path) -> None:
    server = serve(SCHEMA_2)
    old = client(tmp_path, "old", SCHEMA_1)
    old.repository(Note1).insert(Note1("n1", "applied, answer lost"))
    server.lose_next_responses(1)
    assert old.sync_engine.push().failures  # applied; the app never heard (nor pulled)
    assert old.outbox.pending_count() == 1
    old.close()
    upgraded = client(tmp_path, "old", SCHEMA_2)  # the entry keeps its id and old payload
    try:
        report = upgraded.sync()
        assert report.ok and report.pushed == 1 and not report.rejected, report
        assert upgraded.outbox.dead_letters() == [] and upgraded.outbox.pending_count() == 0
        assert server.store.repository(Note2).all() == [Note2("n1", "applied, answer lost")]
    finally:
        upgraded.close()


def test_a_newer_client_than_the_server_is_told_to_upgrade_the_server(
        serve: Callable[[syncline.Schema], MockServer], tmp_path: Path) -> None:
    serve(SCHEMA_1)
    new = client(tmp_path, "new", SCHEMA_2)
    try:
        new.repository(Note2).insert(Note2("n1", "too new"))
        report = new.sync()
        assert any("upgrade the server" in f for f in report.failures), report
        assert new.outbox.pending_count() == 1 and new.outbox.dead_letters() == []
    finally:
        new.close()


def test_a_migration_without_a_way_back_refuses_the_entity_to_old_clients(
        serve: Callable[[syncline.Schema], MockServer], tmp_path: Path) -> None:
    no_way_back = attrs.evolve(SCHEMA_2, previous=attrs.evolve(
        PREVIOUS, downgrade_payload={"cx_tasks": None}))
    server = serve(no_way_back)
    old = client(tmp_path, "old", SCHEMA_1)
    try:
        old.repository(Task1).insert(Task1("t1", "queued", "1"))
        report = old.sync()
        assert any("cx_tasks" in f and "no way back" in f and "upgrade the app" in f
                   for f in report.failures), report
        assert old.outbox.pending_count() == 1 and old.outbox.dead_letters() == []
        assert server.store.repository(Task2).all() == []
        # its other entities still sync, named alone
        with pytest.raises(UpgradeRequiredError):
            old.sync_engine.transport.pull(None, 10)
        assert old.sync_engine.transport.pull(None, 10, ["cx_notes"]).changes == []
    finally:
        old.close()


def test_the_accepted_range_and_what_cannot_be_derived() -> None:
    from syncline.core.model.schema import spec_of

    specs = {spec_of(c).table.name: spec_of(c) for c in (Note2, Task2)}
    with syncline.open("memory://", entities=[Note2]) as scratch:
        wire = scratch.wire
    assert Versions(2, specs, PREVIOUS, wire).accepted == {"min": 1, "max": 2}
    assert Versions(2, specs, None, wire).accepted == {"min": 2, "max": 2}
    with pytest.raises(syncline.MigrationError, match="must describe 2"):
        Versions(3, specs, PREVIOUS, wire)
    # priority changes its type: without a transform, version 1's tasks cannot be translated
    derived = Versions(2, specs, syncline.PreviousSchema(1, [Note1, Task1], tables=[NOTES_2]),
                       wire).old
    assert derived is not None
    tasks = derived.entities["cx_tasks"]
    assert tasks.no_upgrade is not None and "priority -> priority changes its type" in \
        tasks.no_upgrade
    notes = derived.entities["cx_notes"]
    assert notes.no_upgrade is None and notes.no_downgrade is None
    assert notes.upgrade({"id": "n", "text": "t", "mood": "x"}) == {"id": "n", "body": "t"}
    assert notes.downgrade({"id": "n", "body": "t", "stars": 3}) == {
        "id": "n", "text": "t", "mood": "calm"}
    with pytest.raises(syncline.MigrationError, match="must be the version just before"):
        syncline.Schema(3, [Note2], previous=PREVIOUS)
    with pytest.raises(syncline.MigrationError, match="renames 'nope'"):
        Versions(2, specs, syncline.PreviousSchema(1, [Note1], renamed={
            "cx_notes": {"body": "nope"}}), wire)


# -- over HTTP --------------------------------------------------------------------------------


TOKENS = {"alice-token": "alice"}
AUTH = {"Authorization": "Bearer alice-token"}


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    config = ServerConfig(store=f"sqlite:///{tmp_path}/server.db", schema=SCHEMA_2,
                          tokens=TOKENS)
    with LiveServer(config, []) as server:
        yield server


class Checked:
    """Checks every request body and answer of a client against the OpenAPI document."""

    def __init__(self, url: str) -> None:
        self.doc = httpx.get(url + "v1/openapi.json").json()
        self.seen: list[str] = []

    def check(self, name: str, value: Any) -> None:
        schema = {**self.doc["components"]["schemas"][name],
                  "components": self.doc["components"]}
        OAS30Validator(schema).validate(value)

    def request(self, request: httpx.Request) -> None:
        if request.url.path.endswith("/v1/push"):
            import json

            for m in json.loads(request.content)["mutations"]:
                self.check("Mutation", m)
            self.seen.append("push")

    def response(self, response: httpx.Response) -> None:
        response.read()
        path = response.request.url.path
        body = response.json()
        if response.status_code != 200:
            self.check("Error", body)
        elif path.endswith("/v1/push"):
            for result in body["results"]:
                self.check("Result", result)
        elif path.endswith("/v1/pull"):
            for change in body["changes"]:
                self.check("Change", change)
            self.seen.append("pull")


def http_client(live: LiveServer, tmp_path: Path, name: str, schema: syncline.Schema,
                checked: Checked) -> syncline.Store:
    store = client(tmp_path, name, schema, transport=live.url, token="alice-token")
    store.sync_engine.transport.client.event_hooks = {  # type: ignore[attr-defined]
        "request": [checked.request], "response": [checked.response]}
    return store


def test_v1_and_v2_clients_through_the_http_server(live: LiveServer, tmp_path: Path) -> None:
    for path in ("v1/health", "v1/schema"):
        assert httpx.get(live.url + path).json()["schema"] == {"min": 1, "max": 2}
    checked = Checked(live.url)
    assert checked.doc["x-syncline-schema"] == {"min": 1, "max": 2}
    assert "Record_cx_notes_v1" in checked.doc["components"]["schemas"]
    old = http_client(live, tmp_path, "old", SCHEMA_1, checked)
    new = http_client(live, tmp_path, "new", SCHEMA_2, checked)
    try:
        old.repository(Note1).insert(Note1("n1", "from v1"))
        old.repository(Task1).insert(Task1("t1", "taxes", "2"))
        assert old.sync().pushed == 2
        new.sync()
        assert new.repository(Task2).get("t1") == Task2("t1", "taxes", 2)
        new.repository(Note2).update("n1", stars=3, body="v2 edit")
        new.repository(Note2).insert(Note2("n2", "from v2"))
        new.sync()
        old.sync()
        assert old.repository(Note1).get("n1") == Note1("n1", "v2 edit", "calm")
        old.repository(Note1).update("n1", text="v1 edit")
        assert old.sync().pushed == 1
        new.sync()
        assert new.repository(Note2).get("n1") == Note2("n1", "v1 edit", 3)
        assert {"push", "pull"} <= set(checked.seen)
    finally:
        old.close()
        new.close()


@pytest.mark.parametrize(("header", "words"), [
    ("0", "upgrade the app to schema version 2"), ("3", "upgrade the server")])
def test_outside_the_range_is_409_upgrade_required(live: LiveServer, header: str,
                                                   words: str) -> None:
    checked = Checked(live.url)
    for path, body in (("v1/push", {"mutations": []}), ("v1/pull", {})):
        answer = httpx.post(live.url + path, json=body,
                            headers={**AUTH, "Syncline-Schema": header})
        assert answer.status_code == 409, answer.text
        error = answer.json()["error"]
        checked.check("Error", answer.json())
        assert error["code"] == "upgrade_required" and error["field"] == "Syncline-Schema"
        assert words in error["message"]
    # no header: a client from before it, served as the server's own version
    answer = httpx.post(live.url + "v1/pull", json={}, headers=AUTH)
    assert answer.status_code == 200
