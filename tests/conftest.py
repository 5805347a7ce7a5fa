"""The project's suites run on every bundled backend through the syncline pytest plugin."""

from __future__ import annotations

import os
import sys
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

# Every thread's stack when pytest-timeout (configured in pyproject.toml) cannot stop a test.
pytest_plugins = ["syncline.testing.hangs"]


def _cache_bytecode_outside_the_checkout() -> None:
    """With PYTHONDONTWRITEBYTECODE set, every worker and every Python a test starts compiled
    (and pytest assertion-rewrote) each module from source again: about half of the collection
    time, and a tenth of a second per started process. Keep the wish (no __pycache__ in the
    checkout) and cache the bytecode in the temporary folder instead, for this process and the
    processes it starts."""
    if not sys.dont_write_bytecode or sys.pycache_prefix is not None:
        return
    prefix = Path(tempfile.gettempdir()) / f"syncline-tests-pycache-{os.getuid()}"
    try:
        prefix.mkdir(mode=0o700, exist_ok=True)
    except OSError:
        return  # nothing lost but time
    sys.pycache_prefix = str(prefix)
    sys.dont_write_bytecode = False
    os.environ["PYTHONPYCACHEPREFIX"] = str(prefix)
    os.environ.pop("PYTHONDONTWRITEBYTECODE", None)


_cache_bytecode_outside_the_checkout()

# The slow groups (several seconds each on an idle 2-core machine: processes, subprocess pytest
# runs, crash and convergence loops, 100,000-row migrations), marked `slow` here as well as by
# @pytest.mark.slow in the files: `pytest -m "not slow"` is the quick local loop, CI runs all.
# A module maps to None (all of it) or to the names of its slow tests (every parametrization).
SLOW: dict[str, frozenset[str] | None] = {
    "test_example_plugin.py": None,  # pip-installs a plugin, runs its conformance suites
    "test_convergence.py": None,
    "test_crash.py": None,
    "test_migration_crash.py": None,
    "test_migration_docs.py": None,
    "test_sync_docs.py": None,
    "test_http_processes.py": None,
    "test_changelog_pg.py": None,
    "test_model.py": None,
    "test_postgres_server.py": None,  # starts servers of its own
    "test_suite_catches.py": None,  # the suites in a subprocess pytest, on two liar backends
    "test_hangs.py": None,  # pytest -n 2 in a subprocess, waiting out timeouts
    "test_sync_machine.py": None,  # the sync state machine (hypothesis, many stores)
    "test_live_processes.py": None,  # server processes, one of them killed
    "test_chaos.py": frozenset({  # three device processes killed over a faulty network
        "test_social_app_on_three_devices_survives_kills_and_a_bad_network"}),
    "test_live.py": frozenset({  # fills a server with streams, waits out the polls
        "test_a_server_full_of_streams_answers_503_and_the_client_polls"}),
    "test_startup.py": None,  # a fresh interpreter per case
    "test_sync_lock.py": frozenset({  # processes, one of them killed
        "test_the_lock_of_a_killed_process_is_released",
        "test_processes_syncing_one_postgres_store_lose_no_increment"}),
    "test_postgres_hardening.py": frozenset({  # stores opened over and over beside writers
        "test_stores_opening_over_and_over_while_threads_write"}),
    "test_pytest_plugin.py": frozenset({  # pytest in a subprocess
        "test_backends_from_the_command_line", "test_backends_from_the_ini_file",
        "test_an_unknown_backend_is_a_usage_error",
        "test_schema_verifier_fixture_reads_the_dumps_folder",
        "test_schema_verifier_fixture_without_a_folder_says_what_to_set"}),
    "test_cli.py": frozenset({"test_demo_end_to_end_as_a_process"}),
    "test_migration_tools.py": frozenset({"test_cli_migrate_as_a_subprocess"}),
    "test_server_batch.py": frozenset({"test_batch_equals_one_by_one"}),
    "test_http_security.py": frozenset({"test_fuzz_every_endpoint"}),
    "test_sqlite_watch.py": frozenset({"test_a_commit_right_after_the_first_subscribe_is_seen"}),
    "test_migration_suite.py": frozenset({"test_a_hundred_thousand_rows"}),
    "test_watch_suite.py": frozenset({"test_writes_from_another_process_reach_watchers"}),
}


def pytest_configure(config: pytest.Config) -> None:
    # Our own suites cover every bundled backend unless told otherwise.
    if not config.getoption("syncline_backend") and not config.getini("syncline_backends"):
        config.option.syncline_backend = [
            "memory", "memory-named", "sqlite", "sqlite-memory", "postgresql"]
    # Under pytest-xdist (-n), hand out tests one at a time: by default each worker first gets
    # a block of consecutive tests, and with the longest ones first (_slow_first) one worker
    # would get them all.
    if getattr(config.option, "maxschedchunk", "absent") is None:
        config.option.maxschedchunk = 1


@pytest.hookimpl(tryfirst=True)  # before -m deselects by marker
def pytest_collection_modifyitems(config: pytest.Config, items: list[pytest.Item]) -> None:
    unseen = {module: set(names) for module, names in SLOW.items() if names}
    for item in items:
        module = item.path.name
        if module not in SLOW:
            continue
        names = SLOW[module]
        name = getattr(item, "originalname", item.name)
        if names is None or name in names:
            item.add_marker(pytest.mark.slow)
            unseen.get(module, set()).discard(name)
    if hasattr(config, "workerinput"):  # a pytest-xdist worker: the long tests first
        _slow_first(items)
    # A renamed test must not silently join the quick loop. Only checked when whole modules
    # were collected (not for `pytest file.py::test`).
    if not any("::" in arg for arg in config.args):
        collected = {item.path.name for item in items}
        stale = {m: sorted(n) for m, n in unseen.items() if n and m in collected}
        if stale:
            raise pytest.UsageError(f"tests/conftest.py SLOW names missing tests: {stale}")


@pytest.fixture
def store_url(syncline_store_url: str) -> str:
    """The conformance suites' fixture: a fresh store URL on the backend under test."""
    return syncline_store_url


@pytest.fixture(scope="session")
def postgres_url(syncline_postgres_url: str) -> str:
    return syncline_postgres_url


@pytest.fixture
def guide_namespace() -> Iterator[dict[str, Any]]:
    """One namespace for a guide's executed code blocks; afterwards every store and mock server
    they left in it is closed and every plugin they registered dropped."""
    from syncline.core.plugins import plugin_manager, unregister_plugin
    from syncline.core.store import Store
    from syncline.plugins.mock import MockServer

    before = {name for name, _ in plugin_manager().pm.list_name_plugin()}
    namespace: dict[str, Any] = {}
    yield namespace
    for value in namespace.values():
        if isinstance(value, Store | MockServer):
            value.close()
    for name, _ in plugin_manager().pm.list_name_plugin():
        if name not in before:
            unregister_plugin(name)


# The longest modules under CI=true (a minute or more each on an idle machine), longest first.
LONGEST = ("test_crash.py", "test_sync_machine.py", "test_convergence.py",
           "test_migration_crash.py", "test_http_security.py", "test_example_plugin.py")


def _slow_first(items: list[pytest.Item]) -> None:
    """Under pytest-xdist, start the longest tests first, then the other slow ones, so that no
    worker is left running a long one at the end while the others wait. Every worker sorts
    alike (xdist checks), and the order within each group is kept."""
    def rank(item: pytest.Item) -> int:
        if item.get_closest_marker("slow") is None:
            return len(LONGEST) + 1
        name = item.path.name
        return LONGEST.index(name) if name in LONGEST else len(LONGEST)

    items.sort(key=rank)
