"""A conflict resolver plugin: for entities with an ``updated_at`` field, the newest wins."""

from __future__ import annotations

from typing import Any

from syncline import Resolution, hookimpl


@hookimpl
def syncline_resolve_conflict(store: Any, conflict: Any) -> Resolution | None:
    local, server = conflict.local, conflict.server
    if local is None or server is None:
        return None  # a deletion: leave it to the store's strategy
    mine, theirs = getattr(local, "updated_at", None), getattr(server, "updated_at", None)
    if mine is None or theirs is None:
        return None  # not an entity this plugin knows how to judge
    return Resolution.client() if mine > theirs else Resolution.server()
