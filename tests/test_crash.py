"""Crash test: a process writing and syncing is killed with SIGKILL at random moments.

A forked child opens a MockServer over ``server.db`` and a client store over ``client.db`` (both
SQLite files, so the server outlives the child) and loops through steps: a random insert,
update or delete, or now and then ``store.sync()`` (half the time with the server's answer
lost, so mutations are retried and must be recognised as duplicates). Every write is journaled
twice: an *intent* line before the write and a *done* line (fsync'd) after it committed, so the
journal never claims a write that did not commit and names the one write that may have
committed unjournaled when the kill landed between the two lines. Each value is unique
(``"<iteration>-<n>"``), so which of the two a record holds is plain.

The child announces each step on a pipe; the parent kills it a random number of steps in (plus
a random few milliseconds: inside a write's transaction, inside a sync, between the two), so
the kills keep landing in the interesting places however busy the machine is; some kills hit
the child while it is still opening its stores.

After each kill the parent checks that

1. both stores open (no corruption) and no sync lock is left behind;
2. every record holds exactly the value of its last journaled write (or of the one write in
   flight at the kill, which the parent then adopts into its model), and no other record exists;
3. every record is either synced (status synced, the server holds the same value and version;
   for a deleted record: the server has none and the state is gone or a synced tombstone) or has
   pending queue entries, and nothing was dead-lettered;
4. the server applied no mutation twice: no two change-log entries share a mutation id, every
   logged mutation is recorded as applied at its own sequence number, and every mutation
   recorded as applied without a change-log entry is a delete of a record the server did not
   have (the only mutation that is applied without changing anything).

Then the next child runs on the same files: state accumulates across kills. At the end the
parent drains the queue with a MockServer of its own and checks both sides converged.

The parent holds no store and runs no thread when it forks; it opens the stores only between
a kill and the next child's go (the next child opens its own stores meanwhile and only reads).
"""

from __future__ import annotations

import itertools
import json
import os
import random
import select
import signal
import threading
import time
import traceback
from collections import Counter
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import Any

import attrs

import syncline
from syncline.core.model.query import F
from syncline.core.store import Store
from syncline.core.sync.lock import sync_lock
from syncline.core.sync.outbox import EntryState, OutboxEntry, SyncStatus
from syncline.plugins.mock import MockServer
from syncline.server.engine import ANONYMOUS
from syncline.server.store import open_server_store
from syncline.server.tables import AppliedMutation, ChangeEntry, ServerRecord

reg = syncline.EntityRegistry()


@reg.entity("crash_notes", syncs=True)
@attrs.define
class Note:
    id: str
    text: str
    n: int = 0


TABLE = "crash_notes"
KILLS = 200 if os.environ.get("CI") == "true" else 40
BATCH = 8
MAX_LIVE = 6  # keep the record set small so that checks stay fast as state accumulates


def _client_url(work: Path) -> str:
    return f"sqlite:///{work / 'client.db'}"


def _server_url(work: Path) -> str:
    return f"sqlite:///{work / 'server.db'}"


# -- the child --------------------------------------------------------------------------------


def _child(work: Path, iteration: int, progress: int, go: int) -> None:
    """Open both stores, wait for the go, then write and sync until killed.

    Each step (one write, or one sync) is announced on the ``progress`` pipe first, so that
    the parent can time its kill in steps rather than in wall-clock time, which a busy
    machine would stretch.
    """
    rng = random.Random(iteration)
    server = MockServer(f"crash-{iteration}", entities=[Note], store_url=_server_url(work))
    # Small push batches: each round trip's answers commit before the next, so a child that
    # lives a few dozen milliseconds still makes progress through a long queue.
    store = syncline.open(_client_url(work), entities=[Note], transport=f"mock://{server.name}",
                          sync_options={"batch_size": BATCH})
    notes = store.repository(Note)
    journal = os.open(work / "journal.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    os.write(progress, b"r")
    if os.read(go, 1) != b"g":  # the parent gave up on us
        return
    ids = sorted(note.id for note in notes.all())
    n = 0
    for step in itertools.count():
        os.write(progress, b".")
        if rng.random() < (0.3 if step == 0 else 0.25):  # a sync (also as the app starts)
            if rng.random() < 0.5:
                server.lose_next_responses(1)  # applied, but the client never hears it
            os.write(journal, b'{"t": "sync"}\n')  # where the kill lands, for the statistics
            store.sync()
            os.write(journal, b'{"t": "synced"}\n')
            continue
        n += 1
        text = f"{iteration}-{n}"
        roll = rng.random()
        if not ids or roll < (0.45 if len(ids) < MAX_LIVE else 0.1):
            op, rid = "insert", f"r{text}"
        elif roll < 0.8:
            op, rid = "update", rng.choice(ids)
        else:
            op, rid = "delete", rng.choice(ids)
        line = {"t": "intent", "it": iteration, "n": n, "op": op, "id": rid, "text": text}
        os.write(journal, (json.dumps(line) + "\n").encode())
        if op == "insert":
            notes.insert(Note(rid, text, n))
            ids.append(rid)
        elif op == "update":
            notes.update(rid, text=text, n=n)
        else:
            notes.delete(rid)
            ids.remove(rid)
        # Only now, after the commit, does the journal claim the write.
        os.write(journal, (json.dumps({"t": "done", "it": iteration, "n": n}) + "\n").encode())
        os.fsync(journal)


def _fork_child(work: Path, iteration: int) -> tuple[int, int, int]:
    """Fork a child running :func:`_child`: its pid, its progress pipe and its go pipe."""
    progress_r, progress_w = os.pipe()
    go_r, go_w = os.pipe()
    pid = os.fork()
    if pid == 0:  # the child: never return into pytest
        code = 0
        try:
            os.close(progress_r)
            os.close(go_w)
            _child(work, iteration, progress_w, go_r)
        except BaseException:
            code = 3
            (work / f"child-{iteration}.err").write_text(traceback.format_exc())
        finally:
            os._exit(code)
    os.close(progress_w)
    os.close(go_r)
    return pid, progress_r, go_w


# -- the parent's model of what committed -----------------------------------------------------


@attrs.define
class Model:
    """What the journal says each record must hold: its text, or None once deleted."""

    work: Path
    expected: dict[str, str | None] = attrs.Factory(dict)
    history: dict[str, list[str]] = attrs.Factory(dict)
    offset: int = 0
    writes: int = 0
    adopted: int = 0
    discarded: int = 0
    noop_deletes: int = 0
    longest_queue: int = 0
    checks: int = 0
    last_seq: int = 0  # the change log is checked up to here
    logged: set[str] = attrs.Factory(set)  # mutation ids met in the change log
    seen: Counter[str] = attrs.Factory(Counter)  # record states met by the checks
    #: where the kills landed: in a write, in a sync, between the two, or before any write
    landed: Counter[str] = attrs.Factory(Counter)

    def read_journal(self) -> dict[str, Any] | None:
        """Apply the new done lines; return the write in flight at the kill, if any."""
        path = self.work / "journal.log"
        if not path.exists():
            return None
        with path.open("rb") as f:
            f.seek(self.offset)
            data = f.read()
        end = data.rfind(b"\n") + 1
        if end < len(data):  # a line cut by the kill: drop it so the next child starts clean
            os.truncate(path, self.offset + end)
        self.offset += end
        in_flight: dict[str, Any] | None = None
        last = ""
        for raw in data[:end].splitlines():
            line = json.loads(raw)
            last = line["t"]
            if last in ("sync", "synced"):
                assert in_flight is None, f"a sync during a write: {in_flight}"
                continue
            if line["t"] == "intent":
                assert in_flight is None, f"two intents without a done: {in_flight}, {line}"
                in_flight = line
                continue
            assert in_flight is not None and (in_flight["it"], in_flight["n"]) == (
                line["it"], line["n"]), f"done without its intent: {line}"
            self._apply(in_flight)
            self.writes += 1
            in_flight = None
        if data:  # only a child that got the go writes lines: one per kill
            self.landed[{"intent": "write", "sync": "sync"}.get(last, "between")] += 1
        return in_flight

    def _apply(self, write: dict[str, Any]) -> None:
        rid = write["id"]
        if write["op"] == "insert":
            assert rid not in self.expected, f"insert of a known id {rid}"
        else:
            assert self.expected.get(rid) is not None, f"{write['op']} of a missing id {rid}"
        self.expected[rid] = None if write["op"] == "delete" else write["text"]
        self.history.setdefault(rid, []).append(f"{write['op']} {write['text']}")

    def settle(self, in_flight: dict[str, Any] | None, local: dict[str, Note]) -> None:
        """The unjournaled write either committed entirely or not at all: adopt what is there."""
        if in_flight is None:
            return
        rid = in_flight["id"]
        before = self.expected.get(rid)
        after = None if in_flight["op"] == "delete" else in_flight["text"]
        now = local[rid].text if rid in local else None
        assert now in (before, after), (
            f"{rid}: after a kill during {in_flight['op']} {in_flight['text']!r} the record "
            f"holds {now!r}; expected the old value {before!r} or the new one {after!r}")
        if now == after and now != before:
            self._apply(in_flight)
            self.adopted += 1
        else:
            self.discarded += 1


# -- the checks -------------------------------------------------------------------------------


@contextmanager
def _open_both(work: Path) -> Iterator[tuple[Store, Store]]:
    client = syncline.open(_client_url(work), entities=[Note])
    try:
        server = open_server_store(_server_url(work), [Note])
        try:
            yield client, server
        finally:
            server.close()
    finally:
        client.close()


def _story(model: Model, client: Store, server: Store, rid: str) -> str:
    """Everything known about one record, for failure messages."""
    entries = client.repository(OutboxEntry).find(F.record_id == rid, order_by="seq")
    changes = server.repository(ChangeEntry).find(F.record_id == rid, order_by="seq")
    return "\n".join([
        f"  journal: {model.history.get(rid)}",
        f"  local: {client.repository(Note).get(rid)}",
        f"  state: {client.outbox.state(TABLE, rid)}",
        *(f"  queued: {e.action} {e.payload} group={e.group_id} state={e.state.value} "
          f"retries={e.retry_count} next={e.next_attempt_at}" for e in entries),
        f"  server: {server.repository(Note).get(rid)}",
        *(f"  server log: seq={c.seq} {c.op} {c.payload} mutation={c.mutation_id}"
          for c in changes),
    ])


def _check(model: Model, client: Store, server: Store, where: str, *,
           drained: bool = False) -> None:
    """The invariants after a kill; ``drained``: the queue was emptied, all must be synced."""
    in_flight = model.read_journal()
    local = {note.id: note for note in client.repository(Note).all()}
    model.settle(in_flight, local)

    # 1. No sync lock is left behind by the dead child.
    with sync_lock(client, blocking=False):
        pass

    # 2. Every committed write is there, exactly; nothing else is.
    for rid, text in model.expected.items():
        have = local[rid].text if rid in local else None
        assert have == text, (f"{where}: {rid} holds {have!r}, its last committed write "
                              f"{text!r}\n{_story(model, client, server, rid)}")
    unknown = sorted(set(local) - set(model.expected))
    assert not unknown, f"{where}: records no journaled write explains: {unknown}"

    # 3. Every record is synced or queued.
    entries = client.repository(OutboxEntry).all()
    dead = sorted({e.record_id for e in entries if e.state is EntryState.DEAD})
    assert not dead, f"{where}: dead letters for {dead}:\n" + "\n".join(
        f"{rid}:\n{_story(model, client, server, rid)}" for rid in dead)
    pending = {e.record_id for e in entries if e.state is EntryState.PENDING}
    model.longest_queue = max(model.longest_queue, len(entries))
    assert not (drained and pending), f"{where}: still queued after the final sync:\n" + (
        "\n".join(f"{rid}:\n{_story(model, client, server, rid)}" for rid in sorted(pending)))
    states = {s.record_id: s for s in client.outbox.states.find(F.entity == TABLE)}
    on_server = {note.id: note for note in server.repository(Note).all()}
    meta = {r.record_id: r for r in server.repository(ServerRecord).find(F.entity == TABLE)}
    for rid, text in model.expected.items():
        if rid in pending:
            model.seen["queued"] += 1
            continue
        model.seen["synced"] += 1
        state = states.get(rid)
        if text is None:  # deleted: the server must not have it; the state is gone, or a
            # synced tombstone when the delete came back in a pull after its state was dropped
            assert rid not in on_server and (state is None or (
                state.status is SyncStatus.SYNCED and state.deleted)), (
                f"{where}: {rid} is deleted locally with nothing queued, but the server has "
                f"{on_server.get(rid)} and its sync state is {state}\n"
                f"{_story(model, client, server, rid)}")
            continue
        assert state is not None and state.status is SyncStatus.SYNCED, (
            f"{where}: {rid} ({text!r}) has nothing queued but is not synced: {state}\n"
            f"{_story(model, client, server, rid)}")
        theirs = on_server.get(rid)
        assert theirs == local[rid], (
            f"{where}: {rid} is synced as {local[rid]} but the server has {theirs}\n"
            f"{_story(model, client, server, rid)}")
        assert meta[rid].version == state.server_version, (
            f"{where}: {rid} is synced at version {state.server_version}, the server's is "
            f"{meta[rid].version}")
    for rid, record in meta.items():  # the server's own bookkeeping agrees with its table
        assert (rid in on_server) == (not record.deleted), f"{where}: server {record}"

    # 4. The server applied nothing twice. The change log grows by sequence number (one entry
    # per record: a new change replaces the record's entry): each new entry's mutation must be
    # new and recorded as applied at that number. Every few checks, and at the end, the whole
    # log and every recorded result are gone through again.
    model.checks += 1
    full = drained or model.checks % 20 == 0
    changes = server.repository(ChangeEntry).find(
        None if full else F.seq > model.last_seq, order_by="seq")
    logged = set() if full else model.logged
    twice = []
    for change in changes:
        if change.mutation_id is not None:
            if change.mutation_id in logged:
                twice.append(change.mutation_id)
            logged.add(change.mutation_id)
    assert not twice, f"{where}: mutations with two change-log entries: {twice}"
    model.logged = logged
    model.last_seq = max([model.last_seq, *(c.seq for c in changes)])
    by_mutation = {c.mutation_id: c for c in changes if c.mutation_id is not None}
    results = server.repository(AppliedMutation)
    recorded = {row.key.partition("/")[2]: row.result
                for row in results.get_many(f"{ANONYMOUS}/{m}" for m in by_mutation)}
    for mid, change in by_mutation.items():
        result = recorded.get(mid)
        assert result is not None and result["status"] == "applied" and (
            result["version"] == change.seq), (
            f"{where}: change {change} of mutation {mid} is recorded as {result}")
    if full:
        by_seq = {c.seq: c for c in changes}
        applied = {row.key.partition("/")[2]: row.result for row in results.all()
                   if row.result["status"] == "applied"}
        for mid, result in applied.items():
            if mid in by_mutation:
                continue
            # Applied without a change in the log: a delete of a record the server did not
            # have, or a change a later one of the same record replaced (the log keeps one
            # entry per record), so the record is at a later version now.
            earlier = by_seq.get(result["version"]) if result["version"] is not None else None
            record = meta.get(result["server_id"])
            superseded = (result["version"] is not None and record is not None
                          and record.version > result["version"])
            assert result["version"] is None or superseded or (
                earlier is not None and earlier.op == "delete"
                and earlier.record_id == result["server_id"]), (
                f"{where}: mutation {mid} is recorded as applied ({result}) but changed nothing")
        model.noop_deletes = len(applied) - len(by_mutation)


def _wait_for(progress: int, count: int, timeout: float = 120.0) -> str | None:
    """Read ``count`` bytes of the child's progress (a step begins with each); else why not."""
    deadline = time.monotonic() + timeout
    while count > 0:
        ready, _, _ = select.select([progress], [], [], max(0.0, deadline - time.monotonic()))
        if not ready:
            return f"the child made no progress in {timeout} s"
        data = os.read(progress, count)
        if not data:
            return "the child exited"
        count -= len(data)
    return None


def _child_error(work: Path, iteration: int) -> str:
    err = work / f"child-{iteration}.err"
    return err.read_text() if err.exists() else "(no traceback)"


def test_kill_9_loses_no_committed_write_and_applies_none_twice(tmp_path: Path) -> None:
    work = tmp_path
    model = Model(work)
    started = time.monotonic()
    early = 0
    checking = 0.0
    unchecked: str | None = None  # a kill whose aftermath is not checked yet

    def check(where: str) -> None:
        nonlocal checking
        before = time.monotonic()
        with _open_both(work) as (client, server):
            _check(model, client, server, where)
        checking += time.monotonic() - before

    for iteration in range(KILLS):
        rng = random.Random(f"kill-{iteration}")
        # The parent holds no store at fork time. The child opens its stores, then waits for
        # the go; meanwhile the parent checks the previous kill's aftermath (the child only
        # reads until the go).
        assert threading.active_count() == 1, threading.enumerate()  # fork with one thread
        pid, progress, go = _fork_child(work, iteration)
        try:
            if rng.random() < 0.15:  # kill it while it opens the stores
                early += 1
                time.sleep(rng.uniform(0, 0.02))
            else:
                if unchecked is not None:
                    check(unchecked)
                    unchecked = None
                trouble = _wait_for(progress, 1)  # the child has opened its stores
                os.write(go, b"g")
                # The kill's step begins...
                trouble = trouble or _wait_for(progress, rng.randint(1, 5))
                assert trouble is None, f"child {iteration}: {trouble}\n" + (
                    _child_error(work, iteration))
                # ...and the kill lands in it (a write takes a few milliseconds) or a later one.
                time.sleep(rng.random() * rng.choice([0.004, 0.03]))
        finally:
            os.kill(pid, signal.SIGKILL)
            _, status = os.waitpid(pid, 0)
            os.close(progress)
            os.close(go)
        assert not (work / f"child-{iteration}.err").exists(), (
            f"child {iteration} failed:\n{_child_error(work, iteration)}")
        assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, status
        unchecked = f"after kill {iteration + 1}"
        if iteration + 1 == KILLS or rng.random() < 0.15:
            check(unchecked)  # before any other process touches the files
            unchecked = None

    # At the end, drain the queue with a server of our own (time passes: every entry is due):
    # everything must be synced, both sides equal.
    mock = MockServer("crash-final", entities=[Note], store_url=_server_url(work))
    try:
        store = syncline.open(_client_url(work), entities=[Note], transport="mock://crash-final")
        try:
            for _ in range(10):
                store.outbox.entries.update_where(F.state == EntryState.PENDING,
                                                  next_attempt_at=None)
                store.sync()
                if store.outbox.pending_count() == 0:
                    break
        finally:
            store.close()
    finally:
        mock.close()
    with _open_both(work) as (client, server):
        _check(model, client, server, "after the final sync", drained=True)
        live = {rid for rid, text in model.expected.items() if text is not None}
        on_server = {note.id for note in server.repository(Note).all()}
        assert on_server == live, "\n".join(
            f"{rid} is {'only on the server' if rid in on_server else 'missing on the server'}"
            f":\n{_story(model, client, server, rid)}" for rid in sorted(on_server ^ live))
    elapsed = time.monotonic() - started
    print(f"\n{KILLS} kills in {elapsed:.1f}s ({checking:.1f}s checking); {early} while opening, "
          f"the others {dict(model.landed)}; {model.writes} journaled writes, "
          f"{model.adopted} unjournaled ones committed, {model.discarded} in flight lost; "
          f"{len(model.expected)} records, {model.noop_deletes} no-op deletes, "
          f"queue at most {model.longest_queue} entries; records met {dict(model.seen)}")
    # The kills landed inside writes and inside syncs, not only at start-up.
    assert model.landed["write"] >= KILLS // 10 and model.landed["sync"] >= KILLS // 10
