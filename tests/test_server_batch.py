"""A push applied as a batch decides every mutation exactly as applying them one by one does."""

from __future__ import annotations

import os
import uuid
from collections.abc import Callable
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.model.schema import EntityRegistry
from syncline.core.spi.transport import Mutation
from syncline.server.engine import SyncServer
from syncline.server.store import open_server_store
from syncline.server.tables import AppliedMutation, ChangeEntry, ServerRecord

registry = EntityRegistry()


@registry.entity("batch_notes", syncs=True, indexes=["slug"])
@attrs.define
class Note:
    id: str
    text: str
    slug: str | None = None


@registry.entity("batch_tags", syncs=True, unique=["slug"])
@attrs.define
class Tag:
    id: str
    text: str
    slug: str | None = None


CI = bool(os.environ.get("CI"))
IDS = ["a", "b", "c"]
MUTATION_IDS = [f"m{i}" for i in range(8)]

mutations = st.builds(
    Mutation,
    id=st.sampled_from(MUTATION_IDS),
    entity=st.sampled_from(["batch_notes", "batch_notes", "nope"]),
    action=st.sampled_from(["create", "update", "delete", "create"]),
    record_id=st.sampled_from([*IDS, None]),
    payload=st.one_of(st.none(), st.fixed_dictionaries({
        "text": st.sampled_from(["x", "y"]),
        "slug": st.sampled_from([None, "s1", "s2"])}),
        st.just({"text": 5})),
    base_version=st.one_of(st.none(), st.integers(0, 6)),
    # protocol 2: a patch's base values (None: a whole record)
    base=st.one_of(st.none(), st.none(), st.just({}), st.fixed_dictionaries({
        "text": st.sampled_from(["x", "y"])}), st.just({"slug": "s1"})),
)


def _server(clock: FakeClock, shared: bool, url: str = "memory://") -> SyncServer:
    store = open_server_store(url, [Note, Tag], clock=clock,
                              options={"isolation": "read committed"})
    return SyncServer(store, shared=["batch_notes"] if shared else [])


@pytest.fixture(params=["memory", "sqlite", "postgresql"])
def new_url(request: pytest.FixtureRequest,
            tmp_path_factory: pytest.TempPathFactory) -> Callable[[], str]:
    """Fresh server store URLs on one backend (hypothesis needs one per example)."""
    kind = request.param
    folder = tmp_path_factory.mktemp("batch")
    base = request.getfixturevalue("postgres_url") if kind == "postgresql" else ""

    def make() -> str:
        name = uuid.uuid4().hex[:12]
        return {"memory": "memory://", "sqlite": f"sqlite:///{folder}/{name}.db",
                "postgresql": f"{base}?schema=b{name}"}[kind]

    return make


def _state(server: SyncServer) -> tuple[Any, ...]:
    store = server.store
    return (sorted(store.repository(Note).all(), key=lambda n: n.id),
            # txid: the writing transaction's id on PostgreSQL, different in each store
            sorted((attrs.evolve(c, txid=0) for c in store.repository(ChangeEntry).all()),
                   key=lambda c: c.seq),
            sorted(store.repository(ServerRecord).all(), key=lambda r: r.key),
            sorted((a.key, a.fingerprint, str(a.result))
                   for a in server.applied.all()))


def test_batch_equals_one_by_one(new_url: Callable[[], str]) -> None:
    in_memory = new_url().startswith("memory")
    examples = (200 if CI else 60) if in_memory else (25 if CI else 8)

    @settings(max_examples=examples, deadline=None,
              suppress_health_check=[HealthCheck.too_slow])
    @given(pushes=st.lists(st.lists(mutations, max_size=8), min_size=1, max_size=4),
           shared=st.booleans())
    def check(pushes: list[list[Mutation]], shared: bool) -> None:
        clock = FakeClock()
        batched = _server(clock, shared, new_url())
        single = _server(clock, shared, new_url())
        try:
            for push in pushes:
                got: Any
                want: Any
                try:
                    got = batched.push(push, "alice").results
                except syncline.IntegrityError as exc:  # a unique index: the push fails whole
                    got = type(exc)
                try:
                    want = single.store.run_transaction(
                        lambda push=push: [single._apply(m, "alice") for m in push])
                except syncline.IntegrityError as exc:
                    want = type(exc)
                assert got == want
                assert _state(batched) == _state(single)
        finally:
            batched.store.close()
            single.store.close()

    check()


def test_a_batch_the_database_refuses_falls_back_to_one_by_one() -> None:
    server = _server(FakeClock(), False)
    original = server._has_unique
    server._has_unique = lambda entity: False  # type: ignore[method-assign]
    try:
        server.push([Mutation("m1", "batch_tags", "create", "a", {"text": "x", "slug": "s"})])
        # b takes a's slug while a gives it up later in the same push: the batch's writes
        # hit the unique index, and one by one b's create does too: the push fails whole.
        with pytest.raises(syncline.IntegrityError):
            server.push([
                Mutation("m2", "batch_tags", "create", "b", {"text": "y", "slug": "s"}),
                Mutation("m3", "batch_tags", "update", "a", {"text": "x", "slug": None},
                         base_version=1)])
        assert [n.id for n in server.store.repository(Tag).all()] == ["a"]
    finally:
        server._has_unique = original  # type: ignore[method-assign]
        server.store.close()


def test_tables_with_a_unique_index_are_pushed_one_by_one() -> None:
    # a holds t, b holds s; b keeps s, a takes s, b moves to u: one by one, a's update hits
    # the index (b still has s), so the push fails whole; a batch writing final values
    # would not notice.
    server = _server(FakeClock(), False)
    try:
        server.push([Mutation("m1", "batch_tags", "create", "a", {"text": "", "slug": "t"}),
                     Mutation("m2", "batch_tags", "create", "b", {"text": "", "slug": "s"})])
        with pytest.raises(syncline.IntegrityError):
            server.push([
                Mutation("m3", "batch_tags", "update", "b", {"text": "1", "slug": "s"},
                         base_version=2),
                Mutation("m4", "batch_tags", "update", "a", {"text": "", "slug": "s"},
                         base_version=1),
                Mutation("m5", "batch_tags", "update", "b", {"text": "", "slug": "u"},
                         base_version=3)])
        assert sorted((t.id, t.slug) for t in server.store.repository(Tag).all()) == [
            ("a", "t"), ("b", "s")]
    finally:
        server.store.close()


def test_the_trusted_encoding_stores_what_the_checked_one_does(
        new_url: Callable[[], str]) -> None:
    """The server writes its own rows (values it checked on the way in) through
    ``RowCodec.to_tuple_trusted``: the same stored values as ``to_tuple``, on every backend;
    ``to_tuple`` still refuses what is out of the value domain."""
    store = open_server_store(new_url(), [Note])
    try:
        now = store.clock.now()
        payload = {"id": "a", "text": "é\u2603", "n": [1, 2.5, None, {"deep": [True, "x"]}]}
        rows = [ChangeEntry(7, "alice", "batch_notes", "a", "upsert", now, payload, "m1", 3),
                ChangeEntry(8, "alice", "batch_notes", "b", "delete", now, None, None, 0),
                ServerRecord("alice/batch_notes/a", "alice", "batch_notes", "a", 7, now),
                AppliedMutation("alice/m1", "f" * 64, {"id": "m1", "status": "applied"}, now)]

        def plain(values: tuple[Any, ...]) -> list[Any]:  # psycopg's Jsonb has no ==
            return [getattr(v, "obj", v) for v in values]

        for row in rows:
            codec = store.codec(type(row))
            assert plain(codec.to_tuple_trusted(row)) == plain(codec.to_tuple(row))
        bad = ChangeEntry(9, "alice", "batch_notes", "c", "upsert", now,
                          {"n": float("nan")}, "m2", 0)
        with pytest.raises(syncline.SerializationError, match=r"NaN|finite"):
            store.codec(ChangeEntry).to_tuple(bad)
    finally:
        store.close()


def test_a_large_batch_is_applied_as_one(new_url: Callable[[], str],
                                         monkeypatch: pytest.MonkeyPatch) -> None:
    """A batch of 100 creates (beyond the size PostgreSQL writes with COPY, which its
    pipelined writes cannot use) is applied as a batch, not one by one."""
    server = _server(FakeClock(), False, new_url())
    try:
        def one_by_one(*args: Any) -> Any:
            raise AssertionError("the batch fell back to one by one")

        monkeypatch.setattr(server, "_apply", one_by_one)
        pushed = server.push([Mutation(f"m{i}", "batch_notes", "create", f"n{i}",
                                       {"id": f"n{i}", "text": "x"}) for i in range(100)])
        assert [r.status for r in pushed.results] == ["applied"] * 100
        assert server.store.repository(Note).count() == 100
    finally:
        server.store.close()
