"""What the ``syncline`` command's modules share: the console and the entities loader."""

from __future__ import annotations

import functools
from typing import TYPE_CHECKING, Any, cast

if TYPE_CHECKING:
    from rich.console import Console


@functools.cache
def get_console() -> Console:
    """The commands' rich console, made (and rich imported) on first use: not for --help."""
    from rich.console import Console

    return Console()


def load_entities(spec: str) -> list[type]:
    """``module`` (every syncing entity in it) or ``module:attr`` (a list of entities)."""
    import importlib

    from syncline.core.model.errors import ConfigurationError

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import entities module {module_name!r}: {exc}") from exc
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, list | tuple):
            raise ConfigurationError(f"{spec} is not a list of entity classes")
        return list(found)
    entities: list[type] = []
    for candidate in vars(module).values():
        declared: Any = getattr(candidate, "__syncline_entity__", None)
        if isinstance(candidate, type) and getattr(declared, "cls", None) is candidate \
                and declared.syncs:
            entities.append(cast(type, candidate))
    if not entities:
        raise ConfigurationError(f"module {module_name!r} declares no syncing entity")
    return entities
