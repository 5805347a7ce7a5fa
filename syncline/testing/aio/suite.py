"""The shared suites' core cases through the asyncio API, on any backend.

Each class is a suite of :mod:`syncline.testing` whose store (or client) fixtures open
``syncline.aio`` stores behind a :class:`~syncline.testing.aio.bridge.BlockingStore`: every
repository call, transaction, sync and queue look-up of the case is awaited on an event loop
in debug mode with slow-callback detection at 10 ms, and any warning of the ``asyncio``
logger fails the test. Subclass with a ``store_url`` fixture, as for the other suites::

    class TestAsyncOnMyBackend(AsyncSuite):
        @pytest.fixture
        def store_url(self, tmp_path): ...
"""

from __future__ import annotations

import logging
from collections.abc import Iterator
from typing import cast

import pytest

from syncline.core.model.clock import FakeClock
from syncline.plugins.mock import MockServer
from syncline.testing.aio.bridge import SLOW_CALLBACK, LoopThread
from syncline.testing.backend.base import StoreSuite
from syncline.testing.backend.crud import CrudSuite
from syncline.testing.backend.queries import QuerySuite
from syncline.testing.backend.transactions import TransactionSuite
from syncline.testing.stores import StoreFactory, opened_stores
from syncline.testing.syncing.base import ClientFactory, SyncFixtures, clients
from syncline.testing.syncing.conflicts import ConflictSuite
from syncline.testing.syncing.exchange import ExchangeSuite
from syncline.testing.syncing.queue import QueueSuite
from syncline.testing.syncing.retries import RetrySuite

log = logging.getLogger("syncline.testing.aio")


class AsyncLoop:
    """The event loop the cases' calls are awaited on; its warnings fail the test."""

    @pytest.fixture
    def aio_loop(self) -> Iterator[LoopThread]:
        loop = LoopThread()
        try:
            yield loop
        finally:
            warnings, descheduled = loop.close()
        for message in descheduled:
            log.info("slow callback while the loop's thread waited for a CPU: %s", message)
        assert warnings == [], (
            f"the event loop was held for more than {SLOW_CALLBACK * 1000:.0f} ms or warned: "
            f"{warnings}")


class AsyncStoreFixtures(AsyncLoop, StoreSuite):
    """The backend suites' store factory, opening through ``syncline.aio``."""

    @pytest.fixture
    def open_store(self, store_url: str, aio_loop: LoopThread) -> Iterator[StoreFactory]:
        with opened_stores(store_url, opener=cast(StoreFactory, aio_loop.opener),
                           entities=self.entities) as factory:
            yield factory


class AsyncSyncFixtures(AsyncLoop, SyncFixtures):
    """The sync suites' clients, opening through ``syncline.aio`` (async mock transport)."""

    @pytest.fixture
    def client_factory(self, store_url: str, server: MockServer, clock: FakeClock,
                       aio_loop: LoopThread) -> Iterator[ClientFactory]:
        yield from clients(store_url, server, clock, self.sync_entities,
                           opener=cast(ClientFactory, aio_loop.opener))


class AsyncBackendSuite(AsyncStoreFixtures, CrudSuite, QuerySuite, TransactionSuite):
    """CRUD, queries and transactions through ``syncline.aio``."""


class AsyncSyncSuite(AsyncSyncFixtures, QueueSuite, ExchangeSuite, RetrySuite, ConflictSuite):
    """The queue, push and pull, retries and conflicts through ``syncline.aio``."""


class AsyncSuite(AsyncBackendSuite, AsyncSyncSuite):
    """Both: the asyncio API's conformance suite."""
