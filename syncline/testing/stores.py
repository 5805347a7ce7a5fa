"""Stores for tests: the suites' store factory, and the test store URLs plugins offer.

A backend plugin offers a fresh, empty store URL for tests through the hook
``syncline_register_test_stores``; the pytest plugin's ``--syncline-backend NAME`` then runs
every ``syncline_store_url`` test on it::

    @hookimpl
    def syncline_register_test_stores(registry):
        registry.register("jsonl", lambda tmp_path: f"jsonl:///{tmp_path}/data.jsonl")

The bundled backends register theirs the same way (the factories below, by import path).
"""

from __future__ import annotations

import contextlib
import importlib
import itertools
import os
from collections.abc import Callable, Iterator, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

if TYPE_CHECKING:
    from syncline.core.store import Store

#: opens a store on the suite's URL (or ``url``), closed after the test: ``factory(**open_kw)``
StoreFactory = Callable[..., "Store"]

_counter = itertools.count()


@contextlib.contextmanager
def opened_stores(url: str, *, opener: StoreFactory | None = None,
                  **defaults: Any) -> Iterator[StoreFactory]:
    """A factory of stores on ``url`` opened with ``defaults`` (each call may override them
    and give another URL first); every store it opened is closed on leaving. ``opener``
    opens them instead of :func:`syncline.open` (the asyncio suite's goes through
    ``syncline.aio``)."""
    import syncline

    opened: list[Store] = []
    open_one: StoreFactory = opener or syncline.open

    def factory(other_url: str | None = None, /, **kwargs: Any) -> Store:
        store = open_one(other_url or url, **{**defaults, **kwargs})
        opened.append(store)
        return store

    try:
        yield factory
    finally:
        for store in opened:
            store.close()


#: a test store URL factory: ``factory(tmp_path, **fixtures)`` returns the URL, or yields it
#: once and cleans up after the test; given as a callable or a ``"module:function"`` path
TestStoreFactory = Callable[..., str | Iterator[str]]


@attrs.frozen
class TestStore:
    """One named kind of test store a plugin offers."""

    __test__ = False  # not a test class, whatever pytest thinks of the name

    name: str
    factory: TestStoreFactory | str
    #: pytest fixtures the factory takes as keyword arguments (a server, a database)
    fixtures: tuple[str, ...] = ()
    #: run by default (when neither --syncline-backend nor syncline_backends chooses)
    default: bool = False
    description: str = ""

    def load(self) -> TestStoreFactory:
        if not isinstance(self.factory, str):
            return self.factory
        module, _, attr = self.factory.partition(":")
        loaded: TestStoreFactory = getattr(importlib.import_module(module), attr)
        return loaded


class TestStoreRegistry:
    """What ``syncline_register_test_stores`` receives: ``register(name, factory, ...)``."""

    __test__ = False

    def __init__(self) -> None:
        self.stores: dict[str, TestStore] = {}

    def register(self, name: str, factory: TestStoreFactory | str, *,
                 fixtures: Sequence[str] = (), default: bool = False,
                 description: str = "") -> None:
        """Offer test stores called ``name`` (``--syncline-backend NAME``): ``factory``
        makes a fresh, empty store URL under the test's ``tmp_path``."""
        if name in self.stores:
            raise ValueError(f"a test store named {name!r} is already registered "
                             f"({self.stores[name].factory!r}); choose another name")
        self.stores[name] = TestStore(name, factory, tuple(fixtures), default, description)

    def names(self) -> list[str]:
        return list(self.stores)

    def defaults(self) -> list[str]:
        return [s.name for s in self.stores.values() if s.default]


def collect_test_stores() -> TestStoreRegistry:
    """Every test store the installed plugins offer (the hook, called once per call)."""
    from syncline.core.plugins import plugin_manager

    registry = TestStoreRegistry()
    plugin_manager().pm.hook.syncline_register_test_stores(registry=registry)
    return registry


# -- the bundled backends' test stores (registered by their plugins, by import path) ------------


def memory_url(tmp_path: Path) -> str:
    """A private in-memory store."""
    return "memory://"


def named_memory_url(tmp_path: Path) -> str:
    """A ``memory://name`` database several stores of this process share."""
    return f"memory://pytest{os.getpid()}-{next(_counter)}"


def sqlite_url(tmp_path: Path) -> str:
    """A SQLite file in the test's folder."""
    return f"sqlite:///{tmp_path / f'store{next(_counter)}.db'}"


def sqlite_memory_url(tmp_path: Path) -> str:
    """A private in-memory SQLite database."""
    return "sqlite://"


def postgres_url(tmp_path: Path, syncline_postgres_server: str) -> Iterator[str]:
    """A schema of its own (``tN``) in this process's scratch database on the run's PostgreSQL
    server; afterwards the database is emptied (its sessions ended, every schema dropped)."""
    from syncline.testing.postgres import clear_scratch_database, scratch_database

    url = scratch_database(syncline_postgres_server)
    try:
        yield f"{url}?schema=t{next(_counter)}"
    finally:
        clear_scratch_database(syncline_postgres_server)
