"""The sync suite on every bundled backend (the store_url fixture is in conftest)."""

from syncline.testing.sync_suite import SyncSuite
from syncline.testing.trust_suite import TrustSuite


class TestSyncOnBundledBackends(SyncSuite):
    pass


class TestTrustOnBundledBackends(TrustSuite):
    pass
