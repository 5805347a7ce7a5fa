"""Cases S1 and S2: sync throughput through the mock transport, beside the raw write rate,
at 1k and 10k (and 100k with ``SYNCLINE_BENCH_100K=1``): the curve shows the cost is linear.

S1. Push N queued creates from a client (SQLite file / ``memory://``) to a ``MockServer`` on
   ``memory://``. Setup (not timed): a fresh server and client, N ``insert_many`` queued.
   Timed: ``client.sync_engine.push()`` (it loops, ``batch_size`` = 100 mutations per call to
   the transport, until nothing is due). The server's work is inside the timing.
S2. Pull N changes into a fresh client (SQLite file / ``memory://``), ``page_size`` 1000
   (the server's maximum), from a ``MockServer`` on a SQLite file prefilled once per module
   with N records. Timed: ``client.sync_engine.pull()`` (it loops until the server says there
   is no more).

At 1k and 10k the file takes about 2 minutes on the shared 2-core VM; the 100k cases add
about 5.

Baseline of every case: the raw write rate of the same client backend: ``upsert_many`` of the
same entities into ``PlainPost``, a non-syncing twin of ``SyncPost``, on a fresh store of the
same kind (a fresh SQLite file / ``memory://``). No targets: the ratio is reported.

The posts are those of ``bench_common.make_posts`` (the seed's post shape), copied into the
syncing ``SyncPost`` and the plain ``PlainPost``, both declared in this file's own registry.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import Any

import attrs
import bench_server
import pytest
from bench_common import Post

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.sync.outbox import SyncStatus
from syncline.plugins.mock import MockServer
from syncline.server.engine import ANONYMOUS

SIDES = ["syncline", "baseline"]
BACKENDS = ["sqlite", "memory"]
SIZES = [1_000, 10_000] + ([100_000] if os.environ.get("SYNCLINE_BENCH_100K") else [])
PAGE_SIZE = 1_000  # SyncServer's max_page


def _label(n: int) -> str:
    return f"{n // 1000}k"


def group_push(backend: str, n: int) -> str:
    return f"S1{'a' if backend == 'sqlite' else 'b'} {backend}: push {_label(n)} queued mutations"


def group_pull(backend: str, n: int) -> str:
    return f"S2{'a' if backend == 'sqlite' else 'b'} {backend}: pull {_label(n)} changes"


def rounds(n: int) -> int:
    return 5 if n <= 1_000 else 2 if n <= 10_000 else 1

registry = syncline.EntityRegistry()


@registry.entity("sync_posts", syncs=True, indexes=[("user_id", "created_at")])
@attrs.define
class SyncPost:
    """The seed's post, syncing."""

    id: str
    user_id: str
    content: str
    created_at: dt.datetime
    likes_count: int = 0
    image_urls: list[str] | None = None


@registry.entity("plain_posts", indexes=[("user_id", "created_at")])
@attrs.define
class PlainPost:
    """The same post, not syncing: the baseline's table."""

    id: str
    user_id: str
    content: str
    created_at: dt.datetime
    likes_count: int = 0
    image_urls: list[str] | None = None


_names = itertools.count()


def _as(cls: type, p: Post) -> Any:
    return cls(p.id, p.user_id, p.content, p.created_at, p.likes_count, p.image_urls)


@pytest.fixture(scope="module")
def sync_posts(posts: list[Post]) -> list[SyncPost]:
    return [_as(SyncPost, p) for p in posts]


@pytest.fixture(scope="module")
def plain_posts(posts: list[Post]) -> list[PlainPost]:
    return [_as(PlainPost, p) for p in posts]


def _remove(path: Path) -> None:
    for suffix in ("", "-wal", "-shm", ".sync-lock"):
        Path(f"{path}{suffix}").unlink(missing_ok=True)


class _Files:
    """Fresh client URLs: a new SQLite file under ``folder`` each time, or ``memory://``."""

    def __init__(self, folder: Path, backend: str, prefix: str) -> None:
        self.folder, self.backend, self.prefix = folder, backend, prefix
        self._n = itertools.count()

    def next(self) -> tuple[str, Path | None]:
        if self.backend == "memory":
            return "memory://", None
        path = self.folder / f"{self.prefix}-{next(self._n)}.db"
        return f"sqlite:///{path}", path


def prefill(server: MockServer, objs: Sequence[SyncPost]) -> None:
    """Write ``objs`` on the server as ``SyncServer.write`` would, in one transaction."""
    bench_server.prefill(server.store, server.server, SyncPost, objs, ANONYMOUS)


def _rate(benchmark: Any, n: int, unit: str) -> None:
    stats = benchmark.stats.stats
    benchmark.extra_info[f"{unit}_per_s_mean"] = round(n / stats.mean)
    benchmark.extra_info[f"{unit}_per_s_best"] = round(n / stats.min)


def _on_fresh_stores(benchmark: Any, n_rounds: int,
                     open_round: Callable[[], tuple[Any, ...]], run: Callable[..., Any],
                     check: Callable[..., Any]) -> tuple[Any, list[Any]]:
    """Time ``run(*opened)`` on what ``open_round`` opens each round: stores, then the SQLite
    file or None (opening not timed). Untimed after each round: ``check(*opened)``, then the
    stores are closed and the file removed. Returns the last run's result and the checks."""
    checked: list[Any] = []

    def setup() -> tuple[tuple[Any, ...], dict[str, Any]]:
        return open_round(), {}

    def teardown(*opened: Any) -> None:
        checked.append(check(*opened))
        *stores, path = opened
        for store in stores:
            store.close()
        if path is not None:
            _remove(path)

    result = benchmark.pedantic(run, setup=setup, teardown=teardown, rounds=n_rounds,
                                iterations=1)
    return result, checked


def _baseline(benchmark: Any, backend: str, tmp_path: Path, objs: list[PlainPost],
              unit: str) -> None:
    """The raw write rate: ``upsert_many(objs)`` on a fresh non-syncing store (opening not
    timed)."""
    files = _Files(tmp_path, backend, "plain")

    def open_round() -> tuple[Any, ...]:
        url, path = files.next()
        return syncline.open(url, entities=[PlainPost]), path

    n_rounds = rounds(len(objs))
    _, counts = _on_fresh_stores(
        benchmark, n_rounds, open_round,
        lambda store, _path: store.repository(PlainPost).upsert_many(objs),
        lambda store, _path: store.repository(PlainPost).count())
    assert counts == [len(objs)] * n_rounds
    _rate(benchmark, len(objs), unit)


# -- sanity (not timed) ----------------------------------------------------------------------

def test_prefill_matches_server_write(sync_posts: list[SyncPost]) -> None:
    """``prefill`` leaves the server as ``SyncServer.write`` does, and a client pulls it."""
    clock = FakeClock(dt.datetime(2025, 1, 1, tzinfo=dt.UTC))
    objs = sync_posts[:5]
    with MockServer(f"bench-check-{next(_names)}", entities=[SyncPost], clock=clock) as by_write, \
            MockServer(f"bench-check-{next(_names)}", entities=[SyncPost],
                       clock=clock) as by_prefill:
        for o in objs:
            by_write.server.write(o)
        prefill(by_prefill, objs)
        for name in ("changes", "records"):
            assert (getattr(by_prefill.server, name).all()
                    == getattr(by_write.server, name).all())
        assert by_prefill.server.meta.get("seq") == by_write.server.meta.get("seq")
        assert by_prefill.store.repository(SyncPost).all() == objs
        client = syncline.open("memory://", entities=[SyncPost],
                               transport=f"mock://{by_prefill.name}")
        try:
            assert client.sync_engine.pull().pulled == len(objs)
            notes = client.repository(SyncPost)
            assert notes.all() == objs
            state = notes.sync_state(objs[0].id)
            assert state is not None and state.status is SyncStatus.SYNCED
            assert state.server_version == 1
        finally:
            client.close()


# -- S1. push ---------------------------------------------------------------------------------

@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZES, ids=_label)
def test_push(benchmark: Any, backend: str, side: str, n: int, tmp_path: Path,
              sync_posts: list[SyncPost], plain_posts: list[PlainPost]) -> None:
    """N queued creates pushed to a fresh memory:// MockServer (setup not timed)."""
    benchmark.group = group_push(backend, n)
    if side == "baseline":
        _baseline(benchmark, backend, tmp_path, plain_posts[:n], "mutations")
        return
    objs = sync_posts[:n]
    files = _Files(tmp_path, backend, "push")

    def open_round() -> tuple[Any, ...]:
        server = MockServer(f"bench-push-{next(_names)}", entities=[SyncPost])
        url, path = files.next()
        client = syncline.open(url, entities=[SyncPost], transport=f"mock://{server.name}")
        client.repository(SyncPost).insert_many(objs)
        assert client.outbox.pending_count() == n
        return client, server, path

    def check(client: syncline.Store, server: MockServer, _path: Path | None) -> Any:
        return (client.outbox.pending_count(), server.store.repository(SyncPost).count(),
                server.server.changes.count())

    report, checked = _on_fresh_stores(
        benchmark, rounds(n), open_round,
        lambda client, _server, _path: client.sync_engine.push(), check)
    assert report.ok and report.pushed == n and not report.conflicts
    assert checked == [(0, n, n)] * rounds(n)
    _rate(benchmark, n, "mutations")


# -- S2. pull ---------------------------------------------------------------------------------

@pytest.fixture(scope="module")
def pull_servers(tmp_path_factory: pytest.TempPathFactory,
                 sync_posts: list[SyncPost]) -> Iterator[dict[int, MockServer]]:
    """MockServers on SQLite files with N records written, by N (each built once per
    module, on first use)."""
    paths: list[Path] = []

    class Servers(dict[int, MockServer]):
        def __missing__(self, n: int) -> MockServer:
            path = tmp_path_factory.mktemp("sync-pull") / f"server-{n}.db"
            paths.append(path)
            server = MockServer(f"bench-pull-{next(_names)}", entities=[SyncPost],
                                store_url=f"sqlite:///{path}")
            prefill(server, sync_posts[:n])
            assert server.server.changes.count() == n
            self[n] = server
            return server

    servers = Servers()
    try:
        yield servers
    finally:
        for server in servers.values():
            server.close()
        for path in paths:
            _remove(path)


@pytest.mark.parametrize("side", SIDES)
@pytest.mark.parametrize("backend", BACKENDS)
@pytest.mark.parametrize("n", SIZES, ids=_label)
def test_pull(benchmark: Any, backend: str, side: str, n: int, tmp_path: Path,
              request: pytest.FixtureRequest, sync_posts: list[SyncPost],
              plain_posts: list[PlainPost]) -> None:
    """N changes pulled into a fresh client, 1000 a page (opening the client not timed)."""
    benchmark.group = group_pull(backend, n)
    if side == "baseline":
        _baseline(benchmark, backend, tmp_path, plain_posts[:n], "changes")
        return
    server: MockServer = request.getfixturevalue("pull_servers")[n]
    files = _Files(tmp_path, backend, "pull")
    sample = sync_posts[:n:97]

    def open_round() -> tuple[Any, ...]:
        url, path = files.next()
        client = syncline.open(url, entities=[SyncPost], transport=f"mock://{server.name}")
        client.sync_engine.page_size = PAGE_SIZE
        return client, path

    def check(client: syncline.Store, _path: Path | None) -> Any:
        posts = client.repository(SyncPost)
        state = posts.sync_state(sample[-1].id)
        return (posts.count(), posts.get_many(p.id for p in sample) == sample,
                state is not None and state.status is SyncStatus.SYNCED)

    report, checked = _on_fresh_stores(
        benchmark, rounds(n), open_round,
        lambda client, _path: client.sync_engine.pull(), check)
    assert report.ok and report.pulled == n and not report.conflicts
    assert checked == [(n, True, True)] * rounds(n)
    _rate(benchmark, n, "changes")
