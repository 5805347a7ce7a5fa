"""The sync engine: push the queue, pull the server's changes, resolve conflicts.

``store.sync()`` pushes, then pulls, and returns a :class:`SyncReport`. Push sends due queue
entries in batches, one mutation per record per batch; entries sent together keep their group
(and so their mutation id) until the server answers, so a retried batch is recognised as a
duplicate. Pull applies each page and stores its cursor in one transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
import logging
import random
import threading
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from syncline.core.errors import SerializationError, SynclineError, TransportError
from syncline.core.outbox import EntryState, OutboxEntry, RecordState, SyncStatus, state_key
from syncline.core.query import F
from syncline.core.schema import spec_of
from syncline.core.transport import (
    Change,
    Mutation,
    MutationResult,
    PermanentTransportError,
    PullPage,
    RetryableTransportError,
    Transport,
)

if TYPE_CHECKING:
    from syncline.core.store import Store

log = logging.getLogger("syncline.sync")


class Strategy(enum.Enum):
    """How a conflict between a local change and the server's record is settled."""

    SERVER_WINS = "server_wins"
    CLIENT_WINS = "client_wins"
    #: the write that happened later wins; the local write's time is put on the server's
    #: clock with the offset measured from the server's answers, never client clocks alone
    LAST_WRITE_WINS = "last_write_wins"
    #: keep both: the record is marked ``conflict`` until the app calls ``resolve_conflict``
    MANUAL = "manual"


@attrs.frozen
class Conflict:
    """A local change met a different server version of the same record."""

    entity: str
    record_id: str
    #: the local record (None when it was deleted locally)
    local: Any
    #: the server's record (None when it was deleted on the server)
    server: Any
    server_version: int | None
    server_updated_at: dt.datetime | None
    local_modified_at: dt.datetime | None
    origin: str  # "push" or "pull"


@attrs.frozen
class Resolution:
    """A decision: keep the ``server`` version, keep the ``client`` one, or a ``merged`` one."""

    kind: str  # server, client, merged, manual
    merged: Any = None

    @classmethod
    def server(cls) -> Resolution:
        return cls("server")

    @classmethod
    def client(cls) -> Resolution:
        return cls("client")

    @classmethod
    def merge(cls, obj: Any) -> Resolution:
        return cls("merged", obj)


@attrs.define
class SyncReport:
    pushed: int = 0
    pulled: int = 0
    conflicts: list[Conflict] = attrs.Factory(list)
    rejected: list[str] = attrs.Factory(list)
    failures: list[str] = attrs.Factory(list)
    command_results: dict[str, Any] = attrs.Factory(dict)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.rejected


@attrs.frozen
class Backoff:
    """Exponential backoff with full jitter and a cap, in seconds."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        computed = random.uniform(0, min(self.cap, self.base * 2 ** max(0, attempt - 1)))
        return max(computed, retry_after or 0.0)


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def apply_remote(store: Store, cls: type, record_id: str, obj: Any, version: int | None) -> None:
    """Write the server's version of a record (or delete it when ``obj`` is None) as synced,
    without queueing anything. Runs in the caller's transaction, or its own."""
    spec = spec_of(cls)
    table = spec.table
    codec = store.codec(cls)
    outbox = store.outbox

    def work() -> None:
        if obj is None:
            store.backend.delete_many(table, [record_id])
        else:
            store.backend.upsert_many(table, [codec.to_row(obj)])
        store.touched(table.name)
        key = state_key(table.name, record_id)
        state = outbox.states.get(key) or RecordState(key, table.name, record_id)
        pending = outbox.has_pending(table.name, record_id)
        state.status = SyncStatus.PENDING if pending else SyncStatus.SYNCED
        state.error = None
        state.retry_count = 0
        state.conflict_record = None
        state.conflict_version = None
        state.deleted = obj is None
        if version is not None:
            state.server_version = version
        outbox.states.upsert(state)

    store.atomic(work)


class SyncEngine:
    """Pushes a store's queue through a transport and pulls the server's changes into it."""

    def __init__(self, store: Store, transport: Transport, *,
                 strategy: Strategy | str = Strategy.SERVER_WINS, batch_size: int = 100,
                 page_size: int = 500, max_retries: int = 8,
                 backoff: Backoff | None = None) -> None:
        self.store = store
        self.transport = transport
        self.strategy = Strategy(strategy)
        self.batch_size = batch_size
        self.page_size = page_size
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.outbox = store.outbox
        self._lock = threading.Lock()
        self._conflict_listeners: list[Callable[[Conflict], None]] = []
        self._clock_offset: dt.timedelta | None = None
        self.entities = sorted(spec_of(c).table.name for c in store.entities
                               if spec_of(c).syncs)

    def on_conflict(self, listener: Callable[[Conflict], None]) -> Callable[[], None]:
        """Call ``listener(conflict)`` for every conflict; returns an undo."""
        self._conflict_listeners.append(listener)
        return lambda: self._conflict_listeners.remove(listener)

    # -- the whole round ---------------------------------------------------------------------

    def sync(self) -> SyncReport:
        """Push, then pull. Transport failures are recorded in the report, not raised."""
        report = SyncReport()
        with self._lock, sync_lock(self.store):
            self.push(report)
            self.pull(report)
        return report

    # -- push --------------------------------------------------------------------------------

    def push(self, report: SyncReport | None = None) -> SyncReport:
        report = report or SyncReport()
        for _ in range(10_000):
            planned = self.store.run_transaction(self._plan)
            if not planned:
                return report
            mutations = [m for m, _ in planned]
            self.store.plugins.hooks.before_push(self.store, mutations)
            try:
                response = self.transport.push(mutations)
            except RetryableTransportError as exc:
                self._failed([g for _, g in planned], str(exc), exc.retry_after, report)
                return report
            except (PermanentTransportError, TransportError) as exc:
                self._failed([g for _, g in planned], str(exc), None, report)
                return report
            if self._clock_offset is None and response.server_time:
                self._measure(response.server_time)
            results = response.results
            if [r.id for r in results] != [m.id for m in mutations]:
                self._failed([g for _, g in planned],
                             "the server's results do not match the mutations sent", None,
                             report)
                return report
            self._handle_in_transaction(planned, results, report)
            self.store.plugins.hooks.after_push(self.store, mutations, results)
        return report

    def _handle_in_transaction(self, planned: list[tuple[Mutation, list[OutboxEntry]]],
                               results: Sequence[MutationResult], report: SyncReport) -> None:
        self.store.run_transaction(lambda: self._handle(planned, results, report))

    def _plan(self) -> list[tuple[Mutation, list[OutboxEntry]]]:
        """Group due entries into at most one mutation per record, coalescing unsent ones."""
        entries = self.outbox.next_batch(limit=self.batch_size * 4)
        held = self._held_records(entries)
        planned: list[tuple[Mutation, list[OutboxEntry]]] = []
        taken: set[tuple[str, str]] = set()
        sent_groups: dict[str, list[OutboxEntry]] = {}
        for e in entries:
            if e.group_id is not None:
                sent_groups.setdefault(e.group_id, []).append(e)
        open_groups: dict[tuple[str, str], list[OutboxEntry]] = {}
        order: list[tuple[str, Any]] = []
        for e in entries:
            if e.action == "command":
                order.append(("entries", [e]))
                continue
            rec = (e.entity, e.record_id or "")
            if rec in held:
                continue
            if e.group_id is not None:
                if rec not in taken:
                    taken.add(rec)
                    order.append(("entries", sent_groups[e.group_id]))
                    sent_groups[e.group_id] = []  # emitted once
                continue
            if rec in taken and rec not in open_groups:
                continue  # a sent group for this record goes first
            group = open_groups.get(rec)
            if group is None:
                if rec in taken:
                    continue
                taken.add(rec)
                group = open_groups[rec] = []
                order.append(("entries", group))
            if group and group[-1].action == "delete":
                continue  # a create after a delete goes in a later batch
            if not e.coalesce:
                if group:
                    continue
                group.append(e)
                open_groups.pop(rec)
                continue
            group.append(e)
        now = self.store.clock.now()
        for _, group in order:
            if not group:
                continue
            mutation = self._fold(group)
            if mutation is None:  # created and deleted before ever being sent
                self.outbox.dequeue(e.id for e in group)
                self._forget_if_unsent(group[0])
                continue
            if group[0].group_id is None:
                for e in group:
                    self.outbox.entries.update(e.id, group_id=mutation.id, last_attempt=now)
            self._mark_records(group, SyncStatus.SYNCING, None, bump=False)
            planned.append((mutation, group))
            if len(planned) >= self.batch_size:
                break
        return planned

    def _held_records(self, entries: Sequence[OutboxEntry]) -> set[tuple[str, str]]:
        """Records nothing may be sent for: in manual conflict, or with an older entry still
        waiting out its backoff or dead-lettered (sending newer ones alone would reorder)."""
        keys = {state_key(e.entity, e.record_id) for e in entries if e.record_id}
        states = self.outbox.states.get_many(sorted(keys))
        held = {(s.entity, s.record_id) for s in states if s.status is SyncStatus.CONFLICT}
        ids = sorted({e.record_id for e in entries if e.record_id})
        if ids:
            now = self.store.clock.now()
            blocking = self.outbox.entries.find(
                F.record_id.in_(ids) & (F.action != "command")
                & ((F.state == EntryState.DEAD) | (F.next_attempt_at > now)))
            held |= {(e.entity, e.record_id or "") for e in blocking}
        return held

    def _fold(self, group: list[OutboxEntry]) -> Mutation | None:
        first = group[0]
        mid = group[-1].id if first.group_id is None else first.group_id
        if first.action == "command":
            return Mutation(mid, first.entity, "command", payload=first.payload,
                            command=first.command)
        action = first.action
        payload = first.payload
        for e in group[1:]:
            if e.action == "delete":
                action = None if action == "create" else "delete"  # type: ignore[assignment]
                payload = None
            elif action is None:
                action, payload = e.action, e.payload
            else:
                payload = e.payload  # updates carry the whole record: the last one wins
        if action is None:
            return None
        assert first.record_id is not None
        state = self.outbox.state(first.entity, first.record_id)
        base = state.server_version if state is not None else None
        return Mutation(mid, first.entity, action, first.record_id,  # type: ignore[arg-type]
                        payload, None if action == "create" else base)

    def _forget_if_unsent(self, entry: OutboxEntry) -> None:
        assert entry.record_id is not None
        if not self.outbox.has_pending(entry.entity, entry.record_id):
            state = self.outbox.state(entry.entity, entry.record_id)
            if state is not None and state.server_version is None:
                self.outbox.states.delete(state.key)

    def _failed(self, groups: list[list[OutboxEntry]], error: str,
                retry_after: float | None, report: SyncReport) -> None:
        report.failures.append(error)

        def work() -> None:
            for group in groups:
                self._retry_later(group, error, retry_after, report)

        self.store.run_transaction(work)

    def _retry_later(self, group: list[OutboxEntry], error: str, retry_after: float | None,
                     report: SyncReport) -> None:
        """Schedule the group's next attempt; past the retry limit it becomes a dead letter."""
        attempt = max(e.retry_count for e in group) + 1
        when = self.store.clock.now() + dt.timedelta(
            seconds=self.backoff.delay(attempt, retry_after))
        dead = self.outbox.mark_retry([e.id for e in group], error, when,
                                      max_retries=self.max_retries)
        self._mark_records(group, SyncStatus.FAILED if dead else SyncStatus.PENDING, error)
        if dead:
            report.rejected.append(f"gave up after {self.max_retries} retries: {error}")

    def _mark_records(self, group: list[OutboxEntry], status: SyncStatus, error: str | None,
                      bump: bool = True) -> None:
        first = group[0]
        if first.record_id is None:
            return
        state = self.outbox.state(first.entity, first.record_id)
        if state is not None and state.status is not SyncStatus.CONFLICT:
            self.outbox.states.update(state.key, status=status, error=error,
                                      retry_count=state.retry_count + (1 if bump else 0))

    def _handle(self, planned: list[tuple[Mutation, list[OutboxEntry]]],
                results: Sequence[MutationResult], report: SyncReport) -> None:
        # One dequeue and one "still pending?" query for the whole batch, not one per record.
        done = [(m, g) for (m, g), r in zip(planned, results, strict=True)
                if r.status in ("applied", "duplicate")]
        self.outbox.dequeue(e.id for _, g in done for e in g)
        ids = sorted({m.record_id for m, _ in done if m.record_id is not None})
        still = {(e.entity, e.record_id) for e in self.outbox.entries.find(
            F.record_id.in_(ids) & (F.state == EntryState.PENDING))} if ids else set()
        for (mutation, group), result in zip(planned, results, strict=True):
            if result.status in ("applied", "duplicate"):
                report.pushed += 1
                if mutation.action == "command":
                    report.command_results[mutation.id] = result.record
                else:
                    self._applied(mutation, result,
                                  (mutation.entity, mutation.record_id) in still)
            elif result.status == "conflict":
                local = self._local(mutation.entity, mutation.record_id)
                server = self._entity(mutation.entity, result.record)
                conflict = Conflict(
                    mutation.entity, mutation.record_id or "", local, server, result.version,
                    _parse_time(result.updated_at), self._modified_at(mutation), "push")
                self._settle(conflict, report)
            elif result.status == "rejected":
                reason = result.reason or "rejected by the server"
                what = (f"command {mutation.command}" if mutation.action == "command"
                        else f"{mutation.action} {mutation.entity} {mutation.record_id}")
                report.rejected.append(f"{what}: {reason}")
                for e in group:
                    self.outbox.entries.update(e.id, state=EntryState.DEAD, error=reason,
                                               last_attempt=self.store.clock.now())
                self._mark_records(group, SyncStatus.FAILED, reason)
            else:  # retry
                self._retry_later(group, result.reason or "the server asked to retry later",
                                  result.retry_after, report)

    def _applied(self, mutation: Mutation, result: MutationResult,
                 pending: bool | None = None) -> None:
        assert mutation.record_id is not None
        record_id = mutation.record_id
        if result.server_id and result.server_id != record_id:
            self.remap(mutation.entity, record_id, result.server_id)
            record_id = result.server_id
        state = self.outbox.state(mutation.entity, record_id)
        if state is None:
            return
        if pending is None:
            pending = self.outbox.has_pending(mutation.entity, record_id)
        values: dict[str, Any] = {"server_version": result.version, "error": None}
        if state.status is not SyncStatus.CONFLICT:
            values["status"] = SyncStatus.PENDING if pending else SyncStatus.SYNCED
            if not pending:
                values["retry_count"] = 0
        self.outbox.states.update(state.key, **values)

    def remap(self, entity: str, old_id: str, new_id: str) -> None:
        """Give a record the id the server assigned, everywhere it is stored, in one go."""
        cls = self.store.entity_for_table(entity)
        spec = spec_of(cls)

        def work() -> None:
            row = self.store.backend.get(spec.table, old_id)
            if row is not None:
                self.store.backend.delete_many(spec.table, [old_id])
                row[spec.primary_key] = new_id
                self.store.backend.upsert_many(spec.table, [row])
                self.store.touched(spec.table.name)
            old = self.outbox.state(entity, old_id)
            if old is not None:
                self.outbox.states.delete(old.key)
                self.outbox.states.upsert(attrs.evolve(
                    old, key=state_key(entity, new_id), record_id=new_id,
                    local_id=old.local_id or old_id))
            for e in self.outbox.entries.find((F.entity == entity) & (F.record_id == old_id)):
                payload = e.payload
                if payload is not None:
                    payload = {**payload, spec.primary_key: new_id}
                self.outbox.entries.update(e.id, record_id=new_id, payload=payload)

        self.store.atomic(work)

    # -- conflicts ---------------------------------------------------------------------------

    def _local(self, entity: str, record_id: str | None) -> Any:
        if record_id is None:
            return None
        return self.store.repository(self.store.entity_for_table(entity)).get(record_id)

    def _entity(self, entity: str, payload: dict[str, Any] | None) -> Any:
        if payload is None:
            return None
        cls = self.store.entity_for_table(entity)
        try:
            return self.store.wire.structure(payload, cls)
        except Exception as exc:
            from syncline.core.serverside import _describe

            raise SerializationError(
                f"the server sent a {entity} record this store cannot read as {cls.__name__} "
                f"({_describe(exc)}); the server and this client declare different schemas: "
                f"migrate both to the same version (docs/migrations.md)") from exc

    def _modified_at(self, mutation: Mutation) -> dt.datetime | None:
        if mutation.record_id is None:
            return None
        state = self.outbox.state(mutation.entity, mutation.record_id)
        return state.local_modified_at if state else None

    def _measure(self, server_time: str) -> None:
        self._clock_offset = dt.datetime.fromisoformat(server_time) - self.store.clock.now()

    def decide(self, conflict: Conflict) -> Resolution:
        """The resolution for ``conflict``: a plugin's, else the configured strategy's."""
        answer = self.store.plugins.hooks.resolve_conflict(self.store, conflict)
        if isinstance(answer, Resolution):
            return answer
        strategy = Strategy(answer) if answer is not None else self.strategy
        if strategy is Strategy.SERVER_WINS:
            return Resolution.server()
        if strategy is Strategy.CLIENT_WINS:
            return Resolution.client()
        if strategy is Strategy.MANUAL:
            return Resolution("manual")
        local_time = conflict.local_modified_at
        if local_time is None or conflict.server_updated_at is None:
            return Resolution.server()
        on_server_clock = local_time + (self._clock_offset or dt.timedelta(0))
        return (Resolution.client() if on_server_clock > conflict.server_updated_at
                else Resolution.server())

    def _settle(self, conflict: Conflict, report: SyncReport) -> None:
        report.conflicts.append(conflict)
        for listener in list(self._conflict_listeners):
            try:
                listener(conflict)
            except Exception:
                log.exception("conflict listener %r failed", listener)
        self.apply_resolution(conflict, self.decide(conflict))

    def apply_resolution(self, conflict: Conflict, resolution: Resolution) -> None:
        cls = self.store.entity_for_table(conflict.entity)
        rid = conflict.record_id
        outbox = self.outbox
        if resolution.kind == "manual":
            state = outbox.state(conflict.entity, rid)
            record = None if conflict.server is None else self.store.wire.unstructure(
                conflict.server)
            if state is None:
                state = RecordState(state_key(conflict.entity, rid), conflict.entity, rid)
            outbox.states.upsert(attrs.evolve(
                state, status=SyncStatus.CONFLICT, conflict_record=record,
                conflict_version=conflict.server_version,
                error="conflicts with the server's version"))
            return
        if resolution.kind == "server":
            outbox.clear_entity(conflict.entity, rid)
            apply_remote(self.store, cls, rid, conflict.server, conflict.server_version)
            return
        local = conflict.local if resolution.kind == "client" else resolution.merged
        if resolution.kind == "merged":
            apply_remote(self.store, cls, rid, local, None)
        outbox.clear_entity(conflict.entity, rid)
        key = state_key(conflict.entity, rid)
        state = outbox.states.get(key) or RecordState(key, conflict.entity, rid, local_id=rid)
        outbox.states.upsert(attrs.evolve(
            state, server_version=conflict.server_version, status=SyncStatus.PENDING,
            conflict_record=None, conflict_version=None, error=None))
        spec = spec_of(cls)
        if local is None and conflict.server is None:
            apply_remote(self.store, cls, rid, None, conflict.server_version)
            return
        action = ("delete" if local is None else
                  "update" if conflict.server is not None else "create")
        outbox.track(spec, action, [(rid, local)])
        state = outbox.states.get(key)
        if state is not None:  # track() keeps the known base version
            outbox.states.update(key, server_version=conflict.server_version)

    def resolve_conflict(self, cls: type, record_id: str, choice: str | Any) -> None:
        """Settle a manual conflict: ``"local"``, ``"server"`` or a merged entity."""
        spec = spec_of(cls)
        state = self.outbox.require_state(spec.table.name, record_id)
        if state.status is not SyncStatus.CONFLICT:
            raise SynclineError(f"{cls.__name__} {record_id!r} is not in conflict")
        server = (None if state.conflict_record is None
                  else self.store.wire.structure(state.conflict_record, cls))
        local = self.store.repository(cls).get(record_id)
        conflict = Conflict(spec.table.name, record_id, local, server, state.conflict_version,
                            None, state.local_modified_at, "manual")
        resolution = (Resolution.client() if choice == "local" else
                      Resolution.server() if choice == "server" else Resolution.merge(choice))
        self.store.run_transaction(lambda: self.apply_resolution(conflict, resolution))

    # -- pull --------------------------------------------------------------------------------

    def pull(self, report: SyncReport | None = None) -> SyncReport:
        report = report or SyncReport()
        for _ in range(100_000):
            cursor = self.outbox.get_meta("cursor")
            epoch = self.outbox.get_meta("epoch")
            self.store.plugins.hooks.before_pull(self.store, cursor)
            try:
                page = self.transport.pull(cursor, self.page_size, self.entities)
            except TransportError as exc:
                report.failures.append(str(exc))
                return report
            if page.server_time:
                self._measure(page.server_time)
            reset = epoch is not None and page.epoch != epoch
            if reset:
                log.warning("the server was reset (epoch %s -> %s): pulling from the start",
                            epoch, page.epoch)
            self._apply_page_in_transaction(page, report, reset)
            self.store.plugins.hooks.after_pull(self.store, list(page.changes))
            if not page.more:
                return report
        return report

    def _apply_page_in_transaction(self, page: PullPage, report: SyncReport,
                                   reset: bool = False) -> None:
        def work() -> None:
            if reset:
                self._forget_server_state()
            self._apply_page(page, report)

        self.store.run_transaction(work)

    def _forget_server_state(self) -> None:
        """After a server reset: versions start again, and synced records come back (or not)
        with the new epoch's pull; records with queued changes are kept and pushed."""
        for state in self.outbox.states.all():
            if state.status is SyncStatus.SYNCED and not self.outbox.has_pending(
                    state.entity, state.record_id):
                cls = self.store.entity_for_table(state.entity)
                self.store.backend.delete_many(spec_of(cls).table, [state.record_id])
                self.store.touched(state.entity)
                self.outbox.states.delete(state.key)
            else:
                self.outbox.states.update(state.key, server_version=None)

    def _apply_page(self, page: Any, report: SyncReport) -> None:
        """Apply a page: plain changes in bulk (one read of their states, one write per
        table); own writes, records with local changes and repeated records one by one."""
        changes: list[Change] = list(page.changes)
        counts: dict[tuple[str, str], int] = {}
        for c in changes:
            counts[(c.entity, c.record_id)] = counts.get((c.entity, c.record_id), 0) + 1
        states = {s.key: s for s in self.outbox.states.get_many(
            sorted({state_key(c.entity, c.record_id) for c in changes}))}
        ids = sorted({c.record_id for c in changes})
        busy = {(e.entity, e.record_id) for e in self.outbox.entries.find(
            F.record_id.in_(ids) & (F.state == EntryState.PENDING))} if ids else set()
        mids = sorted({c.mutation_id for c in changes if c.mutation_id})
        own = {e.group_id for e in self.outbox.entries.find(F.group_id.in_(mids))} if mids \
            else set()
        batch: dict[type, tuple[list[Any], list[str]]] = {}
        new_states: list[RecordState] = []

        def flush() -> None:
            for cls, (puts, deletes) in batch.items():
                table = spec_of(cls).table
                if puts:
                    codec = self.store.codec(cls)
                    self.store.backend.upsert_values(table, [codec.to_tuple(o) for o in puts])
                if deletes:
                    self.store.backend.delete_many(table, deletes)
                self.store.touched(table.name)
            if new_states:
                self.outbox.states.upsert_many(new_states)
            batch.clear()
            new_states.clear()

        for change in changes:
            key = (change.entity, change.record_id)
            state = states.get(state_key(*key))
            try:
                cls = self.store.entity_for_table(change.entity)
            except SynclineError:
                continue  # an entity this client does not keep
            if (counts[key] > 1 or key in busy or change.mutation_id in own
                    or (state is not None and state.status is SyncStatus.CONFLICT)):
                flush()
                self._apply_change(change, report)
                continue
            if (state is not None and state.server_version is not None
                    and change.version <= state.server_version):
                continue  # already have it
            server = (self._entity(change.entity, change.payload) if change.op == "upsert"
                      else None)
            report.pulled += 1
            puts, deletes = batch.setdefault(cls, ([], []))
            if server is None:
                deletes.append(change.record_id)
            else:
                puts.append(server)
            base = state or RecordState(state_key(*key), change.entity, change.record_id)
            new_states.append(attrs.evolve(
                base, status=SyncStatus.SYNCED, error=None, retry_count=0,
                conflict_record=None, conflict_version=None, deleted=server is None,
                server_version=change.version))
        flush()
        self.outbox.set_meta("cursor", page.cursor)
        self.outbox.set_meta("epoch", page.epoch)

    def _apply_change(self, change: Change, report: SyncReport) -> None:
        try:
            cls = self.store.entity_for_table(change.entity)
        except SynclineError:
            return  # an entity this client does not keep
        state = self.outbox.state(change.entity, change.record_id)
        if (state is not None and state.server_version is not None
                and change.version <= state.server_version):
            return  # already have it (our own write coming back, or a repeated page)
        if change.mutation_id is not None and self._own(change):
            return
        if (state is not None and state.status is SyncStatus.CONFLICT
                and state.conflict_version is not None
                and change.version <= state.conflict_version):
            return  # this server version is already the one the conflict keeps
        server = self._entity(change.entity, change.payload) if change.op == "upsert" else None
        report.pulled += 1
        busy = state is not None and (state.status is SyncStatus.CONFLICT or
                                      self.outbox.has_pending(change.entity, change.record_id))
        if busy:
            local = self.store.repository(cls).get(change.record_id)
            conflict = Conflict(change.entity, change.record_id, local, server, change.version,
                                _parse_time(change.updated_at),
                                state.local_modified_at if state else None, "pull")
            self._settle(conflict, report)
            return
        apply_remote(self.store, cls, change.record_id, server, change.version)

    def _own(self, change: Change) -> bool:
        """A change made by a mutation of ours whose answer we never got: settle it as applied."""
        group = self.outbox.entries.find(F.group_id == change.mutation_id)
        if not group:
            return False
        mutation = self._fold(group)
        self.outbox.dequeue(e.id for e in group)
        if mutation is not None:
            self._applied(mutation, MutationResult(
                mutation.id, "applied", server_id=change.record_id, version=change.version))
        return True

    # -- waiting ---------------------------------------------------------------------------

    def is_synced(self, cls: type, record_id: str) -> bool:
        spec = spec_of(cls)
        state = self.outbox.state(spec.table.name, record_id)
        if self.outbox.has_pending(spec.table.name, record_id):
            return False
        return state is None or state.status is SyncStatus.SYNCED


_process_locks: dict[str, threading.Lock] = {}
_process_locks_guard = threading.Lock()


class sync_lock:
    """One syncer per store: a file lock beside a SQLite file, a process lock otherwise."""

    def __init__(self, store: Store, *, blocking: bool = True) -> None:
        self.store = store
        self.blocking = blocking
        self._file: Any = None
        path = getattr(store.backend, "path", None)
        self.path = f"{path}.sync-lock" if path else None
        url = store.backend.url
        key = path or (f"{url}#{id(store.backend)}" if url.endswith("://") else url)
        with _process_locks_guard:
            self._lock = _process_locks.setdefault(key, threading.Lock())

    def __enter__(self) -> sync_lock:
        if not self._lock.acquire(blocking=self.blocking):
            raise SynclineError(f"another thread is syncing {self.store.backend.url}")
        if self.path is not None:
            import fcntl

            self._file = open(self.path, "a+")
            flags = fcntl.LOCK_EX | (0 if self.blocking else fcntl.LOCK_NB)
            try:
                fcntl.flock(self._file, flags)
            except OSError as exc:
                self._file.close()
                self._lock.release()
                raise SynclineError(
                    f"another process is syncing {self.store.backend.url}") from exc
        return self

    def __exit__(self, *exc: object) -> None:
        if self._file is not None:
            import fcntl

            fcntl.flock(self._file, fcntl.LOCK_UN)
            self._file.close()
            self._file = None
        self._lock.release()
