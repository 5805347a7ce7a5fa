"""Strict validation of pushed mutations (issue 13, findings 7 and the value part of 8).

A pushed value is accepted only when it has its field's declared JSON type exactly and is inside
the value domain (syncline.core.model.values); otherwise that one mutation is ``rejected`` with a
reason naming the field, nothing is stored, and the rest of the push goes on. The same holds
on every server store: memory, SQLite and PostgreSQL.
"""

from __future__ import annotations

import functools
import math
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import cattrs
import pytest

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.model.schema import EntityRegistry
from syncline.core.spi.transport import Mutation, from_wire
from syncline.server.engine import SyncServer
from syncline.server.store import open_server_store
from syncline.server.tables import ChangeEntry

registry = EntityRegistry()


@registry.entity("val_todos", syncs=True, indexes=["owner"])
@attrs.define
class Todo:
    id: str
    text: str = ""
    count: int = 0
    done: bool = False
    tags: list[str] = attrs.Factory(list)
    ratio: float = 0.0
    data: dict[str, Any] = attrs.Factory(dict)
    owner: str = ""


def _deep(levels: int) -> dict[str, Any]:
    value: dict[str, Any] = {}
    for _ in range(levels - 1):
        value = {"a": value}
    return value


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def server(request: pytest.FixtureRequest, tmp_path: Any) -> Iterator[SyncServer]:
    kind = request.param
    if kind == "postgresql":
        url = f"{request.getfixturevalue('postgres_url')}?schema=v{uuid.uuid4().hex[:12]}"
    else:
        url = "memory://" if kind == "memory" else f"sqlite:///{tmp_path}/server.db"
    store = open_server_store(url, [Todo], clock=FakeClock())
    yield SyncServer(store)
    store.close()


def _nothing_stored(server: SyncServer) -> None:
    assert server.store.repository(Todo).count() == 0
    assert server.store.repository(ChangeEntry).count() == 0


def create(payload: dict[str, Any], mid: str = "m1", rid: str = "t1") -> Mutation:
    return Mutation(mid, "val_todos", "create", rid, {"id": rid, **payload})


# Issue 13 finding 7 (wrong types were converted) and finding 8 (values a server store cannot
# hold answered 500): each is rejected naming the field, on every server store.
BAD_VALUES = [
    pytest.param("text", None, id="finding7-null-text"),
    pytest.param("count", 1.5, id="finding7-float-for-int"),
    pytest.param("count", "6", id="finding7-string-for-int"),
    pytest.param("count", True, id="bool-for-int"),
    pytest.param("done", "no", id="finding7-string-for-bool"),
    pytest.param("done", 1, id="int-for-bool"),
    pytest.param("tags", "abc", id="finding7-string-for-list"),
    pytest.param("tags", [1], id="int-in-list-of-str"),
    pytest.param("ratio", "1.5", id="string-for-float"),
    pytest.param("count", 2**63, id="finding8-int-beyond-int64"),
    pytest.param("data", {"n": 2**70}, id="finding8-json-int-beyond-int64"),
    pytest.param("text", "a\x00b", id="finding8-nul"),
    pytest.param("text", "a\ud800b", id="finding8-lone-surrogate"),
    pytest.param("data", {"k": "\udfff"}, id="finding8-surrogate-in-json"),
    pytest.param("ratio", math.nan, id="finding8-nan"),
    pytest.param("ratio", math.inf, id="finding8-infinity"),
    pytest.param("data", {"x": -math.inf}, id="finding8-infinity-in-json"),
    pytest.param("data", _deep(1000), id="finding8-json-nested-1000-deep"),
    pytest.param("data", {"a": (1, 2)}, id="tuple-in-json"),
    pytest.param("owner", "x" * 5000, id="indexed-value-too-long"),
]


@pytest.mark.parametrize(("field", "value"), BAD_VALUES)
def test_a_bad_value_is_rejected_naming_the_field(server: SyncServer, field: str,
                                                   value: Any) -> None:
    [result] = server.push([create({field: value})]).results
    assert result.status == "rejected"
    assert result.reason is not None and field in result.reason
    _nothing_stored(server)


@pytest.mark.parametrize(("field", "value"), BAD_VALUES[:6])
def test_one_bad_mutation_does_not_stop_the_others(server: SyncServer, field: str,
                                                   value: Any) -> None:
    results = server.push([create({"text": "ok"}, "m1", "t1"), create({field: value}, "m2", "t2"),
                           create({"count": 3}, "m3", "t3")]).results
    assert [r.status for r in results] == ["applied", "rejected", "applied"]
    assert sorted(t.id for t in server.store.repository(Todo).all()) == ["t1", "t3"]


def test_values_inside_the_domain_are_applied_exactly(server: SyncServer) -> None:
    payload = {"text": "😀 é", "count": -(2**63), "done": False, "tags": ["a"], "ratio": 3,
               "data": {"big": 1e23, "n": 2**63 - 1, "deep": _deep(63), "f": 1e16}}
    [result] = server.push([create(payload)]).results
    assert result.status == "applied", result.reason
    got = server.store.repository(Todo).get("t1")
    assert got == Todo("t1", "😀 é", -(2**63), False, ["a"], 3.0,
                       {"big": 1e23, "n": 2**63 - 1, "deep": _deep(63), "f": 1e16})
    assert got is not None and type(got.data["big"]) is float and type(got.data["f"]) is float


@pytest.mark.parametrize(("changes", "needle"), [
    pytest.param({"base_version": "6"}, "base_version", id="finding7-string-base-version"),
    pytest.param({"base_version": True}, "base_version", id="bool-base-version"),
    pytest.param({"id": None}, "mutation id", id="finding7-null-id"),
    pytest.param({"record_id": 7}, "record_id", id="finding7-int-record-id"),
    pytest.param({"record_id": "r" * 300}, "record_id", id="record-id-too-long"),
    pytest.param({"id": "m" * 300}, "mutation id", id="mutation-id-too-long"),
    pytest.param({"payload": "abc"}, "payload", id="payload-not-an-object"),
    pytest.param({"payload": {1: "x"}}, "payload key", id="payload-int-key"),
    pytest.param({"entity": ["val_todos"]}, "entity", id="entity-not-a-string"),
])
def test_wrong_mutation_fields_are_rejected(server: SyncServer, changes: dict[str, Any],
                                            needle: str) -> None:
    m = attrs.evolve(create({"text": "x"}), **changes)
    results = server.push([m, create({"text": "ok"}, "m2", "t2")]).results
    assert results[0].status == "rejected"
    assert results[0].reason is not None and needle in results[0].reason
    assert results[1].status == "applied"
    assert [t.id for t in server.store.repository(Todo).all()] == ["t2"]


@pytest.mark.parametrize("data", [
    {"id": None, "entity": "val_todos", "action": "create"},
    {"id": "m", "entity": "val_todos", "action": "create", "record_id": 7},
    {"id": "m", "entity": "val_todos", "action": "update", "base_version": "6"},
    {"id": "m", "entity": "val_todos", "action": "create", "payload": "abc"},
])
def test_the_protocol_converter_is_strict(data: dict[str, Any]) -> None:
    with pytest.raises(syncline.SerializationError, match=r"expected"):
        from_wire(data, Mutation)


def test_a_value_the_database_refuses_rejects_that_mutation_only(
        server: SyncServer, monkeypatch: pytest.MonkeyPatch) -> None:
    """A batched write failing for a reason the checks did not foresee: the server applies the
    push one by one and rejects the one mutation, naming the database's reason."""
    backend = server.store.backend
    table = server.store.repository(Todo).table
    original = backend.upsert_values

    def refusing(spec: Any, rows: Any) -> None:
        if spec == table and any("poison" in r for r in rows):
            raise syncline.BackendError("value refused by the database (simulated)")
        original(spec, rows)

    monkeypatch.setattr(backend, "upsert_values", refusing)
    results = server.push([create({"text": "ok"}, "m1", "t1"),
                           create({"text": "poison"}, "m2", "t2")]).results
    assert [r.status for r in results] == ["applied", "rejected"]
    assert results[1].reason is not None and "refused" in results[1].reason
    assert [t.id for t in server.store.repository(Todo).all()] == ["t1"]


@pytest.mark.parametrize("error", [syncline.TransactionConflictError,
                                   syncline.BackendUnavailableError])
def test_lost_races_and_connectivity_still_propagate(
        server: SyncServer, monkeypatch: pytest.MonkeyPatch,
        error: Callable[[str], Exception]) -> None:
    calls: list[int] = []

    def failing(spec: Any, rows: Any) -> None:
        calls.append(1)
        raise error("simulated")

    monkeypatch.setattr(server.store.backend, "upsert_values", failing)
    # A conflict that never clears would wait out run_transaction's 10 s budget: the retries
    # are what matters here, not how long they go on.
    monkeypatch.setattr(server.store, "run_transaction",
                        functools.partial(server.store.run_transaction, retries=3, within=0.0))
    with pytest.raises(syncline.BackendError):
        server.push([create({"text": "ok"})])
    if error is syncline.TransactionConflictError:
        assert len(calls) > 1, "a lost race was not retried"


def test_the_client_structures_pulled_payloads_strictly() -> None:
    store = syncline.open("memory://", entities=[Todo])
    try:
        for bad in ({"count": "6"}, {"done": 1}, {"tags": "abc"}, {"text": None},
                    {"ratio": math.nan}):
            with pytest.raises((syncline.SerializationError, cattrs.BaseValidationError)):
                store.wire.structure({"id": "t1", **bad}, Todo)
        assert store.wire.structure({"id": "t1", "ratio": 2}, Todo).ratio == 2.0
    finally:
        store.close()
