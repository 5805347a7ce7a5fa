"""The plugin manager: entry-point discovery, registries by URL scheme, the typed hook wrapper.

Plugins load once, on first use (:func:`plugin_manager`), never on ``import syncline``. The
bundled backends are found exactly like third-party ones: through the ``syncline`` entry points
that this project's own ``pyproject.toml`` declares.
"""

from __future__ import annotations

import importlib
import importlib.metadata as metadata
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, Generic, TypeVar

import attrs
import pluggy

from syncline.core import hookspecs
from syncline.core.errors import PluginError, UnknownSchemeError
from syncline.core.schema import TypeRegistry

if TYPE_CHECKING:
    import click

    from syncline.core.backend import Backend
    from syncline.core.store import Store

log = logging.getLogger("syncline.plugins")
GROUP = "syncline"
DISABLE_ENV = "SYNCLINE_DISABLE_PLUGINS"

T = TypeVar("T")


@attrs.frozen
class PluginInfo:
    """One loaded plugin: its entry-point name and where it came from."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...] = ()


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


class BackendRegistry(_SchemeRegistry["Backend"]):
    role = "backend"
    hint = " (for PostgreSQL: pip install 'syncline[postgresql]')"


class TransportRegistry(_SchemeRegistry[Any]):
    role = "transport"
    hint = " (for HTTP: pip install 'syncline[http]')"


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


def disabled_plugins() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _entry_points() -> Iterator[metadata.EntryPoint]:
    seen: set[tuple[str, str]] = set()
    for ep in metadata.entry_points(group=GROUP):
        if (ep.name, ep.value) not in seen:
            seen.add((ep.name, ep.value))
            yield ep


class PluginManager:
    """Owns the pluggy manager, the loaded plugins and the registries they filled."""

    def __init__(self) -> None:
        self.pm = pluggy.PluginManager(hookspecs.PROJECT)
        self.pm.add_hookspecs(hookspecs)
        self.plugins: dict[str, PluginInfo] = {}
        self.backends = BackendRegistry()
        self.transports = TransportRegistry()
        self.types = TypeRegistry()
        self.commands = CommandRegistry()
        self.hooks = Hooks(self.pm)

    def load_entry_points(self) -> None:
        """Import and register every entry point of the group ``syncline`` not disabled."""
        blocked = disabled_plugins()
        for ep in _entry_points():
            if ep.name in blocked:
                self.pm.set_blocked(ep.name)
                continue
            dist = ep.dist
            dist_name = dist.name if dist is not None else None
            version = dist.version if dist is not None else None
            try:
                module = ep.load()
            except Exception as exc:
                raise PluginError(
                    f"plugin {ep.name!r} ({ep.value}) from distribution "
                    f"{dist_name or 'unknown'} {version or ''} failed to import: "
                    f"{type(exc).__name__}: {exc}. Fix or uninstall it, or disable it with "
                    f"{DISABLE_ENV}={ep.name}"
                ) from exc
            self.register(module, ep.name, dist_name, version)

    def register(self, plugin: object, name: str | None = None,
                 distribution: str | None = None, version: str | None = None) -> str:
        """Register a plugin object and run its registration hooks at once."""
        registered = self.pm.register(plugin, name=name)
        if registered is None:  # blocked or already registered
            return name or ""
        hooks = tuple(sorted(
            impl_name for impl_name in dir(self.pm.hook)
            if not impl_name.startswith("_")
            and any(i.plugin is plugin for i in getattr(self.pm.hook, impl_name).get_hookimpls())
        ))
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self.plugins[registered] = PluginInfo(registered, module, distribution, version, hooks)
        self._call_registration(plugin, registered)
        return registered

    def _call_registration(self, plugin: object, name: str) -> None:
        calls: list[tuple[str, Any]] = [
            ("syncline_register_backends", self.backends._bound(name)),
            ("syncline_register_transports", self.transports._bound(name)),
            ("syncline_register_types", self.types),
            ("syncline_register_commands", self.commands._bound(name)),
        ]
        for hook_name, registry in calls:
            for impl in getattr(self.pm.hook, hook_name).get_hookimpls():
                if impl.plugin is plugin:
                    try:
                        impl.function(registry=registry)
                    except PluginError:
                        raise
                    except Exception as exc:
                        raise PluginError(
                            f"plugin {name!r} failed in {hook_name}: {type(exc).__name__}: {exc}"
                        ) from exc

    def backend_class(self, scheme: str) -> type[Backend]:
        return self.backends.get(scheme)

    def schemes_of(self, plugin: str) -> dict[str, list[str]]:
        """The backend and transport schemes a plugin serves."""
        return {
            "backends": [r.scheme for r in self.backends.registrations() if r.plugin == plugin],
            "transports": [
                r.scheme for r in self.transports.registrations() if r.plugin == plugin
            ],
        }


class Hooks:
    """The typed way the rest of syncline calls event hooks."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._hook = pm.hook

    def _safe(self, name: str, **kwargs: Any) -> None:
        caller = getattr(self._hook, name)
        for impl in reversed(caller.get_hookimpls()):
            try:
                impl.function(**{k: v for k, v in kwargs.items() if k in impl.argnames})
            except Exception:
                log.exception("plugin %r failed in %s", impl.plugin_name, name)

    def has(self, name: str) -> bool:
        return bool(getattr(self._hook, name).get_hookimpls())

    def after_commit(self, store: Store, tables: frozenset[str]) -> None:
        self._safe("syncline_after_commit", store=store, tables=tables)

    def before_push(self, store: Store, mutations: list[Any]) -> None:
        self._hook.syncline_before_push(store=store, mutations=mutations)

    def after_push(self, store: Store, mutations: list[Any], results: list[Any]) -> None:
        self._hook.syncline_after_push(store=store, mutations=mutations, results=results)

    def before_pull(self, store: Store, cursor: str | None) -> None:
        self._hook.syncline_before_pull(store=store, cursor=cursor)

    def after_pull(self, store: Store, changes: list[Any]) -> None:
        self._hook.syncline_after_pull(store=store, changes=changes)

    def resolve_conflict(self, store: Store, conflict: Any) -> Any | None:
        return self._hook.syncline_resolve_conflict(store=store, conflict=conflict)

    def handle_command(self, server: Any, principal: str, name: str,
                       payload: dict[str, Any] | None) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._hook.syncline_handle_command(
            server=server, principal=principal, name=name, payload=payload)
        return result

    def authenticate(self, headers: dict[str, str], config: Any) -> Any | None:
        return self._hook.syncline_authenticate(headers=headers, config=config)


_manager: PluginManager | None = None
_lock = threading.Lock()


def plugin_manager() -> PluginManager:
    """The process-wide plugin manager, loading entry points on the first call."""
    global _manager
    if _manager is None:
        with _lock:
            if _manager is None:
                manager = PluginManager()
                manager.load_entry_points()
                _manager = manager
    return _manager


def reset_plugin_manager() -> None:
    """Forget the loaded plugins; the next :func:`plugin_manager` call loads them again."""
    global _manager
    with _lock:
        _manager = None


def register_plugin(plugin: object, name: str | None = None) -> str:
    """Register a plugin object at run time (tests, applications); returns its name."""
    return plugin_manager().register(plugin, name)


def unregister_plugin(name: str) -> None:
    manager = plugin_manager()
    plugin = manager.pm.get_plugin(name)
    if plugin is not None:
        manager.pm.unregister(plugin)
    manager.plugins.pop(name, None)
    for registry in (manager.backends, manager.transports):
        registry.forget(name)
