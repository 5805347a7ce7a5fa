"""The conformance suite on every bundled backend (the store_url fixture is in conftest)."""

from syncline.testing.backend_suite import BackendSuite


class TestBundledBackends(BackendSuite):
    pass
