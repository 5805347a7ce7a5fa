"""Deprecated: :class:`Repository` moved to :mod:`syncline.core.storage.repository`, the sync
look-ups to :class:`syncline.core.sync.repository.SyncRepository` and :class:`Dao` to
:mod:`syncline.core.store`; kept for one release."""

import warnings

from syncline.core.storage.repository import Repository
from syncline.core.store import Dao
from syncline.core.sync.repository import SyncRepository

__all__ = ["Dao", "Repository", "SyncRepository"]

warnings.warn("syncline.core.repository moved: Repository to syncline.core.storage.repository, "
              "Dao to syncline.core.store (see docs/architecture.md)", DeprecationWarning,
              stacklevel=2)
