"""SQLite: the change poller tells this store's own commits from others', and which tables."""

from __future__ import annotations

import sqlite3
import time
from pathlib import Path
from typing import Any

import attrs

import syncline
from syncline.core.model.schema import EntityRegistry

registry = EntityRegistry()


@registry.entity("sw_a")
@attrs.define
class A:
    id: int
    v: int = 0


@registry.entity("sw_b")
@attrs.define
class B:
    id: int
    v: int = 0


def _counted(watch: Any) -> list[int]:
    runs: list[int] = []
    run = watch.run

    def counting() -> Any:
        runs.append(1)
        return run()

    watch.run = counting
    return runs


def _wait(predicate: Any, timeout: float = 60.0) -> bool:
    # Returns as soon as the predicate holds: the deadline only matters for a failure.
    end = time.monotonic() + timeout
    while time.monotonic() < end:
        if predicate():
            return True
        time.sleep(0.02)
    return predicate()


def test_own_commits_do_not_rerun_watches_of_other_tables(tmp_path: Path) -> None:
    with syncline.open(f"sqlite:///{tmp_path}/w.db", entities=[A, B]) as store:
        watch = store.repository(B).watch_count()
        runs = _counted(watch)
        seen: list[int] = []
        with watch.subscribe(seen.append):
            for i in range(40):
                store.repository(A).insert(A(i))
                time.sleep(0.005)
            time.sleep(0.3)  # several polls of data_version, which our commits moved
            assert len(runs) == 1  # only the subscribe's own run
            store.repository(B).insert(B(1))
            assert _wait(lambda: seen == [0, 1])


def test_other_connections_commits_reach_the_tables_they_wrote(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/w.db"
    with syncline.open(url, entities=[A, B]) as mine, \
            syncline.open(url, entities=[A, B]) as other:
        watch_b = mine.repository(B).watch_count()
        runs_b = _counted(watch_b)
        seen_a: list[int] = []
        seen_b: list[int] = []
        with mine.repository(A).watch_count().subscribe(seen_a.append), \
                watch_b.subscribe(seen_b.append):
            other.repository(A).insert_many([A(1), A(2)])
            assert _wait(lambda: seen_a == [0, 2])
            mine.repository(A).insert(A(3))  # ours and theirs interleaved
            other.repository(A).insert(A(4))
            assert _wait(lambda: seen_a[-1] == 4)
            time.sleep(0.2)
            assert len(runs_b) == 1 and seen_b == [0]
            other.repository(B).insert(B(1))
            assert _wait(lambda: seen_b == [0, 1])


def test_a_writer_that_keeps_no_counts_still_wakes_every_watch(tmp_path: Path) -> None:
    path = tmp_path / "w.db"
    with syncline.open(f"sqlite:///{path}", entities=[A, B]) as store:
        seen: list[int] = []
        with store.repository(A).watch_count().subscribe(seen.append):
            plain = sqlite3.connect(path)
            plain.execute('INSERT INTO "sw_a" (id, v) VALUES (7, 0)')
            plain.commit()
            plain.close()
            assert _wait(lambda: seen == [0, 1])


def test_the_counts_table_is_not_part_of_the_schema(tmp_path: Path) -> None:
    from syncline.core.storage.schema_dump import differences

    with syncline.open(f"sqlite:///{tmp_path}/w.db", entities=[A]) as store:
        store.repository(A).insert(A(1))
        assert "_syncline_table_writes" not in store.backend.table_names()
        assert differences(store) == []


def test_connections_of_ended_threads_are_closed(tmp_path: Path) -> None:
    import threading

    with syncline.open(f"sqlite:///{tmp_path}/t.db", entities=[A]) as store:
        repo = store.repository(A)
        for i in range(20):
            t = threading.Thread(target=repo.insert, args=(A(i),))
            t.start()
            t.join()
        repo.count()
        last = threading.Thread(target=repo.count)  # its connection closes the ended ones'
        last.start()
        last.join()
        assert len(store.backend._conns) <= 3  # type: ignore[attr-defined]
        assert repo.count() == 20


def test_a_commit_right_after_the_first_subscribe_is_seen(tmp_path: Path) -> None:
    # The poller reads its starting point before subscribe returns: a commit by another store
    # at once after it is never mistaken for one already seen.
    url = f"sqlite:///{tmp_path}/first.db"
    for i in range(25):
        with syncline.open(url, entities=[A]) as mine, syncline.open(url, entities=[A]) as other:
            seen: list[int] = []
            with mine.repository(A).watch_count().subscribe(seen.append):
                other.repository(A).insert(A(i))
                assert _wait(lambda i=i, seen=seen: seen[-1:] == [i + 1]), (i, seen)
