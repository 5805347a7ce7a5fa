"""Deprecated: moved to :mod:`syncline.core.spi.transport`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.spi.transport import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.spi.transport")
