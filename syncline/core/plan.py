"""Deprecated: moved to :mod:`syncline.core.sync.plan`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.sync.plan import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.sync.plan")
