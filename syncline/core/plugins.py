"""The plugin manager: entry-point discovery, registries by URL scheme, the typed hook wrapper.

Plugins load once, on first use (:func:`plugin_manager`), never on ``import syncline``. The
bundled backends are found exactly like third-party ones: through the ``syncline`` entry points
that this project's own ``pyproject.toml`` declares.
"""

from __future__ import annotations

import difflib
import logging
import os
import threading
from collections.abc import Iterator
from typing import TYPE_CHECKING, Any, TypeVar

import attrs
import pluggy

from syncline.core.model.errors import AuthenticationError, PluginError
from syncline.core.model.schema import TypeRegistry, use_custom_types
from syncline.core.spi import hookspecs
from syncline.core.spi.entry_points import EntryPoint, entry_points
from syncline.core.spi.hookspecs import Store
from syncline.core.spi.registries import DISABLE_ENV as DISABLE_ENV
from syncline.core.spi.registries import BackendRegistry as BackendRegistry
from syncline.core.spi.registries import CommandRegistry as CommandRegistry
from syncline.core.spi.registries import Registration as Registration
from syncline.core.spi.registries import TransportRegistry as TransportRegistry

if TYPE_CHECKING:

    from syncline.core.spi.backend import Backend

log = logging.getLogger("syncline.plugins")
GROUP = "syncline"

T = TypeVar("T")


@attrs.frozen
class PluginInfo:
    """One loaded plugin: its entry-point name and where it came from."""

    name: str
    module: str
    distribution: str | None
    version: str | None
    hooks: tuple[str, ...] = ()


def disabled_plugins() -> set[str]:
    raw = os.environ.get(DISABLE_ENV, "")
    return {name.strip() for name in raw.split(",") if name.strip()}


def _entry_points() -> Iterator[EntryPoint]:
    seen: set[tuple[str, str]] = set()
    for ep in entry_points(GROUP):
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
        try:
            registered = self.pm.register(plugin, name=name)
        except pluggy.PluginValidationError as exc:  # a known hook with unknown arguments
            raise PluginError(f"plugin {name or plugin!r} cannot be registered: {exc}") from exc
        if registered is None:  # blocked or already registered
            return name or ""
        self._check_hook_names(plugin, registered)
        hooks = tuple(sorted(
            impl_name for impl_name in dir(self.pm.hook)
            if not impl_name.startswith("_")
            and any(i.plugin is plugin for i in getattr(self.pm.hook, impl_name).get_hookimpls())
        ))
        module = getattr(plugin, "__name__", type(plugin).__module__)
        self.plugins[registered] = PluginInfo(registered, module, distribution, version, hooks)
        self._call_registration(plugin, registered)
        return registered

    def _check_hook_names(self, plugin: object, name: str) -> None:
        """pluggy's ``check_pending``: a hook implementation no spec knows is a PluginError
        (the plugin is unregistered again), not a function never called."""
        try:
            self.pm.check_pending()
        except pluggy.PluginValidationError as exc:
            unknown = sorted(
                n for n in dir(self.pm.hook) if not n.startswith("_")
                and getattr(self.pm.hook, n).spec is None
                and any(i.plugin is plugin for i in getattr(self.pm.hook, n).get_hookimpls()))
            self.pm.unregister(plugin)
            known = sorted(n for n in dir(hookspecs) if n.startswith("syncline_"))
            named = ", ".join(
                n + "".join(f" (did you mean {c}?)" for c in difflib.get_close_matches(
                    n, known, n=1)) for n in unknown)
            raise PluginError(
                f"plugin {name!r} implements hooks syncline does not have: {named or exc}; "
                f"syncline's hooks are: {', '.join(known)}") from exc

    def _call_registration(self, plugin: object, name: str) -> None:
        others = [p for p in self.pm.get_plugins() if p is not plugin]
        calls: list[tuple[str, Any]] = [
            ("syncline_register_backends", self.backends._bound(name)),
            ("syncline_register_transports", self.transports._bound(name)),
            ("syncline_register_types", self.types),
            ("syncline_register_commands", self.commands._bound(name)),
        ]
        for hook_name, registry in calls:
            try:  # this plugin's implementation only, called by pluggy
                self.pm.subset_hook_caller(hook_name, others)(registry=registry)
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
    """The typed way the rest of syncline calls event hooks, each with its error policy
    (docs/plugins.md): ``before_*`` hooks raise, stopping the sync before anything changed;
    ``after_*`` hooks are told of what is done, so an exception is logged and the other
    implementations still run."""

    def __init__(self, pm: pluggy.PluginManager) -> None:
        self._pm = pm
        self._hook = pm.hook
        #: hook name -> (the implementations, one caller for each of them alone)
        self._alone: dict[str, tuple[tuple[Any, ...], list[tuple[str, Any]]]] = {}

    def _logged(self, name: str, **kwargs: Any) -> None:
        """Call every implementation of ``name``; an exception is logged, not raised."""
        impls = tuple(getattr(self._hook, name).get_hookimpls())
        if not impls:
            return
        cached = self._alone.get(name)
        if cached is None or cached[0] != impls:
            callers = [(impl.plugin_name, self._pm.subset_hook_caller(
                name, [other.plugin for other in impls if other is not impl]))
                for impl in reversed(impls)]
            cached = self._alone[name] = (impls, callers)
        for plugin_name, caller in cached[1]:
            try:
                caller(**kwargs)
            except Exception:
                log.exception("plugin %r failed in %s", plugin_name, name)

    def has(self, name: str) -> bool:
        """Whether any plugin implements hook ``name``."""
        return bool(getattr(self._hook, name).get_hookimpls())

    def after_commit(self, store: Store, tables: frozenset[str]) -> None:
        self._logged("syncline_after_commit", store=store, tables=tables)

    def before_push(self, store: Store, mutations: list[Any]) -> None:
        self._hook.syncline_before_push(store=store, mutations=mutations)

    def after_push(self, store: Store, mutations: list[Any], results: list[Any]) -> None:
        self._logged("syncline_after_push", store=store, mutations=mutations, results=results)

    def before_pull(self, store: Store, cursor: str | None) -> None:
        self._hook.syncline_before_pull(store=store, cursor=cursor)

    def after_pull(self, store: Store, changes: list[Any]) -> None:
        self._logged("syncline_after_pull", store=store, changes=changes)

    def resolve_conflict(self, store: Store, conflict: Any) -> Any | None:
        return self._hook.syncline_resolve_conflict(store=store, conflict=conflict)

    def handle_command(self, server: Any, principal: str, name: str,
                       payload: dict[str, Any] | None) -> dict[str, Any] | None:
        result: dict[str, Any] | None = self._hook.syncline_handle_command(
            server=server, principal=principal, name=name, payload=payload)
        return result

    def before_record_write(self, server: Any, principal: str, entity: str, action: str,
                            record_id: str, before: dict[str, Any] | None,
                            after: dict[str, Any] | None) -> list[dict[str, Any]]:
        """The before-hooks' answers (fields to set), first registered first."""
        answers: list[dict[str, Any] | None] = self._hook.syncline_before_record_write(
            server=server, principal=principal, entity=entity, action=action,
            record_id=record_id, before=before, after=after)
        return [a for a in reversed(answers) if a]

    def after_record_write(self, server: Any, principal: str, entity: str, action: str,
                           record_id: str, before: dict[str, Any] | None,
                           after: dict[str, Any] | None, version: int) -> None:
        self._hook.syncline_after_record_write(
            server=server, principal=principal, entity=entity, action=action,
            record_id=record_id, before=before, after=after, version=version)

    def authenticate(self, headers: dict[str, str], config: Any) -> Any | None:
        try:
            return self._hook.syncline_authenticate(headers=headers, config=config)
        except AuthenticationError:
            raise
        except Exception as exc:  # fail closed: a broken plugin lets nobody in
            log.exception("an authentication plugin failed")
            raise AuthenticationError(
                "the server could not check these credentials (an authentication plugin "
                "failed; see the server's log)") from exc


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


def _plugin_types() -> TypeRegistry:
    return plugin_manager().types


# Entity declarations (syncline.core.model) find plugins' types here, without importing this.
use_custom_types(_plugin_types)


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
