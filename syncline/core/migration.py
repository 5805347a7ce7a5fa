"""Deprecated: moved to :mod:`syncline.core.storage.migration`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.storage.migration import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.storage.migration")
