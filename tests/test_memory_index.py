"""The memory backend's ordered indexes: the same answers as a full scan, reading fewer rows."""

from __future__ import annotations

import datetime as dt
import random
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

import syncline
import syncline.backends.memory as memory
from syncline import F
from syncline.backends.memory_index import OrderedIndex
from syncline.core.model.query import Condition
from syncline.core.store import Store

registry = syncline.EntityRegistry()
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@registry.entity("items", indexes=[("kind", "seq"), ("owner", "due"), "tag"])
@attrs.define
class Item:
    id: str
    kind: str
    seq: int
    owner: str | None = None
    due: dt.datetime | None = None
    tag: str | None = None


def make_items(n: int, seed: int = 7) -> list[Item]:
    rnd = random.Random(seed)
    return [Item(f"i{i:05d}", rnd.choice("abc"), rnd.randrange(50),
                 rnd.choice(["u1", "u2", "u3", None]),
                 rnd.choice([None, T0 + dt.timedelta(hours=rnd.randrange(100))]),
                 rnd.choice([None, "x", "y"]))
            for i in range(n)]


@pytest.fixture
def store() -> Iterator[Store]:
    s = syncline.open("memory://", entities=[Item])
    yield s
    s.close()


def conditions() -> list[Condition]:
    return [
        F.kind == "a",
        (F.kind == "b") & (F.seq > 20),
        (F.kind == "b") & (F.seq >= 20) & (F.seq < 30),
        F.kind.in_(["a", "c"]) & (F.seq <= 5),
        F.kind.in_([]),
        (F.owner == "u1") & (F.due > T0 + dt.timedelta(hours=50)),
        F.owner.in_(["u2", "u3"]) & F.due.is_null(),
        (F.tag == "x") | (F.tag == "y"),
        F.tag == None,  # noqa: E711 - never true in SQL
        F.id.in_(["i00003", "i00007", "nope"]) & (F.kind != "a"),
        (F.id == "i00010") & (F.seq >= 0),
        (F.kind == "c") & ~(F.seq > 10),
    ]


@pytest.mark.parametrize("where", conditions(), ids=str)
@pytest.mark.parametrize("order", [None, "seq", ["-seq"], ["due", "-id"], "kind"])
def test_indexed_queries_answer_as_a_scan(store: Store, where: Condition, order: Any,
                                          monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setattr(OrderedIndex, "LOAD", 4)  # many small buckets: splits and emptied ones
    items = make_items(600)
    repo = store.repository(Item)
    repo.insert_many(items)
    repo.delete_many([f"i{i:05d}" for i in range(0, 600, 7)])  # removals leave the index right
    repo.update_where(F.kind == "a", seq=3)  # and so do updates of indexed columns
    backend = store.backend
    assert isinstance(backend, memory.MemoryBackend)
    scan = backend.db.tables["items"].ordered
    backend.db.tables["items"].ordered = {}  # a scan, for the expected answer
    try:
        expected = [repo.find(where, order, limit, offset)
                    for limit, offset in ((None, 0), (5, 0), (7, 3))]
        expected_count = repo.count(where)
    finally:
        backend.db.tables["items"].ordered = scan
    got = [repo.find(where, order, limit, offset) for limit, offset in ((None, 0), (5, 0), (7, 3))]
    assert got == expected
    assert repo.count(where) == expected_count


def test_a_query_on_an_indexed_column_reads_only_what_it_needs(
        store: Store, monkeypatch: pytest.MonkeyPatch) -> None:
    repo = store.repository(Item)
    repo.insert_many(Item(f"i{i:05d}", "a" if i % 2 else "b", i) for i in range(5000))
    seen = [0]
    evaluate = memory.evaluate

    def counted(cond: Any, row: Any) -> Any:
        seen[0] += 1
        return evaluate(cond, row)

    monkeypatch.setattr(memory, "evaluate", counted)
    page = repo.find((F.kind == "a") & (F.seq > 4000), order_by="seq", limit=10)
    assert [p.seq for p in page] == list(range(4001, 4021, 2))
    assert seen[0] <= 10  # the index's order is the query's: it stops at the limit
    seen[0] = 0
    assert repo.count(F.kind.in_(["a", "b"]) & (F.seq < 100)) == 100
    assert seen[0] <= 100
    seen[0] = 0
    assert len(repo.find(F.id.in_(["i00001", "i00002"]))) == 2
    assert seen[0] == 2


def test_indexes_follow_rollbacks_and_new_indexes(store: Store) -> None:
    repo = store.repository(Item)
    repo.insert_many(make_items(50))
    before = repo.find(F.kind == "a", order_by="seq")
    with pytest.raises(RuntimeError), store.transaction():
        repo.update_where(F.kind == "a", kind="b")
        repo.delete_many([i.id for i in before[:3]])
        raise RuntimeError
    assert repo.find(F.kind == "a", order_by="seq") == before
    table = store.backend.db.tables["items"]  # type: ignore[attr-defined]
    assert sorted(table.ordered) == sorted(i.name for i in table.spec.indexes)
    assert all(len(ix) == 50 for ix in table.ordered.values())
