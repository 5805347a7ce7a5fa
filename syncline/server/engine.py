"""The server side of the sync protocol, over any store.

:class:`SyncServer` is what the mock transport runs in-process and what the reference HTTP
server runs per request. It keeps, beside the entity tables, the server's record metadata
(version, owner, tombstone), a change log in server-assigned order and the result of every
applied mutation by mutation id (:mod:`syncline.server.tables`; open its store with
:func:`syncline.server.open_server_store`). Every push of one mutation is one transaction: its
effect, its change-log entry and its recorded result commit together, so a retried mutation is
answered from the record and never applied twice.

Order without gaps: every log entry has a position, and a pull resumes after the last position
it returned; :mod:`syncline.server.order` keeps a change committed later from landing behind a
reader's cursor (a counter row that writers hold on SQLite; record locks, a sequence and a
transaction-id watermark on PostgreSQL, where writers of different records commit together).

Compaction and retention: the log keeps one entry per record, its latest change, so a pull from
the start reads the current state. Deletions stay as tombstones for ``tombstone_retention``,
mutation results for ``mutation_retention``; :meth:`SyncServer.purge` drops older ones (pushes
run it every ``purge_interval``), and a cursor older than a dropped tombstone is refused.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import functools
import hashlib
import json
import logging
import time
import uuid
import warnings
from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, Any, TypeVar

import attrs

from syncline.core.model.convert import describe_error
from syncline.core.model.errors import (
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    ConflictError,
    IntegrityError,
    InvalidCursorError,
    NotFoundError,
    SerializationError,
    TransactionConflictError,
)
from syncline.core.model.query import F
from syncline.core.model.schema import EntitySpec, TableSpec, spec_of
from syncline.core.model.values import (
    INT64_MAX,
    INT64_MIN,
    check_id,
    check_json_any,
    check_str,
    describe,
)
from syncline.core.spi.transport import (
    Change,
    Mutation,
    MutationResult,
    PullPage,
    PushResponse,
    concurrent_fields,
    from_wire,
    mutation_wire,
    to_wire,
)
from syncline.server.cursor import Cursor, decode_cursor, encode_cursor
from syncline.server.order import Position, PostgresOrder, log_order
from syncline.server.store import ServerTablesFollow
from syncline.server.tables import (
    SERVER_ENTITIES,
    AppliedMutation,
    ChangeEntry,
    ServerMeta,
    ServerRecord,
    record_key,
)
from syncline.server.versions import Versions
from syncline.server.wire import skipped

if TYPE_CHECKING:
    from syncline.core.store import Store
    from syncline.server.notices import Notifier

T = TypeVar("T")

log = logging.getLogger("syncline.server.retention")

ANONYMOUS = "anonymous"
#: how long deletions stay in the log as tombstones, and mutation results for retries (defaults)
TOMBSTONE_RETENTION = dt.timedelta(days=30)
MUTATION_RETENTION = dt.timedelta(days=30)
#: seconds between two purges of one server (run after a push)
PURGE_INTERVAL = 300.0
#: the owner of records of shared entities: every principal reads and writes them
SHARED = "*"


_ACTIONS = ("create", "update", "delete", "command")


def _seen_before(m: Mutation, print_: str, applied: AppliedMutation) -> MutationResult:
    """The answer to a mutation whose id was applied before: the first answer again (as a
    duplicate), or a rejection when the id now carries a different change."""
    if applied.fingerprint != print_:
        return MutationResult(m.id, "rejected", reason=(
            "this mutation id was already used for a different change; "
            "mutation ids must be unique"))
    first = from_wire(applied.result, MutationResult)
    if first.status in ("applied", "duplicate"):
        first = attrs.evolve(first, status="duplicate")
    return first


def invalid_mutation(m: Mutation) -> str | None:
    """Why ``m`` breaks the protocol's rules for a mutation's fields (None: it does not).

    Checked before anything else looks at it: the id and record id are strings within the id
    limit, ``base_version`` an int or None, the payload a JSON object of JSON values inside the
    value domain (syncline.core.model.values), the command a string. The payload's fields are
    checked against the entity's declared types later, by :meth:`SyncServer.decide`.
    """
    try:
        check_id(m.id, "the mutation id")
        if type(m.entity) is not str:
            return f"entity must be a string, got {describe(m.entity)}"
        if m.action not in _ACTIONS:
            return f"action must be one of {', '.join(_ACTIONS)}, got {describe(m.action)}"
        if m.record_id is not None:
            check_id(m.record_id, "record_id")
        if m.base_version is not None and (type(m.base_version) is not int or not (
                INT64_MIN <= m.base_version <= INT64_MAX)):
            return (f"base_version must be the record's server version (an int) or null, "
                    f"got {describe(m.base_version)}")
        if m.command is not None:
            if type(m.command) is not str:
                return f"command must be a string, got {describe(m.command)}"
            check_str(m.command)
        if m.base is not None and m.action != "update":
            return f"base is for updates (a patch's base values), not for a {m.action}"
        for name, obj in (("payload", m.payload), ("base", m.base)):
            if obj is None:
                continue
            if type(obj) is not dict:
                return f"{name} must be a JSON object, got {describe(obj)}"
            for key, value in obj.items():
                if type(key) is not str:
                    return f"{name} key {describe(key)} is not a string"
                try:
                    check_str(key)
                    check_json_any(value)
                except SerializationError as exc:
                    return f"{name} field {key[:80]!r}: {exc}"
    except SerializationError as exc:
        return str(exc)
    return None


def _rejected(m: Mutation, reason: str) -> MutationResult:
    return MutationResult(m.id if type(m.id) is str else "", "rejected", reason=reason)


def _value_refused(exc: BaseException) -> bool:
    """A database error about the values written (not a lost race, not the connection)."""
    return isinstance(exc, BackendError) and not isinstance(
        exc, TransactionConflictError | BackendUnavailableError | IntegrityError)


def fingerprint(mutation: Mutation) -> str:
    """The print of a valid mutation (``invalid_mutation`` found nothing: its payload holds
    JSON values only), the same for the same change under any id."""
    wire = mutation_wire(mutation)
    wire["id"] = ""
    body = json.dumps(wire, sort_keys=True, separators=(",", ":"))
    return hashlib.sha256(body.encode()).hexdigest()


class SyncServer:
    """Applies pushes and answers pulls for the entities of ``store``.

    ``assign_ids`` makes the server give created records ids of its own (clients then remap).
    ``tombstone_retention`` and ``mutation_retention`` (None: forever) say how long deletions
    and mutation results are kept; a push purges older ones at most every ``purge_interval``
    seconds (None: only :meth:`purge` does).
    """

    def __init__(self, store: Store, *, assign_ids: bool = False,
                 max_page: int = 1000, shared: Sequence[str] = (),
                 tombstone_retention: dt.timedelta | None = TOMBSTONE_RETENTION,
                 mutation_retention: dt.timedelta | None = MUTATION_RETENTION,
                 purge_interval: float | None = PURGE_INTERVAL) -> None:
        missing = {spec_of(c).table.name for c in SERVER_ENTITIES} - {
            t.name for t in store.tables()}
        if missing:
            raise ConfigurationError(
                f"the store at {store.backend.url} lacks the server's tables "
                f"({', '.join(sorted(missing))}); open it with "
                f"syncline.server.open_server_store(url, entities)")
        strategy = store.migration
        if strategy is None or not any(isinstance(x, ServerTablesFollow)
                                       for x in strategy.listeners):
            warnings.warn(
                "this server's store was not opened with syncline.server.open_server_store: "
                "its migrations leave the server's change log as it was (deprecated; it will "
                "be refused)", DeprecationWarning, stacklevel=2)
        self.store = store
        #: entities whose records belong to everyone (the rest belong to their creator)
        self.shared = frozenset(shared)
        store.outbox.queues_writes = False  # the server's own writes are the truth
        self.assign_ids = assign_ids
        self.max_page = max_page
        self.tombstone_retention = tombstone_retention
        self.mutation_retention = mutation_retention
        self.purge_interval = purge_interval
        self._purged_at: float | None = None
        #: told of each change logged, to notify live clients (syncline.server.notices)
        self.live: Notifier | None = None
        #: numbers the log's changes and bounds what pulls read (syncline.server.order)
        self.order = log_order(store)
        self.records = store.repository(ServerRecord)
        self.changes = store.repository(ChangeEntry)
        self.applied = store.repository(AppliedMutation)
        self.meta = store.repository(ServerMeta)
        self._specs: dict[str, EntitySpec] = {}
        for cls in store.entities:
            if cls in SERVER_ENTITIES:
                continue
            spec = spec_of(cls)
            if spec.syncs:
                self._specs[spec.table.name] = spec
        #: the schema versions served: the store's and the one before, when declared
        self.versions = Versions(store.schema_version, self._specs, store.previous_schema,
                                 store.wire)
        if self.meta.get("epoch") is None:
            self.meta.upsert(ServerMeta("epoch", 0, uuid.uuid4().hex))
            self.meta.upsert(ServerMeta("seq", 0))

    # -- helpers -----------------------------------------------------------------------------

    @property
    def epoch(self) -> str:
        row = self.meta.get("epoch")
        assert row is not None and row.text is not None
        return row.text

    def now(self) -> dt.datetime:
        return self.store.clock.now()

    def _spec(self, entity: str) -> EntitySpec:
        spec = self._specs.get(entity)
        if spec is None:
            raise NotFoundError(
                f"unknown entity {entity!r}; the server syncs: {', '.join(sorted(self._specs))}"
            )
        return spec

    def _next_seq(self) -> int:
        """A new change number in this transaction (after the records' locks)."""
        return self._take()[1]

    def _take(self) -> tuple[int, int]:
        """This transaction's txid and a new change number (after the records' locks)."""
        txid, seqs = self.order.take(1)
        return txid, seqs[0]

    def _record_keys(self, mutations: Sequence[Mutation], principal: str) -> list[str]:
        """The record and mutation keys a push writes (what its transaction locks)."""
        keys = []
        for m in mutations:
            if type(m.id) is str:
                keys.append(f"m:{principal}/{m.id}")
            spec = self._specs.get(m.entity) if type(m.entity) is str else None
            if spec is not None and type(m.record_id) is str:
                owner = SHARED if spec.table.name in self.shared else principal
                keys.append(record_key(owner, spec.table.name, m.record_id))
        return keys

    def _log(self, owner: str, entity: str, record_id: str, op: str,
             payload: dict[str, Any] | None, mutation_id: str | None = None,
             seq: int | None = None, created_by: str | None = None,
             previous: ServerRecord | None = None, txid: int = 0) -> tuple[int, dt.datetime]:
        """Log a record's change: its entry replaces the record's previous one."""
        if seq is None:
            txid, seq = self._take()
        now = self.now()
        key = record_key(owner, entity, record_id)
        if previous is None:
            previous = self.records.get(key)
        if previous is not None:
            self._remove(ChangeEntry, previous.version)
            if created_by is None:
                created_by = previous.created_by
        if self.live is not None:
            self.live.note(owner, entity, seq)
        self._put(ChangeEntry(seq, owner, entity, record_id, op, now, payload, mutation_id,
                              txid), insert=True)
        self._put(ServerRecord(key, owner, entity, record_id, seq, now,
                               deleted=op == "delete", created_by=created_by))
        return seq, now

    # -- push --------------------------------------------------------------------------------

    def push(self, mutations: Sequence[Mutation], principal: str = ANONYMOUS,
             schema: int | None = None, *, client: str | None = None) -> PushResponse:
        """Apply a batch in one transaction; one result each, as if applied one by one.

        ``schema`` is the client's schema version (None: the server's): a client one version
        behind is served in its shape (:mod:`syncline.server.versions`), one outside the
        accepted range refused with ``UpgradeRequiredError`` before anything is applied.

        Record mutations are decided in Python over the batch's rows (read with one query per
        table) and written with one statement per table. A batch with commands (plugins may
        write anything) or one the database refuses as a whole (a unique index) is applied
        mutation by mutation instead, each in a savepoint of its own; so is one touching a table
        with a unique index (each intermediate state must pass it, as one by one).

        ``client`` (the client's id, when it sent one): its own live stream is not told of
        this push (it pulls right after pushing).
        """
        shape = self.versions.shape(schema)
        origin = self.live.origin(principal, client) if self.live is not None else None
        try:
            with origin or contextlib.nullcontext():
                if shape is not None:
                    return shape.push(mutations, lambda sent, prints: self._push(
                        sent, principal, prints))
                return self._push(mutations, principal)
        finally:
            self._maybe_purge()

    def _push(self, mutations: Sequence[Mutation], principal: str,
              prints: Sequence[str | None] = ()) -> PushResponse:
        # ``prints``: the mutations' fingerprints when they are not their own (a translated
        # mutation keeps the print of what the client sent, for its replays in any version)
        results: list[MutationResult] | None = None
        # Record hooks may write anything, as commands do: one by one.
        if mutations and not self._record_hooks() and all(
                m.action != "command" and not self._has_unique(m.entity) for m in mutations):
            try:
                results = self._transaction(
                    lambda: _Batch(self, principal).apply(mutations, prints))
            except IntegrityError:
                results = None
            except (BackendError, SerializationError) as exc:
                # A value the checks let through and the database refused: one by one, the
                # mutation that carries it is rejected and the others go on.
                if not (_value_refused(exc) or isinstance(exc, SerializationError)):
                    raise
                results = None
        if results is None:
            keys = self._record_keys(mutations, principal)

            def one_by_one() -> list[MutationResult]:
                self.order.lock(keys)  # first: these records are this transaction's
                return [self._apply(m, principal, prints[i] if prints else None)
                        for i, m in enumerate(mutations)]

            results = self._transaction(one_by_one)
        return PushResponse(results, self.now().isoformat())

    def lock(self, *keys: str) -> None:
        """Hold these keys until the current transaction ends: two hooks (or commands) that
        read and write the same row (a counter) take its key first and run one after the
        other. Keys are any strings; ``"users/alice"`` is a fine name for a row."""
        self.order.lock([f"app:{k}" for k in keys])

    def _record_hooks(self) -> bool:
        hooks = self.store.plugins.hooks
        return hooks.has("syncline_before_record_write") or hooks.has(
            "syncline_after_record_write")

    def _transaction(self, work: Callable[[], T]) -> T:
        """``run_transaction(work)``, telling the live notifier what it logged."""
        live = self.live
        if live is None or self.store.in_transaction():  # the outer transaction tells
            return self.store.run_transaction(work)

        def run() -> T:
            live.begin()
            result = work()
            live.before_commit(self.store)
            return result

        result = self.store.run_transaction(run)
        live.committed()
        return result

    def _has_unique(self, entity: str) -> bool:
        # A batch writes each record once, with its final value: the unique index would not
        # see the states in between, which one by one it checks.
        spec = self._specs.get(entity) if type(entity) is str else None
        return spec is not None and any(i.unique for i in spec.table.indexes)

    # Inside the batch's transaction the server writes through the backend directly: each
    # mutation's savepoint already isolates its failure, so per-statement savepoints (what
    # repository writes add inside a transaction) would only cost round trips.

    def _put(self, obj: Any, insert: bool = False) -> None:
        cls = type(obj)
        table = spec_of(cls).table
        values = [self.store.codec(cls).to_tuple(obj)]
        if insert:
            self.store.writer.insert_values(table, values)
        else:
            self.store.writer.upsert_values(table, values)

    def _remove(self, cls: type, key: Any) -> None:
        self.store.writer.delete_many(spec_of(cls).table, [key])

    def _apply(self, m: Mutation, owner: str, print_: str | None = None) -> MutationResult:
        # SQLite: first, from here on this transaction is the writer; and a number for every
        # mutation, as a batch takes them (the same versions either way)
        txid, seq = self._take()
        reason = invalid_mutation(m)
        if reason is not None:
            return _rejected(m, reason)
        key = f"{owner}/{m.id}"
        print_ = print_ or fingerprint(m)
        seen = self.applied.get(key)
        if seen is not None:
            return _seen_before(m, print_, seen)
        try:
            with self.store.transaction():
                result = self._effect(m, owner, seq, txid)
        except (SerializationError, NotFoundError, ConflictError, ValueError) as exc:
            result = MutationResult(m.id, "rejected", reason=str(exc))
        except BackendError as exc:
            if not _value_refused(exc):
                raise
            result = MutationResult(m.id, "rejected", reason=(
                f"the server's store refused this {m.entity} record: {exc}"))
        if result.status != "retry":
            self._put(AppliedMutation(key, print_, to_wire(result), self.now()), insert=True)
        return result

    def _effect(self, m: Mutation, owner: str, seq: int, txid: int = 0) -> MutationResult:
        if m.action == "command":
            if not m.command:
                raise ValueError("a command mutation needs a command name")
            answer = self.store.plugins.hooks.handle_command(self, owner, m.command, m.payload)
            if answer is None:
                raise ValueError(f"unknown command {m.command!r}: no plugin handles it")
            return MutationResult(m.id, "applied", record=answer)
        spec = self._spec(m.entity)
        if not m.record_id:
            raise ValueError(f"{m.action} of {m.entity} needs a record_id")
        principal = owner
        if spec.table.name in self.shared:
            owner = SHARED
        meta = self.records.get(record_key(owner, spec.table.name, m.record_id))
        repo: Any = self.store.repository(spec.cls)
        obj = None if meta is None or meta.deleted else repo.get(m.record_id)
        result, write = self.decide(spec, m, seq, meta, obj,
                                    lambda rid: repo.get(rid) is not None)
        if write is not None:
            record_id, new = write
            hooked = self._record_hooks()
            if hooked:
                result, new, before = self._before_hooks(spec, m, principal, record_id, obj,
                                                         new, result)
            created_by = m.id if m.action == "create" else None
            previous = meta if record_id == m.record_id else None
            if new is None:
                self._remove(spec.cls, record_id)
                self._log(owner, spec.table.name, record_id, "delete", None, m.id, seq,
                          previous=previous, txid=txid)
            else:
                self._put(new)
                self._log(owner, spec.table.name, record_id, "upsert",
                          self.store.wire.unstructure(new), m.id, seq, created_by, previous,
                          txid)
            if hooked:
                self.store.plugins.hooks.after_record_write(
                    self, principal, spec.table.name, m.action, record_id, before,
                    None if new is None else self.store.wire.unstructure(new), seq)
        return result

    def _before_hooks(self, spec: EntitySpec, m: Mutation, principal: str, record_id: str,
                      obj: Any, new: Any, result: MutationResult) -> tuple[
                          MutationResult, Any, dict[str, Any] | None]:
        """Run the before-hooks on a write: the result and record to store, and the record
        before it. A hook that sets fields makes the result carry the stored record (the
        client keeps it); one that raises rejects the mutation (the caller's savepoint)."""
        wire = self.store.wire
        before = None if obj is None or m.action == "create" else wire.unstructure(obj)
        after = None if new is None else wire.unstructure(new)
        answers = self.store.plugins.hooks.before_record_write(
            self, principal, spec.table.name, m.action, record_id, before, after)
        if after is None or not answers:
            return result, new, before
        merged = dict(after)
        for fields in answers:
            merged.update(fields)
        merged[spec.primary_key] = record_id  # a hook never moves a record
        if merged == after:
            return result, new, before
        try:
            new = wire.structure(merged, spec.cls)
        except Exception as exc:
            raise SerializationError(
                f"a record hook set invalid {m.entity} fields: {describe_error(exc)}") from None
        self.store.codec(spec.cls).to_tuple(new)
        return attrs.evolve(result, record=wire.unstructure(new)), new, before

    def decide(self, spec: EntitySpec, m: Mutation, seq: int, meta: ServerRecord | None,
               obj: Any, taken: Callable[[str], bool],
               encoded: list[tuple[Any, ...]] | None = None) -> tuple[
                   MutationResult, tuple[str, Any] | None]:
        """What a record mutation does, given the record's server state (``meta``) and row
        (``obj``): its result, and the write it makes as ``(record_id, entity or None to
        delete)``. ``taken(record_id)`` says whether a row has that id (owned by anyone).
        ``encoded`` gets the written entity's stored values (checked here), to write as is."""
        current = (None if meta is None or meta.deleted or obj is None
                   else self.store.wire.unstructure(obj))
        exists = current is not None

        def conflict() -> MutationResult:  # built only when it is the answer
            return MutationResult(
                m.id, "conflict", version=meta.version if meta else None, record=current,
                updated_at=meta.updated_at.isoformat() if meta else None)

        assert m.record_id is not None
        if m.action == "delete":
            # Missing (never created, already deleted, or another principal's: they look the
            # same) is a conflict with no record: the client learns it is gone.
            if not exists or m.base_version != meta.version:  # type: ignore[union-attr]
                return conflict(), None
            return (MutationResult(m.id, "applied", server_id=m.record_id, version=seq),
                    (m.record_id, None))
        if m.payload is None:
            raise ValueError(f"{m.action} of {m.entity} {m.record_id!r} needs a payload")
        if m.action == "create":
            if meta is not None and meta.created_by == m.id:
                # This very create was applied before (its result has since been purged):
                # the record as it is now says what became of it; never a second one.
                return conflict(), None
            if exists or (meta is not None and not meta.deleted and not self.assign_ids):
                return conflict(), None
            record_id = f"s-{uuid.uuid4()}" if self.assign_ids else m.record_id
            if meta is None and taken(record_id):
                raise ValueError(f"record id {record_id!r} is taken; create it with a new id")
        elif m.action == "update":
            if not exists:
                return conflict(), None
            assert meta is not None
            if m.base is None and m.base_version != meta.version:  # a whole record (v1)
                return conflict(), None
            record_id = m.record_id
        else:
            raise ValueError(f"unknown action {m.action!r}; actions: create, update, delete, "
                             f"command")
        merged = False
        payload = {**m.payload, spec.primary_key: record_id}
        if m.base is not None:  # a patch (protocol 2): merged field by field
            assert current is not None and meta is not None
            unknown = sorted(set(m.payload) - set(current))
            if unknown:
                raise SerializationError(
                    f"invalid {m.entity} patch: unknown field(s) {', '.join(unknown)[:200]}; "
                    f"the fields are {', '.join(current)}")
            if m.base_version != meta.version:
                clash = concurrent_fields(m.payload, m.base, current)
                if clash:
                    return attrs.evolve(conflict(), fields=clash), None
                merged = True
            payload = {**current, **payload}
        if m.payload.get(spec.primary_key, m.record_id) != m.record_id:
            raise ValueError(f"payload {spec.primary_key} {m.payload.get(spec.primary_key)!r} "
                             f"differs from record_id {m.record_id!r}")
        try:
            new: Any = self.store.wire.structure(payload, spec.cls)
        except Exception as exc:
            raise SerializationError(f"invalid {m.entity} payload: {describe_error(exc)}") from None
        # The store's own rules (id and index limits) too: refused here, not at the write.
        row = self.store.codec(spec.cls).to_tuple(new)
        if encoded is not None:
            encoded.append(row)
        # A merge with others' changes: the client gets the record as stored.
        return (MutationResult(m.id, "applied", server_id=record_id, version=seq,
                               record=self.store.wire.unstructure(new) if merged else None),
                (record_id, new))

    # -- server-side writes (admin tools, tests, commands) -----------------------------------

    def write(self, obj: Any, principal: str = ANONYMOUS) -> int:
        """Create or replace a record on the server, as another client would; its version."""
        spec = spec_of(type(obj))
        self._spec(spec.table.name)
        if spec.table.name in self.shared:
            principal = SHARED

        record_id = getattr(obj, spec.primary_key)

        def work() -> int:
            self.order.lock([record_key(principal, spec.table.name, record_id)])
            txid, seq = self._take()
            self.store.repository(spec.cls).upsert(obj)
            return self._log(principal, spec.table.name, record_id, "upsert",
                             self.store.wire.unstructure(obj), seq=seq, txid=txid)[0]

        return self._transaction(work)

    def delete(self, cls: type, record_id: str, principal: str = ANONYMOUS) -> int:
        spec = spec_of(cls)
        if spec.table.name in self.shared:
            principal = SHARED

        def work() -> int:
            self.order.lock([record_key(principal, spec.table.name, record_id)])
            txid, seq = self._take()
            self.store.repository(cls).delete(record_id)
            return self._log(principal, spec.table.name, record_id, "delete", None, seq=seq,
                             txid=txid)[0]

        return self._transaction(work)

    def reset(self) -> None:
        """Forget everything and start a new epoch: clients pull from the start again."""
        self.store.clear_all()
        self.meta.upsert(ServerMeta("epoch", 0, uuid.uuid4().hex))
        self.meta.upsert(ServerMeta("seq", 0))

    # -- pull --------------------------------------------------------------------------------

    def committed_seq(self) -> int:
        """The highest change number a cursor of this epoch may carry (the counter as
        committed; on PostgreSQL the sequence's last value)."""
        return self.order.committed()[1]

    def horizon(self) -> Position | None:
        """The position of the latest tombstone the retention dropped (None: none yet): a
        cursor below it may have missed a deletion."""
        row = self.meta.get("horizon")
        return None if row is None else (int(row.text or 0), row.value)

    def pull(self, cursor: str | None, limit: int, entities: Sequence[str] | None = None,
             principal: str = ANONYMOUS, schema: int | None = None) -> PullPage:
        """A page of the principal's changes after ``cursor``, in the shape of the client's
        schema version ``schema`` (None: the server's; see :meth:`push`)."""
        shape = self.versions.shape(schema)
        if shape is None:
            return self._pull(cursor, limit, entities or list(self._specs), principal)
        names = shape.pull_entities(entities, list(self._specs))
        return shape.page(self._pull(cursor, limit, names, principal))

    def _pull(self, cursor: str | None, limit: int, entities: Sequence[str] | None,
              principal: str) -> PullPage:
        """A page of the principal's changes after ``cursor``.

        A pull from the start reads the current state: each live record's latest change,
        without the tombstones of records deleted before it began. Raises
        :class:`InvalidCursorError` for a cursor this server did not issue to this principal
        (malformed, another principal's, or beyond the log) or one older than a tombstone the
        retention dropped (pull from the start). A stored change that cannot be read back is
        left out of the page and logged (the cursor still moves past it): one bad row never
        stops everyone's pulls.
        """
        epoch = self.epoch
        at = decode_cursor(cursor, epoch, principal, self.order.committed())
        if at is None:
            at = Cursor((0, 0), self.order.snapshot_bound())
        else:
            horizon = self.horizon()
            if horizon is not None and horizon > at.pos and (
                    at.bound is None or horizon >= at.bound):
                raise InvalidCursorError(
                    f"invalid cursor {(cursor or '')[:40]!r}: it is older than the retention of "
                    f"deletions (tombstones up to {horizon} were dropped), so changes since "
                    f"may be missing; pull from the start (no cursor)")
        limit = max(1, min(int(limit), self.max_page))
        if entities:
            for name in entities:
                self._spec(name)
        table = self.changes.table
        columns = table.column_names
        owners = [principal, SHARED]
        below: int | None = None
        if isinstance(self.order, PostgresOrder):
            below = self.order.watermark()
            raw = self.order.read(owners, list(entities) if entities else None,
                                  at.pos, below, at.bound, limit + 1)
        else:
            where = F.owner.in_([principal, SHARED]) & (F.seq > at.pos[1])
            if at.bound is not None:
                where = where & ~((F.op == "delete") & (F.seq < at.bound[1]))
            if entities:
                where = where & F.entity.in_(list(entities))
            raw = self.store.backend.query_values(
                table, self.changes.query(where, order_by="seq", limit=limit + 1))
        more = len(raw) > limit
        raw = raw[:limit]
        # nothing new for us: the cursor stays where it was
        last = (raw[-1][columns.index("txid")], raw[-1][columns.index("seq")]) if raw \
            else at.pos
        if at.bound is not None and not more:
            # The snapshot is read: every entry below its bound was returned, skipped as a
            # tombstone or replaced by one beyond it, so the cursor moves up to the bound
            # (else the skipped tombstones would wait ahead of it).
            last = max(last, (at.bound[0], max(at.bound[1] - 1, 0)))
        from_tuple = self.store.codec(ChangeEntry).from_tuple
        changes = []
        for values in raw:
            try:
                r = from_tuple(values)
                if r.payload is not None and not isinstance(r.payload, dict):
                    raise SerializationError(f"its payload is {type(r.payload).__name__}, "
                                             "not a JSON object")
            except Exception as exc:  # a row the store holds but cannot decode
                row = dict(zip(columns, values, strict=True))
                skipped(row["seq"], f"entity {row['entity']!r}, record {row['record_id']!r}",
                        f"it cannot be read from the store: {describe_error(exc)}")
                continue
            changes.append(Change(r.entity, r.record_id, "delete" if r.op == "delete" else
                                  "upsert", r.seq, r.payload, r.updated_at.isoformat(),
                                  r.mutation_id))
        # A last page tells whether committed changes wait behind the watermark: a client
        # must not take what it did not get for deleted until they came (docs/protocol.md).
        settled = more or below is None or not self.order.held_back(owners, below)
        # The snapshot's bound goes with the cursor until the pass reaches the end.
        return PullPage(changes, encode_cursor(epoch, last, principal,
                                               at.bound if more else None),
                        more, epoch, self.now().isoformat(), settled)

    # -- retention ---------------------------------------------------------------------------

    def _maybe_purge(self) -> None:
        if self.purge_interval is None:
            return
        now = time.monotonic()
        if self._purged_at is not None and now - self._purged_at < self.purge_interval:
            return
        self._purged_at = now
        try:
            self.purge()
        except Exception:  # a purge that failed is tried again later; the push stands
            log.warning("purging old tombstones and mutation results failed", exc_info=True)

    def purge(self, now: dt.datetime | None = None, chunk: int = 1000) -> tuple[int, int]:
        """Drop tombstones older than ``tombstone_retention`` and mutation results older
        than ``mutation_retention``; returns how many of each. Cursors older than a dropped
        tombstone are refused from then on (their clients pull from the start)."""
        now = now or self.now()
        dropped = results = 0
        if self.tombstone_retention is not None:
            cutoff = now - self.tombstone_retention
            while True:
                n = self.store.run_transaction(lambda: self._purge_tombstones(cutoff, chunk))
                dropped += n
                if n < chunk:
                    break
        if self.mutation_retention is not None:
            cutoff = now - self.mutation_retention
            results = self.store.run_transaction(
                lambda: self.applied.delete_where(F.applied_at < cutoff))
        if dropped or results:
            log.info("dropped %d tombstone(s) and %d mutation result(s) past their retention",
                     dropped, results)
        return dropped, results

    def _purge_tombstones(self, cutoff: dt.datetime, chunk: int) -> int:
        found = self.changes.find((F.op == "delete") & (F.updated_at < cutoff),
                                  order_by="seq", limit=chunk)
        if not found:
            return 0
        keys = {record_key(c.owner, c.entity, c.record_id): c for c in found}
        # The records' locks, then look again: a writer may have re-created one meanwhile.
        self.order.lock([*keys, "horizon"])
        current = {c.seq: c for c in self.changes.get_many([c.seq for c in found])}
        gone = [c for c in found if c.seq in current and current[c.seq].op == "delete"]
        if not gone:
            return len(found)
        seqs = [c.seq for c in gone]
        self.changes.delete_many(seqs)
        self.records.delete_where(F.key.in_([record_key(c.owner, c.entity, c.record_id)
                                             for c in gone]) & F.version.in_(seqs))
        top = max((c.txid, c.seq) for c in gone)
        horizon = self.horizon()
        if horizon is None or top > horizon:
            self.meta.upsert(ServerMeta("horizon", top[1], str(top[0])))
        return len(found)


class _Batch:
    """One push of record mutations, decided over an in-memory view of the rows it touches.

    Every decision is the one :meth:`SyncServer._apply` makes for the same mutation at the same
    point of the batch; the view follows the batch's own effects, then the writes go out at
    once.
    """

    def __init__(self, server: SyncServer, principal: str) -> None:
        self.server = server
        self.store = server.store
        self.principal = principal
        #: record key -> its server record (None: never seen)
        self.records: dict[str, ServerRecord | None] = {}
        #: (table, record id) -> the entity (None: no row)
        self.rows: dict[tuple[str, str], Any] = {}
        #: record key -> its new log entry (a record's later change in the batch replaces it)
        self.changes: dict[str, ChangeEntry] = {}
        #: log entries the batch's changes replace
        self.obsolete: list[int] = []
        self.txid = 0
        self.first_seq = 0
        #: the batch's time: every change it logs carries it
        self.now = server.now()
        self.applied: dict[str, AppliedMutation] = {}
        #: table -> record id -> the entity to write (its stored values), or None to delete
        self.writes: dict[str, dict[str, tuple[Any, ...] | None]] = {}
        #: the entity tables :meth:`reads` asked for, with their record ids in read order
        self._loading: list[tuple[EntitySpec, list[str]]] = []

    def owner(self, spec: EntitySpec) -> str:
        return SHARED if spec.table.name in self.server.shared else self.principal

    def reads(self, mutations: Sequence[Mutation]) -> list[tuple[TableSpec, list[Any]]]:
        """What the batch reads (after its claim): the rows of its records in each entity's
        table, then their server records (the last read)."""
        ids: dict[str, set[str]] = {}
        for m in mutations:
            if m.entity in self.server._specs and m.record_id:
                ids.setdefault(m.entity, set()).add(m.record_id)
        keys: list[str] = []
        reads: list[tuple[TableSpec, list[Any]]] = []
        self._loading = []
        for entity, rids in ids.items():
            spec = self.server._specs[entity]
            owner = self.owner(spec)
            ordered = sorted(rids)
            keys += [record_key(owner, entity, rid) for rid in ordered]
            encode = self.store.codec(spec.cls).encode
            reads.append((spec.table, [encode(spec.primary_key, rid) for rid in ordered]))
            self._loading.append((spec, ordered))
        self.records = dict.fromkeys(keys)
        reads.append((self.server.records.table, keys))
        return reads

    def load(self, rows: Sequence[Sequence[tuple[Any, ...]]]) -> None:
        """Take the rows of :meth:`reads`, in its order."""
        for (spec, ordered), found_rows in zip(self._loading, rows, strict=False):
            from_tuple = self.store.codec(spec.cls).from_tuple
            found = {getattr(o, spec.primary_key): o for o in map(from_tuple, found_rows)}
            for rid in ordered:
                self.rows[(spec.table.name, rid)] = found.get(rid)
        for record in map(self.server.records.codec.from_tuple, rows[-1]):
            self.records[record.key] = record

    def apply(self, mutations: Sequence[Mutation],
              prints: Sequence[str | None] = ()) -> list[MutationResult]:
        server = self.server
        n = len(mutations)
        bad = {i: reason for i, m in enumerate(mutations)
               if (reason := invalid_mutation(m)) is not None}
        keys = [f"{self.principal}/{m.id}" for m in mutations]
        reads = [(server.applied.table, sorted({k for i, k in enumerate(keys) if i not in bad})),
                 *self.reads([m for i, m in enumerate(mutations) if i not in bad])]
        # The numbers after the locks: versions grow per record; the reads after them too
        # (one round trip on PostgreSQL).
        self.txid, seqs, rows = server.order.claim(
            server._record_keys(mutations, self.principal), n, reads)
        self.first_seq = seqs[0]
        seen = {a.key: a for a in map(server.applied.codec.from_tuple, rows[0])}
        self.load(rows[1:])
        results = []
        now = self.now = server.now()
        for i, (m, key) in enumerate(zip(mutations, keys, strict=True)):
            seq = seqs[i]
            if i in bad:
                results.append(_rejected(m, bad[i]))
                continue
            print_ = (prints[i] if prints else None) or fingerprint(m)
            before = seen.get(key) or self.applied.get(key)
            if before is not None:
                results.append(_seen_before(m, print_, before))
                continue
            try:
                result = self.effect(m, seq)
            except (SerializationError, NotFoundError, ConflictError, ValueError) as exc:
                result = MutationResult(m.id, "rejected", reason=str(exc))
            if result.status != "retry":
                self.applied[key] = AppliedMutation(key, print_, to_wire(result), now)
            results.append(result)
        self.flush()
        return results

    def effect(self, m: Mutation, seq: int) -> MutationResult:
        server = self.server
        spec = server._spec(m.entity)
        if not m.record_id:
            raise ValueError(f"{m.action} of {m.entity} needs a record_id")
        owner = self.owner(spec)
        entity = spec.table.name
        meta = self.records.get(record_key(owner, entity, m.record_id))
        encoded: list[tuple[Any, ...]] = []
        result, write = server.decide(
            spec, m, seq, meta, self.rows.get((entity, m.record_id)),
            lambda rid: self.rows.get((entity, rid)) is not None, encoded)
        if write is not None:
            self.write(spec, owner, write[0], write[1], m, seq,
                       encoded[0] if encoded else None)
        return result

    def write(self, spec: EntitySpec, owner: str, record_id: str, obj: Any,
              m: Mutation, seq: int, row: tuple[Any, ...] | None = None) -> None:
        entity = spec.table.name
        now = self.now
        payload = None if obj is None else self.store.wire.unstructure(obj)
        op = "delete" if obj is None else "upsert"
        self.rows[(entity, record_id)] = obj
        if obj is not None and row is None:
            row = self.store.codec(spec.cls).to_tuple(obj)
        self.writes.setdefault(entity, {})[record_id] = row
        key = record_key(owner, entity, record_id)
        previous = self.records.get(key)
        created_by = m.id if m.action == "create" else None
        if previous is not None:
            if previous.version < self.first_seq:  # logged before this batch: replaced
                self.obsolete.append(previous.version)
            if created_by is None:
                created_by = previous.created_by
        if self.server.live is not None:
            self.server.live.note(owner, entity, seq)
        self.changes[key] = ChangeEntry(seq, owner, entity, record_id, op, now, payload, m.id,
                                        self.txid)
        self.records[key] = ServerRecord(key, owner, entity, record_id, seq, now,
                                         deleted=obj is None, created_by=created_by)

    def flush(self) -> None:
        """Write the batch's effects: one statement per table, sent together."""
        store = self.store
        writer = store.writer
        writes: list[Callable[[], Any]] = []
        for entity, final in self.writes.items():
            table = self.server._specs[entity].table
            gone = [rid for rid, row in final.items() if row is None]
            kept = [row for row in final.values() if row is not None]
            if gone:
                writes.append(functools.partial(writer.delete_many, table, gone))
            if kept:
                writes.append(functools.partial(writer.upsert_values, table, kept))
        if self.obsolete:
            writes.append(functools.partial(writer.delete_many, spec_of(ChangeEntry).table,
                                            sorted(self.obsolete)))
        written = set(self.changes)
        records = [r for key, r in self.records.items() if key in written and r is not None]
        for cls, objs, write in ((ChangeEntry, list(self.changes.values()), writer.insert_values),
                                 (ServerRecord, records, writer.upsert_values),
                                 (AppliedMutation, list(self.applied.values()),
                                  writer.insert_values)):
            if objs:
                # The server's own rows hold values checked on the way in (invalid_mutation,
                # the entity's structure and codec in decide) or made here: not checked again.
                to_tuple = store.codec(cls).to_tuple_trusted
                writes.append(functools.partial(write, spec_of(cls).table,
                                                [to_tuple(o) for o in objs]))
        with self.server.order.together():
            for send in writes:
                send()
