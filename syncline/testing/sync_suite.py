"""The sync conformance suite: the queue, the engine and conflicts, on any client backend.

Like :mod:`syncline.testing.backend_suite`, subclass it and provide a ``store_url`` fixture
(a fresh, empty store each time). The server is a :class:`MockServer` on ``memory://``. The
suite is composed of one mixin per concern (``syncline.testing.syncing.*``).
"""

from __future__ import annotations

from syncline.testing.syncing.base import ClientFactory, SyncFixtures, clients
from syncline.testing.syncing.conflicts import ConflictSuite
from syncline.testing.syncing.entities import NOTES as ENTITIES
from syncline.testing.syncing.entities import Note, registry
from syncline.testing.syncing.exchange import ExchangeSuite
from syncline.testing.syncing.local_fields import LocalFieldSuite
from syncline.testing.syncing.lookups import LookupSuite, WorkerSuite
from syncline.testing.syncing.queue import QueueSuite
from syncline.testing.syncing.retries import RetrySuite
from syncline.testing.syncing.server_data import ServerDataSuite
from syncline.testing.syncing.state_queries import SyncStateQuerySuite


class SyncSuite(QueueSuite, ExchangeSuite, RetrySuite, ConflictSuite, LookupSuite, WorkerSuite,
                LocalFieldSuite, SyncStateQuerySuite, ServerDataSuite):
    """Subclass and provide a ``store_url`` fixture to run the sync suite on a backend."""


__all__ = [
    "ENTITIES", "ClientFactory", "ConflictSuite", "ExchangeSuite", "LocalFieldSuite",
    "LookupSuite", "Note",
    "QueueSuite", "RetrySuite", "ServerDataSuite", "SyncFixtures", "SyncStateQuerySuite",
    "SyncSuite", "WorkerSuite", "clients",
    "registry",
]
