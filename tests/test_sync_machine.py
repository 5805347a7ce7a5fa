"""Issue 13: a state machine over the sync engine, the mock transport and a clock that ticks.

Two or three devices (one user, one ``MockServer`` on a SQLite store, so foreign keys hold on
the server) write records, delete them, queue commands that depend on them, and sync, while the
network fails in every way the mock knows and the clock moves 1 ms on every read and by hours
on request. Each device writes only records it created, so nothing here should ever conflict.

Some writes are deliberately bad: an item labelled ``invalid`` is refused by the server's
validator (a permanent per-mutation rejection), an item labelled ``poison`` makes the server
answer 500 for any batch that holds it (the engine must split the batch until it is alone and
dead-letter it after its retries). Pushes larger than a byte limit answer 413.

Checked after every step: no conflict, no valid write dead-lettered, and the server applies each
record's mutations in the order they were committed. After the last step, with the network
healed and every device synced until quiet: every device and the server hold exactly the data
the devices wrote, every command was carried out exactly once and after the write it depends on,
the only dead letters are the bad writes (with their reason), and nothing else is queued except
what waits behind them.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import shutil
import sys
import tempfile
from collections.abc import Callable, Iterator, Sequence
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.model.errors import ConflictError
from syncline.core.model.query import F
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.spi.transport import Mutation, PushLimits, PushResponse
from syncline.core.store import Store
from syncline.core.sync.engine import Backoff, Conflict, SyncReport
from syncline.core.sync.outbox import EntryState, OutboxEntry, SyncStatus
from syncline.plugins.mock import MockServer

CI = os.environ.get("CI") == "true"
_names = itertools.count()

# -- the devices' entities -----------------------------------------------------------------------

devices_registry = syncline.EntityRegistry()


@devices_registry.entity("machine_items", syncs=True)
@attrs.define
class Item:
    id: str
    counter: int  # the record's write number: grows with every write of the record
    label: str = "ok"  # "invalid" and "poison" make a bad record
    blob: str = ""  # varies the size of a mutation


@devices_registry.entity("machine_children", syncs=True, indexes=["item_id"],
                         foreign_keys={"item_id": "machine_items.id"})
@attrs.define
class Child:
    id: str
    item_id: str
    counter: int


# -- the server's: the same tables, and a validator the devices do not have -----------------------

server_registry = syncline.EntityRegistry()


def _refuse_invalid(instance: Any, attribute: Any, value: str) -> None:
    if value == "invalid":
        raise ValueError("the label 'invalid' is refused by this server")


@server_registry.entity("machine_items", syncs=True)
@attrs.define
class ServerItem:
    id: str
    counter: int
    label: str = attrs.field(default="ok", validator=_refuse_invalid)
    blob: str = ""


@server_registry.entity("machine_children", syncs=True, indexes=["item_id"],
                        foreign_keys={"item_id": "machine_items.id"})
@attrs.define
class ServerChild:
    id: str
    item_id: str
    counter: int


@server_registry.entity("machine_likes")
@attrs.define
class Like:
    """How often the server carried out each ``machine_like`` command (rolled back with it)."""

    id: str
    item_id: str
    times: int = 0


COMMAND = "machine_like"


class LikeHandler:
    """``machine_like`` needs its item on the server at exactly the write the device had when
    it queued the command (a command sees what was committed before it, nothing later);
    otherwise it is refused, and the device dead-letters it."""

    @syncline.hookimpl
    def syncline_handle_command(self, server: Any, principal: str, name: str,
                                payload: dict[str, Any] | None) -> dict[str, Any] | None:
        if name != COMMAND or payload is None:
            return None
        item = server.store.repository(ServerItem).get(payload["item"])
        if item is None or item.counter != payload["at"]:
            raise ConflictError(
                f"{COMMAND} {payload['cmd']}: item {payload['item']} is not on the server at "
                f"write {payload['at']} (the server has "
                f"{'nothing' if item is None else f'write {item.counter}'})")
        likes = server.store.repository(Like)
        seen = likes.get(payload["cmd"])
        times = (seen.times if seen else 0) + 1
        likes.upsert(Like(payload["cmd"], payload["item"], times))
        return {"times": times}


@pytest.fixture(autouse=True)
def like_handler() -> Iterator[None]:
    register_plugin(LikeHandler(), "machine-like")
    yield
    unregister_plugin("machine-like")


class TickingClock(FakeClock):
    """A fake clock that moves 1 ms on every read (how issue 13's finding 1 was reproduced)."""

    def now(self) -> dt.datetime:
        with self._lock:
            self._now += dt.timedelta(milliseconds=1)
            return self._now


BODY_LIMIT: int | None = 1400  # bytes; the largest single mutation is about 650
MAX_RETRIES = 3
DRAIN_ROUNDS = 60
STEPS = 30
BAD_LABELS = ("invalid", "poison")
TABLES = {"item": "machine_items", "child": "machine_children"}
CLASSES: dict[str, tuple[type, type]] = {"item": (Item, ServerItem), "child": (Child, ServerChild)}


def _is_poison(m: Mutation) -> bool:
    return m.payload is not None and m.payload.get("label") == "poison"


def _describe(e: OutboxEntry) -> str:
    if e.action == "command":
        return f"command {e.command} {e.payload}"
    return f"{e.action} {e.entity} {e.record_id} {e.payload}"


@attrs.define
class Rec:
    """The model of one record, kept by the device that created it."""

    entity: str
    id: str
    device: int
    obj: Any = None  # the last committed local value; None while deleted
    serial: int = 0  # the last write number
    bad: str | None = None  # the item's bad label
    parent: str | None = None  # a child's item

    @property
    def live(self) -> bool:
        return self.obj is not None


class SyncMachine(RuleBasedStateMachine):
    device_url = "memory://"
    #: delete items that have commands queued on them (the command must still apply first)
    delete_liked = True
    #: the bad writes made: "invalid" (rejected) and "poison" (5xx for its batches)
    bad_labels: tuple[str, ...] = ("invalid", "poison")

    def __init__(self) -> None:
        super().__init__()
        self.tmp: str | None = None
        self.server: MockServer | None = None
        self.devices: list[Store] = []

    # -- setup -----------------------------------------------------------------------------------

    @initialize(n=st.integers(2, 3), publish=st.booleans(), batch_size=st.sampled_from([3, 8]))
    def setup(self, n: int, publish: bool, batch_size: int) -> None:
        self.clock = TickingClock()
        name = f"machine-{next(_names)}"
        self.server = MockServer(name, entities=server_registry.entities(),
                                 store_url="sqlite://", clock=self.clock)
        self.server.max_body_bytes = BODY_LIMIT
        if publish and BODY_LIMIT:
            self.server.limits = PushLimits(max_mutations=batch_size, max_bytes=BODY_LIMIT)
        self.server.fail_batches_with(_is_poison)
        self.applied: list[tuple[str, str, int, str]] = []  # entity, record, serial, mutation
        self.violations: list[str] = []
        self.last_applied: dict[tuple[str, str], tuple[int, str]] = {}
        self._record_applied(self.server)
        if "{tmp}" in self.device_url:
            self.tmp = tempfile.mkdtemp(prefix="sync-machine-")
        self.conflicts: list[tuple[int, Conflict]] = []
        for i in range(n):
            url = self.device_url.format(tmp=self.tmp, n=i)
            store = syncline.open(
                url, entities=devices_registry.entities(), transport=f"mock://{name}",
                clock=self.clock,
                sync_options={"batch_size": batch_size, "page_size": 3,
                              "max_retries": MAX_RETRIES, "backoff": Backoff(1.0, 60.0)})
            store.sync_engine.on_conflict(self._conflict_listener(i))
            self.devices.append(store)
        self.n = n
        self.records: dict[tuple[str, str], Rec] = {}
        self.entry_serial: dict[str, int] = {}  # outbox entry id -> the write number it holds
        self.commands: dict[str, tuple[int, str, int]] = {}  # cmd -> device, item, write
        self.ids = itertools.count()

    def _conflict_listener(self, device: int) -> Callable[[Conflict], None]:
        return lambda conflict: self.conflicts.append((device, conflict))

    def _record_applied(self, server: MockServer) -> None:
        """Wrap the server's push to see, in order, every mutation it applies."""
        push = server.server.push

        def recorded(mutations: Sequence[Mutation], *args: Any, **kwargs: Any) -> PushResponse:
            response = push(mutations, *args, **kwargs)  # principal, schema: as they come
            for m, r in zip(mutations, response.results, strict=True):
                if r.status == "applied" and m.action != "command":
                    self._saw_applied(m)
            return response

        server.server.push = recorded  # type: ignore[method-assign]

    def _saw_applied(self, m: Mutation) -> None:
        assert m.record_id is not None
        key = (m.entity, m.record_id)
        if m.payload is not None:
            serial = int(m.payload["counter"])
        elif m.id in self.entry_serial:
            serial = self.entry_serial[m.id]
        else:
            self.violations.append(f"the server applied {m.action} {key} under mutation id "
                                   f"{m.id}, which is no queued write of that record")
            return
        self.applied.append((m.entity, m.record_id, serial, m.action))
        last = self.last_applied.get(key)
        if last is not None and serial <= last[0]:
            self.violations.append(
                f"out of order: the server applied {m.action} {key} of write {serial} after "
                f"{last[1]} of write {last[0]}")
        self.last_applied[key] = (serial, m.action)

    # -- helpers -------------------------------------------------------------------------------

    def _device(self, d: int) -> Store:
        return self.devices[d % self.n]

    def _note_write(self, rec: Rec) -> None:
        """Map the record's newest queue entry to its write number."""
        store = self.devices[rec.device]
        entries = store.outbox.entries.find(
            (F.entity == TABLES[rec.entity]) & (F.record_id == rec.id), order_by=["seq"])
        if entries:
            self.entry_serial[entries[-1].id] = rec.serial

    def _write(self, rec: Rec, obj: Any, action: str) -> None:
        rec.serial += 1
        store = self.devices[rec.device]
        cls = Item if rec.entity == "item" else Child
        if obj is not None:
            obj = attrs.evolve(obj, counter=rec.serial)
        repo: Any = store.repository(cls)
        if action == "insert":
            repo.insert(obj)
        elif action == "update":
            repo.update(rec.id, **{k: v for k, v in attrs.asdict(obj).items() if k != "id"})
        else:
            repo.delete(rec.id)
        rec.obj = obj
        self._note_write(rec)

    def _items(self, *, live: bool, valid: bool | None = None) -> list[Rec]:
        return [r for r in self.records.values() if r.entity == "item" and r.live == live
                and (valid is None or (r.bad is None) == valid)]

    def _children(self) -> list[Rec]:
        return [r for r in self.records.values() if r.entity == "child" and r.live]

    def _childless(self) -> list[Rec]:
        parents = {(c.device, c.parent) for c in self._children()}
        if not self.delete_liked:
            parents |= {(d, item) for d, item, _ in self.commands.values()}
        return [r for r in self._items(live=True) if (r.device, r.id) not in parents]

    # -- writes --------------------------------------------------------------------------------

    @rule(d=st.integers(0, 2), blob=st.integers(0, 400),
          label=st.sampled_from(["ok", "ok", "ok", "ok", "ok", "invalid", "poison"]))
    def create_item(self, d: int, blob: int, label: str) -> None:
        device = d % self.n
        if label not in self.bad_labels:
            label = "ok"
        rid = f"i{device}-{next(self.ids)}"
        rec = Rec("item", rid, device, bad=label if label in BAD_LABELS else None)
        self.records[("item", rid)] = rec
        self._write(rec, Item(rid, 0, label, "x" * blob), "insert")

    @precondition(lambda self: self._items(live=True))
    @rule(pick=st.integers(0, 1000), blob=st.integers(0, 400))
    def update_item(self, pick: int, blob: int) -> None:
        candidates = self._items(live=True)
        rec = candidates[pick % len(candidates)]
        self._write(rec, attrs.evolve(rec.obj, blob="y" * blob), "update")

    @precondition(lambda self: self._childless())
    @rule(pick=st.integers(0, 1000))
    def delete_item(self, pick: int) -> None:
        candidates = self._childless()
        rec = candidates[pick % len(candidates)]
        self._write(rec, None, "delete")

    @precondition(lambda self: self._items(live=False))
    @rule(pick=st.integers(0, 1000))
    def recreate_item(self, pick: int) -> None:
        candidates = self._items(live=False)
        rec = candidates[pick % len(candidates)]
        self._write(rec, Item(rec.id, 0, rec.bad or "ok", "again"), "insert")

    @precondition(lambda self: self._items(live=True, valid=True))
    @rule(pick=st.integers(0, 1000))
    def create_child(self, pick: int) -> None:
        candidates = self._items(live=True, valid=True)
        parent = candidates[pick % len(candidates)]
        cid = f"c{parent.device}-{next(self.ids)}"
        rec = Rec("child", cid, parent.device, parent=parent.id)
        self.records[("child", cid)] = rec
        self._write(rec, Child(cid, parent.id, 0), "insert")

    @precondition(lambda self: self._children())
    @rule(pick=st.integers(0, 1000), delete=st.booleans())
    def change_child(self, pick: int, delete: bool) -> None:
        candidates = self._children()
        rec = candidates[pick % len(candidates)]
        self._write(rec, None if delete else rec.obj, "delete" if delete else "update")

    def _like(self, rec: Rec) -> None:
        cmd = f"k{rec.device}-{next(self.ids)}"
        self.commands[cmd] = (rec.device, rec.id, rec.serial)
        self.devices[rec.device].enqueue_command(
            COMMAND, {"cmd": cmd, "item": rec.id, "at": rec.serial})

    @precondition(lambda self: self._items(live=True, valid=True))
    @rule(pick=st.integers(0, 1000))
    def like(self, pick: int) -> None:
        candidates = self._items(live=True, valid=True)
        self._like(candidates[pick % len(candidates)])

    @rule(d=st.integers(0, 2))
    def create_and_like_in_one_transaction(self, d: int) -> None:
        device = d % self.n
        rid = f"i{device}-{next(self.ids)}"
        rec = Rec("item", rid, device)
        self.records[("item", rid)] = rec
        with self.devices[device].transaction():
            self._write(rec, Item(rid, 0), "insert")
            self._like(rec)

    # -- faults, time, syncs -------------------------------------------------------------------

    @rule(on=st.booleans())
    def offline(self, on: bool) -> None:
        assert self.server is not None
        self.server.offline = on

    @rule(n=st.integers(1, 3), status=st.sampled_from([None, 503, 429]),
          retry_after=st.sampled_from([None, 30.0, 3600.0]))
    def fail_next(self, n: int, status: int | None, retry_after: float | None) -> None:
        assert self.server is not None
        self.server.fail_next(n, status=status, retry_after=retry_after)

    @rule(n=st.integers(1, 2))
    def lose_responses(self, n: int) -> None:
        assert self.server is not None
        self.server.lose_next_responses(n)

    @rule(n=st.integers(1, 5), seconds=st.sampled_from([1.0, 45.0, 900.0]))
    def retry_after(self, n: int, seconds: float) -> None:
        assert self.server is not None
        self.server.retry_after_next(n, seconds=seconds)

    @rule(on=st.booleans())
    def repeat_pages(self, on: bool) -> None:
        assert self.server is not None
        self.server.repeat_pages = on

    @rule(seconds=st.sampled_from([0.002, 0.5, 3.0, 61.0, 400.0, 3 * 3600.0, 30 * 3600.0]))
    def advance(self, seconds: float) -> None:
        self.clock.advance(seconds)

    @rule(d=st.integers(0, 2), what=st.sampled_from(["sync", "sync", "push", "pull"]))
    def sync(self, d: int, what: str) -> None:
        store = self._device(d)
        if what == "sync":
            store.sync()
        elif what == "push":
            store.sync_engine.push()
        else:
            store.sync_engine.pull()

    # -- checked after every step ------------------------------------------------------------

    @invariant()
    def nothing_conflicts_and_the_server_keeps_each_records_order(self) -> None:
        if not self.devices:
            return
        assert not self.conflicts, (
            f"conflicts (each device writes only its own records, so there should be none): "
            f"{self.conflicts}")
        assert not self.violations, self.violations

    def _bad_dead_letter(self, d: int, e: OutboxEntry) -> str | None:
        """Why a dead letter should not be one, or None when it is an expected one."""
        if e.action == "command":
            return "a valid command"
        kind = "item" if e.entity == "machine_items" else "child"
        rec = self.records.get((kind, e.record_id or ""))
        if rec is None or rec.bad is None:
            return f"a valid write of {kind} {e.record_id}"
        if not e.error:
            return "a dead letter without a reason"
        return None

    @invariant()
    def no_valid_write_is_dead_lettered(self) -> None:
        for d, store in enumerate(self.devices):
            for e in store.outbox.dead_letters():
                why = self._bad_dead_letter(d, e)
                assert why is None, (
                    f"device {d} dead-lettered {why}: {_describe(e)} after {e.retry_count} "
                    f"attempts: {e.error}")

    # -- the end -------------------------------------------------------------------------------

    def teardown(self) -> None:
        try:
            if sys.exc_info()[0] is None and self.server is not None:
                self.drain_and_check()
        finally:
            self.close()

    def close(self) -> None:
        for store in self.devices:
            store.close()
        if self.server is not None:
            self.server.close()
        if self.tmp is not None:
            shutil.rmtree(self.tmp, ignore_errors=True)

    def drain(self) -> list[SyncReport]:
        assert self.server is not None
        self.server.heal()  # the network; poison, the byte limit and published limits stay
        reports: list[SyncReport] = []
        for _ in range(DRAIN_ROUNDS):
            before = self._queues()
            self.clock.advance(2 * 3600)
            reports = [store.sync() for store in self.devices]
            if self._queues() == before and all(
                    r.pushed == 0 and r.pulled == 0 and not r.failures and not r.rejected
                    for r in reports):
                return reports
        raise AssertionError(f"still syncing after {DRAIN_ROUNDS} rounds: {reports}")

    def _queues(self) -> list[list[tuple[Any, ...]]]:
        return [sorted((e.id, e.state.value, e.retry_count, e.group_id)
                       for e in store.outbox.entries.all()) for store in self.devices]

    def drain_and_check(self) -> None:
        self.drain()
        self.nothing_conflicts_and_the_server_keeps_each_records_order()
        self.no_valid_write_is_dead_lettered()
        self.check_everyone_holds_what_was_written()
        self.check_nothing_is_stuck()
        self.check_record_states()
        self.check_commands_ran_once()

    def check_everyone_holds_what_was_written(self) -> None:
        assert self.server is not None
        for (kind, rid), rec in sorted(self.records.items()):
            cls, server_cls = CLASSES[kind]
            expected = None if rec.obj is None else attrs.asdict(rec.obj)
            on_server = self.server.store.repository(server_cls).get(rid)
            got = None if on_server is None else attrs.asdict(on_server)
            if rec.bad is None:
                assert got == expected, (
                    f"{kind} {rid} of device {rec.device}: the server has {got}, the device "
                    f"wrote {expected} last (applied on the server: "
                    f"{[a for a in self.applied if a[1] == rid]})")
            else:
                assert got is None, f"bad {kind} {rid} reached the server: {got}"
            for d, store in enumerate(self.devices):
                local = store.repository(cls).get(rid)
                have = None if local is None else attrs.asdict(local)
                want = expected if rec.bad is None or d == rec.device else None
                assert have == want, (
                    f"{kind} {rid} of device {rec.device}: device {d} has {have}, expected "
                    f"{want}")

    def check_nothing_is_stuck(self) -> None:
        """Only bad records' entries are left in a queue, behind their dead letters."""
        for d, store in enumerate(self.devices):
            dead = {(e.entity, e.record_id) for e in store.outbox.dead_letters()}
            for e in store.outbox.entries.find(F.state == EntryState.PENDING):
                assert (e.entity, e.record_id) in dead, (
                    f"device {d}: stuck in the queue after the drain: {_describe(e)} "
                    f"(error {e.error})")

    def check_record_states(self) -> None:
        """A valid record is synced (or, deleted, has no state left)."""
        for (kind, rid), rec in self.records.items():
            store = self.devices[rec.device]
            state = store.repository(CLASSES[kind][0]).sync_state(rid)
            if rec.bad is None:
                assert state is None or state.status is SyncStatus.SYNCED, (
                    f"device {rec.device}: {kind} {rid} has nothing queued but its state is "
                    f"{state}")

    def check_commands_ran_once(self) -> None:
        assert self.server is not None
        likes = {like.id: like for like in self.server.store.repository(Like).all()}
        for cmd, (d, item, at) in self.commands.items():
            like = likes.get(cmd)
            assert like is not None and like.times == 1, (
                f"command {cmd} of device {d} on item {item} (write {at}) was carried out "
                f"{0 if like is None else like.times} times")
        assert set(likes) <= set(self.commands)


class SQLiteSyncMachine(SyncMachine):
    device_url = "sqlite:///{tmp}/device-{n}.db"


def _settings(examples: int) -> settings:
    return settings(max_examples=examples, deadline=None, stateful_step_count=STEPS,
                    suppress_health_check=[HealthCheck.too_slow,
                                           HealthCheck.filter_too_much])


@pytest.mark.slow
def test_devices_and_server_agree_whatever_the_network_does() -> None:
    run_state_machine_as_test(SyncMachine, settings=_settings(300 if CI else 40))  # type: ignore[no-untyped-call]


@pytest.mark.slow
def test_on_sqlite_devices() -> None:
    run_state_machine_as_test(SQLiteSyncMachine, settings=_settings(40 if CI else 10))  # type: ignore[no-untyped-call]
