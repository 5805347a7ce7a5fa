"""Deprecated: the sync server's engine and tables live in :mod:`syncline.server` now.

Import from :mod:`syncline.server.engine` (``SyncServer``), :mod:`syncline.server.tables`
(``ServerRecord``, ``ChangeEntry``...) and :mod:`syncline.server.cursor` instead; open a
server's store with :func:`syncline.server.open_server_store`. This module re-exports the old
names for one release.
"""

from __future__ import annotations

import warnings

from syncline.server.cursor import decode_cursor, encode_cursor
from syncline.server.engine import (
    ANONYMOUS,
    SHARED,
    SyncServer,
    _Batch,
    fingerprint,
    invalid_mutation,
)
from syncline.server.tables import (
    SERVER_ENTITIES,
    AppliedMutation,
    ChangeEntry,
    ServerMeta,
    ServerRecord,
)
from syncline.server.wire import pull_log, sendable, skipped, to_json

__all__ = ["ANONYMOUS", "SERVER_ENTITIES", "SHARED", "AppliedMutation", "ChangeEntry",
           "ServerMeta", "ServerRecord", "SyncServer", "_Batch", "decode_cursor",
           "encode_cursor", "fingerprint", "invalid_mutation", "pull_log", "sendable", "skipped",
           "to_json"]

warnings.warn("syncline.core.serverside is deprecated; import from syncline.server.engine "
              "instead (tables: syncline.server.tables, cursors: syncline.server.cursor)",
              DeprecationWarning, stacklevel=2)
