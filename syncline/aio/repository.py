"""AsyncRepository: the typed repository's methods as awaitables, run on the store's thread
by the synchronous :class:`SyncRepository` (same answers, same errors)."""

from __future__ import annotations

from collections.abc import Iterable, Mapping
from typing import Any, Generic, TypeVar

from syncline.aio.thread import Runner
from syncline.aio.watch import AsyncWatch
from syncline.core.model.query import OrderArg, WhereArg
from syncline.core.sync.outbox import RecordState, SyncStatus, state_key
from syncline.core.sync.repository import SyncRepository

T = TypeVar("T")


class AsyncRepository(Generic[T]):
    """``await store.repository(Post).get("p1")``: see :class:`syncline.Repository` for what
    each method does; here each is awaited and never blocks the event loop."""

    def __init__(self, repo: SyncRepository[T], thread: Runner) -> None:
        #: the synchronous repository doing the work
        self.sync_repository = repo
        self._thread = thread

    @property
    def entity(self) -> type[T]:
        return self.sync_repository.entity

    # -- reads -------------------------------------------------------------------------------

    async def get(self, key: Any) -> T | None:
        return await self._thread.call(lambda: self.sync_repository.get(key))

    async def get_many(self, keys: Iterable[Any]) -> list[T]:
        keys = list(keys)
        return await self._thread.call(lambda: self.sync_repository.get_many(keys))

    async def find(self, where: WhereArg = None, order_by: OrderArg = None,
                   limit: int | None = None, offset: int = 0) -> list[T]:
        return await self._thread.call(
            lambda: self.sync_repository.find(where, order_by, limit, offset))

    async def first(self, where: WhereArg = None, order_by: OrderArg = None) -> T | None:
        return await self._thread.call(lambda: self.sync_repository.first(where, order_by))

    async def all(self) -> list[T]:
        return await self._thread.call(self.sync_repository.all)

    async def count(self, where: WhereArg = None) -> int:
        return await self._thread.call(lambda: self.sync_repository.count(where))

    async def exists(self, key: Any = None, *, where: WhereArg = None) -> bool:
        return await self._thread.call(lambda: self.sync_repository.exists(key, where=where))

    # -- watching ----------------------------------------------------------------------------

    def watch(self, where: WhereArg = None, order_by: OrderArg = None,
              limit: int | None = None, offset: int = 0) -> AsyncWatch[list[T]]:
        """``async for posts in repo.watch(F.user_id == "u1")``."""
        return AsyncWatch(self.sync_repository.watch(where, order_by, limit, offset),
                          self._thread)

    def watch_count(self, where: WhereArg = None) -> AsyncWatch[int]:
        return AsyncWatch(self.sync_repository.watch_count(where), self._thread)

    def watch_one(self, key: Any) -> AsyncWatch[T | None]:
        return AsyncWatch(self.sync_repository.watch_one(key), self._thread)

    def watch_sync_state(self, key: Any) -> AsyncWatch[RecordState | None]:
        """The record's sync state now and whenever it changes (pending, synced, failed...)."""
        repo = self.sync_repository
        repo._require_syncs()
        states = repo.outbox.states
        return AsyncWatch(states.watch_one(state_key(repo.table.name, key)), self._thread)

    # -- writes ------------------------------------------------------------------------------

    async def insert(self, obj: T) -> T:
        return await self._thread.call(lambda: self.sync_repository.insert(obj))

    async def insert_many(self, objs: Iterable[T]) -> None:
        objs = list(objs)
        await self._thread.call(lambda: self.sync_repository.insert_many(objs))

    async def upsert(self, obj: T) -> T:
        return await self._thread.call(lambda: self.sync_repository.upsert(obj))

    async def upsert_many(self, objs: Iterable[T]) -> None:
        objs = list(objs)
        await self._thread.call(lambda: self.sync_repository.upsert_many(objs))

    async def update(self, key: Any, **values: Any) -> T:
        return await self._thread.call(lambda: self.sync_repository.update(key, **values))

    async def update_where(self, where: WhereArg, **values: Any) -> int:
        return await self._thread.call(
            lambda: self.sync_repository.update_where(where, **values))

    async def delete(self, key: Any) -> bool:
        return await self._thread.call(lambda: self.sync_repository.delete(key))

    async def delete_many(self, keys: Iterable[Any]) -> int:
        keys = list(keys)
        return await self._thread.call(lambda: self.sync_repository.delete_many(keys))

    async def delete_where(self, where: WhereArg) -> int:
        return await self._thread.call(lambda: self.sync_repository.delete_where(where))

    async def clear(self) -> int:
        return await self._thread.call(self.sync_repository.clear)

    # -- sync look-ups -----------------------------------------------------------------------

    async def pending(self) -> list[T]:
        return await self._thread.call(self.sync_repository.pending)

    async def failed(self, max_retries: int | None = None) -> list[T]:
        return await self._thread.call(lambda: self.sync_repository.failed(max_retries))

    async def conflicts(self) -> list[T]:
        return await self._thread.call(self.sync_repository.conflicts)

    async def sync_state(self, key: Any) -> RecordState | None:
        return await self._thread.call(lambda: self.sync_repository.sync_state(key))

    async def update_sync_status(self, key: Any, status: SyncStatus, *,
                                 error: str | None = None,
                                 retry_count: int | None = None) -> None:
        await self._thread.call(lambda: self.sync_repository.update_sync_status(
            key, status, error=error, retry_count=retry_count))

    async def by_local_id(self, local_id: str) -> T | None:
        return await self._thread.call(lambda: self.sync_repository.by_local_id(local_id))

    async def update_from_server(self, local_id: str, obj: T,
                                 version: int | None = None) -> None:
        await self._thread.call(lambda: self.sync_repository.update_from_server(
            local_id, obj, version=version))

    async def upsert_from_server(self, objs: Iterable[T],
                                 versions: Mapping[Any, int] | None = None) -> int:
        batch = list(objs)
        return await self._thread.call(lambda: self.sync_repository.upsert_from_server(
            batch, versions=versions))

    def __repr__(self) -> str:
        return f"<AsyncRepository {self.sync_repository!r}>"
