"""Typed repositories and the DAO base class, built once on the backend contract."""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from contextlib import AbstractContextManager
from typing import Any, Generic, Protocol, TypeVar

from syncline.core.model.convert import RowCodec
from syncline.core.model.errors import NotFoundError, QueryError, SerializationError
from syncline.core.model.query import (
    ORDERING_OPS,
    Compare,
    Condition,
    Not,
    Order,
    OrderArg,
    Query,
    WhereArg,
    check_like_pattern,
    condition_fields,
    normalize_where,
)
from syncline.core.model.schema import EntitySpec
from syncline.core.model.sync_fields import STATE_TABLE, sync_fields_of
from syncline.core.spi.backend import Backend
from syncline.core.storage.watch import Watch, WatchHub
from syncline.core.storage.writer import Writer

T = TypeVar("T")
R = TypeVar("R")


class RepositoryStore(Protocol):
    """What a repository uses of its store (a ``LocalStore``)."""

    @property
    def backend(self) -> Backend: ...

    @property
    def writer(self) -> Writer: ...

    @property
    def watches(self) -> WatchHub: ...

    def atomic(self, work: Callable[[], R]) -> R: ...

    def transaction(self) -> AbstractContextManager[None]: ...

    def written(self, spec: EntitySpec, action: str, records: Sequence[tuple[Any, Any]],
                before: Mapping[Any, tuple[Any, ...]] | None = None) -> None: ...

    def repository(self, cls: type[R]) -> Repository[R]: ...


class Repository(Generic[T]):
    """Entity objects in and out of one table. Get one with ``store.repository(Post)``.

    Every write runs in a transaction of its own, or joins the caller's
    ``with store.transaction():`` block.
    """

    def __init__(self, store: RepositoryStore, spec: EntitySpec, codec: RowCodec) -> None:
        self.store = store
        self.spec = spec
        self.table = spec.table
        self.codec = codec
        self._backend = store.backend
        self._writer = store.writer
        self._pk = spec.primary_key
        self._from_row = codec.from_row
        self._from_tuple = codec.from_tuple
        self._to_tuple = codec.to_tuple
        local = {spec.column_of(name) for name in spec.local_fields}
        self._synced_positions = tuple(
            i for i, column in enumerate(spec.table.column_names) if column not in local)
        self._pk_index = spec.table.column_names.index(spec.primary_key)
        self._syncs = spec.syncs

    @property
    def entity(self) -> type[T]:
        return self.spec.cls

    # -- reads -------------------------------------------------------------------------------

    def get(self, key: Any) -> T | None:
        """The entity with primary key ``key``, or None."""
        row = self._backend.get_values(self.table, self._key(key))
        return None if row is None else self._from_tuple(row)

    def get_many(self, keys: Iterable[Any]) -> list[T]:
        """The entities with these keys, in the order given; missing keys are left out."""
        encoded = [self._key(k) for k in keys]
        return [self._from_tuple(r) for r in self._backend.get_many_values(self.table, encoded)]

    def find(self, where: WhereArg = None, order_by: OrderArg = None,
             limit: int | None = None, offset: int = 0) -> list[T]:
        """Entities matching ``where`` (``F.user_id == "u1"`` or ``{"user_id": "u1"}``)."""
        query = self.query(where, order_by, limit, offset)
        from_tuple = self._from_tuple
        return [from_tuple(r) for r in self._backend.query_values(self.table, query)]

    def first(self, where: WhereArg = None, order_by: OrderArg = None) -> T | None:
        """The first entity ``find`` would return, or None."""
        found = self.find(where, order_by, limit=1)
        return found[0] if found else None

    def all(self) -> list[T]:
        """Every entity, by primary key."""
        return self.find()

    def count(self, where: WhereArg = None) -> int:
        return self._backend.count(self.table, self._where(where))

    def exists(self, key: Any = None, *, where: WhereArg = None) -> bool:
        """Whether the key exists (or, with ``where``, whether any entity matches)."""
        if where is not None:
            return bool(self._backend.query(self.table, Query(self._where(where), limit=1)))
        return self._backend.get(self.table, self._key(key)) is not None

    # -- watching ----------------------------------------------------------------------------

    def watch(self, where: WhereArg = None, order_by: OrderArg = None,
              limit: int | None = None, offset: int = 0) -> Watch[list[T]]:
        """``find(...)``'s result now and after every commit that changes it.

        ``posts.watch(F.user_id == "u1", order_by="-created_at").subscribe(show)``, or
        ``async for posts in repo.watch(...)``.
        """
        query = self.query(where, order_by, limit, offset)

        def run() -> list[T]:
            return [self._from_tuple(r) for r in self._backend.query_values(self.table, query)]

        return self.store.watches.watch(self._watched(query.where, query.order_by), run)

    def watch_count(self, where: WhereArg = None) -> Watch[int]:
        """``count(where)`` now and after every commit that changes it."""
        cond = self._where(where)
        return self.store.watches.watch(self._watched(cond),
                                        lambda: self._backend.count(self.table, cond))

    def _watched(self, where: Condition | None, order_by: Iterable[Order] = ()) -> frozenset[str]:
        """The tables a query reads: its own, and the record-state table for F.sync fields."""
        names = {o.field for o in order_by} | (set() if where is None
                                               else condition_fields(where))
        if sync_fields_of(names):
            return frozenset({self.table.name, STATE_TABLE})
        return frozenset({self.table.name})

    def watch_one(self, key: Any) -> Watch[T | None]:
        """``get(key)`` now and after every commit that changes it."""
        stored = self._key(key)

        def run() -> T | None:
            row = self._backend.get_values(self.table, stored)
            return None if row is None else self._from_tuple(row)

        return self.store.watches.watch(frozenset({self.table.name}), run)

    # -- writes ------------------------------------------------------------------------------

    def insert(self, obj: T) -> T:
        """Insert a new entity; an existing key raises :class:`IntegrityError`."""
        self.insert_many([obj])
        return obj

    def insert_many(self, objs: Iterable[T]) -> None:
        objs = list(objs)
        rows = [self._to_tuple(o) for o in objs]
        pk = self._pk_index

        def write() -> None:
            self._writer.insert_values(self.table, rows)
            if self._syncs:
                self._track("create", [(r[pk], o) for r, o in zip(rows, objs, strict=True)])

        self.store.atomic(write)

    def upsert(self, obj: T) -> T:
        """Insert the entity or replace the stored one with the same key."""
        self.upsert_many([obj])
        return obj

    def upsert_many(self, objs: Iterable[T]) -> None:
        """Insert or replace many entities in one transaction: all are written or none.

        When the same key appears twice, the last one wins.
        """
        objs = list(objs)
        to_tuple = self._to_tuple
        rows = [to_tuple(o) for o in objs]
        if not rows:
            return
        pk = self._pk_index
        if len({r[pk] for r in rows}) != len(rows):
            last = {r[pk]: (r, o) for r, o in zip(rows, objs, strict=True)}
            rows = [r for r, _ in last.values()]
            objs = [o for _, o in last.values()]

        def write() -> None:
            existed: dict[Any, tuple[Any, ...]] = {}
            if self._syncs:
                keys = [r[pk] for r in rows]
                existed = {r[pk]: r for r in self._backend.get_many_values(self.table, keys)}
            self._writer.upsert_values(self.table, rows)
            if self._syncs:
                made = [(r[pk], o) for r, o in zip(rows, objs, strict=True) if r[pk] not in existed]
                # an upsert that leaves every synced field as it was has nothing to push
                changed = [(r[pk], o) for r, o in zip(rows, objs, strict=True)
                           if r[pk] in existed and self._synced_differ(existed[r[pk]], r)]
                self._track("create", made)
                self._track("update", changed, existed)

        self.store.atomic(write)

    def update(self, key: Any, **values: Any) -> T:
        """Set only the given fields of one entity and return it as stored.

        Raises :class:`NotFoundError` when no entity has ``key``.
        """
        encoded = self._values(values)
        stored_key = self._key(key)
        syncs = self._queues(values)

        def write() -> Any:
            before = {r[self._pk_index]: r for r in self._backend.get_many_values(
                self.table, [stored_key])} if syncs else None
            if not self._writer.update(self.table, stored_key, encoded):
                raise NotFoundError(
                    f"no {self.spec.cls.__name__} with {self._pk}={key!r} to update"
                )
            row = self._backend.get(self.table, stored_key)
            assert row is not None  # just updated in this transaction
            obj = self._from_row(row)
            if syncs:
                self._track("update", [(stored_key, obj)], before)
            return obj

        return self.store.atomic(write)  # type: ignore[no-any-return]

    def update_where(self, where: WhereArg, **values: Any) -> int:
        """Set the given fields on every entity matching ``where``; returns how many."""
        encoded = self._values(values)
        cond = self._where(where)
        syncs = self._queues(values)

        def write() -> int:
            keys = self._keys_where(cond) if syncs else []
            before = {r[self._pk_index]: r for r in self._backend.get_many_values(
                self.table, keys)} if keys else {}
            n = self._writer.update_where(self.table, cond, encoded)
            if syncs and keys:
                rows = self._backend.get_many(self.table, keys)
                self._track("update", [(r[self._pk], self._from_row(r)) for r in rows], before)
            return n

        return self.store.atomic(write)

    def update_values(self, columns: Sequence[str], rows: Iterable[Sequence[Any]]) -> int:
        """Set ``columns`` of many entities, each to its own values, in one write: ``rows``
        are ``(key, value, ...)`` with values in ``columns`` order. Keys with no entity are
        skipped; returns how many were updated."""
        if not columns:
            raise QueryError("update_values needs at least one column")
        for name in columns:
            if name == self._pk:
                raise QueryError(f"cannot change the primary key {self._pk!r} with "
                                 f"update_values; delete and insert")
            self._field(name)
        encode = self.codec.encode
        encoded = []
        for row in rows:
            if len(row) != len(columns) + 1:
                raise QueryError(f"update_values: each row is (key, one value per column of "
                                 f"{list(columns)}), got {len(row)} values")
            encoded.append((self._key(row[0]), *(encode(c, v)
                                                 for c, v in zip(columns, row[1:], strict=True))))
        if not encoded:
            return 0

        def write() -> int:
            before = {r[self._pk_index]: r for r in self._backend.get_many_values(
                self.table, [r[0] for r in encoded])} if self._syncs else None
            n = self._writer.update_values(self.table, columns, encoded)
            if self._syncs and n:
                found = self._backend.get_many(self.table, [r[0] for r in encoded])
                self._track("update", [(r[self._pk], self._from_row(r)) for r in found], before)
            return n

        return self.store.atomic(write)

    def delete(self, key: Any) -> bool:
        """Delete one entity; False when there was none."""
        return self.delete_many([key]) == 1

    def delete_many(self, keys: Iterable[Any]) -> int:
        encoded = [self._key(k) for k in keys]

        def write() -> int:
            existed = ([r[self._pk] for r in self._backend.get_many(self.table, encoded)]
                       if self._syncs else [])
            n = self._writer.delete_many(self.table, encoded)
            self._track_deletes(existed)
            return n

        return self.store.atomic(write)

    def delete_where(self, where: WhereArg) -> int:
        """Delete every entity matching ``where``; ``None`` is refused (use :meth:`clear`)."""
        cond = self._where(where)
        if cond is None:
            raise QueryError("delete_where needs a condition; call clear() to delete everything")

        def write() -> int:
            keys = self._keys_where(cond) if self._syncs else []
            n = self._writer.delete_where(self.table, cond)
            self._track_deletes(keys)
            return n

        return self.store.atomic(write)

    def clear(self) -> int:
        """Delete every entity of this table."""

        def write() -> int:
            keys = self._keys_where(None) if self._syncs else []
            n = self._writer.delete_where(self.table, None)
            self._track_deletes(keys)
            return n

        return self.store.atomic(write)

    # -- announcing writes of syncing entities (the sync layer queues them) ---------------

    def _keys_where(self, cond: Condition | None) -> list[Any]:
        return [r[self._pk] for r in self._backend.query(self.table, Query(cond))]

    def _synced_differ(self, before: tuple[Any, ...], after: tuple[Any, ...]) -> bool:
        """Whether two stored rows differ in a field that syncs (not a local-only one)."""
        return any(before[i] != after[i] for i in self._synced_positions)

    def _queues(self, values: dict[str, Any]) -> bool:
        """Whether an update of ``values`` is queued: not when it sets local-only fields only."""
        return self._syncs and not values.keys() <= set(self.spec.local_fields)

    def _track(self, action: str, records: list[tuple[Any, Any]],
               before: Mapping[Any, tuple[Any, ...]] | None = None) -> None:
        self.store.written(self.spec, action, records, before)

    def _track_deletes(self, keys: list[Any]) -> None:
        if self._syncs and keys:
            self._track("delete", [(k, None) for k in keys])

    # -- encoding ----------------------------------------------------------------------------

    def query(self, where: WhereArg = None, order_by: OrderArg = None,
              limit: int | None = None, offset: int = 0) -> Query:
        """The backend query for these arguments, checked and with values encoded."""
        query = Query.build(where, order_by, limit, offset)
        for order in query.order_by:
            field = self._field(order.field)
            if field.kind == "json":
                raise QueryError(
                    f"cannot order {self.spec.cls.__name__} by JSON field {order.field!r}"
                )
        if query.where is not None:
            self._check(query.where)
        return query.map_values(self._encode_query_value).renamed(self.spec.columns)

    def _where(self, where: WhereArg) -> Condition | None:
        cond = normalize_where(where)
        if cond is None:
            return None
        self._check(cond)
        return Query(cond).map_values(self._encode_query_value).renamed(self.spec.columns).where

    def _check(self, cond: Condition) -> None:
        if isinstance(cond, Compare):
            field = self._field(cond.field)
            if cond.op in ORDERING_OPS and field.kind == "json":
                raise QueryError(
                    f"F.{cond.field}: JSON fields support ==, !=, in_ and null tests, not {cond.op}"
                )
            if cond.op == "like":
                if field.kind != "text":
                    raise QueryError(f"F.{cond.field}.like(): like needs a text field")
                if not isinstance(cond.value, str):
                    raise QueryError(f"F.{cond.field}.like() needs a str pattern")
                check_like_pattern(cond.field, cond.value)
        elif isinstance(cond, Not):
            self._check(cond.item)
        else:
            for item in cond.items:
                self._check(item)

    def _field(self, name: str) -> Any:
        try:
            return self.spec.field(name)
        except NotFoundError as exc:
            raise QueryError(str(exc)) from None

    def _encode_query_value(self, field: str, value: Any) -> Any:
        try:
            return self.codec.encode(field, value)
        except SerializationError as exc:
            raise QueryError(f"bad value in a condition on F.{field}: {exc}") from exc

    def _key(self, key: Any) -> Any:
        try:
            return self.codec.encode(self._pk, key)
        except SerializationError as exc:
            raise QueryError(
                f"bad {self.spec.cls.__name__} key {key!r}: {exc}"
            ) from exc

    def _values(self, values: dict[str, Any]) -> dict[str, Any]:
        if not values:
            raise QueryError("update needs at least one field=value")
        if self._pk in values:
            raise QueryError(
                f"cannot change the primary key {self._pk!r} with update; delete and insert"
            )
        out = {}
        for name, value in values.items():
            self._field(name)
            column = self.spec.column_of(name)
            out[column] = self.codec.checked(name, self.codec.encode(name, value))
        return out

    def __repr__(self) -> str:
        return f"<Repository {self.spec.cls.__name__} table={self.table.name}>"
