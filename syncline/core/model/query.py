"""The backend-neutral query description.

Applications build conditions from field references::

    from syncline import F
    posts.find(where=(F.user_id == "u1") & (F.likes_count >= 10),
               order_by=[F.created_at.desc()], limit=50)

A :class:`Query` holds entity-level values; the repository encodes them into storage values
(:meth:`Query.map_values`) before a backend sees the query. Every backend evaluates conditions with
SQL's three-valued logic (a comparison with NULL is unknown, and unknown rows are not returned)
and orders NULLs first in ascending order and last in descending order.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias

import attrs

from syncline.core.model.cooperate import chunked
from syncline.core.model.errors import QueryError
from syncline.core.model.values import describe

CompareOp = Literal[
    "eq", "ne", "lt", "le", "gt", "ge", "in", "not_in", "like", "is_null", "not_null"
]
ORDERING_OPS = frozenset({"lt", "le", "gt", "ge"})


class _Combinable:
    """Mixin giving ``&``, ``|`` and ``~`` to conditions."""

    def __and__(self, other: Condition) -> Condition:
        return And(_flatten(And, (self, other)))  # type: ignore[arg-type]

    def __or__(self, other: Condition) -> Condition:
        return Or(_flatten(Or, (self, other)))  # type: ignore[arg-type]

    def __invert__(self) -> Condition:
        return Not(self)  # type: ignore[arg-type]


@attrs.frozen
class Compare(_Combinable):
    """``field <op> value``; ``value`` is a list for ``in``/``not_in`` and unused for null tests."""

    field: str
    op: CompareOp
    value: Any = None


@attrs.frozen
class And(_Combinable):
    items: tuple[Condition, ...]


@attrs.frozen
class Or(_Combinable):
    items: tuple[Condition, ...]


@attrs.frozen
class Not(_Combinable):
    item: Condition


Condition: TypeAlias = Compare | And | Or | Not


def _flatten(kind: type[And] | type[Or], items: Iterable[Condition]) -> tuple[Condition, ...]:
    out: list[Condition] = []
    for item in items:
        if isinstance(item, kind):
            out.extend(item.items)
        elif isinstance(item, Compare | And | Or | Not):
            out.append(item)
        else:
            raise QueryError(
                f"cannot combine {item!r} into a condition; use F.<field> comparisons, & | and ~"
            )
    return tuple(out)


@attrs.frozen
class Order:
    """One ordering term: a field and a direction."""

    field: str
    descending: bool = False


class Field:
    """A reference to an entity field, used to build conditions and orderings."""

    __slots__ = ("name",)

    def __init__(self, name: str) -> None:
        self.name = name

    def __repr__(self) -> str:
        return f"F.{self.name}"

    def __hash__(self) -> int:
        return hash(self.name)

    def __eq__(self, value: object) -> Compare:  # type: ignore[override]
        if value is None:
            return Compare(self.name, "is_null")
        return Compare(self.name, "eq", value)

    def __ne__(self, value: object) -> Compare:  # type: ignore[override]
        if value is None:
            return Compare(self.name, "not_null")
        return Compare(self.name, "ne", value)

    def __lt__(self, value: Any) -> Compare:
        return Compare(self.name, "lt", _not_none(self.name, "<", value))

    def __le__(self, value: Any) -> Compare:
        return Compare(self.name, "le", _not_none(self.name, "<=", value))

    def __gt__(self, value: Any) -> Compare:
        return Compare(self.name, "gt", _not_none(self.name, ">", value))

    def __ge__(self, value: Any) -> Compare:
        return Compare(self.name, "ge", _not_none(self.name, ">=", value))

    def in_(self, values: Iterable[Any]) -> Compare:
        return Compare(self.name, "in", _as_list(self.name, values))

    def not_in(self, values: Iterable[Any]) -> Compare:
        return Compare(self.name, "not_in", _as_list(self.name, values))

    def like(self, pattern: str) -> Compare:
        """SQL LIKE, case-sensitive on every backend: ``%`` any run, ``_`` one character;
        ``\\%``, ``\\_`` and ``\\\\`` match a literal ``%``, ``_`` and backslash (see
        :func:`like_escape`). A backslash before anything else is a :class:`QueryError`."""
        if not isinstance(pattern, str):
            raise QueryError(f"F.{self.name}.like() needs a str pattern, got "
                             f"{describe(pattern)}")
        check_like_pattern(self.name, pattern)
        return Compare(self.name, "like", pattern)

    def is_null(self) -> Compare:
        return Compare(self.name, "is_null")

    def is_not_null(self) -> Compare:
        return Compare(self.name, "not_null")

    def asc(self) -> Order:
        return Order(self.name, False)

    def desc(self) -> Order:
        return Order(self.name, True)


#: the escape character of like() patterns, on every backend
LIKE_ESCAPE = "\\"


def like_escape(text: str) -> str:
    """``text`` as a like() pattern matching exactly it: ``F.name.like(like_escape(s) + "%")``
    finds the values starting with ``s``, whatever ``%``, ``_`` or backslashes it holds."""
    return (text.replace(LIKE_ESCAPE, LIKE_ESCAPE * 2).replace("%", LIKE_ESCAPE + "%")
            .replace("_", LIKE_ESCAPE + "_"))


def check_like_pattern(name: str, pattern: str) -> None:
    i = pattern.find(LIKE_ESCAPE)
    while i != -1:
        if i + 1 >= len(pattern) or pattern[i + 1] not in "%_\\":
            raise QueryError(
                f"F.{name}.like({describe(pattern)}): a backslash at {i} must be followed by "
                f"%, _ or another backslash (it escapes them); for a literal backslash write "
                f"two, or build it with syncline.core.model.query.like_escape()")
        i = pattern.find(LIKE_ESCAPE, i + 2)


def _not_none(name: str, op: str, value: Any) -> Any:
    if value is None:
        raise QueryError(f"F.{name} {op} None is never true; use F.{name}.is_null() instead")
    return value


def _as_list(name: str, values: Iterable[Any]) -> list[Any]:
    if isinstance(values, str | bytes) or not isinstance(values, Iterable):
        raise QueryError(f"F.{name}.in_() needs a list of values, got {values!r}")
    return list(values)


class SyncField(Field):
    """``F.sync``: a field named ``sync``, whose attributes are a syncing record's sync state:
    ``F.sync.status`` (a ``SyncStatus`` or its value), ``F.sync.retry_count`` and
    ``F.sync.modified_at`` (when it was last written locally)."""

    __slots__ = ()

    @property
    def status(self) -> Field:
        return Field("sync.status")

    @property
    def retry_count(self) -> Field:
        return Field("sync.retry_count")

    @property
    def modified_at(self) -> Field:
        return Field("sync.modified_at")


class _FieldFactory:
    """``F.name`` is ``Field("name")``; ``F("name")`` works for names that are not identifiers."""

    def __getattr__(self, name: str) -> Field:
        if name.startswith("__"):
            raise AttributeError(name)
        return Field(name)

    @property
    def sync(self) -> SyncField:
        """``F.sync.status``...: the sync state of a syncing entity's records."""
        return SyncField("sync")

    def __call__(self, name: str) -> Field:
        return Field(name)


F = _FieldFactory()

WhereArg: TypeAlias = Condition | dict[str, Any] | None
OrderArg: TypeAlias = str | Order | Field | Sequence[str | Order | Field] | None


@attrs.frozen
class Query:
    """What to read from one table: a condition, an ordering, a window."""

    where: Condition | None = None
    order_by: tuple[Order, ...] = ()
    limit: int | None = None
    offset: int = 0

    @classmethod
    def build(
        cls,
        where: WhereArg = None,
        order_by: OrderArg = None,
        limit: int | None = None,
        offset: int = 0,
    ) -> Query:
        """Normalise the friendly arguments of ``Repository.find`` into a query."""
        if limit is not None and not _window_int(limit):
            raise QueryError(f"limit must be an int from 0 to 2**63-1 or None, "
                             f"got {describe(limit)}")
        if not _window_int(offset):
            raise QueryError(f"offset must be an int from 0 to 2**63-1, got {describe(offset)}")
        return cls(normalize_where(where), normalize_order(order_by), limit, offset)

    def fields(self) -> set[str]:
        """Every field name the query mentions."""
        names = {o.field for o in self.order_by}
        if self.where is not None:
            names |= condition_fields(self.where)
        return names

    def map_values(self, encode: Callable[[str, Any], Any]) -> Query:
        """A copy with every compared value passed through ``encode(field, value)``."""
        if self.where is None:
            return self
        return attrs.evolve(self, where=map_condition(self.where, encode))

    def renamed(self, names: Mapping[str, str]) -> Query:
        """A copy naming fields by ``names`` (field -> column; others unchanged)."""
        if not names:
            return self
        where = None if self.where is None else rename_condition(self.where, names)
        order = tuple(Order(names.get(o.field, o.field), o.descending) for o in self.order_by)
        return attrs.evolve(self, where=where, order_by=order)


def _window_int(value: Any) -> bool:
    return (isinstance(value, int) and not isinstance(value, bool)
            and 0 <= value <= 2**63 - 1)


def normalize_where(where: WhereArg) -> Condition | None:
    if where is None:
        return None
    if isinstance(where, dict):
        items = tuple(Field(k) == v for k, v in where.items())
        if not items:
            return None
        return items[0] if len(items) == 1 else And(items)
    if isinstance(where, Compare | And | Or | Not):
        return where
    raise QueryError(
        f"where must be a condition such as F.user_id == 'u1' or a dict of field values, "
        f"got {where!r}"
    )


def normalize_order(order_by: OrderArg) -> tuple[Order, ...]:
    if order_by is None:
        return ()
    items = [order_by] if isinstance(order_by, str | Order | Field) else list(order_by)
    out: list[Order] = []
    for item in items:
        if isinstance(item, Order):
            out.append(item)
        elif isinstance(item, Field):
            out.append(Order(item.name))
        elif isinstance(item, str) and item:
            out.append(Order(item[1:], True) if item.startswith("-") else Order(item))
        else:
            raise QueryError(
                f"order_by takes field names ('created_at', '-created_at') or "
                f"F.created_at.desc(), got {item!r}"
            )
    return tuple(out)


def tie_broken(order_by: Iterable[Order], primary_key: str) -> list[Order]:
    """The ordering every backend applies: the terms, then the primary key in the direction of
    the last term (ascending when there is none), so equal rows always come in the same order
    and an index ending in the primary key serves the whole ordering."""
    terms = list(order_by)
    if all(t.field != primary_key for t in terms):
        terms.append(Order(primary_key, terms[-1].descending if terms else False))
    return terms


def condition_fields(cond: Condition) -> set[str]:
    if isinstance(cond, Compare):
        return {cond.field}
    if isinstance(cond, Not):
        return condition_fields(cond.item)
    out: set[str] = set()
    for item in cond.items:
        out |= condition_fields(item)
    return out


def rename_condition(cond: Condition, names: Mapping[str, str]) -> Condition:
    """``cond`` with its fields named by ``names`` (field -> column; others unchanged)."""
    if isinstance(cond, Compare):
        return attrs.evolve(cond, field=names.get(cond.field, cond.field))
    if isinstance(cond, Not):
        return Not(rename_condition(cond.item, names))
    return type(cond)(tuple(rename_condition(i, names) for i in cond.items))


def map_condition(cond: Condition, encode: Callable[[str, Any], Any]) -> Condition:
    if isinstance(cond, Compare):
        if cond.op in ("is_null", "not_null"):
            return cond
        if cond.op in ("in", "not_in"):
            field = cond.field
            return Compare(field, cond.op, chunked(lambda v: encode(field, v), list(cond.value)))
        return Compare(cond.field, cond.op, encode(cond.field, cond.value))
    if isinstance(cond, Not):
        return Not(map_condition(cond.item, encode))
    return type(cond)(tuple(map_condition(i, encode) for i in cond.items))
