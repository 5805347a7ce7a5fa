"""The backend conformance suite: every behaviour of the storage contract, on any backend.

A backend's whole test file is one subclass and one fixture::

    from syncline.testing.backend_suite import BackendSuite

    class TestMyBackend(BackendSuite):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mybackend://{tmp_path}/data"

Tests that need a capability the backend does not declare are skipped with the reason; the
suite never looks at a backend's name.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import operator
import os
import socket
import subprocess
import sys
import threading
import uuid
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any
from urllib.parse import urlsplit

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncline
from syncline import F
from syncline.core.model.query import like_escape
from syncline.core.model.schema import EntityRegistry
from syncline.core.model.values import INT64_MAX, INT64_MIN, describe
from syncline.core.spi.backend import CAPABILITIES
from syncline.core.store import Store
from syncline.testing.entities import ENTITIES, Color, Counter, Everything, Level, Post

UTC = dt.UTC
T0 = dt.datetime(2024, 5, 1, 12, 0, tzinfo=UTC)

StoreFactory = Callable[..., Store]


def make_post(i: int, **kw: Any) -> Post:
    values: dict[str, Any] = dict(
        id=f"p{i:03d}", user_id=f"u{i % 3}", content=f"post {i}",
        created_at=T0 + dt.timedelta(minutes=i), likes_count=i % 7,
        image_urls=[f"https://img/{i}"] if i % 2 else None,
        local_id=f"l{i}" if i % 4 else None, score=None if i % 5 == 0 else i / 4,
    )
    values.update(kw)
    return Post(**values)


def make_everything(i: int, **kw: Any) -> Everything:
    values: dict[str, Any] = dict(
        id=i, text=f"héllo ☃ {i}\n\ttab", number=2**62 - i, ratio=1 / 3 + i,
        flag=bool(i % 2), blob=b"\x00\xff" + bytes([i % 256]) * 3,
        when=dt.datetime(2024, 1, 2, 3, 4, 5, 678901, tzinfo=dt.timezone(dt.timedelta(hours=5)))
        + dt.timedelta(days=i),
        day=dt.date(1999, 12, 31) + dt.timedelta(days=i), ident=uuid.UUID(int=i + 1),
        amount=decimal.Decimal("12345678901234567890.123456789") + i * 10**6,
        color=Color.GREEN if i % 2 else Color.RED, level=Level.HIGH, tags=["a", "b", str(i)],
        extra={"nested": {"list": [1, 2.5, None, True]}, "n": i},
    )
    values.update(kw)
    return Everything(**values)


# -- the value domain (syncline.core.model.values; issue 14 "Values") ------------------------

values_registry = EntityRegistry()


class Mood(enum.Enum):
    HAPPY = "happy"
    SAD = "sad"


@values_registry.entity("suite_values", indexes=["key"])
@attrs.define
class Values:
    """One field per type, every one optional so that each can be tried alone."""

    id: str
    number: int | None = None
    ratio: float | None = None
    text: str | None = None
    flag: bool | None = None
    blob: bytes | None = None
    amount: decimal.Decimal | None = None
    when: dt.datetime | None = None
    day: dt.date | None = None
    ident: uuid.UUID | None = None
    mood: Mood | None = None
    data: dict[str, Any] | None = None
    items: list[Any] | None = None
    key: str | None = None


@values_registry.entity("suite_strict", syncs=True)
@attrs.define
class Strict:
    """Non-optional fields, and a syncing entity (its payloads are queued as JSON)."""

    id: str
    flag: bool = False
    ratio: float = 0.0
    mood: Mood = Mood.HAPPY


def _nested(levels: int) -> Any:
    value: Any = []
    for _ in range(levels - 1):
        value = [value]
    return value


_TZ5 = dt.timezone(dt.timedelta(hours=5))
_TZM5 = dt.timezone(dt.timedelta(hours=-5))

#: per field, values at and beyond the edges of its domain
EDGE_VALUES: dict[str, list[Any]] = {
    "number": [0, -1, INT64_MIN, INT64_MAX, INT64_MAX + 1, INT64_MIN - 1, 2**70, True, 1.0],
    "ratio": [0.0, -0.0, 5e-324, 1e-310, 1.7976931348623157e308, -1.7976931348623157e308,
              1e16, 1e23, 0.1, 3, math.nan, math.inf, -math.inf, False],
    "text": ["", "a", "\x00", "a\x00b", "\ud800", "x\udfff", "😀", "\uffff", "é\n\t",
             "%_\\", "x" * 10_000],
    "flag": [True, False, 1, 0, "no", "true"],
    "blob": [b"", b"\x00", bytes(range(256)), bytearray(b"ab")],
    "amount": [decimal.Decimal(x) for x in (
        "0", "-0", "1e-30", "-123.456", "9" * 200, "1E-16383", "1.5E-16383", "1E+131071",
        "1E+131072", "NaN", "sNaN", "Infinity", "-Infinity")] + [1.5],
    "when": [dt.datetime.min.replace(tzinfo=dt.UTC), dt.datetime.max.replace(tzinfo=dt.UTC),
             dt.datetime(9999, 12, 31, 23, tzinfo=_TZM5), dt.datetime(1, 1, 1, 1, tzinfo=_TZ5),
             dt.datetime(2024, 1, 1), T0],
    "day": [dt.date.min, dt.date.max, T0, dt.date(2000, 2, 29)],
    "ident": [uuid.UUID(int=0), uuid.UUID(int=2**128 - 1), "not-a-uuid"],
    "mood": [Mood.SAD, "happy", "bogus"],
    "data": [{}, {"a": None}, {1: "x"}, {"t": (1, 2)}, {"f": 1e23, "g": 1e16, "z": -0.0},
             {"n": 2**63}, {"n": -(2**63)}, {"s": "\x00"}, {"\ud800": 1}, {"x": math.nan},
             {"d": _nested(63)}, {"d": _nested(64)}, {"d": _nested(5000)}, {"set": {1}}],
    "items": [[], [1, "a", None, True, 2.5], _nested(64), _nested(65), ["😀"], (1, 2)],
    "key": ["k", "k" * 800, "k" * 801, "é" * 400, "é" * 401],
}


#: the fields with a total order (sorted and compared in the edge-value ordering case)
ORDERED_FIELDS = ["number", "ratio", "text", "blob", "amount", "when", "day", "ident", "key"]

#: more values for the ordering case: neighbours that a lossy comparison would confuse
EXTRA_ORDERED: dict[str, list[Any]] = {
    "number": [INT64_MAX - 1, INT64_MIN + 1, 2**53, 2**53 + 1],
    "ratio": [-5e-324, 1e-300, 0.30000000000000004, 0.3],
    "text": ["A", "a ", "ab", "aé", "a\uffff", "a😀", "\u0080", "\x7f"],
    "blob": [b"\x00\x00", b"\xff", b"a", b"a\x00"],
    "amount": [decimal.Decimal(x) for x in (
        "0.1", "0.10000000000000001", "12345678901234567890.1", "12345678901234567890.2",
        "-1E+300", "1E-300", "2.5")],
    "when": [T0 + dt.timedelta(microseconds=1), T0 - dt.timedelta(microseconds=1),
             dt.datetime(1970, 1, 1, tzinfo=UTC)],
    "day": [dt.date(1970, 1, 1), dt.date(2000, 3, 1)],
    "ident": [uuid.UUID(int=1), uuid.UUID(int=2**127), uuid.UUID(int=2**64)],
    "key": ["", "K", "k\u0080"],
}


def _float_safe(value: Any) -> bool:
    """A Decimal a float holds without changing order (backends without exact_decimals
    compare decimals as floats)."""
    if not isinstance(value, decimal.Decimal) or not value.is_finite():
        return False
    return value == 0 or (1e-300 < abs(value) < 1e300
                          and len(value.as_tuple().digits) <= 15)


def _canonical(obj: Values) -> Values:
    """What reading ``obj`` back gives when it was stored (a raw enum value names its member)."""
    if isinstance(obj.mood, str):
        return attrs.evolve(obj, mood=Mood(obj.mood))
    return obj


def _attempt(store: Store, obj: Values) -> tuple[str, Any]:
    """('stored', read back) or ('refused', None); a refused write must leave nothing."""
    repo = store.repository(Values)
    try:
        repo.upsert(obj)
    except syncline.SerializationError as exc:
        assert obj.id in ("",) or str(exc).startswith("Values."), exc
        assert repo.get(obj.id) is None
        return "refused", None
    return "stored", repo.get(obj.id)


class ValueDomainSuite:
    """Every value reads back equal, or is refused with SerializationError and nothing written,
    with the same verdict as the reference (memory) backend."""

    @pytest.fixture
    def values_store(self, open_store: StoreFactory) -> Store:
        return open_store(entities=[*ENTITIES, Values, Strict])

    @pytest.fixture
    def reference(self) -> Iterator[Store]:
        store = syncline.open("memory://", entities=[Values, Strict])
        yield store
        store.close()

    @pytest.mark.parametrize("field", sorted(EDGE_VALUES))
    def test_edge_values_round_trip_or_are_refused_alike(
            self, values_store: Store, reference: Store, field: str) -> None:
        for i, value in enumerate(EDGE_VALUES[field]):
            obj = Values(f"{field}-{i}", **{field: value})
            verdict, got = _attempt(values_store, obj)
            expected, want = _attempt(reference, obj)
            assert verdict == expected, (field, describe(value))
            if verdict == "stored":
                assert got == want == _canonical(obj), (field, describe(value))

    def test_round_trip_hypothesis(self, values_store: Store, reference: Store) -> None:
        counter = iter(range(10**9))
        fields = st.fixed_dictionaries({}, optional={
            name: st.sampled_from(edges) for name, edges in EDGE_VALUES.items()} | {
            "text": st.text() | st.sampled_from(EDGE_VALUES["text"]),
            "number": st.integers() | st.sampled_from(EDGE_VALUES["number"]),
            "ratio": st.floats() | st.sampled_from(EDGE_VALUES["ratio"]),
            "data": st.recursive(
                st.none() | st.booleans() | st.integers() | st.floats() | st.text(),
                lambda inner: st.lists(inner, max_size=3)
                | st.dictionaries(st.text(max_size=3), inner, max_size=3), max_leaves=8).map(
                lambda v: {"v": v}),
        })

        @settings(max_examples=60, deadline=None, database=None,
                  suppress_health_check=list(HealthCheck))
        @given(values=fields)
        def check(values: dict[str, Any]) -> None:
            obj = Values(f"h{next(counter)}", **values)
            verdict, got = _attempt(values_store, obj)
            expected, want = _attempt(reference, obj)
            assert verdict == expected
            if verdict == "stored":
                assert got == want == _canonical(obj)

        check()

    # Named regressions, issue 14 "Values"

    def test_bool_fields_refuse_no_and_1(self, values_store: Store) -> None:
        repo = values_store.repository(Values)
        bad: Any
        for bad in ("no", 1, 0):
            with pytest.raises(syncline.SerializationError, match=r"Values\.flag"):
                repo.upsert(Values("b", flag=bad))
        assert repo.count() == 0

    def test_nan_is_refused_and_minus_zero_reads_back_equal(self, values_store: Store) -> None:
        repo = values_store.repository(Values)
        with pytest.raises(syncline.SerializationError, match=r"Values\.ratio.*finite"):
            repo.upsert(Values("f", ratio=math.nan))
        repo.upsert(Values("f", ratio=-0.0))
        got = repo.get("f")
        assert got is not None and got.ratio == 0.0 and math.copysign(1, got.ratio) == 1

    def test_json_big_floats_stay_floats(self, values_store: Store) -> None:
        repo = values_store.repository(Values)
        repo.upsert(Values("j", data={"a": 1e23, "b": 1e16, "c": -1.5e300, "i": 10**18}))
        got = repo.get("j")
        assert got is not None and got.data is not None
        assert [type(got.data[k]) for k in "abci"] == [float, float, float, int]
        assert got.data == {"a": 1e23, "b": 1e16, "c": -1.5e300, "i": 10**18}

    def test_like_has_one_escape_rule(self, values_store: Store) -> None:
        repo = values_store.repository(Values)
        repo.upsert_many([Values("1", text="50%"), Values("2", text="500"),
                          Values("3", text="a\\b"), Values("4", text="a_b"),
                          Values("5", text="axb")])
        assert [v.id for v in repo.find(F.text.like("50\\%"))] == ["1"]
        assert [v.id for v in repo.find(F.text.like("a\\\\b"))] == ["3"]
        assert [v.id for v in repo.find(F.text.like("a\\_b"))] == ["4"]
        assert [v.id for v in repo.find(F.text.like("a_b"))] == ["3", "4", "5"]
        assert [v.id for v in repo.find(F.text.like(like_escape("a\\b") + "%"))] == ["3"]
        for bad in ("a\\", "a\\b"):
            with pytest.raises(syncline.QueryError, match="backslash"):
                repo.find(F.text.like(bad))

    def test_decimal_nan_and_infinity_are_refused(self, values_store: Store) -> None:
        repo = values_store.repository(Values)
        for bad in ("NaN", "Infinity", "-Infinity", "sNaN"):
            with pytest.raises(syncline.SerializationError, match=r"Values\.amount"):
                repo.upsert(Values("d", amount=decimal.Decimal(bad)))
        repo.upsert(Values("d", amount=decimal.Decimal("7")))
        assert [v.id for v in repo.find(F.amount > decimal.Decimal(5))] == ["d"]
        with pytest.raises(syncline.QueryError):
            repo.find(F.amount == decimal.Decimal("NaN"))

    @pytest.mark.parametrize("call", [
        lambda r: r.upsert(Values("o", number=2**63)),
        lambda r: r.update("o", number=2**63),
        lambda r: r.find(F.number == 2**70),
        lambda r: r.find(limit=2**63),
        lambda r: r.find(offset=2**64),
        lambda r: r.get(2**70),
        lambda r: r.upsert(Values("o", text="\ud800")),
        lambda r: r.upsert(Values("o", day=dt.datetime(2024, 1, 1, tzinfo=dt.UTC))),
        lambda r: r.upsert(Values("o", data=_nested(5000))),
        lambda r: r.upsert(Values("o", data={"d": [{"x": _nested(5000)}]})),
    ], ids=["int-write", "int-update", "int-condition", "huge-limit", "huge-offset",
            "huge-key", "surrogate", "datetime-in-date", "deep-json", "deep-json-inside"])
    def test_no_raw_exception_escapes(self, values_store: Store, call: Any) -> None:
        repo = values_store.repository(Values)
        repo.upsert(Values("o", number=1))
        with pytest.raises((syncline.SerializationError, syncline.QueryError)):
            call(repo)
        assert repo.get("o") == Values("o", number=1)

    def test_an_undeclared_stored_enum_value_is_a_serialization_error(
            self, values_store: Store) -> None:
        repo = values_store.repository(Values)
        repo.upsert(Values("e", mood=Mood.SAD))
        values_store.backend.update(repo.table, "e", {"mood": "gone"})
        with pytest.raises(syncline.SerializationError, match=r"Values\.mood.*gone"):
            repo.get("e")

    def test_nan_in_a_syncing_entity_names_the_field(self, values_store: Store) -> None:
        repo = values_store.repository(Strict)
        with pytest.raises(syncline.SerializationError, match=r"Strict\.ratio") as info:
            repo.upsert(Strict("s", ratio=math.inf))
        assert "OutboxEntry" not in str(info.value)
        assert "invalid input syntax" not in str(info.value)
        assert repo.count() == 0 and values_store.outbox.entries.count() == 0

    def test_json_int_keys_and_tuples_are_refused(self, values_store: Store) -> None:
        repo = values_store.repository(Values)
        with pytest.raises(syncline.SerializationError, match=r"Values\.data.*key 1"):
            repo.upsert(Values("k", data={1: "x"}))  # type: ignore[dict-item]
        with pytest.raises(syncline.SerializationError, match=r"Values\.items.*list"):
            repo.upsert(Values("k", items=(1, 2)))  # type: ignore[arg-type]
        assert repo.count() == 0

    @pytest.mark.parametrize("field", ORDERED_FIELDS)
    def test_edge_values_sort_and_compare_as_in_python(self, values_store: Store,
                                                       field: str) -> None:
        """Every stored edge value of a field sorts (both ways, ties by key) and compares
        (==, !=, <, <=, >, >=, in_, not_in) exactly as Python orders the values read back."""
        repo = values_store.repository(Values)
        exact = "exact_decimals" in values_store.backend.capabilities
        stored: dict[str, Any] = {}
        for i, value in enumerate(EDGE_VALUES[field] + EXTRA_ORDERED.get(field, [])):
            if isinstance(value, bool) or (field == "amount" and not exact
                                           and not _float_safe(value)):
                continue
            obj = Values(f"{field}-{i:02d}", **{field: value})
            try:
                repo.upsert(obj)
            except syncline.SerializationError:
                continue
            got = repo.get(obj.id)
            assert got is not None
            stored[obj.id] = getattr(got, field)
        repo.upsert(Values(f"{field}-null"))  # NULL: first ascending, never compared true
        assert len(stored) >= 3, stored
        column = getattr(F, field)
        ascending = [None, *sorted(stored, key=lambda k: (stored[k], k))]
        got_ids = [v.id for v in repo.find(order_by=column.asc())]
        assert got_ids == [f"{field}-null" if k is None else k for k in ascending]
        descending = [*sorted(stored, key=lambda k: (stored[k], k), reverse=True), None]
        got_ids = [v.id for v in repo.find(order_by=column.desc())]
        assert got_ids == [f"{field}-null" if k is None else k for k in descending]
        ops: list[tuple[Callable[[Any, Any], Any], Callable[[Any, Any], bool]]] = [
            (operator.eq, operator.eq), (operator.ne, operator.ne), (operator.lt, operator.lt),
            (operator.le, operator.le), (operator.gt, operator.gt), (operator.ge, operator.ge)]
        for probe in {repr(v): v for v in stored.values()}.values():
            for build, check in ops:
                expected = sorted(k for k, v in stored.items() if check(v, probe))
                found = sorted(v.id for v in repo.find(build(column, probe)))
                assert found == expected, (field, describe(probe), build.__name__)
        some = list(stored.values())[::2]
        for values in (some, some * 300):  # a few values, and more than one statement binds
            assert sorted(v.id for v in repo.find(column.in_(values))) == sorted(
                k for k, v in stored.items() if v in some)
            assert sorted(v.id for v in repo.find(column.not_in(values))) == sorted(
                k for k, v in stored.items() if v not in some)

    def test_like_on_edge_text(self, values_store: Store) -> None:
        """``_`` is one character (an astral one too), ``%`` any run, case and accents count,
        and the escapes match literally, whatever the text holds."""
        repo = values_store.repository(Values)
        texts = {"e": "", "a": "a", "emoji": "😀", "bmp": "\uffff", "ws": "é\n\t",
                 "meta": "%_\\", "long": "x" * 10_000, "upper": "É\n\t",
                 "mixed": "a😀b", "nl": "line\nbreak"}
        repo.upsert_many([Values(k, text=v) for k, v in texts.items()])
        repo.upsert(Values("null"))

        def ids(pattern: str) -> list[str]:
            return sorted(v.id for v in repo.find(F.text.like(pattern)))

        def want(match: Callable[[str], bool]) -> list[str]:
            return sorted(k for k, v in texts.items() if match(v))

        assert ids("%") == want(lambda t: True)
        assert ids("_") == want(lambda t: len(t) == 1)
        assert ids("a_b") == ["mixed"]
        assert ids("%😀%") == ["emoji", "mixed"]
        assert ids("é%") == ["ws"] and ids("É%") == ["upper"]
        assert ids("\\%\\_\\\\") == ["meta"]
        assert ids(like_escape("%_\\")) == ["meta"]
        assert ids("x%x") == ["long"] and ids("x" * 10_000) == ["long"]
        assert ids("%\n%") == ["nl", "upper", "ws"]
        assert ids("") == ["e"]
        assert repo.count(~F.text.like("%")) == 0  # NULL LIKE anything is unknown

    def test_none_in_a_non_optional_field_names_it(self, values_store: Store) -> None:
        repo = values_store.repository(Strict)
        for field in ("flag", "ratio", "mood"):
            with pytest.raises(syncline.SerializationError, match=rf"Strict\.{field}.*None"):
                repo.upsert(Strict("n", **{field: None}))  # type: ignore[arg-type]
        assert repo.count() == 0


def in_another_process(url: str, action: str) -> None:
    """Run :func:`other_process` in a new Python process (the backend's plugin must be
    installed: the new process finds it by its entry point, as any application would)."""
    code = ("import sys\nfrom syncline.testing.backend_suite import other_process\n"
            "sys.exit(other_process(sys.argv[1], sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, url, action], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ), check=False)
    assert out.returncode == 0, (
        f"the other process ({action}) failed with exit code {out.returncode}:\n"
        f"{out.stdout[-3000:]}{out.stderr[-3000:]}")


def other_process(url: str, action: str) -> int:
    """The other process's side: read p001 and Everything 1, then write p002."""
    assert action == "check p001, write p002", action
    with syncline.open(url, entities=ENTITIES) as store:
        got = store.repository(Post).get("p001")
        if got != make_post(1):
            print(f"this process read p001 as {got!r}; expected {make_post(1)!r}")
            return 3
        every = store.repository(Everything).get(1)
        if every != make_everything(1):
            print(f"this process read Everything 1 as {every!r}")
            return 4
        store.repository(Post).upsert(make_post(2))
    return 0


class BackendSuite(ValueDomainSuite):
    """Subclass and provide a ``store_url`` fixture (a fresh, empty store each time).

    The value-domain cases (:class:`ValueDomainSuite`) are part of it."""

    @pytest.fixture
    def open_store(self, store_url: str) -> Iterator[StoreFactory]:
        opened: list[Store] = []

        def factory(**kwargs: Any) -> Store:
            kwargs.setdefault("entities", ENTITIES)
            store = syncline.open(store_url, **kwargs)
            opened.append(store)
            return store

        yield factory
        for store in opened:
            store.close()

    @pytest.fixture
    def store(self, open_store: StoreFactory) -> Store:
        return open_store()

    @pytest.fixture
    def posts(self, store: Store) -> syncline.Repository[Post]:
        return store.repository(Post)

    @pytest.fixture
    def filled(self, posts: syncline.Repository[Post]) -> list[Post]:
        items = [make_post(i) for i in range(30)]
        posts.upsert_many(items)
        return items

    @staticmethod
    def require(store: Store, capability: str) -> None:
        assert capability in CAPABILITIES, capability
        if capability not in store.backend.capabilities:
            pytest.skip(f"backend lacks capability {capability!r}: {CAPABILITIES[capability]}")

    # -- CRUD --------------------------------------------------------------------------------

    def test_get_returns_what_was_inserted(self, posts: syncline.Repository[Post]) -> None:
        post = make_post(1)
        posts.insert(post)
        assert posts.get(post.id) == post
        assert posts.get("missing") is None

    def test_increment_creates_adds_and_returns_the_new_value(self, store: Store) -> None:
        table = store.repository(Counter).table
        backend = store.backend
        assert backend.increment(table, "seq", "value") == 1
        assert backend.increment(table, "seq", "value", by=5) == 6
        with store.transaction():
            assert backend.increment(table, "seq", "value", by=3) == 9
            assert backend.increment(table, "other", "value", by=2) == 2
        assert store.repository(Counter).get("seq") is not None
        assert [c.value for c in store.repository(Counter).get_many(["seq", "other"])] == [9, 2]

    def test_get_many_keeps_order_and_skips_missing(self, filled: list[Post],
                                                    posts: syncline.Repository[Post]) -> None:
        keys = ["p005", "nope", "p001", "p020"]
        assert [p.id for p in posts.get_many(keys)] == ["p005", "p001", "p020"]
        assert len(posts.get_many([p.id for p in filled])) == len(filled)

    def test_upsert_replaces_every_field(self, posts: syncline.Repository[Post]) -> None:
        posts.upsert(make_post(1))
        changed = make_post(1, content="edited", image_urls=None, likes_count=99)
        posts.upsert(changed)
        assert posts.get(changed.id) == changed
        assert posts.count() == 1

    def test_insert_existing_key_is_an_integrity_error(self,
                                                       posts: syncline.Repository[Post]) -> None:
        posts.insert(make_post(1))
        with pytest.raises(syncline.IntegrityError):
            posts.insert(make_post(1, content="other"))
        assert posts.get("p001") == make_post(1)

    def test_insert_many_with_one_duplicate_writes_nothing(
            self, posts: syncline.Repository[Post]) -> None:
        posts.insert(make_post(5))
        with pytest.raises(syncline.IntegrityError):
            posts.insert_many([make_post(1), make_post(5), make_post(9)])
        assert [p.id for p in posts.all()] == ["p005"]

    def test_unique_key_is_enforced(self, posts: syncline.Repository[Post]) -> None:
        posts.insert(make_post(1, local_id="same"))
        with pytest.raises(syncline.IntegrityError):
            posts.upsert(make_post(2, local_id="same"))
        posts.upsert_many([make_post(3, local_id=None), make_post(4, local_id=None)])
        assert posts.count() == 3

    def test_upsert_many_with_a_key_twice_keeps_the_last(
            self, posts: syncline.Repository[Post]) -> None:
        posts.upsert_many([make_post(1), make_post(2), make_post(1, content="last")])
        assert posts.get("p001") == make_post(1, content="last")
        assert posts.count() == 2

    def test_update_sets_only_given_fields(self, filled: list[Post],
                                           posts: syncline.Repository[Post]) -> None:
        updated = posts.update("p003", content="new", likes_count=42)
        expected = attrs.evolve(filled[3], content="new", likes_count=42)
        assert updated == expected
        assert posts.get("p003") == expected
        assert posts.get("p004") == filled[4]

    def test_update_missing_key_raises_not_found(self, posts: syncline.Repository[Post]) -> None:
        with pytest.raises(syncline.NotFoundError):
            posts.update("missing", content="x")

    def test_update_where_counts_rows(self, filled: list[Post],
                                      posts: syncline.Repository[Post]) -> None:
        n = posts.update_where(F.user_id == "u1", likes_count=0)
        assert n == sum(1 for p in filled if p.user_id == "u1")
        assert posts.count(F.likes_count == 0) == sum(
            1 for p in filled if p.user_id == "u1" or p.likes_count == 0)

    def test_delete_and_delete_many(self, filled: list[Post],
                                    posts: syncline.Repository[Post]) -> None:
        assert posts.delete("p001") is True
        assert posts.delete("p001") is False
        assert posts.delete_many(["p002", "p003", "zzz"]) == 2
        assert posts.count() == len(filled) - 3

    def test_delete_where_and_clear(self, filled: list[Post],
                                    posts: syncline.Repository[Post]) -> None:
        n = posts.delete_where(F.user_id == "u0")
        assert n == sum(1 for p in filled if p.user_id == "u0")
        assert posts.count(F.user_id == "u0") == 0
        with pytest.raises(syncline.QueryError):
            posts.delete_where(None)
        assert posts.clear() == len(filled) - n
        assert posts.count() == 0

    def test_count_and_exists(self, filled: list[Post], posts: syncline.Repository[Post]) -> None:
        assert posts.count() == len(filled)
        assert posts.count({"user_id": "u2"}) == sum(1 for p in filled if p.user_id == "u2")
        assert posts.exists("p000") and not posts.exists("zzz")
        assert posts.exists(where=F.likes_count == 6)
        assert not posts.exists(where=F.likes_count == 600)

    # -- queries -----------------------------------------------------------------------------

    @pytest.mark.parametrize(
        ("where", "check"),
        [
            (F.likes_count == 3, lambda p: p.likes_count == 3),
            (F.likes_count != 3, lambda p: p.likes_count != 3),
            (F.likes_count < 3, lambda p: p.likes_count < 3),
            (F.likes_count <= 3, lambda p: p.likes_count <= 3),
            (F.likes_count > 3, lambda p: p.likes_count > 3),
            (F.likes_count >= 3, lambda p: p.likes_count >= 3),
            (F.user_id.in_(["u0", "u2"]), lambda p: p.user_id in ("u0", "u2")),
            (F.user_id.not_in(["u0", "u2"]), lambda p: p.user_id not in ("u0", "u2")),
            (F.user_id.in_([]), lambda p: False),
            (F.user_id.not_in([]), lambda p: True),
            (F.content.like("post 1%"), lambda p: p.content.startswith("post 1")),
            (F.content.like("post _"), lambda p: len(p.content) == 6),
            (F.content.like("POST%"), lambda p: False),
            (F.image_urls.is_null(), lambda p: p.image_urls is None),
            (F.image_urls.is_not_null(), lambda p: p.image_urls is not None),
            (F.image_urls == None, lambda p: p.image_urls is None),  # noqa: E711
            (F.created_at >= T0 + dt.timedelta(minutes=20),
             lambda p: p.created_at >= T0 + dt.timedelta(minutes=20)),
            ((F.user_id == "u1") & (F.likes_count > 2),
             lambda p: p.user_id == "u1" and p.likes_count > 2),
            ((F.user_id == "u1") | (F.likes_count > 5),
             lambda p: p.user_id == "u1" or p.likes_count > 5),
            (~(F.user_id == "u1"), lambda p: p.user_id != "u1"),
            (~((F.user_id == "u1") | (F.likes_count < 2)),
             lambda p: not (p.user_id == "u1" or p.likes_count < 2)),
            ({"user_id": "u0", "likes_count": 3},
             lambda p: p.user_id == "u0" and p.likes_count == 3),
        ],
    )
    def test_query_operators(self, filled: list[Post], posts: syncline.Repository[Post],
                             where: Any, check: Callable[[Post], bool]) -> None:
        expected = sorted(p.id for p in filled if check(p))
        assert [p.id for p in posts.find(where)] == expected
        assert posts.count(where) == len(expected)

    def test_comparisons_with_null_are_unknown(self, filled: list[Post],
                                               posts: syncline.Repository[Post]) -> None:
        # SQL semantics: neither score != 1 nor NOT(score == 1) matches a NULL score.
        with_score = [p for p in filled if p.score is not None]
        assert posts.count(F.score != 1.0) == sum(1 for p in with_score if p.score != 1.0)
        assert posts.count(~(F.score == 1.0)) == sum(1 for p in with_score if p.score != 1.0)
        assert posts.count(F.score.not_in([1.0])) == sum(
            1 for p in with_score if p.score != 1.0)

    def test_order_by_several_fields_with_nulls(self, filled: list[Post],
                                                posts: syncline.Repository[Post]) -> None:
        found = posts.find(order_by=["user_id", F.score.desc()])
        def key(p: Post) -> tuple[Any, ...]:
            # descending score with NULLs last, then primary key descending (the last term's way)
            return (p.user_id, p.score is None, -(p.score or 0), [-ord(c) for c in p.id])
        assert [p.id for p in found] == [p.id for p in sorted(filled, key=key)]
        asc = posts.find(order_by=F.score.asc())
        assert all(p.score is None for p in asc[:6])  # NULLs first ascending
        assert asc[6].score is not None

    def test_limit_and_offset(self, filled: list[Post], posts: syncline.Repository[Post]) -> None:
        ordered = [p.id for p in sorted(filled, key=lambda p: p.created_at, reverse=True)]
        assert [p.id for p in posts.find(order_by="-created_at", limit=5)] == ordered[:5]
        page = posts.find(order_by="-created_at", limit=5, offset=5)
        assert [p.id for p in page] == ordered[5:10]
        assert [p.id for p in posts.find(order_by="-created_at", offset=25)] == ordered[25:]
        assert posts.find(limit=0) == []
        assert posts.first(order_by="created_at") == filled[0]

    def test_latest_posts_of_a_user(self, filled: list[Post],
                                    posts: syncline.Repository[Post]) -> None:
        mine = posts.find(F.user_id == "u1", order_by=F.created_at.desc(), limit=3)
        expected = sorted((p for p in filled if p.user_id == "u1"),
                          key=lambda p: p.created_at, reverse=True)[:3]
        assert mine == expected

    def test_bad_queries_are_query_errors(self, filled: list[Post],
                                          posts: syncline.Repository[Post]) -> None:
        with pytest.raises(syncline.QueryError, match="no field 'nope'"):
            posts.find(F.nope == 1)
        with pytest.raises(syncline.QueryError, match="likes_count"):
            posts.find(F.likes_count == "many")
        with pytest.raises(syncline.QueryError):
            posts.find(order_by="-nope")
        with pytest.raises(syncline.QueryError):
            posts.find(F.likes_count.like("1%"))
        with pytest.raises(syncline.QueryError):
            posts.find(limit=-1)
        with pytest.raises(syncline.QueryError):
            posts.find(F.image_urls > ["a"])

    # -- types -------------------------------------------------------------------------------

    def test_every_field_type_round_trips(self, store: Store) -> None:
        repo = store.repository(Everything)
        items = [make_everything(i) for i in range(3)]
        items.append(make_everything(
            3, maybe_text="x", maybe_number=-(2**63), maybe_when=T0, maybe_day=dt.date(2000, 2, 29),
            maybe_ident=uuid.uuid4(), maybe_amount=decimal.Decimal("-0.000001"),
            maybe_color=Color.RED, maybe_flag=False, maybe_blob=b"", maybe_json=[{"a": []}],
        ))
        repo.upsert_many(items)
        for item in items:
            got = repo.get(item.id)
            assert got == item
            assert got is not None
            assert got.when.utcoffset() == dt.timedelta(0)  # stored and returned as UTC
            assert type(got.amount) is decimal.Decimal and got.amount == item.amount
            assert type(got.flag) is bool and type(got.color) is Color
            assert type(got.level) is Level
        assert repo.find(F.ident == uuid.UUID(int=2))[0].id == 1
        assert [e.id for e in repo.find(F.amount > decimal.Decimal("12345678901236067890"))] \
            == [2, 3]
        assert [e.id for e in repo.find(F.color == Color.GREEN)] == [1, 3]
        assert [e.id for e in repo.find(F.day <= dt.date(2000, 1, 1))] == [0, 1]
        assert [e.id for e in repo.find(F.flag == True)] == [1, 3]  # noqa: E712
        assert [e.id for e in repo.find(F.maybe_flag == False)] == [3]  # noqa: E712
        assert [e.id for e in repo.find(F.tags == ["a", "b", "2"])] == [2]
        assert [e.id for e in repo.find(order_by=F.when.desc())] == [3, 2, 1, 0]

    def test_decimals_compare_exactly(self, store: Store) -> None:
        self.require(store, "exact_decimals")
        repo = store.repository(Everything)
        base = decimal.Decimal("12345678901234567890.1")
        repo.upsert_many([make_everything(i, amount=base + decimal.Decimal(i) / 100)
                          for i in range(3)])
        assert [e.id for e in repo.find(F.amount > base)] == [1, 2]
        assert [e.id for e in repo.find(order_by=F.amount.desc())] == [2, 1, 0]

    def test_naive_datetime_is_refused_and_nothing_written(
            self, posts: syncline.Repository[Post]) -> None:
        with pytest.raises(syncline.SerializationError, match=r"created_at.*time zone"):
            posts.upsert_many([make_post(1), make_post(2, created_at=dt.datetime(2024, 1, 1))])
        assert posts.count() == 0

    def test_wrong_types_are_refused_naming_the_field(self,
                                                      posts: syncline.Repository[Post]) -> None:
        posts.upsert(make_post(1))
        with pytest.raises(syncline.SerializationError, match="likes_count"):
            posts.upsert(make_post(1, likes_count="many"))
        with pytest.raises(syncline.SerializationError, match="content"):
            posts.upsert(make_post(1, content=None))
        with pytest.raises(syncline.SerializationError, match="image_urls"):
            posts.upsert(make_post(1, image_urls="not a list"))
        with pytest.raises(syncline.SerializationError):
            posts.update("p001", likes_count="x")
        with pytest.raises(syncline.QueryError, match="no field"):
            posts.update("p001", nope=1)
        with pytest.raises(syncline.QueryError, match="primary key"):
            posts.update("p001", id="p002")
        assert posts.get("p001") == make_post(1)

    def test_isolation_from_objects_passed_and_returned(self,
                                                        posts: syncline.Repository[Post]) -> None:
        post = make_post(1, image_urls=["a"])
        posts.upsert(post)
        post.image_urls.append("b")  # type: ignore[union-attr]
        post.content = "changed after writing"
        got = posts.get("p001")
        assert got is not None and got.image_urls == ["a"] and got.content == "post 1"
        assert got.image_urls is not None
        got.image_urls.append("c")
        again = posts.get("p001")
        assert again is not None and again.image_urls == ["a"]

    # -- transactions ------------------------------------------------------------------------

    def test_transaction_commits(self, store: Store, posts: syncline.Repository[Post]) -> None:
        with store.transaction():
            posts.insert(make_post(1))
            posts.insert(make_post(2))
            assert posts.count() == 2  # sees its own writes
        assert posts.count() == 2

    def test_transaction_rolls_back_on_exception(self, store: Store,
                                                 posts: syncline.Repository[Post]) -> None:
        posts.insert(make_post(0))
        with pytest.raises(RuntimeError), store.transaction():
            posts.insert(make_post(1))
            posts.update("p000", content="changed")
            posts.delete("p000") if False else None
            raise RuntimeError("boom")
        assert [p.id for p in posts.all()] == ["p000"]
        assert posts.get("p000") == make_post(0)

    def test_nested_transaction_is_a_savepoint(self, store: Store,
                                               posts: syncline.Repository[Post]) -> None:
        self.require(store, "savepoints")
        with store.transaction():
            posts.insert(make_post(1))
            with pytest.raises(ValueError), store.transaction():
                posts.insert(make_post(2))
                raise ValueError("inner only")
            with store.transaction():
                posts.insert(make_post(3))
            with pytest.raises(syncline.IntegrityError):
                posts.insert(make_post(1))  # a failed statement leaves the transaction usable
        assert [p.id for p in posts.all()] == ["p001", "p003"]

    def test_other_threads_never_see_uncommitted_rows(self, store: Store,
                                                      posts: syncline.Repository[Post]) -> None:
        seen: list[Post | None] = []
        with pytest.raises(RuntimeError), store.transaction():
            posts.insert(make_post(1))
            reader = threading.Thread(target=lambda: seen.append(posts.get("p001")))
            reader.start()
            reader.join(0.3)  # a backend may block the reader until the transaction ends
            raise RuntimeError("roll back")
        reader.join(10)
        assert seen == [None]

    def test_commit_listeners_hear_tables_once_per_transaction(
            self, store: Store, posts: syncline.Repository[Post]) -> None:
        heard: list[frozenset[str]] = []
        undo = store.on_commit(heard.append)
        with store.transaction():
            for i in range(5):
                posts.insert(make_post(i))
            store.repository(Counter).insert(Counter("c"))
        with pytest.raises(RuntimeError), store.transaction():
            posts.insert(make_post(99))
            raise RuntimeError
        posts.delete("p000")
        undo()
        posts.delete("p001")
        assert heard == [frozenset({"suite_posts", "suite_counters"}), frozenset({"suite_posts"})]

    # -- threads -----------------------------------------------------------------------------

    def test_threads_writing_at_once(self, store: Store) -> None:
        self.require(store, "concurrent_writers")
        counters = store.repository(Counter)
        counters.insert(Counter("shared"))
        errors: list[BaseException] = []

        def increment() -> None:
            current = counters.get("shared")
            assert current is not None
            counters.update("shared", value=current.value + 1)

        def work(n: int) -> None:
            try:
                for i in range(20):
                    counters.upsert(Counter(f"t{n}-{i}", i))
                    store.run_transaction(increment)
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=work, args=(n,)) for n in range(6)]
        for t in threads:
            t.start()
        for t in threads:
            t.join()
        assert [repr(e) for e in errors] == []
        assert counters.count() == 6 * 20 + 1
        shared = counters.get("shared")
        assert shared is not None and shared.value == 6 * 20  # no lost update

    # -- whole store -------------------------------------------------------------------------

    def test_clear_all_empties_every_table(self, store: Store, filled: list[Post]) -> None:
        store.repository(Counter).insert(Counter("c"))
        store.clear_all()
        assert store.repository(Post).count() == 0
        assert store.repository(Counter).count() == 0

    def test_data_survives_reopening(self, open_store: StoreFactory) -> None:
        first = open_store()
        self.require(first, "persistent")
        first.repository(Post).upsert(make_post(1))
        first.close()
        second = open_store()
        assert second.repository(Post).get("p001") == make_post(1)

    def test_data_survives_another_process(self, store_url: str,
                                           open_store: StoreFactory) -> None:
        """``persistent`` means on disk (or on a server), not in this process: what one
        process wrote and closed, a new process reads back, and the other way round."""
        first = open_store()
        self.require(first, "persistent")
        first.repository(Post).upsert(make_post(1))
        first.repository(Everything).upsert(make_everything(1))
        first.close()
        in_another_process(store_url, "check p001, write p002")
        second = open_store()
        assert second.repository(Post).get("p002") == make_post(2)
        assert second.repository(Post).get("p001") == make_post(1)

    def test_another_process_works_on_the_open_store(self, store_url: str,
                                                     store: Store) -> None:
        """``multi_process``: another process opens the store while this one has it open,
        reads what this one committed, and this one reads what it wrote."""
        self.require(store, "multi_process")
        store.repository(Post).upsert(make_post(1))
        store.repository(Everything).upsert(make_everything(1))
        in_another_process(store_url, "check p001, write p002")
        assert store.repository(Post).get("p002") == make_post(2)

    # -- error classes -------------------------------------------------------------------------

    @pytest.fixture
    def unreachable_url(self, store_url: str, store: Store, tmp_path: Path) -> str:
        """A URL of this backend that cannot be reached. Derived from ``store_url``: a file
        path goes under a "folder" that is a file (no permission bits involved, so root gets
        the same answer); a host goes to a closed port on 127.0.0.1. Override it when that
        does not fit your backend."""
        if "persistent" not in store.backend.capabilities:
            pytest.skip("a store that lives in this process cannot be unreachable")
        scheme, _, rest = store_url.partition("://")
        base, sep, query = rest.partition("?")
        tail = sep + query
        if base.startswith("/"):  # scheme:///path
            blocker = tmp_path / "a-file-not-a-folder"
            blocker.write_text("not a folder")
            return f"{scheme}:///{blocker}/missing/{Path(base[1:]).name or 'store'}{tail}"
        parts = urlsplit(store_url.partition("?")[0])
        if parts.hostname:
            with socket.socket() as sock:  # a port nobody listens on once it is closed
                sock.bind(("127.0.0.1", 0))
                port = sock.getsockname()[1]
            user = parts.netloc.rpartition("@")[0]
            netloc = (user + "@" if user else "") + f"127.0.0.1:{port}"
            return f"{scheme}://{netloc}{parts.path}{tail}"
        pytest.skip(f"cannot derive an unreachable URL from {store_url!r}; override the "
                    f"unreachable_url fixture")

    def test_an_unreachable_store_is_backend_unavailable(self, unreachable_url: str,
                                                          tmp_path: Path) -> None:
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(syncline.BackendUnavailableError):
            syncline.open(unreachable_url, entities=ENTITIES)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created

    def test_errors_are_classified(self, store: Store,
                                   posts: syncline.Repository[Post]) -> None:
        """Duplicate keys are IntegrityError, values beyond the limits SerializationError,
        and nothing is written either way."""
        posts.insert(make_post(1, local_id="same"))
        with pytest.raises(syncline.IntegrityError):
            posts.insert(make_post(1))
        with pytest.raises(syncline.IntegrityError):
            posts.insert_many([make_post(2), make_post(1)])
        with pytest.raises(syncline.IntegrityError):
            posts.upsert(make_post(3, local_id="same"))
        for oversize in (make_post(4, id="p" * 10_000), make_post(4, local_id="l" * 10_000),
                         make_post(4, likes_count=2**64), make_post(4, content="\x00")):
            with pytest.raises(syncline.SerializationError):
                posts.upsert(oversize)
        with pytest.raises(syncline.SerializationError):
            store.repository(Everything).upsert(make_everything(
                1, amount=decimal.Decimal("1E+200000")))
        assert [p.id for p in posts.all()] == ["p001"]
        assert store.repository(Everything).count() == 0

    def test_in_with_seventy_thousand_values(self, filled: list[Post],
                                             posts: syncline.Repository[Post]) -> None:
        """More values than PostgreSQL takes parameters (65,535): it just works."""
        many = [f"p{i:03d}" for i in range(70_000)]
        assert posts.count(F.id.in_(many)) == len(filled)
        assert posts.count(F.id.not_in(many)) == 0
        odd = [f"p{i:03d}" for i in range(1, 70_000, 2)]
        assert [p.id for p in posts.find(F.id.in_(odd) & (F.user_id == "u1"),
                                         order_by="id")] == \
            [p.id for p in filled if int(p.id[1:]) % 2 and p.user_id == "u1"]
        assert posts.count(F.id.not_in(odd)) == sum(1 for p in filled if int(p.id[1:]) % 2 == 0)
        likes = list(range(-40_000, 40_000))
        assert posts.count(F.likes_count.in_(likes)) == len(filled)
        assert posts.delete_where(F.id.in_(odd)) == sum(1 for p in filled if int(p.id[1:]) % 2)

    def test_a_newer_store_refuses_to_open(self, open_store: StoreFactory) -> None:
        first = open_store(schema_version=3)
        self.require(first, "persistent")
        first.close()
        with pytest.raises(syncline.MigrationError, match="newer"):
            open_store(schema_version=2)

    def test_closed_store_refuses_work(self, store: Store,
                                       posts: syncline.Repository[Post]) -> None:
        store.close()
        with pytest.raises(syncline.SynclineError):
            posts.insert(make_post(1))

    def test_entity_not_in_store_is_an_error(self, open_store: StoreFactory) -> None:
        store = open_store(entities=[Counter])
        with pytest.raises(syncline.EntityDefinitionError, match="not part of this store"):
            store.repository(Post)

