"""Live sync through syncline.aio on every bundled backend (the asyncio device's store)."""

from syncline.testing.aio.live import AsyncLiveSuite


class TestAsyncLive(AsyncLiveSuite):
    pass
