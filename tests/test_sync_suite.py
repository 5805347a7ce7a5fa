"""The sync suite on every bundled backend (the store_url fixture is in conftest)."""

from syncline.testing.sync_suite import SyncSuite


class TestSyncOnBundledBackends(SyncSuite):
    pass
