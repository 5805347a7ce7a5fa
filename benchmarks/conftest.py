"""Fixtures and reporting for the syncline-vs-baseline benchmarks.

Run with ``python -m pytest benchmarks/ --benchmark-enable -p no:cacheprovider``.

Every case is one test parametrized by ``side``: ``syncline``, ``baseline`` and sometimes a
``ref-...`` variant; the sides of a case share a benchmark group. At the end of the run the
``syncline / baseline`` ratios of every group are printed next to their targets.
"""

from __future__ import annotations

import random
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest
from bench_common import (
    N_POSTS,
    N_USERS,
    SEED,
    TARGETS,
    Post,
    connect,
    make_posts,
    upsert_many,
)

import syncline

N_SAMPLE_IDS = 1_000
N_SAMPLE_USERS = 100


# -- running benchmarks despite the project's ``--benchmark-skip`` --------------------------

@pytest.hookimpl(tryfirst=True)
def pytest_configure(config: pytest.Config) -> None:
    # pyproject's addopts has --benchmark-skip so the normal suite never runs benchmarks; here,
    # --benchmark-enable (which pytest-benchmark treats as "not disabled" only) also unskips.
    if config.getoption("benchmark_enable", False):
        config.option.benchmark_skip = False


# -- data ------------------------------------------------------------------------------------

@pytest.fixture(scope="session")
def posts() -> list[Post]:
    """100,000 posts shaped like the seed's (built once per run)."""
    return make_posts(N_POSTS)


@pytest.fixture(scope="session")
def sample_ids() -> list[str]:
    return [f"p{i:06d}" for i in random.Random(SEED + 1).sample(range(N_POSTS), N_SAMPLE_IDS)]


@pytest.fixture(scope="session")
def sample_users() -> list[str]:
    users = random.Random(SEED + 2).sample(range(N_USERS), N_SAMPLE_USERS)
    return [f"u{u:04d}" for u in users]


@pytest.fixture(scope="module")
def sqlite_dbs(tmp_path_factory: pytest.TempPathFactory,
               posts: list[Post]) -> Iterator[tuple[syncline.Store, Any]]:
    """Two 100k-post SQLite files: one written through syncline, one by plain sqlite3."""
    folder: Path = tmp_path_factory.mktemp("sqlite-100k")
    store = syncline.open(f"sqlite:///{folder / 'syncline.db'}", entities=[Post])
    store.repository(Post).upsert_many(posts)
    conn = connect(folder / "baseline.db")
    upsert_many(conn, posts)
    try:
        yield store, conn
    finally:
        store.close()
        conn.close()


# -- ratios at the end of the run ------------------------------------------------------------

_RESULTS = pytest.StashKey[list[Any]]()


@pytest.hookimpl(wrapper=True)
def pytest_benchmark_group_stats(config: pytest.Config, benchmarks: list[Any],
                                 group_by: str) -> Any:
    config.stash[_RESULTS] = [b for b in benchmarks if b]  # falsy: no stats (errored)
    return (yield)


def _side(bench: Any) -> str:
    params = bench["params"] or {}
    return str(params.get("side", bench["name"]))


def ratio_rows(benchmarks: list[Any]) -> list[tuple[str, ...]]:
    """(group, side, mean, baseline mean, ratios of means/medians/minimums, target, status).

    The status compares the ratio of means with the group's target."""
    groups: dict[str, dict[str, Any]] = {}
    for bench in benchmarks:
        groups.setdefault(bench["group"] or "", {})[_side(bench)] = bench
    rows = []
    for group in sorted(groups):
        sides = groups[group]
        base = sides.get("baseline")
        if base is None:
            continue
        for side in sorted(s for s in sides if s != "baseline"):
            bench = sides[side]
            mean = bench["mean"] / base["mean"]
            median = bench["median"] / base["median"]
            fastest = bench["min"] / base["min"]
            target = TARGETS.get(group) if side == "syncline" else None
            status = "-" if target is None else ("met" if mean <= target else "NOT MET")
            rows.append((group, side, f"{bench['mean'] * 1e3:.2f} ms",
                         f"{base['mean'] * 1e3:.2f} ms", f"{mean:.2f}x", f"{median:.2f}x",
                         f"{fastest:.2f}x",
                         "-" if target is None else f"<= {target}x", status))
    return rows


@pytest.hookimpl(trylast=True)
def pytest_terminal_summary(terminalreporter: Any, config: pytest.Config) -> None:
    benchmarks = config.stash.get(_RESULTS, [])
    rows = ratio_rows(benchmarks)
    if not rows:
        return
    header = ("group", "side", "mean", "baseline mean", "ratio (mean)", "ratio (median)",
              "ratio (min)", "target", "status")
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    terminalreporter.section("syncline / baseline time ratios", sep="-", bold=True)
    for row in [header, *rows]:
        terminalreporter.write_line("  ".join(c.ljust(w) for c, w in zip(row, widths,
                                                                          strict=True)))
