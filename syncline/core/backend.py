"""Deprecated: moved to :mod:`syncline.core.spi.backend`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.spi.backend import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.spi.backend")
