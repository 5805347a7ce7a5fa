"""The project's suites run on every bundled backend through the syncline pytest plugin."""

from __future__ import annotations

from collections.abc import Iterator
from typing import Any

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
