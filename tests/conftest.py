from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from pathlib import Path

import pytest

# The conformance suite lives in the package; let pytest explain its failed asserts.
pytest.register_assert_rewrite("syncline.testing")

BUNDLED = ["memory", "memory-named", "sqlite-file", "sqlite-memory", "postgresql"]
_schemas = itertools.count()


@pytest.fixture(scope="session")
def postgres_url() -> Iterator[str]:
    """A PostgreSQL database for this test session, dropped at the end.

    ``SYNCLINE_TEST_POSTGRES_URL`` points at a server to use; otherwise a throwaway server is
    started. Under ``CI=true`` a server that cannot start fails the run instead of skipping.
    """
    from sqlalchemy_utils import create_database, drop_database

    from syncline.testing.postgres import PostgresUnavailable, start_postgres

    given = os.environ.get("SYNCLINE_TEST_POSTGRES_URL")
    server = None
    if given:
        base = given
    else:
        try:
            server = start_postgres()
        except PostgresUnavailable as exc:
            if os.environ.get("CI") == "true":
                pytest.fail(f"PostgreSQL is required under CI=true: {exc}")
            pytest.skip(f"no PostgreSQL server could be started: {exc}")
        base = server.url
    from sqlalchemy.engine import make_url

    url = make_url(base).set(database=f"syncline_test_{os.getpid()}")
    sa_url = url.set(drivername="postgresql+psycopg")
    create_database(sa_url)
    try:
        yield url.render_as_string(hide_password=False)
    finally:
        drop_database(sa_url)
        if server is not None:
            server.stop()


@pytest.fixture(params=BUNDLED)
def store_url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    """A fresh, empty store URL on every bundled backend."""
    kind = request.param
    if kind == "memory":
        return "memory://"
    if kind == "memory-named":  # a database shared by every store opened with its name
        return f"memory://suite{next(_schemas)}"
    if kind == "sqlite-file":
        return f"sqlite:///{tmp_path / 'store.db'}"
    if kind == "sqlite-memory":
        return "sqlite://"
    base: str = request.getfixturevalue("postgres_url")
    return f"{base}?schema=t{next(_schemas)}"
