"""The project's suites run on every bundled backend through the syncline pytest plugin."""

from __future__ import annotations

import pytest


def pytest_configure(config: pytest.Config) -> None:
    # Our own suites cover every bundled backend unless told otherwise.
    if not config.getoption("syncline_backend") and not config.getini("syncline_backends"):
        config.option.syncline_backend = [
            "memory", "memory-named", "sqlite", "sqlite-memory", "postgresql"]


@pytest.fixture
def store_url(syncline_store_url: str) -> str:
    """The conformance suites' fixture: a fresh store URL on the backend under test."""
    return syncline_store_url


@pytest.fixture(scope="session")
def postgres_url(syncline_postgres_url: str) -> str:
    return syncline_postgres_url
