"""What applications and plugin authors import in their tests: conformance suites and helpers.

The suites are importable from here too (``from syncline.testing import BackendSuite``),
loaded on first use so that importing a helper module does not import them all."""

from __future__ import annotations

import importlib
from typing import Any

_LAZY = {
    "BackendSuite": "syncline.testing.backend_suite",
    "MigrationSuite": "syncline.testing.migration_suite",
    "SyncSuite": "syncline.testing.sync_suite",
    "TransportSuite": "syncline.testing.transport_suite",
    "TrustSuite": "syncline.testing.trust_suite",
    "WatchSuite": "syncline.testing.watch_suite",
    "requires": "syncline.testing.requirements",
}

__all__ = sorted(_LAZY)


def __getattr__(name: str) -> Any:
    if name not in _LAZY:
        raise AttributeError(f"module 'syncline.testing' has no attribute {name!r}")
    return getattr(importlib.import_module(_LAZY[name]), name)
