"""Deprecated: moved to :mod:`syncline.core.storage.watch`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.storage.watch import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.storage.watch")
