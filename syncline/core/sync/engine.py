"""The sync engine: push the queue, pull the server's changes, resolve conflicts.

``store.sync()`` pushes, then pulls, and returns a :class:`SyncReport`. Push sends due queue
entries in batches, one mutation per record per batch; entries sent together keep their group
(and so their mutation id) until the server answers, so a retried batch is recognised as a
duplicate. Pull applies each page and stores its cursor in one transaction.
"""

from __future__ import annotations

import datetime as dt
import enum
import json
import logging
import random
import threading
import time
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any

import attrs

from syncline.core.model.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    SerializationError,
    SynclineError,
    TransactionConflictError,
    TransactionError,
    TransportError,
)
from syncline.core.model.query import F
from syncline.core.model.schema import spec_of
from syncline.core.spi.transport import (
    Change,
    CursorRejectedError,
    Mutation,
    MutationResult,
    PermanentTransportError,
    PullPage,
    PushLimits,
    RetryableTransportError,
    Transport,
    UpgradeRequiredError,
    concurrent_fields,
    mutation_wire,
)
from syncline.core.sync.local_fields import keep_local_values
from syncline.core.sync.lock import sync_lock
from syncline.core.sync.outbox import (
    EntryState,
    OutboxBase,
    OutboxEntry,
    Quarantined,
    RecordState,
    ResyncSeen,
    SyncStatus,
    state_key,
)
from syncline.core.sync.plan import Planner

if TYPE_CHECKING:
    from syncline.core.sync.syncing import SyncingStore

log = logging.getLogger("syncline.sync")

#: server errors that may come from one mutation the server cannot take: split the batch
#: (502, 503 and 504 are the way to the server failing: back off instead)
_SPLIT_ON = frozenset({500, 501, 505, 507, 508, 510, 511})
#: refusals of a whole batch that one mutation in it may cause: split, then dead-letter
_ISOLATE_ON = frozenset({400, 413, 422})


#: what a store raises for a pulled value it cannot hold (the rest propagate: lost races
#: are retried whole, an unreachable store is not the change's fault)
_REFUSED = (BackendError, SerializationError, OverflowError, ValueError, UnicodeError,
            RecursionError)


def _retry_whole(exc: BaseException) -> bool:
    return isinstance(exc, TransactionConflictError | BackendUnavailableError | TransactionError)


def _error_text(exc: BaseException) -> str:
    return f"{type(exc).__name__}: {exc}"[:500]


def _wire_bytes(m: Mutation) -> int:
    """The size of ``m`` in a push body: ``to_wire(m)`` as JSON, built without the converter
    (a queued payload holds JSON values only, which it would copy as they are)."""
    return len(json.dumps(mutation_wire(m), separators=(",", ":"),
                          ensure_ascii=False).encode())


def _describe_mutation(m: Mutation, with_id: bool = True) -> str:
    what = (f"command {m.command}" if m.action == "command"
            else f"{m.action} {m.entity} {m.record_id}")
    return f"{what} ({m.id})" if with_id else what


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
    #: a patch's conflict: the fields changed on both sides (the strategy decides these only)
    fields: tuple[str, ...] | None = None
    #: a patch's conflict: the fields the local change set (None: the whole record)
    changed: tuple[str, ...] | None = None


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
    #: pulled changes this store could not hold, set aside (``store.quarantined()``)
    quarantined: list[str] = attrs.Factory(list)

    @property
    def ok(self) -> bool:
        return not self.failures and not self.rejected and not self.quarantined


@attrs.frozen
class Backoff:
    """Exponential backoff with full jitter and a cap, in seconds."""

    base: float = 1.0
    cap: float = 300.0

    def delay(self, attempt: int, retry_after: float | None = None) -> float:
        computed = random.uniform(0, min(self.cap, self.base * 2 ** max(0, attempt - 1)))
        return max(computed, retry_after or 0.0)


def _settled(mutation: Mutation, result: MutationResult) -> MutationResult:
    """A delete the server answers with a conflict and no record: the record is not there,
    which is what the delete asked for, so both sides agree and there is nothing to decide."""
    if (result.status == "conflict" and mutation.action == "delete"
            and result.record is None):
        return attrs.evolve(result, status="applied")
    return result


def _parse_time(value: str | None) -> dt.datetime | None:
    return dt.datetime.fromisoformat(value) if value else None


def apply_remote(store: SyncingStore, cls: type, record_id: str, obj: Any,
                 version: int | None) -> None:
    """Write the server's version of a record (or delete it when ``obj`` is None) as synced,
    without queueing anything. Runs in the caller's transaction, or its own."""
    spec = spec_of(cls)
    table = spec.table
    codec = store.codec(cls)
    outbox = store.outbox

    def work() -> None:
        if obj is None:
            store.writer.delete_many(table, [record_id])
        else:
            kept = keep_local_values(store, cls, [obj])[0]
            store.writer.upsert_many(table, [codec.to_row(kept)])
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


def patch_of(group: list[OutboxEntry], bases: dict[str, OutboxBase]) -> dict[str, Any] | None:
    """A group of updates as a patch: the fields its last payload holds differently from
    before its first update, with those before-values (None: a base is missing, send the
    whole record)."""
    if any(e.action != "update" or e.id not in bases for e in group):
        return None
    before: dict[str, Any] = {}
    for e in group:
        for name, value in bases[e.id].fields.items():
            before.setdefault(name, value)  # the value before the first change of the field
    final = group[-1].payload or {}
    return {f: v for f, v in before.items() if f in final and final[f] != v}


class SyncEngine:
    """Pushes a store's queue through a transport and pulls the server's changes into it."""

    def __init__(self, store: SyncingStore, transport: Transport, *,
                 strategy: Strategy | str = Strategy.SERVER_WINS, batch_size: int = 100,
                 page_size: int = 500, max_retries: int = 8,
                 backoff: Backoff | None = None) -> None:
        self.store = store
        self.transport = transport
        self.strategy = Strategy(strategy)
        self.batch_size = batch_size
        self.page_size = page_size
        #: how often a mutation may fail *alone* with a server error before it is
        #: dead-lettered; network failures never count
        self.max_retries = max_retries
        self.backoff = backoff or Backoff()
        self.outbox = store.outbox
        self._lock = threading.Lock()
        self._conflict_listeners: list[Callable[[Conflict], None]] = []
        self._clock_offset: dt.timedelta | None = None
        self.entities = sorted(spec_of(c).table.name for c in store.entities
                               if spec_of(c).syncs)
        self._parents = self._foreign_keys()
        self._rank = self._table_ranks()
        self._quarantine_live = False
        #: the one backoff of this store and transport: failures in a row, and until when
        #: nothing is sent (network failures, 5xx, 429, Retry-After)
        self.failures = 0
        self._backoff_until: dt.datetime | None = None
        #: a server's Retry-After: a later success elsewhere (a pull) does not cancel it
        self._asked_until: dt.datetime | None = None
        self.last_error: str | None = None
        self._limits: PushLimits | None = None
        #: the batch size a server error made us try (halved until the failure is alone)
        self._split: int | None = None

    def on_conflict(self, listener: Callable[[Conflict], None]) -> Callable[[], None]:
        """Call ``listener(conflict)`` for every conflict; returns an undo."""
        self._conflict_listeners.append(listener)
        return lambda: self._conflict_listeners.remove(listener)

    # -- the whole round ---------------------------------------------------------------------

    def sync(self) -> SyncReport:
        """Push, then pull. Transport failures are recorded in the report, not raised.

        While backing off after a network failure nothing is sent: the report says until
        when (:meth:`network_available` ends the wait)."""
        report = SyncReport()
        with self._lock, sync_lock(self.store):
            if self._waiting(report):
                return report
            self.push(report)
            self.pull(report)  # also after a failed push: the answer may be all that was lost
        return report

    # -- the backoff -------------------------------------------------------------------------

    @property
    def not_before(self) -> dt.datetime | None:
        """Until when nothing is sent (None: not backing off)."""
        times = [t for t in (self._backoff_until, self._asked_until) if t is not None]
        return max(times) if times else None

    def network_available(self) -> None:
        """The app knows the network is back: forget the backoff, try at the next sync."""
        self.failures = 0
        self._backoff_until = self._asked_until = None

    def _waiting(self, report: SyncReport | None) -> bool:
        if self.not_before is None or self.store.clock.now() >= self.not_before:
            return False
        if report is not None:
            report.failures.append(
                f"not trying before {self.not_before.isoformat()} (backing off after "
                f"{self.failures} failure(s): {self.last_error})")
        return True

    def _network_failed(self, exc: Exception, report: SyncReport, what: str) -> None:
        self.failures += 1
        retry_after = getattr(exc, "retry_after", None)
        delay = self.backoff.delay(self.failures, retry_after)
        now = self.store.clock.now()
        self._backoff_until = now + dt.timedelta(seconds=delay)
        if retry_after:
            self._asked_until = now + dt.timedelta(seconds=retry_after)
        self.last_error = str(exc)
        report.failures.append(str(exc))
        log.warning("%s failed (%s); failure %d in a row, next attempt in %.1f s",
                    what, exc, self.failures, delay)

    def _network_ok(self) -> None:
        if self.failures:
            log.info("the server answers again after %d failure(s)", self.failures)
        self.failures = 0
        self._backoff_until = None
        self.last_error = None

    # -- push --------------------------------------------------------------------------------

    def push(self, report: SyncReport | None = None) -> SyncReport:
        """Send the queue in batches until it is empty, held, or the network fails."""
        report = report or SyncReport()
        limits = self._server_limits(report)
        if limits is None:
            return report
        for _ in range(100_000):
            started = time.monotonic()
            planned = self.store.run_transaction(lambda: self._plan(limits, report))
            if not planned:
                return report
            mutations = [m for m, _ in planned]
            try:
                response = self.transport.push(mutations)
            except RetryableTransportError as exc:
                if exc.status in _SPLIT_ON and self._isolate(planned, exc, report):
                    continue
                self._unsent(planned)
                self._network_failed(exc, report, f"push of {len(planned)} mutation(s)")
                return report
            except AuthenticationError as exc:
                self._unsent(planned)
                self._network_failed(exc, report, "push")
                return report
            except PermanentTransportError as exc:
                if exc.status in _ISOLATE_ON and self._isolate(planned, exc, report):
                    continue
                self._unsent(planned)
                if isinstance(exc, UpgradeRequiredError):
                    self._never_sent(planned)
                self._network_failed(exc, report, "push")
                return report
            except TransportError as exc:
                self._unsent(planned)
                self._network_failed(exc, report, "push")
                return report
            self._network_ok()
            if self._split is not None:  # the batch went through: grow back
                self._split = None if self._split * 2 >= self.batch_size else self._split * 2
            if self._clock_offset is None and response.server_time:
                self._measure(response.server_time)
            results = response.results
            if [r.id for r in results] != [m.id for m in mutations]:
                self._unsent(planned)
                self._network_failed(TransportError(
                    "the server's results do not match the mutations sent"), report, "push")
                return report
            self._handle_in_transaction(planned, results, report)
            self.store.sync_hooks.after_push(self.store, mutations, results)
            log.info("pushed %d mutation(s) in %.3f s", len(mutations),
                     time.monotonic() - started)
            if self._waiting(None):  # the server asked us to wait
                return report
        return report

    def _server_limits(self, report: SyncReport) -> PushLimits | None:
        if self._limits is None:
            try:
                self._limits = self.transport.limits() or PushLimits()
            except TransportError as exc:
                self._network_failed(exc, report, "reading the server's limits")
                return None
        return self._limits

    def _isolate(self, planned: list[tuple[Mutation, list[OutboxEntry]]],
                 exc: TransportError, report: SyncReport) -> bool:
        """A server error or refusal for a whole batch: split it until the mutation at fault is
        alone; alone, it is struck (dead-lettered after ``max_retries``) or, when the batch
        was too large, dead-lettered at once. False when it is the network's fault."""
        if len(planned) > 1:
            self._split = max(1, len(planned) // 2)
            self._unsent(planned)
            log.info("the server failed a batch of %d (%s): trying batches of %d",
                     len(planned), exc, self._split)
            return True
        [(mutation, group)] = planned
        status = getattr(exc, "status", None)
        if isinstance(exc, PermanentTransportError):
            reason = (f"the server refused this mutation: {exc}" if status != 413 else
                      f"the mutation is larger than the server accepts: {exc}")
            self.store.run_transaction(lambda: self._dead(mutation, group, reason, report))
            return True
        if not self._server_alive():
            return False  # everything fails: an outage, not this mutation
        self.store.run_transaction(lambda: self._strike(mutation, group, str(exc), report))
        return True

    def _server_alive(self) -> bool:
        try:
            self.transport.pull(self.outbox.get_meta("cursor"), 1, self.entities)
        except TransportError:
            return False
        return True

    def _strike(self, mutation: Mutation, group: list[OutboxEntry], error: str,
                report: SyncReport) -> None:
        """The server failed on this mutation alone: try it again later, alone; after
        ``max_retries`` such failures it is dead-lettered with the server's error."""
        strikes = max(e.retry_count for e in group) + 1
        if strikes > self.max_retries:
            self._dead(mutation, group, f"the server failed on this mutation alone {strikes} "
                                        f"times: {error}", report)
            return
        delay = max(self.backoff.base, self.backoff.delay(strikes))  # never at once again
        when = self.store.clock.now() + dt.timedelta(seconds=delay)
        self.outbox.mark_retry([e.id for e in group], error, when,
                               max_retries=self.max_retries)
        self._mark_records(group, SyncStatus.PENDING, error)
        report.failures.append(f"{_describe_mutation(mutation)}: {error}")
        log.warning("the server failed on %s alone (%s); strike %d of %d, next try at %s",
                    _describe_mutation(mutation), error, strikes, self.max_retries,
                    when.isoformat())

    def _dead(self, mutation: Mutation, group: list[OutboxEntry], reason: str,
              report: SyncReport) -> None:
        """Dead-letter a mutation the server refuses for good, and the later queued changes of
        its record (they cannot go without it), naming it; ``requeue`` brings them back."""
        now = self.store.clock.now()
        report.rejected.append(f"{_describe_mutation(mutation, False)}: {reason}")
        log.warning("dead letter: %s: %s", _describe_mutation(mutation), reason)
        ids = {e.id for e in group}
        for e in group:
            self.outbox.entries.update(e.id, state=EntryState.DEAD, error=reason,
                                       last_attempt=now)
        if mutation.record_id is not None:
            later = self.outbox.entries.find(
                (F.entity == mutation.entity) & (F.record_id == mutation.record_id)
                & (F.state == EntryState.PENDING), order_by="seq")
            why = (f"not sent: an earlier change of this record ({mutation.id}) is a dead "
                   f"letter: {reason}")
            for e in later:
                if e.id not in ids:
                    self.outbox.entries.update(e.id, state=EntryState.DEAD, error=why,
                                               last_attempt=now)
        self._mark_records(group, SyncStatus.FAILED, reason)

    def _unsent(self, planned: list[tuple[Mutation, list[OutboxEntry]]]) -> None:
        """The batch did not get through: its records are pending again (nothing counted)."""
        keys = [state_key(g[0].entity, g[0].record_id) for _, g in planned
                if g[0].record_id is not None]
        if keys:
            self.store.run_transaction(lambda: self.outbox.states.update_where(
                F.key.in_(keys) & (F.status != SyncStatus.CONFLICT),
                status=SyncStatus.PENDING, error=None))

    def _never_sent(self, planned: list[tuple[Mutation, list[OutboxEntry]]]) -> None:
        """The server refused the batch for the app's schema version, applying nothing: the
        groups sent for the first time are unsent again, so an upgrade of the app rewrites
        their payloads in its shape (one sent before keeps its id and payload)."""
        fresh = [e.id for _, group in planned if group[0].group_id is None for e in group]
        if fresh:
            self.store.run_transaction(lambda: self.outbox.entries.update_values(
                ["group_id", "last_attempt"], [(i, None, None) for i in fresh]))

    def _handle_in_transaction(self, planned: list[tuple[Mutation, list[OutboxEntry]]],
                               results: Sequence[MutationResult], report: SyncReport) -> None:
        self.store.run_transaction(lambda: self._handle(planned, results, report))

    def _plan(self, limits: PushLimits, report: SyncReport
              ) -> list[tuple[Mutation, list[OutboxEntry]]]:
        """The next batch, in an order that keeps every dependency (core/sync/plan.py), cut to the
        server's limits by count and by bytes. A constant number of statements per batch:
        the queue is read a page at a time, the records' base versions in one read, and the
        batch is marked sent with one write per table."""
        now = self.store.clock.now()
        held, held_ids = self._held(now)
        pending = (F.state == EntryState.PENDING)
        max_groups = max(1, min(self.batch_size, limits.max_mutations,
                                self._split or self.batch_size))
        after = self.outbox.command_dependencies()
        planner = Planner(max_groups, held, self._parents, after,
                          lambda gid: self.outbox.entries.find(F.group_id == gid,
                                                               order_by="seq"),
                          held_ids=held_ids)
        last: int | None = None
        page = max(50, max_groups + 10)
        while not planner.full:
            where = pending if last is None else pending & (F.seq > last)
            entries = self.outbox.entries.find(where, order_by="seq", limit=page)
            if not entries:
                break
            planner.feed(entries)
            last = entries[-1].seq
            page = min(4 * page, 5000)  # entries left behind: read further, faster
        groups = planner.plan.groups
        bases = self._bases(groups)
        patch_bases = self._patch_bases(groups)
        planned: list[tuple[Mutation, list[OutboxEntry]]] = []
        size = 2 + len('{"mutations":[]}')
        for group in groups:
            mutation = self._fold(group, bases, patch_bases)
            if mutation is None:  # created and deleted before ever being sent
                self.outbox.dequeue(e.id for e in group)
                self._forget_if_unsent(group[0])
                continue
            one = _wire_bytes(mutation) + 1
            if size + one > limits.max_bytes:
                if not planned:  # too large even alone: the server will never take it
                    self._dead(mutation, group, (
                        f"the mutation is {one} bytes; the server accepts at most "
                        f"{limits.max_bytes} bytes per push"), report)
                    continue
                break
            size += one
            planned.append((mutation, group))
        if planned:  # before the batch is marked: a failing plugin rolls the planning back
            self.store.sync_hooks.before_push(self.store, [m for m, _ in planned])
        # one write for the batch's entries (their group id, kept until answered) and one for
        # their records' states, not one per mutation
        self.outbox.entries.update_values(["group_id", "last_attempt"], [
            (e.id, m.id, now) for m, group in planned if group[0].group_id is None
            for e in group])
        keys = [state_key(m.entity, m.record_id) for m, _ in planned if m.record_id is not None]
        if keys:
            self.outbox.states.update_where(
                F.key.in_(keys) & (F.status != SyncStatus.CONFLICT),
                status=SyncStatus.SYNCING, error=None)
        return planned

    def _bases(self, groups: list[list[OutboxEntry]]) -> dict[str, int | None]:
        """The server versions the groups' changes are based on, by state key, in one read;
        a group that starts with a create needs none."""
        keys = [state_key(g[0].entity, g[0].record_id) for g in groups
                if g[0].record_id is not None and g[0].action != "create"]
        if not keys:
            return {}
        return {s.key: s.server_version for s in self.outbox.states.get_many(keys)}

    def _held(self, now: dt.datetime) -> tuple[set[tuple[str, str]], set[str]]:
        """Records nothing may be sent for now (in manual conflict, or waiting after their
        mutation failed alone) and the waiting entries' ids."""
        held = {(s.entity, s.record_id) for s in self.outbox.states.find(
            F.status == SyncStatus.CONFLICT)}
        waiting = self.outbox.entries.find(
            (F.state == EntryState.PENDING) & (F.next_attempt_at > now))
        held |= {(e.entity, e.record_id) for e in waiting if e.record_id is not None}
        return held, {e.id for e in waiting}

    def _foreign_keys(self) -> dict[str, list[tuple[str, str]]]:
        """table -> [(column, parent table)] for foreign keys naming a syncing parent's
        primary key: a write waits for its parent's queued changes."""
        keys: dict[str, list[tuple[str, str]]] = {}
        specs = {spec_of(c).table.name: spec_of(c) for c in self.store.entities}
        for name, spec in specs.items():
            for fk in spec.table.foreign_keys:
                parent = specs.get(fk.ref_table)
                if parent is not None and parent.syncs and fk.ref_column == parent.primary_key:
                    # payloads name fields: the field stored in the key's column
                    keys.setdefault(name, []).append((spec.field_of_column(fk.column),
                                                      fk.ref_table))
        return keys

    def _patch_bases(self, groups: list[list[OutboxEntry]]) -> dict[str, OutboxBase] | None:
        """The kept bases of the groups' updates (None: the server takes no patches)."""
        if self.transport.protocol < 2:
            return None
        ids = [e.id for g in groups for e in g if e.action == "update"]
        return {b.id: b for b in self.outbox.bases.get_many(ids)} if ids else {}

    def _fold(self, group: list[OutboxEntry], bases: dict[str, int | None] | None = None,
              patch_bases: dict[str, OutboxBase] | None = None) -> Mutation | None:
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
        if action == "create":
            base = None
        elif bases is not None and first.action != "create":
            base = bases.get(state_key(first.entity, first.record_id))
        else:
            state = self.outbox.state(first.entity, first.record_id)
            base = state.server_version if state is not None else None
        patch = (None if patch_bases is None or action != "update"
                 else patch_of(group, patch_bases))
        if patch is not None:  # protocol 2: the changed fields and their base values
            payload = {f: payload[f] for f in patch}  # type: ignore[index]
        return Mutation(mid, first.entity, action, first.record_id,  # type: ignore[arg-type]
                        payload, None if action == "create" else base, base=patch)

    def _forget_if_unsent(self, entry: OutboxEntry) -> None:
        """A create and its delete folded into nothing: with nothing else queued, the record
        is what the server last acknowledged (gone), or unknown to it (forget its state)."""
        assert entry.record_id is not None
        if not self.outbox.has_pending(entry.entity, entry.record_id):
            state = self.outbox.state(entry.entity, entry.record_id)
            if state is None:
                return
            if state.server_version is None:
                self.outbox.states.delete(state.key)
            elif state.status is not SyncStatus.CONFLICT:
                self.outbox.states.update(state.key, status=SyncStatus.SYNCED, error=None,
                                          retry_count=0, deleted=True)

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
        # A constant number of statements for the batch, not a few per record: one dequeue,
        # one "still pending?" query, one write of the new server versions and one per
        # resulting status.
        results = [_settled(m, r) for (m, _), r in zip(planned, results, strict=True)]
        done = [(m, g) for (m, g), r in zip(planned, results, strict=True)
                if r.status in ("applied", "duplicate")]
        self.outbox.dequeue(e.id for _, g in done for e in g)
        still = self.outbox.pending_records((m.entity, m.record_id) for m, _ in done)
        busy: list[MutationResult] = []
        versions: list[tuple[str, int | None, None]] = []
        synced: list[str] = []
        pending: list[str] = []
        for (mutation, group), result in zip(planned, results, strict=True):
            if result.status in ("applied", "duplicate"):
                report.pushed += 1
                if mutation.action == "command":
                    report.command_results[mutation.id] = result.record
                elif ((result.server_id and result.server_id != mutation.record_id)
                      or result.record is not None):
                    self._applied(mutation, result,
                                  (mutation.entity, mutation.record_id) in still)
                else:
                    key = state_key(mutation.entity, mutation.record_id or "")
                    versions.append((key, result.version, None))
                    rec = (mutation.entity, mutation.record_id)
                    (pending if rec in still else synced).append(key)
            elif result.status == "conflict":
                local = self._local(mutation.entity, mutation.record_id)
                server = self._entity(mutation.entity, result.record)
                conflict = Conflict(
                    mutation.entity, mutation.record_id or "", local, server, result.version,
                    _parse_time(result.updated_at), self._modified_at(mutation), "push",
                    fields=None if result.fields is None else tuple(result.fields),
                    changed=None if mutation.base is None else tuple(mutation.payload or ()))
                self._settle(conflict, report)
            elif result.status == "rejected":
                self._dead(mutation, group, result.reason or "rejected by the server", report)
            else:  # retry: the server is busy; nothing counts against the mutation
                self._mark_records(group, SyncStatus.PENDING, None, bump=False)
                busy.append(result)
        self._settle_states(versions, synced, pending)
        if busy:
            first = busy[0]
            self._network_failed(RetryableTransportError(
                f"the server asked to retry {len(busy)} mutation(s) later: "
                f"{first.reason or 'busy'}", retry_after=first.retry_after), report, "push")

    def _settle_states(self, versions: list[tuple[str, int | None, None]],
                       synced: list[str], pending: list[str]) -> None:
        """Records whose last sent change the server applied: their new server version; synced
        unless more changes wait (a record in manual conflict stays in conflict)."""
        states = self.outbox.states
        if versions:
            states.update_values(["server_version", "error"], versions)
        not_conflict = F.status != SyncStatus.CONFLICT
        if synced:
            states.update_where(F.key.in_(synced) & not_conflict, status=SyncStatus.SYNCED,
                                retry_count=0)
        if pending:
            states.update_where(F.key.in_(pending) & not_conflict, status=SyncStatus.PENDING)

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
        if (result.record is not None and mutation.action != "command" and pending
                and self.transport.protocol >= 2 and state.status is not SyncStatus.CONFLICT):
            # The server stored more than sent (a merge) and later local changes are queued:
            # the pull brings that version and merges it with them field by field.
            return
        if (result.record is not None and mutation.action != "command" and not pending
                and state.status is not SyncStatus.CONFLICT and (
                    state.server_version is None or result.version is None
                    or state.server_version <= result.version)):
            # The server stored more than sent (a merge, a hook's fields): keep its record.
            try:
                stored = self._entity(mutation.entity, result.record)
            except SerializationError:
                log.warning("the server's record for %s %r cannot be read here; keeping ours",
                            mutation.entity, record_id)
            else:
                apply_remote(self.store, self.store.entity_for_table(mutation.entity),
                             record_id, stored, result.version)
                return
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
                self.store.writer.delete_many(spec.table, [old_id])
                row[spec.primary_key] = new_id
                self.store.writer.upsert_many(spec.table, [row])
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
            from syncline.core.model.convert import describe_error as _describe

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
        answer = self.store.sync_hooks.resolve_conflict(self.store, conflict)
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
        self.apply_resolution(conflict, self.per_field(conflict, self.decide(conflict)))

    def per_field(self, conflict: Conflict, resolution: Resolution) -> Resolution:
        """A patch's conflict: the strategy's choice holds for the fields changed on both
        sides; the local change's other fields and the server's other changes are kept."""
        if (conflict.changed is None or conflict.local is None or conflict.server is None
                or resolution.kind not in ("server", "client")):
            return resolution
        wire = self.store.wire
        server = wire.unstructure(conflict.server)
        local = wire.unstructure(conflict.local)
        keep = set(conflict.changed)
        if resolution.kind == "server":
            keep -= set(conflict.fields or ())
        merged = {**server, **{f: local[f] for f in keep if f in local}}
        if merged == server:
            return Resolution.server()
        return Resolution.merge(wire.structure(merged, self.store.entity_for_table(
            conflict.entity)))

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
        # based on the server's record: the update goes as a patch of what differs from it
        before = None if conflict.server is None else {
            rid: self.store.codec(cls).to_tuple(conflict.server)}
        outbox.track(spec, action, [(rid, local)], before)
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
        restarted = False
        self._quarantine_live = self.outbox.quarantine.count() > 0
        resync = self.outbox.get_meta("resync") is not None
        for _ in range(100_000):
            started = time.monotonic()
            cursor = self.outbox.get_meta("cursor")
            epoch = self.outbox.get_meta("epoch")
            if cursor is None and not resync and self.outbox.states.exists(
                    where=F.status == SyncStatus.SYNCED):
                resync = self._begin_resync()
            self.store.sync_hooks.before_pull(self.store, cursor)
            try:
                page = self.transport.pull(cursor, self.page_size, self.entities)
            except CursorRejectedError as exc:
                if restarted or cursor is None:
                    self._network_failed(exc, report, "pull")
                    return report
                log.warning("the server refused our pull cursor (%s): pulling from the start; "
                            "the queue is kept", exc)
                self.store.run_transaction(lambda: self.outbox.set_meta("cursor", None))
                restarted = True
                resync = self._begin_resync()
                continue
            except TransportError as exc:
                self._network_failed(exc, report, "pull")
                return report
            self._network_ok()
            if page.server_time:
                self._measure(page.server_time)
            reset = epoch is not None and page.epoch != epoch
            if reset:
                log.warning("the server was reset (epoch %s -> %s): pulling from the start",
                            epoch, page.epoch)
            before = report.pulled
            self._apply_page_in_transaction(page, report, reset, resync)
            self.store.sync_hooks.after_pull(self.store, list(page.changes))
            log.info("pulled a page of %d change(s), applied %d, in %.3f s",
                     len(page.changes), report.pulled - before, time.monotonic() - started)
            if not page.more:
                if self._quarantine_live:
                    self._retry_quarantined(report)
                if resync and page.settled:
                    self.store.run_transaction(self._finish_resync)
                elif resync:  # what we did not meet may still come: decide after a later pull
                    log.info("a pull from the start ended while the server still holds back "
                             "committed changes; synced records it did not meet are kept "
                             "until a later pull")
                return report
        return report

    def _begin_resync(self) -> bool:
        """A pull from the start returns the server's current records, not its history: the
        synced records it never meets were deleted meanwhile (their tombstones are gone)."""
        def work() -> None:
            self.outbox.resync_seen.clear()
            self.outbox.set_meta("resync", "1")

        self.store.run_transaction(work)
        return True

    def _finish_resync(self) -> None:
        seen = {row.key for row in self.outbox.resync_seen.all()}
        busy = {state_key(e.entity, e.record_id) for e in self.outbox.entries.find(
            F.state == EntryState.PENDING) if e.record_id is not None}
        gone = [s for s in self.outbox.states.find(F.status == SyncStatus.SYNCED)
                if s.key not in seen and s.key not in busy and not s.deleted]
        for state in sorted(gone, key=lambda s: -self._rank.get(s.entity, 0)):  # children first
            try:
                cls = self.store.entity_for_table(state.entity)
            except SynclineError:
                continue
            self.store.writer.delete_many(spec_of(cls).table, [state.record_id])
            self.outbox.states.delete(state.key)
        if gone:
            log.info("a pull from the start did not meet %d synced record(s): deleted on the "
                     "server meanwhile, removed here", len(gone))
        self.outbox.resync_seen.clear()
        self.outbox.set_meta("resync", None)

    def _apply_page_in_transaction(self, page: PullPage, report: SyncReport,
                                   reset: bool = False, resync: bool = False) -> None:
        def work() -> None:
            if reset:
                self._forget_server_state()
            self._apply_page(page, report)
            if resync:
                self.outbox.resync_seen.upsert_many(
                    ResyncSeen(state_key(c.entity, c.record_id)) for c in page.changes)

        self.store.run_transaction(work)

    def _forget_server_state(self) -> None:
        """After a server reset: versions start again, and synced records come back (or not)
        with the new epoch's pull; records with queued changes are kept and pushed."""
        for state in self.outbox.states.all():
            if state.status is SyncStatus.SYNCED and not self.outbox.has_pending(
                    state.entity, state.record_id):
                cls = self.store.entity_for_table(state.entity)
                self.store.writer.delete_many(spec_of(cls).table, [state.record_id])
                self.outbox.states.delete(state.key)
            else:
                self.outbox.states.update(state.key, server_version=None)

    def _in_dependency_order(self, changes: list[Change]) -> list[Change]:
        """Parents' upserts before their children's, children's deletes before their
        parents'; a record's own changes keep their order (they share one sort key)."""
        last: dict[tuple[str, str], str] = {}
        for c in changes:
            last[(c.entity, c.record_id)] = c.op

        def key(c: Change) -> tuple[int, int]:
            rank = self._rank.get(c.entity, 0)
            return (1, -rank) if last[(c.entity, c.record_id)] == "delete" else (0, rank)

        return sorted(changes, key=key)

    def _table_ranks(self) -> dict[str, int]:
        """How deep each table is below its parents (foreign keys): parents rank lower."""
        specs = {spec_of(c).table.name: spec_of(c) for c in self.store.entities}
        ranks: dict[str, int] = {}

        def rank(name: str, path: frozenset[str]) -> int:
            if name in ranks:
                return ranks[name]
            spec = specs.get(name)
            parents = [] if spec is None else [
                fk.ref_table for fk in spec.table.foreign_keys
                if fk.ref_table != name and fk.ref_table not in path]
            value = 1 + max((rank(p, path | {name}) for p in parents), default=-1)
            ranks[name] = value
            return value

        for name in specs:
            rank(name, frozenset())
        return ranks

    def _apply_page(self, page: Any, report: SyncReport) -> None:
        """Apply a page whole: plain changes in bulk (one read of their states, one write per
        table, parents first); own writes, records with local changes and repeated records
        one by one. A change this store cannot hold is quarantined, the rest still apply."""
        changes = self._in_dependency_order(list(page.changes))
        counts: dict[tuple[str, str], int] = {}
        for c in changes:
            counts[(c.entity, c.record_id)] = counts.get((c.entity, c.record_id), 0) + 1
        states = {s.key: s for s in self.outbox.states.get_many(
            sorted({state_key(c.entity, c.record_id) for c in changes}))}
        busy = self.outbox.pending_records((c.entity, c.record_id) for c in changes)
        mids = sorted({c.mutation_id for c in changes if c.mutation_id})
        own = {e.group_id for e in self.outbox.entries.find(F.group_id.in_(mids))} if mids \
            else set()
        bulk: list[tuple[type, Change, Any, RecordState]] = []

        def flush() -> None:
            if bulk:
                self._write_isolated(list(bulk), report)
                bulk.clear()

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
                self._apply_one(change, report)
                continue
            if (state is not None and state.server_version is not None
                    and change.version <= state.server_version):
                continue  # already have it
            try:
                server = (self._entity(change.entity, change.payload) if change.op == "upsert"
                          else None)
            except SerializationError as exc:
                self._quarantine(change, str(exc), report)
                continue
            # built directly, not evolved: this runs once per pulled change
            bulk.append((cls, change, server, RecordState(
                state_key(*key), change.entity, change.record_id, SyncStatus.SYNCED,
                local_id=None if state is None else state.local_id,
                server_version=change.version,
                local_modified_at=None if state is None else state.local_modified_at,
                deleted=server is None)))
        flush()
        self.outbox.set_meta("cursor", page.cursor)
        self.outbox.set_meta("epoch", page.epoch)

    def _write_isolated(self, items: list[tuple[type, Change, Any, RecordState]],
                        report: SyncReport) -> None:
        """Write pulled records in one savepoint; when the store refuses it, split until the
        change at fault is alone, and quarantine that one."""
        try:
            with self.store.transaction():
                self._write_pulled(items)
        except _REFUSED as exc:
            if _retry_whole(exc):
                raise
            if len(items) == 1:
                self._quarantine(items[0][1], _error_text(exc), report)
                return
            half = len(items) // 2
            self._write_isolated(items[:half], report)
            self._write_isolated(items[half:], report)
            return
        report.pulled += len(items)
        self._release([c for _, c, _, _ in items])

    def _write_pulled(self, items: list[tuple[type, Change, Any, RecordState]]) -> None:
        puts: dict[type, list[Any]] = {}
        deletes: dict[type, list[str]] = {}
        for cls, change, obj, _ in items:
            if obj is None:
                deletes.setdefault(cls, []).append(change.record_id)
            else:
                puts.setdefault(cls, []).append(obj)

        def rank(cls: type) -> int:
            return self._rank.get(spec_of(cls).table.name, 0)

        for cls in sorted(puts, key=rank):
            table = spec_of(cls).table
            codec = self.store.codec(cls)
            objs = keep_local_values(self.store, cls, puts[cls])
            self.store.writer.upsert_values(table, [codec.to_tuple(o) for o in objs])
        for cls in sorted(deletes, key=rank, reverse=True):
            self.store.writer.delete_many(spec_of(cls).table, deletes[cls])
        self.outbox.states.upsert_many([s for _, _, _, s in items])

    def _apply_one(self, change: Change, report: SyncReport) -> None:
        try:
            with self.store.transaction():
                self._apply_change(change, report)
        except _REFUSED as exc:
            if _retry_whole(exc):
                raise
            self._quarantine(change, _error_text(exc), report)
            return
        self._release([change])

    def _quarantine(self, change: Change, error: str, report: SyncReport) -> None:
        log.warning("quarantined %s %s version %d: this store cannot hold it: %s",
                    change.entity, change.record_id, change.version, error)
        held = Quarantined(
            state_key(change.entity, change.record_id), change.entity, change.record_id,
            change.version, error, self.store.clock.now(), change.op, change.payload)
        try:
            with self.store.transaction():
                self.outbox.quarantine.upsert(held)
        except SerializationError as exc:  # the payload itself is what the store refuses
            self.outbox.quarantine.upsert(attrs.evolve(
                held, payload=None, error=f"{error} (payload not kept: {exc})"[:1000]))
        self._quarantine_live = True
        report.quarantined.append(
            f"{change.entity} {change.record_id} version {change.version}: {error}")

    def _retry_quarantined(self, report: SyncReport) -> None:
        """Try the set-aside changes again once a pull is complete: the compacted log orders
        records by their latest change, so a child can come pages (or pulls) before a parent
        updated after it; what still cannot be held stays set aside."""
        held = [q for q in self.outbox.quarantine.find(order_by="at")
                if q.payload is not None or q.op == "delete"]
        applied: list[str] = []
        for q in held:
            change = Change(q.entity, q.record_id, "delete" if q.op == "delete" else "upsert",
                            q.version, q.payload)
            try:
                def work(change: Change = change, key: str = q.key) -> None:
                    with self.store.transaction():
                        self._apply_change(change, report)
                    self.outbox.quarantine.delete(key)

                self.store.run_transaction(work)
            except _REFUSED as exc:
                if _retry_whole(exc):
                    raise
                continue
            applied.append(f"{q.entity} {q.record_id} version {q.version}: ")
        if applied:
            log.info("applied %d change(s) set aside earlier (their parents arrived)",
                     len(applied))
            report.quarantined[:] = [line for line in report.quarantined
                                     if not line.startswith(tuple(applied))]
        self._quarantine_live = self.outbox.quarantine.count() > 0

    def _release(self, changes: Sequence[Change]) -> None:
        """A later change of a quarantined record applied: the quarantined one is history."""
        if not self._quarantine_live:
            return
        keys = [state_key(c.entity, c.record_id) for c in changes]
        found = self.outbox.quarantine.get_many(keys)
        if found:
            self.outbox.quarantine.delete_many(q.key for q in found)
            log.info("released %d record(s) from quarantine", len(found))

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
            if state is not None and state.status is not SyncStatus.CONFLICT:
                conflict = self._pulled_patch(conflict)
            if conflict.fields == ():  # different fields changed: both kept, no conflict
                self.apply_resolution(conflict, self.per_field(conflict, Resolution.client()))
                return
            self._settle(conflict, report)
            return
        apply_remote(self.store, cls, change.record_id, server, change.version)

    def _pulled_patch(self, conflict: Conflict) -> Conflict:
        """A pulled change meeting queued updates that all kept their base: which fields both
        sides changed (the rest merge, as the server merges a patch)."""
        if self.transport.protocol < 2 or conflict.server is None or conflict.local is None:
            return conflict
        queued = self.outbox.entries.find(
            (F.entity == conflict.entity) & (F.record_id == conflict.record_id)
            & (F.state == EntryState.PENDING), order_by="seq")
        bases = {b.id: b for b in self.outbox.bases.get_many([e.id for e in queued])}
        patch = patch_of(queued, bases) if queued else None
        if patch is None:
            return conflict
        wire = self.store.wire
        server = wire.unstructure(conflict.server)
        local = wire.unstructure(conflict.local)
        mine = {f: local.get(f) for f in patch}
        return attrs.evolve(conflict, changed=tuple(patch),
                            fields=tuple(concurrent_fields(mine, patch, server)))

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
