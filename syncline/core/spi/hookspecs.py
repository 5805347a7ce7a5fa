"""Every pluggy hook syncline calls: the one contract for plugins.

A plugin is a module or object with functions decorated by :data:`hookimpl` whose names are
the ones below; a distribution exposes it through the entry-point group ``syncline``::

    [project.entry-points.syncline]
    mybackend = "mypackage.syncline_plugin"

Hooks do two things only. *Registration* hooks receive a registry object and call
``register(...)`` on it; they run once, when syncline first needs its plugins. *Event* hooks
carry cross-cutting events; record operations never go through hooks.

A function marked :data:`hookimpl` whose name is not one of these hooks is a PluginError when
the plugin loads. Each event hook states what an exception raised in it does: ``before_*``
hooks stop the sync before anything changed; ``after_*`` hooks are told of what is done, so
their exceptions are logged (``syncline.plugins``) and the other implementations still run.
"""

from __future__ import annotations

from typing import TYPE_CHECKING, Any, TypeAlias

import pluggy

if TYPE_CHECKING:
    from syncline.core.model.schema import TypeRegistry
    from syncline.core.spi.registries import BackendRegistry, CommandRegistry, TransportRegistry

#: The event hooks' ``store``: a :class:`syncline.Store`. Typed loosely because the plugin
#: contract sits below the store in syncline's layers (docs/architecture.md).
Store: TypeAlias = Any

PROJECT = "syncline"
hookspec = pluggy.HookspecMarker(PROJECT)
hookimpl = pluggy.HookimplMarker(PROJECT)


@hookspec
def syncline_register_backends(registry: BackendRegistry) -> None:
    """Register storage backends by URL scheme.

    Call ``registry.register(scheme, backend_class, description=...)`` once per scheme the
    plugin serves; ``backend_class`` subclasses :class:`syncline.core.spi.backend.Backend` and may
    also be given as an import path ``"package.module:Class"`` so that heavy dependencies load
    only when a store with that scheme is opened. Pass ``requires="package-name"`` to name the
    distribution a user must install when importing the class fails.
    """


@hookspec
def syncline_register_transports(registry: TransportRegistry) -> None:
    """Register sync transports by URL scheme.

    Call ``registry.register(scheme, transport_class, description=...)``; the same rules as
    :func:`syncline_register_backends` apply (import paths, ``requires``).
    """


@hookspec
def syncline_register_types(registry: TypeRegistry) -> None:
    """Register extra field types that entities may use.

    Call ``registry.register(python_type, kind, to_storage, from_storage)``: values of
    ``python_type`` are stored as the built-in ``kind`` (``"text"``, ``"integer"``, ``"float"``,
    ``"boolean"``, ``"bytes"``, ``"datetime"``, ``"date"``, ``"uuid"``, ``"decimal"`` or
    ``"json"``), ``to_storage`` turning a value into that kind's canonical Python value and
    ``from_storage`` turning it back.
    """


@hookspec
def syncline_register_commands(registry: CommandRegistry) -> None:
    """Add commands to the ``syncline`` CLI.

    Call ``registry.register(command)`` with a :class:`click.Command`; its name must not clash
    with a built-in command.
    """


@hookspec
def syncline_register_test_stores(registry: Any) -> None:
    """Offer fresh, empty store URLs for tests: what ``pytest --syncline-backend NAME`` runs on.

    ``registry`` is a :class:`syncline.testing.stores.TestStoreRegistry` (typed loosely: the
    testing kit sits above the plugin contract). Call ``registry.register(name, factory,
    fixtures=(), default=False, description=...)`` once per kind of store: ``factory`` (a
    callable or a ``"module:function"`` path, imported only when a test needs it) takes the
    test's ``tmp_path`` and the pytest fixtures named in ``fixtures`` as keyword arguments and
    returns a URL of a store nobody else uses, or yields one and cleans up after the test.
    ``default=True`` runs it when the user names no backend; leave it False for a third-party
    backend, so that installing a plugin does not change what applications' tests run on.
    """


@hookspec
def syncline_after_commit(store: Store, tables: frozenset[str]) -> None:
    """Called after a transaction of ``store`` committed writes to ``tables``.

    Runs on the committing thread, after the commit, with no lock held. An exception raised
    here is logged and does not undo the commit or stop other implementations.
    """


@hookspec
def syncline_before_push(store: Store, mutations: list[Any]) -> None:
    """Called before the sync engine pushes a batch of ``mutations`` from ``store``.

    It runs inside the transaction that plans the batch, before the batch's entries and
    records are marked as being sent. An exception raised here rolls that planning back and
    propagates out of ``sync()``: nothing was sent and nothing changed (the records stay
    pending), so the next sync plans the same batch again.
    """


@hookspec
def syncline_after_push(store: Store, mutations: list[Any], results: list[Any]) -> None:
    """Called after a push, with each mutation and the server's result for it.

    The results are recorded by then; an exception raised here is logged and the sync goes on.
    """


@hookspec
def syncline_before_pull(store: Store, cursor: str | None) -> None:
    """Called before the sync engine pulls changes after ``cursor`` (None: from the start).

    An exception raised here propagates out of ``sync()`` before the page is asked for.
    """


@hookspec
def syncline_after_pull(store: Store, changes: list[Any]) -> None:
    """Called after a page of pulled ``changes`` has been applied and committed.

    An exception raised here is logged and the sync goes on.
    """


@hookspec(firstresult=True)
def syncline_resolve_conflict(store: Store, conflict: Any) -> Any | None:
    """Decide a sync conflict; the first non-None answer wins.

    ``conflict`` carries the entity, the local and the server versions of the record. Return
    the resolution (see the sync documentation) or None to leave the decision to the next
    plugin and finally to the store's configured strategy. It runs inside the transaction
    that records a push's results or applies a pulled page: an exception rolls that back and
    propagates out of ``sync()``; the next sync meets the conflict and asks again.
    """


@hookspec(firstresult=True)
def syncline_authenticate(headers: dict[str, str], config: Any) -> Any | None:
    """Authenticate a request to the sync server; the first non-None answer wins.

    ``headers`` are the request's headers (lower-case names). Return the principal (an object
    with at least an ``id``) when the plugin recognises the credentials, raise
    :class:`syncline.core.model.errors.AuthenticationError` when it recognises them as invalid, or
    return None to let other plugins try. Any other exception is logged and the request is
    refused as unauthenticated (401): a broken plugin lets nobody in.
    """


@hookspec(firstresult=True)
def syncline_handle_command(server: Any, principal: str, name: str,
                            payload: dict[str, Any] | None) -> dict[str, Any] | None:
    """Carry out a queued command (``like_post``, ``follow_user``...) on the sync server.

    Called by the reference server and the mock server inside the transaction that records the
    command's idempotency key, so writes made through ``server.store`` commit with it. Return a
    JSON-able dict (sent back to the client as the command's result; ``{}`` is fine) when the
    plugin handles ``name``, or None to let another plugin try. Raise
    :class:`syncline.core.model.errors.ConflictError` or ``ValueError`` to reject the command with
    that message. A command no plugin handles is rejected as unknown. Any other exception
    rolls the command back and fails the push (the client sends it again later).
    """


@hookspec
def syncline_before_record_write(server: Any, principal: str, entity: str, action: str,
                                 record_id: str, before: dict[str, Any] | None,
                                 after: dict[str, Any] | None) -> dict[str, Any] | None:
    """Check or complete a pushed record write on the sync server, before it is applied.

    Called inside the transaction (and savepoint) that applies the mutation, after the server
    decided it applies (conflicts and invalid payloads never reach it). ``principal`` is the
    pushing user, ``action`` ``create``, ``update`` or ``delete``, ``before`` the record as the
    server holds it (None for a create), ``after`` the record as it will be stored (None for a
    delete), both as wire payloads. Raise ``ValueError`` or
    :class:`syncline.core.model.errors.ConflictError` to refuse it: the mutation is
    ``rejected`` with that message and nothing of it is stored. Return a dict of fields to set
    on the stored record (denormalised fields; ignored for a delete), or None.
    """


@hookspec
def syncline_after_record_write(server: Any, principal: str, entity: str, action: str,
                                record_id: str, before: dict[str, Any] | None,
                                after: dict[str, Any] | None, version: int) -> None:
    """React to a pushed record write on the sync server, in the same transaction.

    The record is written (``version`` is its new version); writes made through
    ``server.store`` or ``server.write(...)`` commit with it, and an exception (``ValueError``,
    ``ConflictError``) rejects the mutation and undoes everything it did.
    """
