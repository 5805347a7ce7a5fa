"""What the sync suites share: a mock server on a fake clock, clients syncing with it."""

from __future__ import annotations

import datetime as dt
import itertools
from collections.abc import Callable, Iterator, Sequence
from typing import Any, ClassVar

import pytest

from syncline.core.model.clock import FakeClock
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.store import Store
from syncline.core.sync.engine import Backoff
from syncline.plugins.mock import MockServer
from syncline.server.tables import ChangeEntry
from syncline.testing.requirements import SuiteBase
from syncline.testing.stores import opened_stores
from syncline.testing.syncing.entities import ENTITIES, NOTES, Likes, TickingClock

#: unique names for the suites' mock servers and plugins
names = itertools.count()
#: ``factory(url=None, **sync_options)``: a client store syncing with the suite's server
ClientFactory = Callable[..., Store]


def clients(store_url: str, server: MockServer, clock: FakeClock,
            entities: Sequence[type], opener: ClientFactory | None = None,
            ) -> Iterator[ClientFactory]:
    """A factory of client stores syncing with ``server`` (``factory(url=None,
    **sync_options)``), all closed after the test: the suites' ``client_factory``
    (``opener``: see :func:`opened_stores`)."""
    with opened_stores(store_url, opener=opener, entities=list(entities),
                       transport=f"mock://{server.name}", clock=clock) as open_store:

        def factory(url: str | None = None, **sync_options: Any) -> Store:
            sync_options.setdefault("backoff", Backoff(base=1.0, cap=60.0))
            store: Store = open_store(url, sync_options=sync_options)
            return store

        yield factory


class SyncFixtures(SuiteBase):
    """A mock server for :attr:`sync_entities` on a fake clock, and clients on ``store_url``."""

    #: the entities of the clients and of the server
    sync_entities: ClassVar[Sequence[type]] = NOTES
    #: the mock servers' names start with it
    server_prefix: ClassVar[str] = "suite"

    def make_clock(self) -> FakeClock:
        return FakeClock(dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))

    @pytest.fixture
    def clock(self) -> FakeClock:
        return self.make_clock()

    @pytest.fixture
    def server(self, clock: FakeClock) -> Iterator[MockServer]:
        with MockServer(f"{self.server_prefix}-{next(names)}", entities=self.sync_entities,
                        clock=clock) as server:
            yield server

    @pytest.fixture
    def client_factory(self, store_url: str, server: MockServer,
                       clock: FakeClock) -> Iterator[ClientFactory]:
        yield from clients(store_url, server, clock, self.sync_entities)

    @pytest.fixture
    def client(self, client_factory: ClientFactory) -> Store:
        return client_factory()

    @pytest.fixture
    def other(self, client_factory: ClientFactory) -> Store:
        """A second client, always on a private in-memory SQLite store."""
        return client_factory("sqlite://")

    @staticmethod
    def server_changes(server: MockServer, record_id: str) -> list[ChangeEntry]:
        return server.server.changes.find({"record_id": record_id}, order_by="seq")

    @classmethod
    def history(cls, server: MockServer, record_id: str) -> list[str]:
        """The operations the server's change log holds for the record."""
        return [c.op for c in cls.server_changes(server, record_id)]

    @staticmethod
    def applied_count(server: MockServer, record_id: str) -> int:
        """How many mutations the server applied to the record (its results say)."""
        return sum(1 for a in server.server.applied.all()
                   if a.result.get("status") == "applied"
                   and a.result.get("server_id") == record_id)

    @staticmethod
    def drain(client: Store, rounds: int = 50) -> None:
        """Sync until the queue is empty (the fake clock skips every wait)."""
        for _ in range(rounds):
            client.network_available()
            client.sync()
            if client.outbox.pending_count() == 0:
                return
            client.clock.sleep(3600)
        raise AssertionError(f"still queued: {client.outbox.all_pending()}")


class NoteSuite(SyncFixtures):
    """The sync suite's fixtures: notes, on a fake clock that moves when told."""


class TrustFixtures(SyncFixtures):
    """The trust suite's fixtures: posts and comments, a clock that ticks on every read, and
    the server's ``like_post`` command (``likes``)."""

    sync_entities = ENTITIES
    server_prefix = "trust"

    def make_clock(self) -> FakeClock:
        return TickingClock(dt.datetime(2025, 1, 1, 12, tzinfo=dt.UTC))

    @pytest.fixture
    def likes(self) -> Iterator[Likes]:
        plugin = Likes()
        name = register_plugin(plugin, f"trust-likes-{next(names)}")
        yield plugin
        unregister_plugin(name)
