"""Ordered indexes for the memory backend: a query on indexed columns reads the rows it needs.

Each declared index keeps its rows' keys sorted by the index's columns, then the primary key
(:class:`OrderedIndex`). A query whose condition fixes the leading columns (``==`` or
``in_``), and may bound the next one (``<``, ``>=`` ...), reads only that stretch; when its
order is the index's own, it stops once it has ``offset + limit`` rows. The condition is still
evaluated on every row read, so the index only narrows what is read, never decides alone.
"""

from __future__ import annotations

import bisect
import itertools
from collections.abc import Callable, Iterator, Mapping, Sequence
from typing import Any

from syncline.core.model.query import And, Compare, Condition, Order, tie_broken
from syncline.core.model.schema import IndexSpec

Row = dict[str, Any]
#: a column's value as it sorts: NULLs first, as ``order_rows`` sorts them ascending
SortKey = tuple[bool, Any]

#: an ``in_`` prefix expands to at most this many stretches of the index, else a wider read
_MAX_PREFIXES = 4096
_RANGE_OPS = ("gt", "ge", "lt", "le")


def sort_key(value: Any) -> SortKey:
    return (value is not None, value if value is not None else 0)


class OrderedIndex:
    """The keys of a table's rows, sorted by ``columns`` then by primary key.

    Entries are kept in buckets of at most ``2 * LOAD`` (a bucketed sorted list), so a write
    moves a bucket's entries, not the whole index's: the cost of a write stays flat as the
    table grows."""

    LOAD = 500

    def __init__(self, index: IndexSpec) -> None:
        self.name = index.name
        self.columns = tuple(index.columns)
        self._buckets: list[list[tuple[Any, ...]]] = []
        self._maxes: list[tuple[Any, ...]] = []  # each bucket's last entry

    def __len__(self) -> int:
        return sum(len(b) for b in self._buckets)

    def entry(self, key: Any, row: Row) -> tuple[Any, ...]:
        return (*(sort_key(row[c]) for c in self.columns), sort_key(key))

    def add(self, key: Any, row: Row) -> None:
        entry = self.entry(key, row)
        if not self._buckets:
            self._buckets.append([entry])
            self._maxes.append(entry)
            return
        i = min(bisect.bisect_left(self._maxes, entry), len(self._maxes) - 1)
        bucket = self._buckets[i]
        bisect.insort(bucket, entry)
        self._maxes[i] = bucket[-1]
        if len(bucket) > 2 * self.LOAD:
            half = bucket[self.LOAD:]
            del bucket[self.LOAD:]
            self._buckets.insert(i + 1, half)
            self._maxes[i] = bucket[-1]
            self._maxes.insert(i + 1, half[-1])

    def remove(self, key: Any, row: Row) -> None:
        entry = self.entry(key, row)
        i = bisect.bisect_left(self._maxes, entry)
        if i == len(self._maxes):
            return
        bucket = self._buckets[i]
        j = bisect.bisect_left(bucket, entry)
        if j < len(bucket) and bucket[j] == entry:
            del bucket[j]
            if bucket:
                self._maxes[i] = bucket[-1]
            else:
                del self._buckets[i]
                del self._maxes[i]

    def scan(self, start: tuple[Any, ...]) -> Iterator[tuple[Any, ...]]:
        """The entries from the first one not below ``start``, in order."""
        i = bisect.bisect_left(self._maxes, start)
        if i == len(self._maxes):
            return
        bucket = self._buckets[i]
        yield from itertools.islice(bucket, bisect.bisect_left(bucket, start), None)
        for bucket in self._buckets[i + 1:]:
            yield from bucket


def _conjuncts(where: Condition | None) -> list[Compare]:
    if isinstance(where, Compare):
        return [where]
    if isinstance(where, And):
        return [c for c in where.items if isinstance(c, Compare)]
    return []


class Plan:
    """How to read a query through one index: the stretches, and whether they come out in
    the query's order."""

    def __init__(self, index: OrderedIndex, prefixes: list[tuple[SortKey, ...]],
                 low: tuple[SortKey, bool] | None, high: tuple[SortKey, bool] | None,
                 ordered: bool) -> None:
        self.index = index
        self.prefixes = prefixes
        self.low = low
        self.high = high
        self.ordered = ordered

    def keys(self) -> Iterator[Any]:
        """Primary keys in index order (per prefix, prefixes in sorted order)."""
        if not self.prefixes:  # an empty in_(): nothing matches
            return
        width = len(self.prefixes[0])
        for prefix in self.prefixes:
            start: tuple[Any, ...] = prefix
            if self.low is not None:
                start = (*prefix, self.low[0])
            for entry in self.index.scan(start):
                if entry[:width] != prefix:
                    break
                if self.high is not None:
                    bound, inclusive = self.high
                    value = entry[width]
                    if value > bound or (value == bound and not inclusive):
                        break
                yield entry[-1][1]


def plan(indexes: Mapping[str, OrderedIndex], where: Condition | None,
         order_by: Sequence[Order], pk: str) -> Plan | None:
    """The best index to read ``where`` through (None: read every row)."""
    eq: dict[str, list[Any]] = {}
    ranges: dict[str, list[Compare]] = {}
    for c in _conjuncts(where):
        if c.op == "eq" and c.value is not None:
            eq[c.field] = [c.value]
        elif c.op == "in" and c.field not in eq:
            eq[c.field] = [v for v in c.value if v is not None]
        elif c.op in _RANGE_OPS and c.value is not None:
            ranges.setdefault(c.field, []).append(c)
    best: tuple[int, Plan] | None = None
    for index in indexes.values():
        width = 0
        for column in index.columns:
            if column not in eq:
                break
            width += 1
        bounded = width < len(index.columns) and index.columns[width] in ranges
        if width == 0 and not bounded:
            continue
        values = [sorted({sort_key(v) for v in eq[c]}) for c in index.columns[:width]]
        count = 1
        for v in values:
            count *= len(v)
        if count > _MAX_PREFIXES:
            continue
        prefixes = [tuple(p) for p in itertools.product(*values)]
        low = high = None
        if bounded:
            for c in ranges[index.columns[width]]:
                key = sort_key(c.value)
                if c.op in ("gt", "ge") and (low is None or key > low[0]):
                    low = (key, c.op == "ge")
                elif c.op in ("lt", "le") and (high is None or key < high[0]):
                    high = (key, c.op == "le")
        # One stretch whose remaining columns are the query's order: no sort, early stop.
        rest = [Order(c) for c in index.columns[width:]]
        ordered = len(prefixes) == 1 and tie_broken(order_by, pk) == tie_broken(rest, pk)
        score = width * 2 + bounded + ordered
        if best is None or score > best[0]:
            best = (score, Plan(index, prefixes, low, high, ordered))
    return None if best is None else best[1]


def candidates(rows: Mapping[Any, Row], where: Condition | None, pk: str,
               indexes: Mapping[str, OrderedIndex],
               order_by: Sequence[Order] = ()) -> tuple[Iterator[Row], bool] | None:
    """The rows a query must look at, and whether they come in its order; None when no index
    narrows it. A primary key fixed by ``==`` or ``in_`` is read directly."""
    for c in _conjuncts(where):
        if c.field == pk and c.op in ("eq", "in"):
            keys = [c.value] if c.op == "eq" else list(c.value)
            try:
                found = {k: rows[k] for k in keys if k in rows}
            except TypeError:  # an unhashable value: no row has it as its key
                return iter(()), False
            return iter(found.values()), False
    try:
        chosen = plan(indexes, where, order_by, pk)
    except TypeError:  # values of another type than the column's: read every row
        return None
    if chosen is None:
        return None
    get: Callable[[Any], Row | None] = rows.get
    return (r for r in map(get, chosen.keys()) if r is not None), chosen.ordered
