"""Case M1: a ``TableMigration`` rebuilding a 1,000,000-row SQLite table, beside the same
rebuild written by hand on plain ``sqlite3``.

The table (``items``: ``id`` int primary key, ``title`` str, ``body`` str, ``category`` str of
digits, an index on ``category``) is created by syncline at schema version 1 in a WAL file,
then filled once per module with plain sqlite3 (``INSERT ... SELECT`` over a recursive CTE,
with the index dropped during the fill and recreated from its own stored SQL, so the schema is
exactly the one syncline created). Every round works on a fresh ``shutil.copy`` of that
template, made in pedantic's ``setup`` (not timed); closing and the checks run in
``teardown`` (not timed).

* ``syncline``: ``syncline.open(url, entities=[ItemV2], schema_version=2, migration=
  MigrationStrategy(on_upgrade=... m.alter_table(TableMigration(ItemV2,
  column_transformer={"category": "CAST(category AS INTEGER)"}))))``: the timed part is the
  whole open (connections, the migration transaction, the version write, the rest of opening
  a store).
* ``baseline``: ``sqlite3.connect`` with syncline's pragmas (WAL, synchronous=NORMAL), then
  ``PRAGMA foreign_keys=OFF; BEGIN IMMEDIATE; CREATE TABLE`` the new table (the DDL syncline
  generates for ``ItemV2``); ``INSERT INTO new SELECT id, title, body, CAST(category AS
  INTEGER) FROM items; DROP TABLE items; ALTER TABLE new RENAME TO items; CREATE INDEX ...;
  PRAGMA foreign_key_check; PRAGMA user_version=2; COMMIT``.
* ``ref-python-transformer``: the syncline side with a Python function instead of the SQL
  expression, ``lambda row: int(row["category"])`` (every row goes through Python); no target.

Both timed parts include the WAL checkpoint SQLite runs in the committing connection after the
large commit (``wal_autocheckpoint`` default), since both leave it on.

``python benchmarks/test_migration_bench.py [rounds]`` runs the syncline and baseline sides
alternating round by round (a second opinion on a busy machine).
"""

from __future__ import annotations

import functools
import itertools
import json
import shutil
import sqlite3
import statistics
import sys
import tempfile
import time
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import Any

import attrs
import bench_common
import pytest

import syncline
from syncline.core.storage.migration import MigrationStrategy, Migrator, TableMigration

N_ROWS = 1_000_000
N_CATEGORIES = 1_000
SQL_ROUNDS = 5  # syncline and baseline: ~3-4 s a round on the 2-core VM
PYTHON_ROUNDS = 3  # the Python transformer: ~15 s a round
SAMPLE_IDS = (1, 4_321, 500_000, N_ROWS)

GROUP_MIGRATE = "M1 sqlite: migrate 1M rows (cast a column)"
# The ratio table takes its targets from bench_common.TARGETS; this module adds its own group.
bench_common.TARGETS.setdefault(GROUP_MIGRATE, 1.2)

SIDES = ["syncline", "baseline", "ref-python-transformer"]
CAST = "CAST(category AS INTEGER)"

# Version 1 and version 2 of the same table, each in a registry of its own.
v1, v2 = syncline.EntityRegistry(), syncline.EntityRegistry()


@v1.entity("items", indexes=["category"])
@attrs.define
class ItemV1:
    id: int
    title: str
    body: str
    category: str


@v2.entity("items", indexes=["category"])
@attrs.define
class ItemV2:
    id: int
    title: str
    body: str
    category: int


# -- the hand-written sqlite3 rebuild --------------------------------------------------------

# The DDL syncline generates for ItemV2 (SQLiteBuilder.ddl), so both tables are identical.
NEW_TABLE = (
    "CREATE TABLE _new_items (id INTEGER NOT NULL, title TEXT NOT NULL, "
    "body TEXT NOT NULL, category INTEGER NOT NULL, PRIMARY KEY (id))"
)
REBUILD = (
    "BEGIN IMMEDIATE",
    NEW_TABLE,
    "INSERT INTO _new_items (id, title, body, category) "
    "SELECT id, title, body, CAST(category AS INTEGER) FROM items",
    "DROP TABLE items",
    "ALTER TABLE _new_items RENAME TO items",
    "CREATE INDEX ix_items_category ON items (category, id)",
)


def rebuild_by_hand(path: Path, steps: Sequence[str | Callable[[sqlite3.Connection], None]]
                    ) -> sqlite3.Connection:
    """What an application would write by hand: the 12-step rebuild in one transaction
    (each step a statement, or a function run on the connection)."""
    conn = sqlite3.connect(str(path), isolation_level=None)
    conn.execute("PRAGMA journal_mode=WAL")
    conn.execute("PRAGMA synchronous=NORMAL")
    conn.execute("PRAGMA foreign_keys=OFF")
    try:
        for step in steps:
            if isinstance(step, str):
                conn.execute(step)
            else:
                step(conn)
        violations = conn.execute("PRAGMA foreign_key_check").fetchall()
        assert not violations, violations
        conn.execute("PRAGMA user_version=2")
        conn.execute("COMMIT")
    except BaseException:
        if conn.in_transaction:
            conn.execute("ROLLBACK")
        raise
    finally:
        conn.execute("PRAGMA foreign_keys=ON")
    return conn


def baseline_migrate(path: Path) -> sqlite3.Connection:
    return rebuild_by_hand(path, REBUILD)


# -- the syncline sides ----------------------------------------------------------------------

def _python_category(row: Mapping[str, Any]) -> int:
    return int(row["category"])


TRANSFORMERS: dict[str, Any] = {"syncline": CAST, "ref-python-transformer": _python_category}


def syncline_migrate(path: Path, transformer: str | Callable[[Mapping[str, Any]], Any]
                     ) -> syncline.Store:
    def upgrade(m: Migrator, old: int, new: int) -> None:
        m.alter_table(TableMigration(ItemV2, column_transformer={"category": transformer}))

    return syncline.open(f"sqlite:///{path}", entities=[ItemV2], schema_version=2,
                         migration=MigrationStrategy(on_upgrade=upgrade))


# -- the version-1 template ------------------------------------------------------------------

FILL = (
    "WITH RECURSIVE n(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM n WHERE i < ?) "
    "INSERT INTO items (id, title, body, category) "
    "SELECT i, 'title ' || i, 'body of item ' || i || ' ' || substr('lorem ipsum dolor sit "
    "amet consectetur adipiscing elit sed do eiusmod tempor incididunt ut labore et dolore', "
    "1 + i % 20, 60), CAST(i % ? AS TEXT) FROM n"
)


def make_template(path: Path, n: int = N_ROWS) -> Path:
    """A version-1 store created by syncline, filled with ``n`` rows by plain sqlite3."""
    syncline.open(f"sqlite:///{path}", entities=[ItemV1], schema_version=1).close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        (index_sql,) = conn.execute(
            "SELECT sql FROM sqlite_master WHERE name = 'ix_items_category'").fetchone()
        conn.execute("PRAGMA cache_size=-200000")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute("DROP INDEX ix_items_category")  # faster: index once, after the fill
        conn.execute(FILL, (n, N_CATEGORIES))
        conn.execute(index_sql)
        conn.execute("COMMIT")
        assert conn.execute("SELECT count(*) FROM items").fetchone()[0] == n
        assert conn.execute("PRAGMA user_version").fetchone()[0] == 1
    finally:
        conn.close()  # checkpoints the WAL and removes it: the .db file is complete
    assert not Path(f"{path}-wal").exists()
    return path


@pytest.fixture(scope="module")
def template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    """The 1M-row version-1 file (built once per module, ~5 s)."""
    return make_template(tmp_path_factory.mktemp("migration-1m") / "template.db")


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


def bench_on_copies(benchmark: Any, template: Path, tmp_path: Path, name: str,
                    migrate: Callable[[Path], Any], check: Callable[[Path], Any],
                    rounds: int) -> list[Any]:
    """Time ``migrate`` on a fresh copy of ``template`` each round; copying, closing what it
    opened and ``check`` are not timed. Returns each round's check."""
    paths = (tmp_path / f"{name}-{i}.db" for i in itertools.count())
    opened: list[Any] = []  # the round's store or connection (teardown only gets the path)
    checked: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        path = next(paths)
        shutil.copy(template, path)
        return (path,), {}

    def teardown(path: Path) -> None:
        opened.pop().close()
        checked.append(check(path))
        _remove(path)

    benchmark.pedantic(lambda path: opened.append(migrate(path)), setup=setup,
                       teardown=teardown, rounds=rounds, iterations=1)
    return checked


def check(path: Path) -> tuple[int, int, list[tuple[Any, str]], list[str]]:
    """(rows, user_version, (category, type) of the sample rows, index names) of ``items``."""
    conn = sqlite3.connect(str(path))
    try:
        count = conn.execute("SELECT count(*) FROM items").fetchone()[0]
        version = conn.execute("PRAGMA user_version").fetchone()[0]
        marks = ", ".join("?" * len(SAMPLE_IDS))
        sample = [(r[0], r[1]) for r in conn.execute(
            f"SELECT category, typeof(category) FROM items WHERE id IN ({marks}) ORDER BY id",
            SAMPLE_IDS)]
        indexes = [r[1] for r in conn.execute("PRAGMA index_list(items)")]
        return count, version, sample, indexes
    finally:
        conn.close()


def expected(n: int = N_ROWS) -> tuple[int, int, list[tuple[Any, str]], list[str]]:
    ids = [i for i in SAMPLE_IDS if i <= n]
    return n, 2, [(i % N_CATEGORIES, "integer") for i in ids], ["ix_items_category"]


def _schema(path: Path) -> tuple[Any, ...]:
    conn = sqlite3.connect(str(path))
    try:
        return (conn.execute("PRAGMA table_xinfo(items)").fetchall(),
                conn.execute("PRAGMA index_list(items)").fetchall(),
                conn.execute("PRAGMA index_xinfo(ix_items_category)").fetchall(),
                conn.execute("SELECT * FROM items ORDER BY id").fetchall())
    finally:
        conn.close()


# -- tests -----------------------------------------------------------------------------------

def test_sides_build_the_same_table(tmp_path: Path) -> None:
    """Sanity check (not timed), on 2,000 rows: every side leaves the same columns, index and
    rows, at version 2."""
    small = make_template(tmp_path / "small.db", n=2_000)
    results = {}
    for side in SIDES:
        path = tmp_path / f"{side}.db"
        shutil.copy(small, path)
        if side == "baseline":
            baseline_migrate(path).close()
        else:
            store = syncline_migrate(path, TRANSFORMERS[side])
            item = store.repository(ItemV2).get(1_321)
            store.close()
            assert item is not None and (item.title, item.category) == ("title 1321", 321)
        assert check(path) == expected(2_000)
        results[side] = _schema(path)
    assert results["syncline"] == results["baseline"] == results["ref-python-transformer"]


@pytest.mark.parametrize("side", SIDES)
def test_migrate_1m_rows(benchmark: Any, side: str, tmp_path: Path, template: Path) -> None:
    """A fresh copy of the 1M-row version-1 file each round (copying not timed); timed: the
    open at version 2 that migrates it (syncline) or the hand-written rebuild (baseline)."""
    benchmark.group = GROUP_MIGRATE
    if side == "baseline":
        migrate: Callable[[Path], Any] = baseline_migrate
    else:
        migrate = functools.partial(syncline_migrate, transformer=TRANSFORMERS[side])
    rounds = PYTHON_ROUNDS if side == "ref-python-transformer" else SQL_ROUNDS
    checked = bench_on_copies(benchmark, template, tmp_path, side, migrate, check, rounds)
    assert checked == [expected()] * rounds
    stats = benchmark.stats.stats
    benchmark.extra_info["rows_per_s_mean"] = round(N_ROWS / stats.mean)
    benchmark.extra_info["rows_per_s_best"] = round(N_ROWS / stats.min)


# -- M2: a Python transformer; M3: alter_column(using=) (issue 19, bug 6) ----------------------

GROUP_PYTHON = "M2 sqlite: migrate 1M rows (Python transformer)"
GROUP_USING = "M3 sqlite: migrate 1M rows (alter_column using=)"
bench_common.TARGETS.setdefault(GROUP_PYTHON, 2.0)
bench_common.TARGETS.setdefault(GROUP_USING, 2.0)


def baseline_python(path: Path) -> sqlite3.Connection:
    """The rebuild by hand with the same Python function: rows read as ``sqlite3.Row`` (so
    ``row["category"]`` works as in the transformer), computed, inserted by executemany."""

    def copy(conn: sqlite3.Connection) -> None:
        rows = conn.execute("SELECT id, title, body, category FROM items")
        rows.row_factory = sqlite3.Row
        conn.executemany("INSERT INTO _new_items (id, title, body, category) VALUES (?, ?, ?, ?)",
                         ((r[0], r[1], r[2], _python_category(r)) for r in rows))

    return rebuild_by_hand(path, [*REBUILD[:2], copy, *REBUILD[3:]])


def syncline_alter_using(path: Path) -> syncline.Store:
    return syncline.open(f"sqlite:///{path}", entities=[ItemV2], schema_version=2,
                         migration=MigrationStrategy(on_upgrade=lambda m, o, n: m.alter_column(
                             ItemV2, "category", using=CAST)))


#: group -> side -> the timed migration of a fresh copy of the 1M-row template
CASES: dict[str, dict[str, Callable[[Path], Any]]] = {
    GROUP_PYTHON: {"syncline": lambda p: syncline_migrate(p, _python_category),
                   "baseline": baseline_python},
    GROUP_USING: {"syncline": syncline_alter_using, "baseline": baseline_migrate},
}


def test_m2_m3_sides_build_the_same_table(tmp_path: Path) -> None:
    """Sanity check (not timed), on 2,000 rows."""
    small = make_template(tmp_path / "small.db", n=2_000)
    results = []
    for group, sides in CASES.items():
        for side, migrate in sides.items():
            path = tmp_path / f"{group[:2]}-{side}.db"
            shutil.copy(small, path)
            migrate(path).close()
            assert check(path) == expected(2_000), (group, side)
            results.append(_schema(path))
    assert all(r == results[0] for r in results)


@pytest.mark.parametrize(("group", "side"), [(g, s) for g, sides in CASES.items()
                                             for s in sides])
def test_migrate_1m_rows_python_and_using(benchmark: Any, group: str, side: str,
                                          tmp_path: Path, template: Path) -> None:
    """As M1: a fresh copy each round (not timed); timed: the migrating open or the rebuild."""
    benchmark.group = group
    checked = bench_on_copies(benchmark, template, tmp_path, side, CASES[group][side], check,
                              PYTHON_ROUNDS)
    assert checked == [expected()] * PYTHON_ROUNDS


# -- M4: a store with 1M queued changes (issue 19, bug 5) -----------------------------------

GROUP_QUEUE = "M4 sqlite: migrate 1M rows with 1M queued changes"
bench_common.TARGETS.setdefault(GROUP_QUEUE, 3.0)
q1, q2 = syncline.EntityRegistry(), syncline.EntityRegistry()


@q1.entity("notes", syncs=True)
@attrs.define
class NoteV1:
    id: str
    text: str
    n: int


@q2.entity("notes", syncs=True)
@attrs.define
class NoteV2:
    id: str
    body: str
    n: int
    stars: int = 0


NOTES_NEW = ('CREATE TABLE _new_notes (id TEXT NOT NULL, body TEXT NOT NULL, n INTEGER NOT NULL, '
             'stars INTEGER DEFAULT 0 NOT NULL, PRIMARY KEY (id))')
NOTES_REBUILD = (
    "BEGIN IMMEDIATE",
    NOTES_NEW,
    "INSERT INTO _new_notes (id, body, n) SELECT id, text, n FROM notes",
    "DROP TABLE notes",
    "ALTER TABLE _new_notes RENAME TO notes",
)
# Notes of M1's items' size: an ~80-character text.
FILL_NOTES = (
    "WITH RECURSIVE k(i) AS (SELECT 1 UNION ALL SELECT i + 1 FROM k WHERE i < ?) "
    "INSERT INTO notes (id, text, n) SELECT printf('n%08d', i), 'text of note ' || i || ' ' || "
    "substr('lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
    "incididunt ut labore et dolore', 1 + i % 20, 60), i FROM k")
# One queued create per note, as syncline writes them (random mutation ids, like UUIDs).
FILL_QUEUE = (
    "INSERT INTO _syncline_outbox (id, entity, action, created_at, seq, record_id, payload, "
    "priority, retry_count, state, coalesce) SELECT lower(hex(randomblob(16))), 'notes', "
    "'create', '2026-01-01T00:00:00.000000+00:00', rowid, id, "
    "json_object('id', id, 'n', n, 'text', text), 0, 0, 'pending', 1 FROM notes")


def make_queue_template(path: Path, n: int = N_ROWS) -> Path:
    """A version-1 store with ``n`` notes, each with a queued create (filled by sqlite3)."""
    syncline.open(f"sqlite:///{path}", entities=[NoteV1], schema_version=1).close()
    conn = sqlite3.connect(str(path), isolation_level=None)
    try:
        conn.execute("PRAGMA cache_size=-200000")
        conn.execute("BEGIN IMMEDIATE")
        conn.execute(FILL_NOTES, (n,))
        conn.execute(FILL_QUEUE)
        conn.execute("COMMIT")
    finally:
        conn.close()
    return path


def baseline_rebuild_notes(path: Path) -> sqlite3.Connection:
    """The plain rebuild of ``notes`` by hand; the queue is left as it is."""
    return rebuild_by_hand(path, NOTES_REBUILD)


def syncline_migrate_notes(path: Path) -> syncline.Store:
    return syncline.open(f"sqlite:///{path}", entities=[NoteV2], schema_version=2,
                         migration=MigrationStrategy(on_upgrade=lambda m, o, n: m.alter_table(
                             TableMigration(NoteV2, renamed={"body": "text"},
                                            new_columns=["stars"]))))


def check_queue(path: Path, n: int) -> tuple[int, list[Any]]:
    """(notes, the payloads of the first and last note's queued creates, parsed)."""
    conn = sqlite3.connect(str(path))
    try:
        count = conn.execute("SELECT count(*) FROM notes").fetchone()[0]
        payloads = [json.loads(r[0]) for r in conn.execute(
            "SELECT payload FROM _syncline_outbox WHERE record_id IN (?, ?) ORDER BY record_id",
            ("n00000001", f"n{n:08d}"))]
        return count, payloads
    finally:
        conn.close()


def expected_queue(n: int, rewritten: bool) -> tuple[int, list[Any]]:
    def payload(i: int) -> dict[str, Any]:
        lorem = ("lorem ipsum dolor sit amet consectetur adipiscing elit sed do eiusmod tempor "
                 "incididunt ut labore et dolore")
        text = f"text of note {i} {lorem[i % 20:i % 20 + 60]}"
        return ({"body": text, "id": f"n{i:08d}", "n": i, "stars": 0} if rewritten
                else {"id": f"n{i:08d}", "n": i, "text": text})
    return n, [payload(1), payload(n)]


QUEUE_SIDES = {"syncline": syncline_migrate_notes, "baseline": baseline_rebuild_notes}


@pytest.fixture(scope="module")
def queue_template(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return make_queue_template(tmp_path_factory.mktemp("migration-queue") / "template.db")


@pytest.mark.parametrize("side", list(QUEUE_SIDES))
def test_migrate_1m_rows_with_1m_queued_changes(benchmark: Any, side: str, tmp_path: Path,
                                                queue_template: Path) -> None:
    """Timed: syncline's migrating open, queue rewrite included, beside the plain rebuild
    of the same table by hand (which leaves the queue alone)."""
    benchmark.group = GROUP_QUEUE
    checked = bench_on_copies(benchmark, queue_template, tmp_path, side, QUEUE_SIDES[side],
                              lambda path: check_queue(path, N_ROWS), PYTHON_ROUNDS)
    assert checked == [expected_queue(N_ROWS, side == "syncline")] * PYTHON_ROUNDS


@pytest.mark.parametrize("kind", ["sql", "python"])
def test_queue_rewrite_memory_does_not_grow_with_the_queue(tmp_path: Path, kind: str,
                                                           monkeypatch: pytest.MonkeyPatch
                                                           ) -> None:
    """Not timed: the Python heap's peak while migrating 20,000 and 80,000 queued changes is
    the same (within 1.5x): in the database (sql) or in batches (python, the path for kinds
    the database does not write as the wire form)."""
    import tracemalloc

    from syncline.backends.sql_migration import SQLiteMigrationOps

    if kind == "python":
        monkeypatch.setattr(SQLiteMigrationOps, "refresh_payloads",
                            lambda self, *args: False)
    peaks = []
    for n in (20_000, 80_000):
        path = make_queue_template(tmp_path / f"queue-{kind}-{n}.db", n)
        tracemalloc.start()
        try:
            syncline_migrate_notes(path).close()
            peaks.append(tracemalloc.get_traced_memory()[1])
        finally:
            tracemalloc.stop()
        assert check_queue(path, n) == expected_queue(n, True)
    assert peaks[1] < 1.5 * peaks[0], peaks


# -- interleaved: ``python benchmarks/test_migration_bench.py [rounds]`` -----------------------

def main(rounds: int = 5) -> None:
    """syncline (SQL transformer) and the baseline alternating round by round."""
    with tempfile.TemporaryDirectory(prefix="syncline-migration-bench-") as folder:
        tpl = make_template(Path(folder) / "template.db")
        times: dict[str, list[float]] = {"syncline": [], "baseline": []}
        for i in range(rounds):
            for side in (("syncline", "baseline") if i % 2 == 0 else ("baseline", "syncline")):
                path = Path(folder) / f"{side}.db"
                shutil.copy(tpl, path)
                start = time.perf_counter()
                opened = (baseline_migrate(path) if side == "baseline"
                          else syncline_migrate(path, CAST))
                times[side].append(time.perf_counter() - start)
                opened.close()
                assert check(path) == expected()
                _remove(path)
        for side, values in times.items():
            print(f"{side:9} min {min(values):.3f} s  median {statistics.median(values):.3f} s  "
                  f"all {' '.join(f'{v:.3f}' for v in values)}")
        s, b = times["syncline"], times["baseline"]
        print(f"ratio: min {min(s) / min(b):.2f}x  median "
              f"{statistics.median(s) / statistics.median(b):.2f}x  (target <= 1.2x)")


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 5)
