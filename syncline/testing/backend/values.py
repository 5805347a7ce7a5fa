"""The value domain (syncline.core.model.values; issue 14 "Values"): every value reads back
equal, or is refused with SerializationError and nothing written."""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import math
import operator
import uuid
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncline
from syncline import F
from syncline.core.model.query import like_escape
from syncline.core.model.schema import EntityRegistry
from syncline.core.model.values import INT64_MAX, INT64_MIN, describe
from syncline.core.store import Store
from syncline.testing.backend.base import T0, UTC, StoreSuite
from syncline.testing.entities import ENTITIES
from syncline.testing.stores import StoreFactory

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


class ValueDomainSuite(StoreSuite):
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

