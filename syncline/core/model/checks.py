"""Checks and length bounds declared beside a field: ``syncline.field(check=..., max_length=...)``.

A check is one comparison of the field's stored value with a literal (``F.price >= 0``; several
joined with ``&``), or a bound on a text field's length in characters. Each becomes a
:class:`CheckSpec` of the table: a named CHECK constraint in the SQL backends' DDL, and a test the
row codec runs before any backend sees a write, so every backend (memory included) refuses a
breaking value with an :class:`IntegrityError` naming the field, the bound and the value. As in
SQL, a NULL passes every check.
"""

from __future__ import annotations

import math
from collections.abc import Callable
from typing import Any

import attrs

from syncline.core.model.errors import EntityDefinitionError, IntegrityError
from syncline.core.model.query import And, Compare, Condition
from syncline.core.model.values import describe

_SYMBOLS = {"eq": "=", "ne": "!=", "lt": "<", "le": "<=", "gt": ">", "ge": ">=",
            "in": "IN", "not_in": "NOT IN"}
_TESTS: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b), "ne": lambda a, b: bool(a != b),
    "lt": lambda a, b: bool(a < b), "le": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b), "ge": lambda a, b: bool(a >= b),
    "in": lambda a, b: a in b, "not_in": lambda a, b: a not in b,
}
#: the kinds a check may compare, with the literal types each takes; text only by (in)equality,
#: since the databases' collations order text differently from Python
_LITERALS: dict[str, tuple[type, ...]] = {
    "integer": (int,), "float": (int, float), "boolean": (bool,), "text": (str,)}
_TEXT_OPS = frozenset({"eq", "ne", "in", "not_in"})


def _frozen(value: Any) -> Any:
    """A list of values (from a schema dump's JSON) as the tuple a declaration holds."""
    return tuple(value) if isinstance(value, list) else value


@attrs.frozen(cache_hash=True)
class CheckSpec:
    """``column <op> value`` (``length(column) <op> value`` when ``length``), named ``name``."""

    name: str
    column: str
    op: str
    value: Any = attrs.field(converter=_frozen)
    length: bool = False

    def describe(self) -> str:
        """The check as a person reads it: ``price >= 0``, ``length(title) <= 80``."""
        subject = f"length({self.column})" if self.length else self.column
        value = (f"({', '.join(describe(v) for v in self.value)})"
                 if self.op in ("in", "not_in") else describe(self.value))
        return f"{subject} {_SYMBOLS[self.op]} {value}"

    def sql(self, quote: Callable[[str], str]) -> str:
        """The CHECK expression (the same text on SQLite and PostgreSQL)."""
        subject = f"length({quote(self.column)})" if self.length else quote(self.column)
        if self.op in ("in", "not_in"):
            values = ", ".join(_sql_literal(v) for v in self.value)
            return f"{subject} {_SYMBOLS[self.op]} ({values})"
        return f"{subject} {_SYMBOLS[self.op]} {_sql_literal(self.value)}"

    def holds(self, value: Any) -> bool:
        """Whether a stored value passes (None always does, as in SQL)."""
        if value is None:
            return True
        return _TESTS[self.op](len(value) if self.length else value, self.value)


def _sql_literal(value: Any) -> str:
    if isinstance(value, bool):
        return "TRUE" if value else "FALSE"
    if isinstance(value, str):
        return "'" + value.replace("'", "''") + "'"
    return repr(value)


def field_checks(owner: str, table: str, field: str, kind: str, *, check: Any = None,
                 min_length: int | None = None, max_length: int | None = None,
                 enum: bool = False, column: str | None = None) -> list[CheckSpec]:
    """The checks one field (stored in ``column``, by default its name) declares, or an
    :class:`EntityDefinitionError` naming it."""
    where = f"{owner}.{field}"
    column = column or field
    out: list[CheckSpec] = []
    for op, bound in (("ge", min_length), ("le", max_length)):
        if bound is None:
            continue
        if kind != "text" or enum:
            raise EntityDefinitionError(
                f"{where}: min_length/max_length bound str fields; this one is stored as {kind}")
        if type(bound) is not int or bound < 0:
            raise EntityDefinitionError(
                f"{where}: a length bound must be an int >= 0, got {describe(bound)}")
        out.append(CheckSpec("", column, op, bound, length=True))
    if min_length is not None and max_length is not None and min_length > max_length:
        raise EntityDefinitionError(
            f"{where}: min_length={min_length} is above max_length={max_length}")
    if check is not None:
        items = check.items if isinstance(check, And) else (check,)
        out += [attrs.evolve(_comparison(where, field, kind, enum, item), column=column)
                for item in items]
    return [attrs.evolve(c, name=f"ck_{table}_{column}_{i}") for i, c in enumerate(out, 1)]


def _comparison(where: str, field: str, kind: str, enum: bool, cond: Condition) -> CheckSpec:
    if not isinstance(cond, Compare) or cond.field != field:
        raise EntityDefinitionError(
            f"{where}: check={cond!r} must compare F.{field} itself with a value "
            f"(join several with &), e.g. check=F.{field} >= 0")
    allowed = _LITERALS.get(kind)
    if allowed is None or enum:
        raise EntityDefinitionError(
            f"{where}: checks compare int, float, bool and str fields; this one is stored as "
            f"{kind}{' (an enum)' if enum else ''}")
    if cond.op not in _SYMBOLS or (kind == "text" and cond.op not in _TEXT_OPS):
        ops = "==, !=, in_(), not_in()" if kind == "text" else "==, !=, <, <=, >, >=, in_()"
        raise EntityDefinitionError(
            f"{where}: a check on a {kind} field compares with {ops}, not {cond.op}")
    values = cond.value if cond.op in ("in", "not_in") else [cond.value]
    for v in values:
        ok = type(v) in allowed or (kind == "float" and type(v) is int)
        if not ok or (isinstance(v, float) and not math.isfinite(v)):
            raise EntityDefinitionError(
                f"{where}: check value {describe(v)} must be a finite "
                f"{' or '.join(t.__name__ for t in allowed)}")
    value = tuple(cond.value) if cond.op in ("in", "not_in") else cond.value
    return CheckSpec("", field, cond.op, value)


def checker(owner: str, field: str, checks: list[CheckSpec]) -> Callable[[Any], Any]:
    """A function returning a stored value of ``field`` unchanged, or raising
    :class:`IntegrityError` naming the field, the broken check and the value."""
    def run(value: Any) -> Any:
        for c in checks:
            if not c.holds(value):
                raise IntegrityError(
                    f"{owner}.{field} = {describe(value)} breaks the check {c.describe()} "
                    f"({c.name}); nothing was written, give it a value that passes")
        return value

    return run
