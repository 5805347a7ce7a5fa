"""The watch suite on every bundled backend (the store_url fixture is in conftest)."""

from syncline.testing.watch_suite import WatchSuite


class TestWatchOnBundledBackends(WatchSuite):
    pass
