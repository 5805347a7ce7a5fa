"""The shared suites' core cases through syncline.aio on every bundled backend (store_url in
conftest), each on an event loop with asyncio's debug mode and 10 ms slow-callback detection."""

from syncline.testing.aio.suite import AsyncBackendSuite, AsyncSyncSuite


class TestAsyncBackendOnBundledBackends(AsyncBackendSuite):
    pass


class TestAsyncSyncOnBundledBackends(AsyncSyncSuite):
    pass
