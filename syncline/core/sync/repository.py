"""The repositories a syncing store hands out: a :class:`Repository` plus the seed's sync
look-ups (``pending()``, ``failed()``, ``sync_state(id)``, ``by_local_id``...)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from syncline.core.model.convert import RowCodec
from syncline.core.model.errors import NotFoundError, QueryError, SerializationError
from syncline.core.model.query import And, F, WhereArg, condition_fields, normalize_where
from syncline.core.model.schema import EntitySpec, FieldSpec
from syncline.core.model.sync_fields import SYNC_FIELDS, sync_fields_of
from syncline.core.storage.repository import Repository
from syncline.core.sync.local_fields import keep_local_values
from syncline.core.sync.outbox import EntryState, Outbox, RecordState, SyncStatus, state_key

if TYPE_CHECKING:
    from syncline.core.sync.syncing import SyncingStore

T = TypeVar("T")


class SyncRepository(Repository[T]):
    """A repository with the sync state of its records; ``store.repository(Post)`` on a
    syncing store. The look-ups refuse entities that do not sync."""

    store: SyncingStore

    def __init__(self, store: SyncingStore, spec: EntitySpec, codec: RowCodec) -> None:
        super().__init__(store, spec, codec)

    @property
    def outbox(self) -> Outbox:
        return self.store.outbox

    # -- sync state in queries (F.sync.status, F.sync.retry_count, F.sync.modified_at) --------

    def _field(self, name: str) -> Any:
        if name not in SYNC_FIELDS:
            return super()._field(name)
        if not self._syncs:
            raise QueryError(f"F.{name}: {self.spec.cls.__name__} does not sync, so its "
                             f"records have no sync state to query")
        kind = SYNC_FIELDS[name][1]
        return FieldSpec(name, name, RecordState, kind, True)

    def _encode_query_value(self, field: str, value: Any) -> Any:
        if field not in SYNC_FIELDS:
            return super()._encode_query_value(field, value)
        column = SYNC_FIELDS[field][0]
        if field == "sync.status" and isinstance(value, str):
            try:
                value = SyncStatus(value)
            except ValueError:
                raise QueryError(
                    f"F.{field}: {value!r} is no sync status; use one of "
                    f"{', '.join(s.value for s in SyncStatus)}") from None
        try:
            return self.outbox.states.codec.encode(column, value)
        except SerializationError as exc:
            raise QueryError(f"bad value in a condition on F.{field}: {exc}") from exc

    def update_where(self, where: WhereArg, **values: Any) -> int:
        self._no_sync_fields(where, "update_where")
        return super().update_where(where, **values)

    def delete_where(self, where: WhereArg) -> int:
        self._no_sync_fields(where, "delete_where")
        return super().delete_where(where)

    def _no_sync_fields(self, where: WhereArg, call: str) -> None:
        used = sync_fields_of(condition_fields(normalize_where(where) or And(())))
        if used:
            raise QueryError(
                f"{call}() cannot filter by {', '.join(f'F.{n}' for n in used)}; sync state "
                f"filters reads only: find() the records, then write them by key")

    def pending(self) -> list[T]:
        """Records with local changes not yet accepted by the server, oldest change first."""
        return self._with_status([SyncStatus.PENDING, SyncStatus.SYNCING])

    def failed(self, max_retries: int | None = None) -> list[T]:
        """Records whose sync failed (with fewer than ``max_retries`` retries, if given)."""
        self._require_syncs()
        where = (F.entity == self.table.name) & (F.status == SyncStatus.FAILED)
        if max_retries is not None:
            where = where & (F.retry_count < max_retries)
        states = self.outbox.states.find(where, order_by="local_modified_at")
        return self.get_many(s.record_id for s in states)

    def conflicts(self) -> list[T]:
        """Records in manual conflict; ``sync_state(id).conflict_record`` has the server's."""
        return self._with_status([SyncStatus.CONFLICT])

    def _with_status(self, statuses: list[SyncStatus]) -> list[T]:
        self._require_syncs()
        states = self.outbox.states.find(
            (F.entity == self.table.name) & F.status.in_(statuses) & (F.deleted == False),  # noqa: E712
            order_by="local_modified_at")
        return self.get_many(s.record_id for s in states)

    def sync_state(self, key: Any) -> RecordState | None:
        """The record's sync state (status, error, retry count, versions), or None."""
        self._require_syncs()
        return self.outbox.state(self.table.name, key)

    def update_sync_status(self, key: Any, status: SyncStatus, *, error: str | None = None,
                           retry_count: int | None = None) -> None:
        """Set a record's sync status (the seed's ``updateSyncStatus``)."""
        self._require_syncs()
        state = self.outbox.require_state(self.table.name, key)
        values: dict[str, Any] = {"status": status, "error": error}
        if retry_count is not None:
            values["retry_count"] = retry_count
        self.outbox.states.update(state.key, **values)

    def by_local_id(self, local_id: str) -> T | None:
        """The record created locally with ``local_id`` (its id may since be the server's)."""
        self._require_syncs()
        state = self.outbox.states.first(
            (F.entity == self.table.name) & (F.local_id == local_id))
        return None if state is None else self.get(state.record_id)

    def update_from_server(self, local_id: str, obj: T, version: int | None = None) -> None:
        """Store the server's version of a record created locally as ``local_id`` (the seed's
        ``updateFromServer``), without queueing anything. The record is ``synced`` unless
        entries for it are still queued (then it stays ``pending``). ``version``, the record's
        server version when the app knows it, becomes the base of the record's next change."""
        self._require_syncs()
        if version is not None:
            check_version(self.spec, getattr(obj, self.spec.primary_key), version)
        state = self.outbox.states.first(
            (F.entity == self.table.name) & (F.local_id == local_id))
        if state is None:
            raise NotFoundError(f"no {self.spec.cls.__name__} was created with local id "
                                f"{local_id!r}")
        from syncline.core.sync.engine import apply_remote

        apply_remote(self.store, self.spec.cls, state.record_id, obj, version=version)

    def upsert_from_server(self, objs: Iterable[T],
                           versions: Mapping[Any, int] | None = None) -> int:
        """Write ``objs`` as the server's state of their records (the seed's ``upsertPosts``
        from an API response), in one transaction, queueing nothing. Each record becomes
        ``synced``, unless entries for it are still queued: then it stays ``pending`` and they
        still go out. Local-only fields keep their stored values (new records get their
        defaults); a record given twice is written as its last. ``versions`` maps record ids
        to their server versions when the API answer carries them: each becomes the base of
        the record's next change (without one, a record keeps the version it had). Returns
        how many records were written; a record the store refuses writes none of them."""
        self._require_syncs()
        pk = self.spec.primary_key
        latest = {self.codec.encode(pk, getattr(o, pk)): o for o in objs}
        known: dict[Any, int] = {}
        for key, version in (versions or {}).items():
            check_version(self.spec, key, version)
            known[self.codec.encode(pk, key)] = version
        if not latest:
            return 0
        name = self.table.name
        ids = list(latest)

        def work() -> None:
            kept = keep_local_values(self.store, self.spec.cls, list(latest.values()))
            self._writer.upsert_values(self.table, [self._to_tuple(o) for o in kept])
            keys = [state_key(name, rid) for rid in ids]
            found = {s.key: s for s in self.outbox.states.get_many(keys)}
            queued = {e.record_id for e in self.outbox.entries.find(
                (F.entity == name) & F.record_id.in_(ids) & (F.state == EntryState.PENDING))}
            states = [found.get(key) or RecordState(key, name, rid)
                      for rid, key in zip(ids, keys, strict=True)]
            self.outbox.states.upsert_many([attrs.evolve(
                state, status=SyncStatus.PENDING if state.record_id in queued
                else SyncStatus.SYNCED, error=None, retry_count=0, conflict_record=None,
                conflict_version=None, deleted=False,
                server_version=known.get(state.record_id, state.server_version))
                for state in states])

        self.store.atomic(work)
        return len(ids)

    def _require_syncs(self) -> None:
        if not self._syncs:
            raise QueryError(f"{self.spec.cls.__name__} does not sync; declare it with "
                             f"@syncline.entity(..., syncs=True)")


def check_version(spec: EntitySpec, record_id: Any, version: Any) -> None:
    """Refuse a server version that is not a non-negative int (it would become a base)."""
    if type(version) is not int or version < 0:
        raise SerializationError(
            f"the server version of {spec.cls.__name__} {record_id!r} must be a non-negative "
            f"int (the version the server gave the record), got {version!r}")
