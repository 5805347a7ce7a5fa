"""Random records and random queries: every backend must agree with a plain-Python model."""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncline
from syncline import F
from syncline.core.model.query import And, Compare, Condition, Not, Or, Order, Query
from syncline.core.store import Store

registry = syncline.EntityRegistry()


@registry.entity("model_records")
@attrs.define
class Rec:
    id: int
    name: str
    flag: bool
    n: int | None = None
    x: float | None = None
    when: dt.datetime | None = None


FIELDS = {"name": "str", "flag": "bool", "n": "int", "x": "float", "when": "datetime", "id": "int"}
ALPHABET = "abAB_%"
texts = st.text(alphabet=ALPHABET, max_size=4)
ints = st.integers(min_value=-(2**63), max_value=2**63 - 1) | st.integers(-3, 3)
floats = st.floats(allow_nan=False, allow_infinity=False, width=64) | st.sampled_from([0.0, 1.5])
zones = st.sampled_from([dt.UTC, dt.timezone(dt.timedelta(hours=2)),
                         dt.timezone(dt.timedelta(hours=-7, minutes=-30))])
datetimes = st.datetimes(min_value=dt.datetime(1990, 1, 1), max_value=dt.datetime(2100, 1, 1),
                         timezones=zones)
VALUES: dict[str, st.SearchStrategy[Any]] = {
    "str": texts, "bool": st.booleans(), "int": ints, "float": floats, "datetime": datetimes,
}


@st.composite
def records(draw: st.DrawFn) -> list[Rec]:
    ids = draw(st.lists(st.integers(0, 60), unique=True, max_size=25))
    return [
        Rec(i, draw(texts), draw(st.booleans()), draw(st.none() | ints),
            draw(st.none() | floats), draw(st.none() | datetimes))
        for i in ids
    ]


def compare_strategy() -> st.SearchStrategy[Condition]:
    def for_field(name: str) -> st.SearchStrategy[Condition]:
        kind = FIELDS[name]
        value = VALUES[kind]
        ops = ["eq", "ne", "lt", "le", "gt", "ge"]
        options = [
            st.builds(lambda op, v: Compare(name, op, v), st.sampled_from(ops), value),
            st.builds(lambda op, vs: Compare(name, op, vs), st.sampled_from(["in", "not_in"]),
                      st.lists(value, max_size=3)),
            st.just(Compare(name, "is_null")), st.just(Compare(name, "not_null")),
        ]
        if kind == "str":
            options.append(st.builds(lambda p: Compare(name, "like", p), texts))
        return st.one_of(options)

    return st.sampled_from(sorted(FIELDS)).flatmap(for_field)


conditions = st.recursive(
    compare_strategy(),
    lambda inner: st.one_of(
        st.builds(lambda items: And(tuple(items)), st.lists(inner, min_size=1, max_size=3)),
        st.builds(lambda items: Or(tuple(items)), st.lists(inner, min_size=1, max_size=3)),
        st.builds(Not, inner),
    ),
    max_leaves=6,
)
orders = st.lists(st.builds(Order, st.sampled_from(sorted(FIELDS)), st.booleans()),
                  max_size=3, unique_by=lambda o: o.field)
queries = st.builds(Query, st.none() | conditions, orders.map(tuple),
                    st.none() | st.integers(0, 10), st.integers(0, 5))


# -- the model: a direct reading of SQL semantics, written independently of the backends ----

def sql_value(value: Any) -> Any:
    return value.astimezone(dt.UTC) if isinstance(value, dt.datetime) else value


def truth(cond: Condition, rec: Rec) -> bool | None:
    if isinstance(cond, Not):
        t = truth(cond.item, rec)
        return None if t is None else not t
    if isinstance(cond, And | Or):
        ts = [truth(c, rec) for c in cond.items]
        if isinstance(cond, And):
            return False if False in ts else (None if None in ts else True)
        return True if True in ts else (None if None in ts else False)
    v = getattr(rec, cond.field)
    if cond.op == "is_null":
        return v is None
    if cond.op == "not_null":
        return v is not None
    if cond.op in ("in", "not_in"):
        if not cond.value:
            return cond.op == "not_in"
        if v is None:
            return None
        hit = any(v == w for w in cond.value)
        return hit if cond.op == "in" else not hit
    if v is None:
        return None
    if cond.op == "like":
        regex = "".join(".*" if c == "%" else "." if c == "_" else re.escape(c)
                        for c in cond.value)
        return re.fullmatch(regex, v, re.DOTALL) is not None
    w = cond.value
    return {"eq": v == w, "ne": v != w, "lt": v < w, "le": v <= w, "gt": v > w,
            "ge": v >= w}[cond.op]


def model(recs: list[Rec], query: Query) -> list[int]:
    rows = [r for r in recs if query.where is None or truth(query.where, r) is True]
    terms = list(query.order_by)
    if all(t.field != "id" for t in terms):  # ties: by id, in the last term's direction
        terms.append(Order("id", terms[-1].descending if terms else False))
    for term in reversed(terms):
        def key(r: Rec, name: str = term.field) -> tuple[bool, Any]:
            v = getattr(r, name)
            return (v is not None, sql_value(v) if v is not None else 0)
        rows.sort(key=key, reverse=term.descending)
    end = None if query.limit is None else query.offset + query.limit
    return [r.id for r in rows[query.offset:end]]


@pytest.fixture(scope="module")
def stores(tmp_path_factory: pytest.TempPathFactory,
           postgres_url: str) -> Iterator[dict[str, Store]]:
    folder: Path = tmp_path_factory.mktemp("model")
    urls = ("memory://", "sqlite://", f"sqlite:///{folder}/model.db",
            f"{postgres_url}?schema=model")
    opened = {url: syncline.open(url, entities=[Rec]) for url in urls}
    yield opened
    for store in opened.values():
        store.close()


@settings(max_examples=150, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(recs=records(), query_list=st.lists(queries, min_size=1, max_size=4))
def test_backends_agree_with_the_model(stores: dict[str, Store], recs: list[Rec],
                                       query_list: list[Query]) -> None:
    for url, store in stores.items():
        repo = store.repository(Rec)
        repo.clear()
        repo.upsert_many(recs)
        for query in query_list:
            expected = model(recs, query)
            got = [r.id for r in repo.find(query.where, list(query.order_by), query.limit,
                                           query.offset)]
            assert got == expected, (url, query)
            assert repo.count(query.where) == len(model(recs, attrs.evolve(
                query, limit=None, offset=0))), (url, query)


def test_model_sanity() -> None:
    recs = [Rec(1, "a", True, None), Rec(2, "b", False, 5)]
    assert model(recs, Query(F.n != 5)) == []
    assert model(recs, Query(None, (Order("n", True),))) == [2, 1]
