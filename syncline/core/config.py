"""Deprecated: moved to :mod:`syncline.core.storage.config`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.storage.config import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.storage.config")
