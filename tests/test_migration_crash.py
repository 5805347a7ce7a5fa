"""Crash test: a store killed (SIGKILL) during a migration opens afterwards at the old or the
new version, never a mix.

The parent builds a version-1 store (a SQLite file under ``tmp_path``, or a PostgreSQL database
of its own on the session's server): a few thousand rows of a syncing entity ``mc_items`` (most
synced, about a hundred with queued creates, updates and deletes), a queued command, a sync
cursor, and a child table ``mc_parts`` with a foreign key to ``mc_items``.

A child process opens a copy of it at version 2 (a copy of the file; ``CREATE DATABASE ...
TEMPLATE``). Its ``on_upgrade`` adds a column to ``mc_parts`` and makes another one nullable
(on SQLite, Alembic's batch mode copies the table), rebuilds ``mc_items`` (the parent of that
foreign key) with a :class:`TableMigration` whose Python transformers change a column and fill a
new one (slowly: a little work on every row, a short sleep every few rows), then creates and
fills a new table ``mc_tags``; after ``on_upgrade`` syncline rewrites the queued payloads,
checks the foreign keys and writes the new version, all in the same transaction.

The children are forked by a *zygote*: one ``sys.executable -c`` process per test that imports
and warms up everything once, then forks a child for each kill on the parent's go. A kill so
costs no interpreter start-up (a second of CPU, which would take most of the time budget). The
zygote never opens the store under test and runs no thread when it forks.

The child announces every phase on the shared stdout pipe (one line, written unbuffered *before*
the phase begins, with its monotonic clock): ``opening``, ``migrating`` (first thing in
``on_upgrade``), ``rows N`` (every few hundred rows transformed), ``tags``, ``upgraded`` (last
thing in ``on_upgrade``), ``committed`` (from ``before_open``, after the commit) and
``opened``. The first child of each test is let finish: it times the migration. Every other one
is killed after a random delay, drawn from the go (now and then) or from ``migrating`` (mostly;
up to a little more than the migration took, adapted as the kills land so that about a fifth
of these land after the commit), so most kills land inside the migration's transaction, however
fast the machine is. The zygote reaps the child and says so on the same
pipe, after everything the child wrote: the parent knows which lines came before the kill.

After each kill the parent reads the stored version and checks, before anything opens the
store (opening one adds a missing table or index), that the stored schema (SQLite: the whole
``sqlite_master``, and the integrity and foreign-key checks; PostgreSQL: every relation, column,
index and constraint in the catalogs) is exactly the one of that version: as built, for version
1; as the first child left it, for version 2 (both also checked against the declared schema
with ``differences``). So at version 1 ``mc_tags``, ``mc_parts.weight`` and ``mc_items.code``
do not exist and nothing is left over from the rebuild. Then it opens the store with the
entities of that version and checks:

* version 1: every item, part, queued entry, record state and sync meta row is exactly as
  built;
* version 2: every item is migrated, every part is there with the new column's default, the
  tags are all there; every queued entry is still there, unchanged but for the payloads of
  creates and updates of live items, which now hold the migrated row; record states and meta
  are unchanged;
* a kill before ``migrating`` left version 1, a kill after ``committed`` version 2.

A store found at version 1 is migrated again by the next child (so one store goes through
several killed migrations in a row); one found at version 2 is replaced by a fresh copy, made
while it is checked. ``MIGRATION_CRASH_SEED`` replays a run's random choices (every failure
message and the summary give it).
"""

from __future__ import annotations

import contextlib
import hashlib
import itertools
import math
import os
import random
import select
import shutil
import signal
import sqlite3
import subprocess
import sys
import threading
import time
import traceback
from collections import Counter
from collections.abc import Callable, Iterator, Mapping
from concurrent.futures import ThreadPoolExecutor
from pathlib import Path
from typing import Any

import attrs

import syncline
from syncline.core.model.query import F
from syncline.core.storage.migration import MigrationStrategy, Migrator, TableMigration
from syncline.core.storage.schema_dump import differences
from syncline.core.store import Store
from syncline.core.sync.outbox import OutboxEntry, RecordState, SyncMeta, SyncStatus

CI = os.environ.get("CI") == "true"
KILLS = 30 if CI else 10  # per backend
ITEMS = 2500
EARLY = 0.15  # the share of kills timed from the go rather than from "migrating"
TIMEOUT = 60.0  # for any one line from the zygote or a child
#: seeds the random choices of a run (set it to replay one)
SEED = int(os.environ.get("MIGRATION_CRASH_SEED") or random.randrange(10**9))

v1, v2 = syncline.EntityRegistry(), syncline.EntityRegistry()


@v1.entity("mc_items", syncs=True)
@attrs.define
class ItemV1:
    id: str
    name: str
    qty: int


@v1.entity("mc_parts", foreign_keys={"item_id": "mc_items.id"})
@attrs.define
class PartV1:
    id: int
    item_id: str
    label: str


@v2.entity("mc_items", syncs=True, indexes=["code"])
@attrs.define
class ItemV2:
    id: str
    name: str
    qty: int  # version 2 counts in tenths: every value times ten
    code: str  # new: computed from the old row


@v2.entity("mc_parts", foreign_keys={"item_id": "mc_items.id"})
@attrs.define
class PartV2:
    id: int
    item_id: str
    label: str | None  # now nullable (SQLite: Alembic's batch mode copies the table)
    weight: int = 1  # new: added with its default


@v2.entity("mc_tags", foreign_keys={"item_id": "mc_items.id"})
@attrs.define
class TagV2:
    id: int
    item_id: str
    tag: str


V1: list[type] = [ItemV1, PartV1]
V2: list[type] = [ItemV2, PartV2, TagV2]


# -- the data ---------------------------------------------------------------------------------


def _item_id(n: int) -> str:
    return f"i{n:05d}"


UPDATED = [n for n in range(ITEMS) if n % 100 == 3]
DELETED = [n for n in range(ITEMS) if n % 100 == 7]
PENDING = sorted({n for n in range(ITEMS) if n % 50 == 0} | set(UPDATED) | set(DELETED))
SYNCED = sorted(set(range(ITEMS)) - set(PENDING))  # pushed and acknowledged: nothing queued
WITH_PARTS = [n for n in range(ITEMS) if n % 3 == 0 and n % 100 != 7]
CURSOR = "epoch-7:4242"


def expected_v1_items() -> list[ItemV1]:
    gone, edited = set(DELETED), set(UPDATED)
    return [ItemV1(_item_id(n), "edited" if n in edited else f"item {n}",
                   5 if n in edited else n % 97)
            for n in range(ITEMS) if n not in gone]


def expected_parts() -> list[PartV1]:
    return [PartV1(2 * n + k, _item_id(n), f"part {n}.{k}") for n in WITH_PARTS for k in (0, 1)]


def code_of(row: Mapping[str, Any]) -> str:
    digest = hashlib.sha256(f"{row['id']}|{row['name']}|{row['qty']}".encode()).hexdigest()
    return f"{row['name'].upper()}#{digest[:12]}"


def migrated(item: ItemV1) -> ItemV2:
    return ItemV2(item.id, item.name, item.qty * 10, code_of(attrs.asdict(item)))


def expected_tags(items: list[ItemV2]) -> list[TagV2]:
    return [TagV2(i, item.id, f"qty:{item.qty}") for i, item in enumerate(items) if i % 7 == 0]


@attrs.frozen
class Snapshot:
    """What the version-1 store holds, as read back after building it."""

    items: list[ItemV1]
    parts: list[PartV1]
    entries: list[OutboxEntry]
    states: list[RecordState]
    meta: list[SyncMeta]


def _sync_state(store: Store) -> tuple[list[OutboxEntry], list[RecordState], list[SyncMeta]]:
    return (store.repository(OutboxEntry).find(order_by="seq"),
            store.repository(RecordState).find(order_by="key"),
            store.repository(SyncMeta).find(order_by="key"))


def build_v1(url: str) -> Snapshot:
    """Create the version-1 store at ``url``; what it holds, as read back."""
    with syncline.open(url, entities=V1, schema_version=1) as store:
        items = store.repository(ItemV1)
        items.insert_many(ItemV1(_item_id(n), f"item {n}", n % 97) for n in range(ITEMS))
        synced = [_item_id(n) for n in SYNCED]  # as if pushed and acknowledged
        with store.transaction():
            store.outbox.entries.delete_where(F.record_id.in_(synced))
            store.outbox.states.update_where(F.record_id.in_(synced),
                                             status=SyncStatus.SYNCED, server_version=3)
        store.repository(PartV1).insert_many(expected_parts())
        items.update_where(F.id.in_([_item_id(n) for n in UPDATED]), name="edited", qty=5)
        items.delete_many(_item_id(n) for n in DELETED)
        store.enqueue_command("recount", {"all": True})
        store.outbox.set_meta("cursor", CURSOR)
        got = Snapshot(sorted(items.all(), key=lambda i: i.id),
                       sorted(store.repository(PartV1).all(), key=lambda p: p.id),
                       *_sync_state(store))
    assert got.items == expected_v1_items()
    assert got.parts == expected_parts()
    assert {e.record_id for e in got.entries} == {_item_id(n) for n in PENDING} | {None}
    assert {e.action for e in got.entries} == {"create", "update", "delete", "command"}
    return got


# -- the zygote and its children ---------------------------------------------------------------

ROWS_EVERY = 250  # rows between two "rows N" lines
SLEEP_EVERY = 25  # rows between two short sleeps of the transformer


def _say(line: str) -> None:
    """One line to the parent, unbuffered (atomic: far shorter than PIPE_BUF)."""
    os.write(1, f"{line} {time.monotonic():.6f}\n".encode())


def _slow_code(counter: Iterator[int]) -> Callable[[Mapping[str, Any]], str]:
    def transform(row: Mapping[str, Any]) -> str:
        n = next(counter)
        if n % ROWS_EVERY == 0:
            _say(f"rows {n}")
        if n % SLEEP_EVERY == 0:
            time.sleep(0.0005)
        code = code_of(row)
        for _ in range(30):  # a little work on every row
            hashlib.sha256(code.encode()).digest()
        return code

    return transform


def upgrade(m: Migrator, old: int, new: int) -> None:
    """Version 1 -> 2 in several steps; the lines tell the parent where it is."""
    assert (old, new) == (1, 2), (old, new)
    _say("migrating")
    m.add_column(PartV2, "weight")
    m.alter_column(PartV2, "label")
    m.alter_table(TableMigration(
        ItemV2, new_columns=["code"],
        column_transformer={"qty": lambda row: row["qty"] * 10,
                            "code": _slow_code(itertools.count())}))
    _say("tags")
    m.create_table(TagV2)
    items = sorted(m.store.repository(ItemV2).all(), key=lambda i: i.id)
    m.store.repository(TagV2).insert_many(expected_tags(items))
    _say("upgraded")


def _migrate(url: str) -> None:
    """A forked child: open the store at version 2 (migrating it), then wait for the kill."""
    _say("opening")
    syncline.open(url, entities=V2, schema_version=2, migration=MigrationStrategy(
        on_upgrade=upgrade, before_open=lambda store, details: _say("committed")))
    _say("opened")
    while True:
        time.sleep(60)


def zygote() -> None:
    """The zygote process: warm up, then fork a child per ``go URL`` line on stdin and reap
    it on the ``reap`` line after; every answer goes to stdout after the child's own lines."""
    import syncline.backends.sql_migration  # loaded once: the children start warm

    with contextlib.suppress(ImportError):  # PostgreSQL's driver, when installed
        import psycopg  # noqa: F401

    with syncline.open("sqlite://", entities=V2, schema_version=2) as scratch:
        differences(scratch)
        scratch.repository(ItemV2).insert(ItemV2("x", "x", 1, "x"))
    _say("ready")
    for line in sys.stdin:
        command, _, url = line.strip().partition(" ")
        if command != "go":
            raise SystemExit(f"unexpected command {line!r}")
        assert threading.active_count() == 1, threading.enumerate()  # fork with one thread
        pid = os.fork()
        if pid == 0:  # the child: never return into the zygote's loop
            try:
                _migrate(url)
            except BaseException:
                traceback.print_exc()
                sys.stderr.flush()
                _say("failed")
            finally:
                os._exit(3)
        _say(f"forked {pid}")
        if sys.stdin.readline().strip() != "reap":
            raise SystemExit("expected reap")
        _, status = os.waitpid(pid, 0)
        _say(f"reaped {status}")


ZYGOTE_CODE = (f"import sys; sys.path.insert(0, {str(Path(__file__).parent)!r}); "
               f"import {Path(__file__).stem} as t; t.zygote()")


class Zygote:
    """The zygote process, and the lines of the current child."""

    def __init__(self, work: Path) -> None:
        self.err_path = work / "zygote.err"
        with self.err_path.open("wb") as err:
            self.proc = subprocess.Popen(
                [sys.executable, "-c", ZYGOTE_CODE], stdin=subprocess.PIPE,
                stdout=subprocess.PIPE, stderr=err)
        assert self.proc.stdout is not None and self.proc.stdin is not None
        self.stdin = self.proc.stdin
        self.fd = self.proc.stdout.fileno()
        self.buffer = b""
        self.lines: list[tuple[str, float]] = []  # (line, its writer's monotonic clock)
        self.pid = 0
        self.alive = False  # a child is forked and not reaped yet
        try:
            self.wait_for("ready")
        except BaseException:
            self.close()
            raise

    def _read(self, timeout: float) -> None:
        ready, _, _ = select.select([self.fd], [], [], max(0.0, timeout))
        if not ready:
            return
        data = os.read(self.fd, 65536)
        if not data:
            raise AssertionError(f"the zygote exited ({self.proc.wait()}); lines "
                                 f"{self.words()}; stderr:\n{self.stderr()}")
        self.buffer += data
        *lines, self.buffer = self.buffer.split(b"\n")
        for line in lines:
            text, _, stamp = line.decode().rpartition(" ")
            self.lines.append((text, float(stamp)))

    def words(self) -> list[str]:
        return [w for w, _ in self.lines]

    def find(self, prefix: str) -> str | None:
        return next((w for w in self.words() if w.startswith(prefix)), None)

    def at(self, word: str) -> float:
        return next(t for w, t in self.lines if w == word)

    def wait_for(self, prefix: str) -> str:
        deadline = time.monotonic() + TIMEOUT
        while (found := self.find(prefix)) is None:
            if self.find("failed") is not None or time.monotonic() > deadline:
                raise AssertionError(
                    f"no {prefix!r} from the child: "
                    f"{'it failed' if self.find('failed') else f'silent for {TIMEOUT} s'}; "
                    f"its lines: {self.words()}; stderr:\n{self.stderr()}")
            self._read(deadline - time.monotonic())
        return found

    def _send(self, line: str) -> None:
        self.stdin.write(line.encode() + b"\n")
        self.stdin.flush()

    def go(self, url: str) -> None:
        """Fork a child migrating ``url`` (its lines replace the last child's)."""
        self.lines = []
        self._send(f"go {url}")
        self.pid = int(self.wait_for("forked ").split()[1])
        self.alive = True

    def kill(self) -> int:
        """SIGKILL the child; once reaped, every line it wrote is read. Its wait status."""
        os.kill(self.pid, signal.SIGKILL)  # not reaped yet: the pid is still the child's
        self._send("reap")
        status = int(self.wait_for("reaped ").split()[1])
        self.alive = False
        return status

    def close(self) -> None:
        """Stop the zygote (it exits at the end of its stdin), and a child left running."""
        if self.alive:
            os.kill(self.pid, signal.SIGKILL)
            self.alive = False
        self.stdin.close()
        try:
            self.proc.wait(10)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        assert self.proc.stdout is not None
        self.proc.stdout.close()

    def stderr(self) -> str:
        return self.err_path.read_text(errors="replace") or "(nothing)"

    def phase(self) -> str:
        """Where the kill landed, by the child's last line before it."""
        words = [w for w in self.words() if not w.startswith(("forked", "reaped"))]
        if "committed" in words:
            return "after the commit"
        if "migrating" not in words:
            return "before on_upgrade"
        last = words[-1]
        return "during: " + ("copying rows" if last.startswith("rows") else
                             "changing mc_parts, reading the rows" if last == "migrating"
                             else "creating and filling mc_tags" if last == "tags"
                             else "after on_upgrade, before the commit")


# -- the checks -------------------------------------------------------------------------------


def stored_version(url: str) -> int | None:
    """The schema version the store records, read from the backend itself (nothing runs)."""
    from syncline.core.plugins import plugin_manager
    from syncline.core.store import scheme_of

    backend = plugin_manager().backend_class(scheme_of(url))(url)
    backend.open()
    try:
        return backend.get_schema_version()
    finally:
        backend.close()


#: The stored schema, read from the catalogs: every table, column, index and constraint
#: (opening a store would add a missing table or index, so this is read before that).
_PG_SCHEMA = [
    "SELECT c.relname, c.relkind::text FROM pg_class c "
    "WHERE c.relnamespace = current_schema()::regnamespace ORDER BY 1",
    "SELECT table_name, column_name, data_type, is_nullable, coalesce(column_default, ''), "
    "coalesce(collation_name, '') FROM information_schema.columns "
    "WHERE table_schema = current_schema() ORDER BY 1, 2",
    "SELECT tablename, indexname, indexdef FROM pg_indexes "
    "WHERE schemaname = current_schema() ORDER BY 1, 2",
    "SELECT conrelid::regclass::text, conname, pg_get_constraintdef(oid) FROM pg_constraint "
    "WHERE connamespace = current_schema()::regnamespace ORDER BY 1, 2",
]


def schema_of(url: str, where: str = "") -> list[tuple[Any, ...]]:
    """The stored schema of ``url`` (SQLite: also its integrity and foreign-key checks)."""
    if url.startswith("sqlite"):
        conn = sqlite3.connect(url.removeprefix("sqlite:///"))
        try:
            problems = conn.execute("PRAGMA integrity_check").fetchall()
            assert problems == [("ok",)], f"{where}: the integrity check says {problems}"
            orphans = conn.execute("PRAGMA foreign_key_check").fetchall()
            assert orphans == [], f"{where}: rows with broken foreign keys: {orphans[:10]}"
            return conn.execute("SELECT type, name, tbl_name, sql FROM sqlite_master "
                                "ORDER BY type, name").fetchall()
        finally:
            conn.close()
    import psycopg
    from sqlalchemy.engine import make_url

    plain = make_url(url).set(drivername="postgresql").render_as_string(hide_password=False)
    with psycopg.connect(plain) as conn:
        return [(n, *row) for n, sql in enumerate(_PG_SCHEMA)
                for row in conn.execute(sql).fetchall()]


def check_schema(url: str, want: list[tuple[Any, ...]], where: str) -> None:
    have = schema_of(url, where)
    assert have == want, (
        f"{where}: the stored schema is not the one of its version; not expected: "
        f"{sorted(set(have) - set(want), key=repr)}; missing: "
        f"{sorted(set(want) - set(have), key=repr)}")


def _refuse_upgrade(m: Migrator, old: int, new: int) -> None:
    raise AssertionError(f"the check must not migrate ({old} -> {new})")


def _declared_schema(store: Store, where: str) -> None:
    diff = differences(store)
    assert diff == [], f"{where}: the stored schema is not the declared one: {diff}"


def check_v1(url: str, before: Snapshot, where: str, *, declared: bool = False) -> None:
    with syncline.open(url, entities=V1, schema_version=1) as store:
        if declared:
            _declared_schema(store, where)
        items = sorted(store.repository(ItemV1).all(), key=lambda i: i.id)
        assert items == before.items, f"{where}: the items changed at version 1"
        parts = sorted(store.repository(PartV1).all(), key=lambda p: p.id)
        assert parts == before.parts, f"{where}: the parts changed at version 1"
        entries, states, meta = _sync_state(store)
        assert entries == before.entries, f"{where}: the queue changed at version 1"
        assert states == before.states, f"{where}: the record states changed at version 1"
        assert meta == before.meta, f"{where}: the sync meta changed at version 1"


def _first_differences(have: list[Any], want: list[Any]) -> str:
    wrong = [(a, b) for a, b in zip(have, want, strict=False) if a != b][:3]
    return f"{len(have)} rows, {len(want)} expected; first differences (have, want): {wrong}"


def check_v2(url: str, before: Snapshot, where: str, *, declared: bool = False) -> None:
    with syncline.open(url, entities=V2, schema_version=2,
                       migration=MigrationStrategy(on_upgrade=_refuse_upgrade)) as store:
        if declared:
            _declared_schema(store, where)
        want = [migrated(i) for i in before.items]
        items = sorted(store.repository(ItemV2).all(), key=lambda i: i.id)
        assert items == want, f"{where}: items at version 2: {_first_differences(items, want)}"
        parts = sorted(store.repository(PartV2).all(), key=lambda p: p.id)
        assert parts == [PartV2(p.id, p.item_id, p.label, 1) for p in before.parts], (
            f"{where}: the parts are not all there at version 2")
        tags = sorted(store.repository(TagV2).all(), key=lambda t: t.id)
        assert tags == expected_tags(want), f"{where}: the tags are not all there"
        live = {i.id: attrs.asdict(i) for i in want}
        queued = [attrs.evolve(e, payload=live[e.record_id])
                  if e.action in ("create", "update") and e.record_id in live else e
                  for e in before.entries]
        entries, states, meta = _sync_state(store)
        assert entries == queued, (
            f"{where}: the queue at version 2: {_first_differences(entries, queued)}")
        assert states == before.states, f"{where}: the record states changed at version 2"
        assert meta == before.meta, f"{where}: the sync meta changed at version 2"


# -- the run ----------------------------------------------------------------------------------


@attrs.define
class Stores:
    """Fresh copies of a version-1 store for each kill, and how to get rid of them."""

    before: Snapshot  # what every copy holds
    fresh: Callable[[int], str]  # the URL of copy n
    discard: Callable[[str], None]


def run(work: Path, stores: Stores, label: str) -> None:
    started = time.monotonic()
    landed: Counter[str] = Counter()
    versions: Counter[int] = Counter()
    rng = random.Random(f"{SEED}-{label}")
    checking = to_migrating = migration = 0.0
    # The delays after "migrating" reach this many times the first migration's duration; the
    # reach adapts so that about a fifth of those kills land after the commit, however the
    # later migrations' speed differs from the first one's.
    reach = 1.25
    longest_reuse = 0
    zygote = Zygote(work)
    # A store found at version 1 (checked to hold exactly what it held before) is migrated
    # again by the next child; one found at version 2 is replaced by a fresh copy, made while
    # it is checked (no child runs then).
    with ThreadPoolExecutor(1) as copier:
        try:
            url, kills_survived = stores.fresh(0), 0
            # The stored schema of each version, as the store is built and as the first
            # child migrates it (both checked against the declared schema).
            schemas = {1: schema_of(url)}
            check_v1(url, stores.before, f"{label}: the version-1 store", declared=True)
            for iteration in range(KILLS + 1):
                calibrating = iteration == 0  # the first child finishes: it times the migration
                zygote.go(url)
                go_at = time.monotonic()
                if calibrating:
                    mode = "calibration"
                    zygote.wait_for("opened")
                    to_migrating = zygote.at("migrating") - zygote.at("opening")
                    migration = zygote.at("committed") - zygote.at("migrating")
                elif rng.random() < EARLY:
                    mode = "timed from the go"
                    delay = rng.uniform(0, 1.5 * to_migrating)
                    time.sleep(max(0.0, go_at + delay - time.monotonic()))
                else:
                    mode = "timed from migrating"
                    zygote.wait_for("migrating")
                    time.sleep(rng.uniform(0, reach * migration))
                status = zygote.kill()
                phase = zygote.phase()
                if mode == "timed from migrating":
                    after = phase == "after the commit"
                    reach = min(8.0, max(0.5, reach * math.exp(0.15 * (0.2 - after))))
                where = (f"{label}, kill {iteration} ({mode}, {phase}; the child's lines "
                         f"{zygote.words()}; the store survived {kills_survived} killed "
                         f"migrations before; MIGRATION_CRASH_SEED={SEED})")
                assert os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL, (
                    f"{where}: the child ended with status {status}, not by the kill; "
                    f"stderr:\n{zygote.stderr()}")
                t0 = time.monotonic()
                version = stored_version(url)
                assert version in (1, 2), f"{where}: stored version {version}"
                if phase == "before on_upgrade":
                    assert version == 1, f"{where}: version 2 without a migration started"
                if phase == "after the commit":
                    assert version == 2, f"{where}: version 1 after the migration committed"
                replacement = (copier.submit(stores.fresh, iteration + 1)
                               if version == 2 and iteration < KILLS else None)
                if calibrating:
                    schemas[2] = schema_of(url)
                check_schema(url, schemas[version], where)
                (check_v1 if version == 1 else check_v2)(url, stores.before, where,
                                                         declared=calibrating)
                if replacement is not None:
                    stores.discard(url)
                    url, kills_survived = replacement.result(), 0
                else:
                    kills_survived += 1
                    longest_reuse = max(longest_reuse, kills_survived)
                checking += time.monotonic() - t0
                if not calibrating:
                    landed[phase] += 1
                    versions[version] += 1
            stores.discard(url)
        finally:
            zygote.close()
    during = sum(n for p, n in landed.items() if p.startswith("during"))
    print(f"\n{label}: {KILLS} kills in {time.monotonic() - started:.1f}s "
          f"({checking:.1f}s checking); the first migration took {migration * 1000:.0f} ms, "
          f"{to_migrating * 1000:.0f} ms from the go to on_upgrade; the delays reached "
          f"{reach:.2f} times that at the end; the kills landed "
          f"{dict(sorted(landed.items()))}: {during} during the migration; the stores were "
          f"found at versions {dict(sorted(versions.items()))}; one store survived "
          f"{longest_reuse} killed migrations in a row; MIGRATION_CRASH_SEED={SEED}")
    # The kills must land inside the migration, or this test tests nothing.
    assert during >= max(2, KILLS // 4), (
        f"{label}: only {during} of {KILLS} kills landed during the migration: {dict(landed)}")


def test_sqlite_killed_mid_migration_opens_at_one_version(tmp_path: Path) -> None:
    template = tmp_path / "template.db"
    before = build_v1(f"sqlite:///{template}")  # closed: the WAL is checkpointed and gone
    assert not Path(f"{template}-wal").exists()

    def fresh(n: int) -> str:
        path = tmp_path / f"store-{n}.db"
        shutil.copyfile(template, path)
        return f"sqlite:///{path}"

    def discard(url: str) -> None:
        path = url.removeprefix("sqlite:///")
        for suffix in ("", "-wal", "-shm"):
            Path(path + suffix).unlink(missing_ok=True)

    run(tmp_path, Stores(before, fresh, discard), "sqlite")


def test_postgresql_killed_mid_migration_opens_at_one_version(
        tmp_path: Path, postgres_url: str) -> None:
    import psycopg
    from sqlalchemy.engine import make_url

    base = make_url(postgres_url)
    admin = base.set(drivername="postgresql").render_as_string(hide_password=False)
    template = f"{base.database}_mc_template"[:63]
    names: set[str] = set()

    def url_of(database: str) -> str:
        return base.set(database=database).render_as_string(hide_password=False)

    def sql(statement: str) -> None:
        with psycopg.connect(admin, autocommit=True) as conn:
            conn.execute(statement)

    def fresh(n: int) -> str:
        name = f"{base.database}_mc_{n}"[:63]
        names.add(name)
        sql(f'CREATE DATABASE "{name}" TEMPLATE "{template}"')
        return url_of(name)

    def discard(url: str) -> None:
        name = make_url(url).database
        sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
        names.discard(name or "")

    sql(f'DROP DATABASE IF EXISTS "{template}" WITH (FORCE)')
    sql(f'CREATE DATABASE "{template}"')
    try:
        before = build_v1(url_of(template))  # closed: no session left on the template
        run(tmp_path, Stores(before, fresh, discard), "postgresql")
    finally:
        for name in [*names, template]:
            sql(f'DROP DATABASE IF EXISTS "{name}" WITH (FORCE)')
