"""Pull never skips a change, even with many concurrent writers on PostgreSQL, where sequence
numbers could otherwise commit out of order."""

from __future__ import annotations

import itertools
import threading
from collections.abc import Iterator

import attrs
import pytest

import syncline
from syncline.core.store import Store
from syncline.core.transport import Mutation
from syncline.server.engine import SyncServer
from syncline.server.store import open_server_store
from syncline.server.tables import ChangeEntry

registry = syncline.EntityRegistry()
_n = itertools.count()


@registry.entity("log_items", syncs=True)
@attrs.define
class Item:
    id: str
    n: int


@pytest.fixture
def store(syncline_postgres_url: str) -> Iterator[Store]:
    url = f"{syncline_postgres_url}?schema=changelog{next(_n)}"
    with open_server_store(url, [Item],
                           options={"isolation": "read committed", "pool_size": 12}) as s:
        yield s


def test_concurrent_writers_and_readers_never_skip_a_change(store: Store) -> None:
    server = SyncServer(store)
    writers, per_writer, errors = 6, 30, []
    done = threading.Event()
    seen: list[list[int]] = [[] for _ in range(3)]

    def write(w: int) -> None:
        try:
            for i in range(per_writer):
                rid = f"w{w}-{i}"
                result = server.push([Mutation(f"m-{rid}", "log_items", "create", rid,
                                               {"id": rid, "n": i})]).results[0]
                assert result.status == "applied", result
        except BaseException as exc:
            errors.append(exc)

    def read(r: int) -> None:
        cursor = None
        try:
            while True:
                finished = done.is_set()
                page = server.pull(cursor, 7)
                seen[r] += [c.version for c in page.changes]
                cursor = page.cursor
                if finished and not page.more:
                    return
        except BaseException as exc:
            errors.append(exc)

    readers = [threading.Thread(target=read, args=(r,)) for r in range(3)]
    threads = [threading.Thread(target=write, args=(w,)) for w in range(writers)]
    for t in readers + threads:
        t.start()
    for t in threads:
        t.join()
    done.set()
    for t in readers:
        t.join()
    assert [repr(e) for e in errors] == []
    everything = sorted(c.seq for c in store.repository(ChangeEntry).all())
    assert len(everything) == writers * per_writer
    for got in seen:
        assert got == everything  # each change once, in order, none skipped
