"""Deprecated: moved to :mod:`syncline.core.sync.worker`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.sync.worker import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.sync.worker")
