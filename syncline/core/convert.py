"""Deprecated: moved to :mod:`syncline.core.model.convert`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.model.convert import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.model.convert")
