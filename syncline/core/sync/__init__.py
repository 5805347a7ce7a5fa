"""Client sync: the outbox (:mod:`.outbox`), the planner (:mod:`.plan`), the engine
(:mod:`.engine`: push, pull, conflicts, remapping, backoff), the worker (:mod:`.worker`), the
cross-process sync lock (:mod:`.lock`), the sync look-ups on repositories
(:mod:`.repository`) and :class:`.syncing.SyncingStore`, which wires them to the storage layer.

``syncline.core.sync`` was one module before the layers; its names stay importable from here.
"""

from typing import TYPE_CHECKING, Any

__all__ = ["Backoff", "Conflict", "Resolution", "Strategy", "SyncEngine", "SyncReport",
           "apply_remote", "sync_lock"]

if TYPE_CHECKING:
    from syncline.core.sync.engine import (
        Backoff,
        Conflict,
        Resolution,
        Strategy,
        SyncEngine,
        SyncReport,
        apply_remote,
    )
    from syncline.core.sync.lock import sync_lock


def __getattr__(name: str) -> Any:
    # Imported on first use: opening a store does not import the engine.
    if name == "sync_lock":
        from syncline.core.sync.lock import sync_lock

        return sync_lock
    if name in __all__:
        from syncline.core.sync import engine

        return getattr(engine, name)
    raise AttributeError(f"module 'syncline.core.sync' has no attribute {name!r}")
