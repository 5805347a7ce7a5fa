"""The backend conformance suite: every behaviour of the storage contract, on any backend.

A backend's whole test file is one subclass and one fixture::

    from syncline.testing.backend_suite import BackendSuite

    class TestMyBackend(BackendSuite):
        @pytest.fixture
        def store_url(self, tmp_path):
            return f"mybackend://{tmp_path}/data"

The suite is composed of one mixin per concern (``syncline.testing.backend.*``): subclass a
few of them instead to run only those. Tests that need a capability the backend does not
declare are marked with ``@requires(...)`` and skipped with the reason
(:mod:`syncline.testing.requirements`); the suite never looks at a backend's name.
"""

from __future__ import annotations

from syncline.testing.backend.base import T0, UTC, StoreSuite, make_everything, make_post
from syncline.testing.backend.checks import CheckSuite
from syncline.testing.backend.columns import ColumnNameSuite
from syncline.testing.backend.crud import CrudSuite
from syncline.testing.backend.field_types import FieldTypeSuite
from syncline.testing.backend.lifecycle import (
    ErrorClassSuite,
    LifecycleSuite,
    ProcessSuite,
    in_another_process,
    other_process,
)
from syncline.testing.backend.queries import QuerySuite
from syncline.testing.backend.transactions import ConcurrencySuite, TransactionSuite
from syncline.testing.backend.values import (
    EDGE_VALUES,
    EXTRA_ORDERED,
    ORDERED_FIELDS,
    Mood,
    Strict,
    ValueDomainSuite,
    Values,
    values_registry,
)
from syncline.testing.stores import StoreFactory


class BackendSuite(CrudSuite, QuerySuite, FieldTypeSuite, TransactionSuite, ConcurrencySuite,
                   LifecycleSuite, ProcessSuite, ErrorClassSuite, ValueDomainSuite, CheckSuite,
                   ColumnNameSuite):
    """Subclass and provide a ``store_url`` fixture (a fresh, empty store each time).

    The value-domain cases (:class:`ValueDomainSuite`) are part of it."""


__all__ = [
    "EDGE_VALUES", "EXTRA_ORDERED", "ORDERED_FIELDS", "T0", "UTC", "BackendSuite",
    "CheckSuite", "ColumnNameSuite", "ConcurrencySuite", "CrudSuite", "ErrorClassSuite",
    "FieldTypeSuite", "LifecycleSuite",
    "Mood", "ProcessSuite", "QuerySuite", "StoreFactory", "StoreSuite", "Strict",
    "TransactionSuite", "ValueDomainSuite", "Values", "in_another_process", "make_everything",
    "make_post", "other_process", "values_registry",
]
