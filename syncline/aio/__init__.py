"""syncline for asyncio: the same stores, repositories, transactions and sync as awaitables.

::

    async with syncline.aio.open("sqlite:///app.db", entities=[Post]) as store:
        posts = store.repository(Post)
        await posts.insert(Post(...))
        async with store.transaction():
            ...
        await store.sync()

Every store operation runs on one worker thread per store, awaited from the event loop; the
logic is the synchronous store's and the sync engine's. See docs/async.md.
"""

from __future__ import annotations

from syncline.aio.repository import AsyncRepository
from syncline.aio.store import AsyncStore, AsyncTransaction, Opening, SyncProgress, open
from syncline.aio.transport import (
    AsyncMockTransport,
    AsyncTransport,
    LoopBridge,
    ThreadedTransport,
)
from syncline.aio.watch import AsyncWatch
from syncline.aio.worker import AsyncSyncWorker


def __getattr__(name: str) -> object:
    if name == "AsyncHTTPTransport":  # imports httpx only when asked for
        from syncline.aio.http import AsyncHTTPTransport

        return AsyncHTTPTransport
    raise AttributeError(f"module 'syncline.aio' has no attribute {name!r}")


__all__ = [
    "AsyncHTTPTransport", "AsyncMockTransport", "AsyncRepository", "AsyncStore",
    "AsyncSyncWorker", "AsyncTransaction", "AsyncTransport", "AsyncWatch", "LoopBridge",
    "Opening", "SyncProgress", "ThreadedTransport", "open",
]
