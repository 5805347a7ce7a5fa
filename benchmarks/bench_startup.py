"""Start-up: whole processes, syncline beside its plain baseline, rounds interleaved (issue #20).

Each case runs a fresh ``python`` per round, alternating the syncline side and the baseline
side, and reports the median and minimum wall time and the median CPU time (user + system) of
each, with the ratio of the medians. The baseline of opening a store is what an application on
plain ``sqlite3`` + ``attrs`` does: import them, connect, read one row, build the object.

    python benchmarks/bench_startup.py [rounds]      (default 11)

The children import the ``syncline`` that ``PYTHONPATH`` (or the installation) gives: with
``PYTHONPATH=/path/to/other/checkout`` the same script times another version.

The children write bytecode to a temporary folder (``PYTHONPYCACHEPREFIX``) and each case runs
once before the timed rounds, as an installed application has its ``.pyc`` files; data files go
to a temporary folder too. On a shared machine the wall times vary with the load: compare the
two sides of one run (and the CPU times), not runs made at different moments.
"""

from __future__ import annotations

import os
import resource
import statistics
import subprocess
import sys
import tempfile
import time
from pathlib import Path

#: wall-time targets of the syncline side (median), in milliseconds
TARGETS = {"open an SQLite store + read one row": 150.0, "syncline --help": 250.0,
           "syncline plugins": 250.0}

APP = """
import sys, attrs, syncline

@syncline.entity("notes", indexes=["text"], syncs=True)
@attrs.define
class Note:
    id: str
    text: str
"""
#: the baselines' Note: the same class without syncline
PLAIN_APP = """
import sys, sqlite3, attrs

@attrs.define
class Note:
    id: str
    text: str
"""
OPEN = APP + """
store = syncline.open("sqlite:///" + sys.argv[1], entities=[Note])
assert store.repository(Note).get("n1") is not None
store.close()
"""
OPEN_BASELINE = PLAIN_APP + """
conn = sqlite3.connect(sys.argv[1])
row = conn.execute('SELECT "id", "text" FROM "notes" WHERE "id" = ?', ("n1",)).fetchone()
assert Note(*row) is not None
conn.close()
"""
CREATE = APP + """
with syncline.open("sqlite:///" + sys.argv[1], entities=[Note]) as store:
    store.repository(Note).insert(Note(id="n1", text="hello"))
"""
CREATE_BASELINE = PLAIN_APP + """
conn = sqlite3.connect(sys.argv[1])
conn.execute('CREATE TABLE IF NOT EXISTS "notes" ("id" TEXT NOT NULL PRIMARY KEY, '
             '"text" TEXT NOT NULL)')
conn.execute('CREATE INDEX IF NOT EXISTS "ix_notes_text" ON "notes" ("text", "id")')
note = Note(id="n1", text="hello")
with conn:
    conn.execute('INSERT INTO "notes" VALUES (?, ?)', (note.id, note.text))
conn.close()
"""
CLI = "import sys\nfrom syncline.cli import main\nmain(sys.argv[1:], prog_name='syncline')\n"


def run(argv: list[str], env: dict[str, str], cwd: Path) -> tuple[float, float]:
    """Wall and CPU seconds of one process (run in the data folder: ``python -c`` puts the
    current folder first on sys.path, and the checkout's would shadow PYTHONPATH)."""
    before = resource.getrusage(resource.RUSAGE_CHILDREN)
    start = time.perf_counter()
    subprocess.run(argv, env=env, check=True, stdout=subprocess.DEVNULL, cwd=cwd)
    wall = time.perf_counter() - start
    after = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (after.ru_utime - before.ru_utime) + (after.ru_stime - before.ru_stime)
    return wall, cpu


def compare(name: str, ours: list[str], baseline: list[str], rounds: int,
            env: dict[str, str], cwd: Path, fresh: Path | None = None) -> None:
    """Time ``ours`` and ``baseline`` in alternation; ``fresh``: a file removed before each."""
    sides: dict[str, list[tuple[float, float]]] = {"s": [], "b": []}
    for i in range(rounds + 1):  # round 0 warms up (bytecode, file cache)
        for key, argv in (("s", ours), ("b", baseline)):
            if fresh is not None:
                for suffix in ("", "-wal", "-shm"):
                    Path(f"{fresh}{suffix}").unlink(missing_ok=True)
            took = run(argv, env, cwd)
            if i:
                sides[key].append(took)
    s_wall = statistics.median(w for w, _ in sides["s"])
    b_wall = statistics.median(w for w, _ in sides["b"])
    s_cpu = statistics.median(c for _, c in sides["s"])
    b_cpu = statistics.median(c for _, c in sides["b"])
    target = TARGETS.get(name)
    status = "" if target is None else (
        f"target {target:.0f} ms: {'met' if s_wall * 1e3 <= target else 'NOT MET'}")
    print(f"{name:40s} wall median {s_wall * 1e3:6.0f} / {b_wall * 1e3:4.0f} ms "
          f"(min {min(w for w, _ in sides['s']) * 1e3:4.0f} / "
          f"{min(w for w, _ in sides['b']) * 1e3:4.0f})  ratio {s_wall / b_wall:4.2f}x  "
          f"cpu median {s_cpu * 1e3:5.0f} / {b_cpu * 1e3:4.0f} ms  {status}", flush=True)


def main(rounds: int = 11) -> None:
    py = sys.executable
    with tempfile.TemporaryDirectory() as tmp:
        folder = Path(tmp)
        env = {k: v for k, v in os.environ.items() if k != "PYTHONDONTWRITEBYTECODE"}
        env["PYTHONPYCACHEPREFIX"] = str(folder / "pycache")
        store = folder / "app.db"
        run([py, "-c", CREATE, str(store)], env, folder)
        plain = folder / "plain.db"
        run([py, "-c", CREATE_BASELINE, str(plain)], env, folder)
        print(f"{rounds} interleaved rounds; syncline / baseline; load average "
              f"{os.getloadavg()[0]:.1f} on {os.cpu_count()} cores")
        compare("import syncline", [py, "-c", "import syncline"],
                [py, "-c", "import sqlite3"], rounds, env, folder)
        compare("open an SQLite store + read one row", [py, "-c", OPEN, str(store)],
                [py, "-c", OPEN_BASELINE, str(plain)], rounds, env, folder)
        created = folder / "new.db"
        compare("create an SQLite store + insert one row", [py, "-c", CREATE, str(created)],
                [py, "-c", CREATE_BASELINE, str(created)], rounds, env, folder, fresh=created)
        compare("syncline --help", [py, "-c", CLI, "--help"],
                [py, "-c", "import sqlite3"], rounds, env, folder)
        compare("syncline plugins", [py, "-c", CLI, "plugins"],
                [py, "-c", "import sqlite3"], rounds, env, folder)


if __name__ == "__main__":
    main(int(sys.argv[1]) if len(sys.argv) > 1 else 11)
