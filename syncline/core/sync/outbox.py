"""The sync queue (outbox) and per-record sync state, kept by syncline for syncing entities.

Both are ordinary tables written through the backend contract, in the same transaction as the
record they describe: a write and its queued mutation commit or vanish together.
"""

from __future__ import annotations

import datetime as dt
import enum
import time
import uuid
from collections.abc import Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from syncline.core.model.errors import NotFoundError
from syncline.core.model.query import Condition, F
from syncline.core.model.schema import EntityRegistry, EntitySpec, internal_entity, spec_of

if TYPE_CHECKING:
    from syncline.core.storage.local import LocalStore
    from syncline.core.storage.repository import Repository
    from syncline.core.storage.watch import Watch

internal = EntityRegistry()


def new_id() -> str:
    """A new client-generated record id (a random UUID as a string)."""
    return str(uuid.uuid4())


class SyncStatus(enum.Enum):
    SYNCED = "synced"
    PENDING = "pending"
    SYNCING = "syncing"
    FAILED = "failed"
    CONFLICT = "conflict"


class EntryState(enum.Enum):
    PENDING = "pending"
    DEAD = "dead"  # over the retry limit or rejected: kept until the app requeues or purges


@internal_entity(internal, "_syncline_records", primary_key="key",
                 indexes=[("entity", "status"), "status", "local_id"])
@attrs.define
class RecordState:
    """The sync state of one record of a syncing entity."""

    key: str  # entity + "/" + record id
    entity: str
    record_id: str
    status: SyncStatus = SyncStatus.PENDING
    error: str | None = None
    retry_count: int = 0
    local_id: str | None = None
    server_version: int | None = None
    local_modified_at: dt.datetime | None = None
    deleted: bool = False
    #: manual conflicts: the server's record and version, kept for the app to decide.
    conflict_record: dict[str, Any] | None = None
    conflict_version: int | None = None


@internal_entity(internal, "_syncline_outbox",
                 indexes=[("state", "priority", "created_at"), ("entity", "record_id"),
                          ("state", "seq"), ("state", "next_attempt_at"), "group_id"])
@attrs.define
class OutboxEntry:
    """One queued mutation or command (the seed's SyncQueue row, plus an idempotency key)."""

    id: str  # the mutation id
    entity: str
    action: str  # create, update, delete, command
    created_at: dt.datetime
    seq: int
    record_id: str | None = None
    command: str | None = None
    payload: dict[str, Any] | None = None
    priority: int = 0
    retry_count: int = 0
    last_attempt: dt.datetime | None = None
    next_attempt_at: dt.datetime | None = None
    error: str | None = None
    state: EntryState = EntryState.PENDING
    coalesce: bool = True
    #: set when first sent: entries sent together keep being sent together, under this id.
    group_id: str | None = None


@internal_entity(internal, "_syncline_sync_meta", primary_key="key")
@attrs.define
class SyncMeta:
    key: str
    value: str | None = None


@internal_entity(internal, "_syncline_outbox_after", primary_key="id")
@attrs.define
class CommandAfter:
    """The records a queued command waits for, when not every earlier write (``after=``)."""

    id: str  # the command's entry id
    records: list[str] = attrs.Factory(list)  # state keys: entity/record_id


@internal_entity(internal, "_syncline_quarantine", primary_key="key", indexes=["entity"])
@attrs.define
class Quarantined:
    """A pulled change this store could not hold, kept with its error; later changes of the
    record still apply (and release it)."""

    key: str  # entity/record_id
    entity: str
    record_id: str
    version: int
    error: str
    at: dt.datetime
    op: str = "upsert"
    payload: dict[str, Any] | None = None


@internal_entity(internal, "_syncline_resync_seen", primary_key="key")
@attrs.define
class ResyncSeen:
    """A record a pull from the start (a resync) has met so far; kept across interrupted
    syncs so that, once the pass ends, synced records it never met can be dropped."""

    key: str  # entity/record_id


@internal_entity(internal, "_syncline_outbox_base", primary_key="id",
                 indexes=[("entity", "record_id")])
@attrs.define
class OutboxBase:
    """What a queued update changed: those fields' values before it (wire values), so that
    the push sends a patch (docs/protocol.md, "Patches"). An update without one (queued
    before syncline kept them) is sent as the whole record."""

    id: str  # the update's entry id
    entity: str
    record_id: str
    fields: dict[str, Any] = attrs.Factory(dict)


INTERNAL_ENTITIES: list[type] = [RecordState, OutboxEntry, SyncMeta, CommandAfter, Quarantined,
                                 ResyncSeen, OutboxBase]


def state_key(entity: str, record_id: str) -> str:
    return f"{entity}/{record_id}"


def _table_of(cls: type) -> str:
    return spec_of(cls).table.name


class Outbox:
    """The queue and the record states of one store. Get it as ``store.outbox``."""

    def __init__(self, store: LocalStore) -> None:
        self.store = store
        self.entries: Repository[OutboxEntry] = store.repository(OutboxEntry)
        self.states: Repository[RecordState] = store.repository(RecordState)
        self.meta: Repository[SyncMeta] = store.repository(SyncMeta)
        self.after: Repository[CommandAfter] = store.repository(CommandAfter)
        self.quarantine: Repository[Quarantined] = store.repository(Quarantined)
        self.resync_seen: Repository[ResyncSeen] = store.repository(ResyncSeen)
        self.bases: Repository[OutboxBase] = store.repository(OutboxBase)
        #: False: writes to syncing entities queue nothing and keep no sync state, on a store
        #: that is itself the source of truth (its opener turns it off before any write)
        self.queues_writes = True
        self._seq = 0

    def now(self) -> dt.datetime:
        return self.store.clock.now()

    def _next_seq(self) -> int:
        # Nanoseconds keep the order of enqueues across processes; the counter breaks ties.
        self._seq = max(self._seq + 1, time.time_ns())
        return self._seq

    # -- tracking record writes (called inside the write's transaction) ----------------------

    def track(self, spec: EntitySpec, action: str, records: Sequence[tuple[str, Any]],
              before: Mapping[Any, tuple[Any, ...]] | None = None) -> None:
        """Queue ``action`` for each ``(record_id, entity_or_None)`` and mark it pending;
        ``before``: an update's previous rows by record id (the changed fields' old values are
        kept with it, for a patch)."""
        if not records or not self.queues_writes:
            return
        wire = self.store.wire
        bases: list[OutboxBase] = []
        now = self.now()
        name = spec.table.name
        keys = [state_key(name, rid) for rid, _ in records]
        existing = {s.key: s for s in self.states.get_many(keys)}
        entries = []
        states = []
        for (rid, obj), key in zip(records, keys, strict=True):
            payload = None if obj is None else wire.unstructure(obj)
            entries.append(OutboxEntry(
                id=new_id(), entity=name, action=action, created_at=now, seq=self._next_seq(),
                record_id=rid, payload=payload))
            row = None if before is None else before.get(rid)
            if row is not None and payload is not None:
                old = wire.unstructure(self.store.codec(spec.cls).from_tuple(row))
                bases.append(OutboxBase(entries[-1].id, name, rid, {
                    f: old.get(f) for f, v in payload.items() if old.get(f) != v}))
            state = existing.get(key) or RecordState(key, name, rid, local_id=rid)
            if state.status is not SyncStatus.CONFLICT:
                state.status = SyncStatus.PENDING
            state.error = None
            state.retry_count = 0
            state.local_modified_at = now
            state.deleted = action == "delete"
            states.append(state)
        self.entries.insert_many(entries)
        if bases:
            self.bases.insert_many(bases)
        self.states.upsert_many(states)

    # -- the seed's queue operations ---------------------------------------------------------

    def enqueue_command(self, name: str, payload: dict[str, Any] | None = None, *,
                        priority: int = 0, coalesce: bool = False,
                        after: Iterable[tuple[type | str, str]] | None = None) -> str:
        """Queue a named command (``like_post``...); returns its mutation id.

        Inside ``store.transaction()`` it commits or vanishes with the block's writes.
        ``coalesce=True`` lets a later identical command (same name and payload) replace it.
        The command reaches the server after every record write queued before it and after
        earlier commands; ``after=[(Post, post_id), ...]`` makes it wait only for those
        records' queued changes, ``after=[]`` for nothing.
        """
        entry = OutboxEntry(
            id=new_id(), entity="", action="command", created_at=self.now(),
            seq=self._next_seq(), command=name, payload=payload, priority=priority,
            coalesce=coalesce)
        waits = None if after is None else CommandAfter(entry.id, [
            state_key(t if isinstance(t, str) else _table_of(t), str(rid)) for t, rid in after])

        def write() -> None:
            if coalesce:  # replace an identical command that was never sent
                same = self.entries.find((F.action == "command") & (F.command == name)
                                         & (F.state == EntryState.PENDING))
                self.entries.delete_many(e.id for e in same if e.coalesce
                                         and e.group_id is None and e.payload == payload)
            self.entries.insert(entry)
            if waits is not None:
                self.after.insert(waits)

        self.store.atomic(write)
        return entry.id

    def command_dependencies(self) -> dict[str, tuple[tuple[str, str], ...]]:
        """Queued commands' ``after=`` records, by entry id (the others wait for every earlier
        write)."""
        rows = self.after.all()
        if not rows:
            return {}
        live = {e.id for e in self.entries.get_many([r.id for r in rows])}
        self.after.delete_many(r.id for r in rows if r.id not in live)  # sent and answered
        out: dict[str, tuple[tuple[str, str], ...]] = {}
        for row in rows:
            if row.id in live:
                out[row.id] = tuple((k.partition("/")[0], k.partition("/")[2])
                                    for k in row.records)
        return out

    def pending_count(self) -> int:
        """Entries waiting to be sent (dead letters not included)."""
        return self.entries.count(F.state == EntryState.PENDING)

    def watch_pending_count(self) -> Watch[int]:
        """The pending count now and whenever it changes (the seed's ``watchPendingCount``)."""
        return self.entries.watch_count(F.state == EntryState.PENDING)

    def next_batch(self, limit: int = 100, *, due_only: bool = True) -> list[OutboxEntry]:
        """Pending entries by priority (higher first), then age; with ``due_only`` only those
        whose next attempt time has come."""
        where: Condition = F.state == EntryState.PENDING
        if due_only:
            where = where & ((F.next_attempt_at == None) | (F.next_attempt_at <= self.now()))  # noqa: E711
        return self.entries.find(where, order_by=[F.priority.desc(), "created_at", "seq"],
                                 limit=limit)

    def all_pending(self) -> list[OutboxEntry]:
        return self.next_batch(limit=None, due_only=False)  # type: ignore[arg-type]

    def dequeue(self, ids: Iterable[str]) -> int:
        ids = list(ids)
        self.bases.delete_many(ids)
        return self.entries.delete_many(ids)

    def mark_retry(self, ids: Sequence[str], error: str | None,
                   next_attempt_at: dt.datetime | None, *, max_retries: int) -> list[str]:
        """Count a failed attempt; entries over ``max_retries`` become dead letters.

        Returns the ids that were dead-lettered.
        """
        dead: list[str] = []
        now = self.now()
        for entry in self.entries.get_many(ids):
            retries = entry.retry_count + 1
            if retries > max_retries:
                dead.append(entry.id)
                self.entries.update(entry.id, retry_count=retries, error=error,
                                    last_attempt=now, state=EntryState.DEAD)
            else:
                self.entries.update(entry.id, retry_count=retries, error=error,
                                    last_attempt=now, next_attempt_at=next_attempt_at)
        return dead

    def has_pending(self, entity: str, record_id: str) -> bool:
        return self.entries.exists(where=(F.entity == entity) & (F.record_id == record_id)
                                   & (F.state == EntryState.PENDING))

    def pending_records(self, records: Iterable[tuple[str, str | None]]
                        ) -> set[tuple[str, str]]:
        """Which of these records have entries waiting to be sent, in one query (through the
        ``(entity, record_id)`` index)."""
        wanted = {(e, r) for e, r in records if r is not None}
        if not wanted:
            return set()
        found = self.entries.find(
            F.entity.in_(sorted({e for e, _ in wanted}))
            & F.record_id.in_(sorted({r for _, r in wanted}))
            & (F.state == EntryState.PENDING))
        return {(e.entity, e.record_id) for e in found
                if e.record_id is not None and (e.entity, e.record_id) in wanted}

    def clear_entity(self, entity: str, record_id: str | None = None) -> int:
        """Drop queued actions of an entity (or of one of its records)."""
        where: Condition = F.entity == entity
        if record_id is not None:
            where = where & (F.record_id == record_id)
        self.bases.delete_where(where)
        return self.entries.delete_where(where)

    # -- dead letters ------------------------------------------------------------------------

    def dead_letters(self) -> list[OutboxEntry]:
        return self.entries.find(F.state == EntryState.DEAD, order_by=["created_at", "seq"])

    def requeue(self, ids: Iterable[str] | None = None) -> int:
        """Put dead letters back in the queue with a fresh retry count.

        They get new mutation ids: the server remembers its answer to the old ones.
        """
        where: Condition = F.state == EntryState.DEAD
        if ids is not None:
            where = where & F.id.in_(list(ids))

        def work() -> int:
            dead = self.entries.find(where)
            if ids is not None:  # and what was dead-lettered behind them, in their records
                recs = {(e.entity, e.record_id) for e in dead if e.record_id is not None}
                chosen = {e.id for e in dead}
                dead += [e for e in self.entries.find(
                    (F.state == EntryState.DEAD) & F.record_id.in_(sorted(r for _, r in recs)))
                    if (e.entity, e.record_id) in recs and e.id not in chosen]
            self.entries.delete_many(e.id for e in dead)
            fresh = [attrs.evolve(
                e, id=new_id(), state=EntryState.PENDING, retry_count=0, next_attempt_at=None,
                error=None, group_id=None, last_attempt=None) for e in dead]
            self.entries.insert_many(fresh)
            # the updates' bases go with them, so a requeued update is still sent as a patch
            bases = self.bases.get_many([e.id for e in dead])
            renamed = {old.id: new.id for old, new in zip(dead, fresh, strict=True)}
            self.bases.delete_many(b.id for b in bases)
            self.bases.insert_many(attrs.evolve(b, id=renamed[b.id]) for b in bases)
            waits = {w.id: w for w in self.after.get_many([e.id for e in dead])}
            for old, new in zip(dead, fresh, strict=True):
                if old.id in waits:
                    self.after.delete(old.id)
                    self.after.insert(CommandAfter(new.id, waits[old.id].records))
            for e in dead:
                if e.record_id is not None:
                    state = self.state(e.entity, e.record_id)
                    if state is not None and state.status is SyncStatus.FAILED:
                        self.states.update(state.key, status=SyncStatus.PENDING, error=None,
                                           retry_count=0)
            return len(dead)

        return self.store.atomic(work)

    def purge_dead(self, ids: Iterable[str] | None = None) -> int:
        """Delete dead letters for good (the seed's ``removeFailedItems``)."""
        where: Condition = F.state == EntryState.DEAD
        if ids is not None:
            where = where & F.id.in_(list(ids))

        def work() -> int:
            dead = [e.id for e in self.entries.find(where)]
            self.bases.delete_many(dead)
            return self.entries.delete_many(dead)

        return self.store.atomic(work)

    # -- meta --------------------------------------------------------------------------------

    def get_meta(self, key: str) -> str | None:
        row = self.meta.get(key)
        return None if row is None else row.value

    def set_meta(self, key: str, value: str | None) -> None:
        self.meta.upsert(SyncMeta(key, value))

    # -- record states -----------------------------------------------------------------------

    def state(self, entity: str, record_id: str) -> RecordState | None:
        return self.states.get(state_key(entity, record_id))

    def require_state(self, entity: str, record_id: str) -> RecordState:
        state = self.state(entity, record_id)
        if state is None:
            raise NotFoundError(f"no sync state for {entity} {record_id!r}")
        return state
