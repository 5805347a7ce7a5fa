"""What the SQL backends share about a condition, whatever their SQL is written with.

A statement is cached per *shape* of its condition, and its parameters are bound in the order
the condition's comparisons appear; both rules must agree between the SQL and the values.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Protocol

from syncline.core.model.query import Compare, Condition, Not
from syncline.core.model.schema import TableSpec


def shape(cond: Condition | None, many_values: int) -> Any:
    """The part of ``cond`` its SQL depends on: structure, fields, operators, list sizes
    (a list longer than ``many_values`` binds as one parameter, so its size does not count)."""
    if cond is None:
        return None
    if isinstance(cond, Compare):
        if cond.op in ("in", "not_in"):
            many = len(cond.value) > many_values
            return (cond.op, cond.field, "many" if many else len(cond.value))
        return (cond.op, cond.field)
    if isinstance(cond, Not):
        return ("not", shape(cond.item, many_values))
    return (type(cond).__name__, tuple(shape(i, many_values) for i in cond.items))


def bound(cond: Condition | None) -> Iterator[Compare]:
    """The comparisons of ``cond`` that bind values, in the order their SQL binds them."""
    if cond is None:
        return
    if isinstance(cond, Compare):
        if cond.op not in ("is_null", "not_null"):
            yield cond
    elif isinstance(cond, Not):
        yield from bound(cond.item)
    else:
        for item in cond.items:
            yield from bound(item)


class _Updates(Protocol):
    def update(self, spec: TableSpec, where: Condition | None,
               values: Mapping[str, Any]) -> tuple[str, list[Any]]: ...


def batch_update(sql: _Updates, table: TableSpec, columns: Sequence[str],
                 rows: Sequence[Sequence[Any]]) -> tuple[str, list[list[Any]]]:
    """One UPDATE by primary key for a batch of rows (each the key, then ``columns``' values)
    and each row's parameters placed as that statement binds them."""
    # Build with each column's place in a row as its "value", the key as -1, so the
    # parameter order the builder reports says where each row's values go.
    stmt, order = sql.update(table, Compare(table.primary_key, "eq", -1),
                             {c: i for i, c in enumerate(columns, 1)})
    places = [0 if p == -1 else p for p in order]
    return stmt, [[r[i] for i in places] for r in rows]
