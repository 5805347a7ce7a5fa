"""Deprecated: moved to :mod:`syncline.core.storage.schema_dump`; kept for one release."""

from syncline.core._moved import alias
from syncline.core.storage.schema_dump import *  # noqa: F403 - the names, for type checkers

alias(__name__, "syncline.core.storage.schema_dump")
