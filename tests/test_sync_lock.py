"""One syncing process per store, on every backend that several processes can share
(issue 13, finding 11: with PostgreSQL, concurrent syncers lost acknowledged increments)."""

from __future__ import annotations

import itertools
import os
import signal
import subprocess
import sys
import threading
from collections.abc import Iterator
from pathlib import Path

import pytest

import syncline
from syncline.core.model.errors import SynclineError
from syncline.core.store import Store
from syncline.core.sync.engine import Backoff
from syncline.core.sync.lock import sync_lock
from syncline.plugins.mock import MockServer
from syncline.testing.trust_suite import ENTITIES, Post

_names = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def shared_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A client store URL that several Store objects (and processes) share."""
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/client.db"
    postgres_url: str = request.getfixturevalue("postgres_url")
    return f"{postgres_url}?schema=lock_{os.getpid()}_{next(_names)}"


@pytest.fixture
def server() -> Iterator[MockServer]:
    with MockServer(f"lock-{next(_names)}", entities=ENTITIES) as server:
        yield server


def _open(url: str, server: MockServer) -> Store:
    return syncline.open(url, entities=ENTITIES, transport=f"mock://{server.name}",
                         sync_options={"backoff": Backoff(base=0.01, cap=0.05)})


def test_a_second_store_on_the_same_storage_cannot_sync_at_the_same_time(
        shared_url: str, server: MockServer) -> None:
    with _open(shared_url, server) as a, _open(shared_url, server) as b:
        busy = r"another (thread|process) is syncing"
        with sync_lock(a), pytest.raises(SynclineError, match=busy), sync_lock(b, blocking=False):
            pass
        with sync_lock(b, blocking=False):  # released with the block
            pass


def test_the_lock_of_a_killed_process_is_released(shared_url: str, server: MockServer) -> None:
    code = (
        "import sys, syncline\n"
        "from syncline.core.sync.lock import sync_lock\n"
        "from syncline.testing.trust_suite import ENTITIES\n"
        f"store = syncline.open({shared_url!r}, entities=ENTITIES)\n"
        "lock = sync_lock(store).__enter__()\n"
        "print('held', flush=True)\n"
        "sys.stdin.read()\n"
    )
    with _open(shared_url, server) as store:  # creates the schema before the child opens it
        child = subprocess.Popen([sys.executable, "-c", code], stdin=subprocess.PIPE,
                                 stdout=subprocess.PIPE, text=True)
        try:
            assert child.stdout is not None and child.stdout.readline().strip() == "held"
            with pytest.raises(SynclineError, match="another process is syncing"), \
                    sync_lock(store, blocking=False):
                pass
            child.send_signal(signal.SIGKILL)
            child.wait(timeout=60)
            with sync_lock(store):  # blocking: waits until the server ends the dead session
                pass
        finally:
            child.kill()
            child.wait(timeout=60)


def test_concurrent_syncers_of_one_store_lose_no_increment(
        shared_url: str, server: MockServer) -> None:
    stores = [_open(shared_url, server) for _ in range(3)]
    try:
        stores[0].repository(Post).insert(Post("counter", "x"))
        stores[0].sync()
        done = threading.Event()
        errors: list[BaseException] = []

        def bump(store: Store, n: int) -> None:
            posts = store.repository(Post)
            try:
                for i in range(n):
                    store.run_transaction(lambda: posts.update(
                        "counter", likes=posts.get("counter").likes + 1))  # type: ignore[union-attr]
                    if i % 5 == 0:
                        store.sync()
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=bump, args=(s, 40)) for s in stores]
        for t in threads:
            t.start()
        for t in threads:
            t.join(timeout=300)
        done.set()
        assert errors == []
        for _ in range(20):
            report = stores[0].sync()
            if stores[0].outbox.pending_count() == 0 and report.ok:
                break
        assert report.conflicts == []
        assert server.server.store.repository(Post).get("counter").likes == 120  # type: ignore[union-attr]
        assert stores[0].outbox.dead_letters() == []
    finally:
        for s in stores:
            s.close()


@pytest.fixture
def syncline_entities() -> list[type]:
    return ENTITIES


_DEVICE = """
import sys, syncline
from syncline.core.sync.engine import Backoff
from syncline.testing.trust_suite import ENTITIES, Post
url, server, n = sys.argv[1], sys.argv[2], int(sys.argv[3])
store = syncline.open(url, entities=ENTITIES, transport=server,
                      transport_options={"token": "test-token"},
                      sync_options={"backoff": Backoff(base=0.01, cap=0.05)})
posts = store.repository(Post)
for i in range(n):
    store.run_transaction(lambda: posts.update("counter", likes=posts.get("counter").likes + 1))
    if i % 3 == 0:
        store.sync()
store.close()
"""


@pytest.mark.slow
def test_processes_syncing_one_postgres_store_lose_no_increment(
        postgres_url: str, syncline_live_server: object) -> None:
    url = f"{postgres_url}?schema=incr_{os.getpid()}_{next(_names)}"
    transport = syncline_live_server.url  # type: ignore[attr-defined]
    options = {"token": "test-token"}
    with syncline.open(url, entities=ENTITIES, transport=transport,
                       transport_options=options) as store:
        store.repository(Post).insert(Post("counter", "x"))
        assert store.sync().ok
        devices = [subprocess.Popen([sys.executable, "-c", _DEVICE, url, transport, "30"])
                   for _ in range(3)]
        try:
            assert [d.wait(timeout=300) for d in devices] == [0, 0, 0]
        finally:
            for d in devices:
                d.kill()
        for _ in range(20):
            report = store.sync()
            if store.outbox.pending_count() == 0 and report.ok:
                break
        assert report.ok and report.conflicts == []
    with syncline.open("memory://", entities=ENTITIES, transport=transport,
                       transport_options=options) as fresh:
        assert fresh.sync().ok
        assert fresh.repository(Post).get("counter").likes == 90  # type: ignore[union-attr]


def test_the_process_lock_table_does_not_grow_with_closed_stores(
        server: MockServer, tmp_path: Path) -> None:
    """Issue 14: it grew by one entry per syncing memory:// or sqlite:// store (1 -> 149
    after 300 open/close cycles) and never shrank."""
    import gc

    from syncline.core.sync import lock

    gc.collect()
    before = len(lock._process_locks)
    for i in range(60):
        url = "memory://" if i % 2 else f"sqlite:///{tmp_path}/s{i}.db"
        with _open(url, server) as store:
            store.sync()
    gc.collect()
    assert len(lock._process_locks) <= before + 1
