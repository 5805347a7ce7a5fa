"""Deprecated: moved to :mod:`syncline.core.model.schema`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.model.schema import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.model.schema")
