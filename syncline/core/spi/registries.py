"""The registries plugins fill from their registration hooks: backends and transports by URL
scheme (a class or a lazy ``"module:Class"`` path, with the package to install), CLI commands."""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs

from syncline.core.model.errors import PluginError, UnknownSchemeError
from syncline.core.spi.backend import Backend

if TYPE_CHECKING:
    import click


#: names plugins that are not loaded (comma-separated entry-point names)
DISABLE_ENV = "SYNCLINE_DISABLE_PLUGINS"

T = TypeVar("T")


@attrs.frozen
class Registration(Generic[T]):
    scheme: str
    target: type[T] | str
    plugin: str
    description: str = ""
    requires: str | None = None


class _SchemeRegistry(Generic[T]):
    """Classes registered by URL scheme; one registry per role (backend, transport)."""

    role = "thing"
    hint = ""

    def __init__(self) -> None:
        self._by_scheme: dict[str, Registration[T]] = {}
        self._plugin = "?"

    def _bound(self, plugin: str) -> _SchemeRegistry[T]:
        self._plugin = plugin
        return self

    def register(self, scheme: str, target: type[T] | str, *, description: str = "",
                 requires: str | None = None) -> None:
        """Serve URLs ``scheme://...`` with ``target`` (a class or ``"module:Class"``)."""
        scheme = scheme.lower()
        existing = self._by_scheme.get(scheme)
        if existing is not None and existing.plugin != self._plugin:
            raise PluginError(
                f"plugin {self._plugin!r} registers {self.role} scheme {scheme!r}, already "
                f"registered by plugin {existing.plugin!r}; disable one of them with "
                f"{DISABLE_ENV}={existing.plugin}"
            )
        self._by_scheme[scheme] = Registration(scheme, target, self._plugin, description,
                                               requires)

    def schemes(self) -> list[str]:
        return sorted(self._by_scheme)

    def forget(self, plugin: str) -> None:
        """Drop every registration made by ``plugin``."""
        self._by_scheme = {s: r for s, r in self._by_scheme.items() if r.plugin != plugin}

    def registrations(self) -> list[Registration[T]]:
        return [self._by_scheme[s] for s in self.schemes()]

    def get(self, scheme: str) -> type[T]:
        """The class for ``scheme``; an unknown scheme names the ones available."""
        reg = self._by_scheme.get(scheme.lower())
        if reg is None:
            available = ", ".join(f"{s}://" for s in self.schemes()) or "none"
            raise UnknownSchemeError(
                f"no {self.role} for scheme {scheme!r}; available: {available}. "
                f"A plugin adds one{self.hint}; see 'syncline plugins'"
            )
        if isinstance(reg.target, str):
            return self._import(reg)
        return reg.target

    def _import(self, reg: Registration[T]) -> type[T]:
        module_name, _, attr = str(reg.target).partition(":")
        try:
            obj: type[T] = getattr(importlib.import_module(module_name), attr)
        except ImportError as exc:
            hint = f"; install it with: pip install {reg.requires}" if reg.requires else ""
            raise PluginError(
                f"the {self.role} for {reg.scheme}:// (plugin {reg.plugin!r}) cannot be "
                f"imported: {exc}{hint}"
            ) from exc
        return obj


class BackendRegistry(_SchemeRegistry[Backend]):
    role = "backend"
    hint = " (for PostgreSQL: pip install 'syncline[postgresql]')"


class TransportRegistry(_SchemeRegistry[Any]):
    role = "transport"


class CommandRegistry:
    """CLI commands added by plugins."""

    def __init__(self) -> None:
        self.commands: dict[str, tuple[click.Command, str]] = {}
        self._plugin = "?"

    def _bound(self, plugin: str) -> CommandRegistry:
        self._plugin = plugin
        return self

    def register(self, command: click.Command) -> None:
        """Add ``command`` to the ``syncline`` CLI."""
        if command.name is None:
            raise PluginError(f"plugin {self._plugin!r} registers a CLI command with no name")
        self.commands[command.name] = (command, self._plugin)
