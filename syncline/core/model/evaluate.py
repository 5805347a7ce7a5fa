"""Evaluating a query in Python with SQL semantics, for backends without a query engine.

Three-valued logic: a comparison involving NULL (None) is *unknown* (``None`` here); NOT of
unknown is unknown; only rows whose condition is True are returned. NULLs sort first ascending.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from functools import lru_cache
from typing import Any

from syncline.core.model.query import Compare, Condition, Not, Or, Order, tie_broken

Truth = bool | None

_CMP: dict[str, Callable[[Any, Any], bool]] = {
    "eq": lambda a, b: bool(a == b),
    "ne": lambda a, b: bool(a != b),
    "lt": lambda a, b: bool(a < b),
    "le": lambda a, b: bool(a <= b),
    "gt": lambda a, b: bool(a > b),
    "ge": lambda a, b: bool(a >= b),
}


@lru_cache(maxsize=256)
def like_regex(pattern: str) -> re.Pattern[str]:
    """The regex of a like() pattern; a backslash makes the next character literal."""
    out = []
    escaped = False
    for ch in pattern:
        if escaped:
            out.append(re.escape(ch))
            escaped = False
        elif ch == "\\":
            escaped = True
        else:
            out.append(".*" if ch == "%" else "." if ch == "_" else re.escape(ch))
    return re.compile("".join(out), re.DOTALL)


def evaluate(cond: Condition, row: dict[str, Any]) -> Truth:
    if isinstance(cond, Compare):
        value = row[cond.field]
        op = cond.op
        if op == "is_null":
            return value is None
        if op == "not_null":
            return value is not None
        if (op == "in" or op == "not_in") and not cond.value:
            return op == "not_in"  # x IN () is false and x NOT IN () true, even for NULL
        if value is None:
            return None
        if op == "in" or op == "not_in":
            hit = value in cond.value
            if not hit and None in cond.value:
                return None
            return hit if op == "in" else not hit
        if op == "like":
            return like_regex(cond.value).fullmatch(value) is not None
        if cond.value is None:
            return None
        return _CMP[op](value, cond.value)
    if isinstance(cond, Not):
        inner = evaluate(cond.item, row)
        return None if inner is None else not inner
    results = [evaluate(item, row) for item in cond.items]
    if isinstance(cond, Or):
        if any(r is True for r in results):
            return True
        return None if any(r is None for r in results) else False
    if any(r is False for r in results):
        return False
    return None if any(r is None for r in results) else True


def order_rows(rows: list[dict[str, Any]], order_by: Iterable[Order], pk: str,
               sort_key: Callable[[str, Any], Any] = lambda _f, v: v) -> list[dict[str, Any]]:
    """Sort rows by the terms, then by primary key; NULLs first ascending, last descending."""
    terms = tie_broken(order_by, pk)
    out = list(rows)
    for term in reversed(terms):  # stable sorts, least significant first
        name = term.field

        def key(row: dict[str, Any], n: str = name) -> tuple[bool, Any]:
            value = row[n]
            return (value is not None, sort_key(n, value) if value is not None else 0)

        out.sort(key=key, reverse=term.descending)
    return out
