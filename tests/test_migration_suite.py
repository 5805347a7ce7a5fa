"""The migration suite on every bundled backend (the store_url fixture is in conftest)."""

from syncline.testing.migration_suite import MigrationSuite


class TestBundledBackends(MigrationSuite):
    pass
