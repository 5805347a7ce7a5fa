"""The whole test file of a third-party backend: one subclass and one fixture per suite."""

from __future__ import annotations

from pathlib import Path

import pytest

from syncline.testing.backend_suite import BackendSuite
from syncline.testing.migration_suite import MigrationSuite
from syncline.testing.sync_suite import SyncSuite
from syncline.testing.watch_suite import WatchSuite


@pytest.fixture
def store_url(tmp_path: Path) -> str:
    return f"jsonl:///{tmp_path}/data.jsonl"


class TestJsonlBackend(BackendSuite):
    pass


class TestJsonlSync(SyncSuite):
    pass


class TestJsonlWatch(WatchSuite):
    pass


class TestJsonlMigrations(MigrationSuite):
    pass
