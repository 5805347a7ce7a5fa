"""What a store does when it opens: the schema version check, and the declarations of how to
create and migrate it (:class:`MigrationStrategy`, :class:`Schema`, :class:`OpeningDetails`,
:class:`MigrationListener`).

Opening a store whose stored version is the code's imports nothing more; creating or upgrading
one runs :mod:`syncline.core.storage.migration` (the :class:`~.migration.Migrator` and the
backend's migration operations), imported then. See docs/migrations.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import Trigger, View

if TYPE_CHECKING:
    from syncline.core.storage.local import LocalStore
    from syncline.core.storage.migration import Migrator

Progress: TypeAlias = Callable[[int, int, str], None]


@attrs.frozen
class OpeningDetails:
    """What happened while a store opened; given to ``before_open``."""

    version_before: int | None
    version_now: int

    @property
    def was_created(self) -> bool:
        return self.version_before is None

    @property
    def had_upgrade(self) -> bool:
        return self.version_before is not None and self.version_before < self.version_now


def _as_tuple(value: Iterable[Any]) -> tuple[Any, ...]:
    return tuple(value)


def _create_all(migrator: Migrator) -> None:
    migrator.create_all()


def _no_upgrade(migrator: Migrator, from_version: int, to_version: int) -> None:
    raise MigrationError(
        f"the store is at schema version {from_version} and the code at {to_version}, but no "
        f"upgrade is given; pass migration=MigrationStrategy(on_upgrade=...) (see "
        f"syncline.steps) to syncline.open")


class MigrationListener:
    """Hears what a migration did, to keep tables of its own in step with the store's.

    Subclass it, override what you need and subscribe it with
    ``MigrationStrategy(listeners=[...])``. Both run inside the migration's transaction: what
    a listener writes commits or vanishes with the migration.
    """

    def on_rename_table(self, store: LocalStore, old: str, new: str) -> None:
        """The stored table ``old`` is now ``new`` (``Migrator.rename_table``)."""

    def after_upgrade(self, store: LocalStore, from_version: int, to_version: int) -> None:
        """The upgrade steps ran: the store's rows have the shape of ``to_version``."""


@attrs.frozen
class MigrationStrategy:
    """What to do when a store opens: create it, upgrade it, then ``before_open``.

    ``on_create(migrator)`` defaults to ``migrator.create_all()``; ``on_upgrade(migrator,
    from_version, to_version)`` has no default (an upgrade without one is refused);
    ``before_open(store, details)`` runs after either, on every open. ``listeners`` hear of
    renamed tables and finished upgrades (see :class:`MigrationListener`).
    """

    on_create: Callable[[Migrator], object] = _create_all
    on_upgrade: Callable[[Migrator, int, int], object] = _no_upgrade
    #: ``before_open(store, details)``: the store is the one opening (a :class:`syncline.Store`)
    before_open: Callable[[Any, OpeningDetails], None] | None = None
    listeners: Sequence[MigrationListener] = attrs.field(default=(), converter=_as_tuple)


@attrs.frozen
class Schema:
    """Everything a store's schema is made of, with its version and how to migrate to it."""

    version: int
    entities: Sequence[type] = attrs.field(converter=_as_tuple)
    views: Sequence[View] = attrs.field(default=(), converter=_as_tuple)
    triggers: Sequence[Trigger] = attrs.field(default=(), converter=_as_tuple)
    migration: MigrationStrategy | None = None


# -- opening --------------------------------------------------------------------------------


def open_schema(store: LocalStore, strategy: MigrationStrategy | None,
                progress: Progress | None = None) -> OpeningDetails:
    """Bring a freshly opened store to the code's schema version (called by ``LocalStore``)."""
    strategy = strategy or MigrationStrategy()
    backend = store.backend
    target = store.schema_version
    stored = backend.get_schema_version()
    _refuse_newer(store, stored)
    if stored is not None and stored == target:
        with store.transaction():
            for table in store.tables():  # new entities and syncline's own tables
                backend.create_table(table)
        details = OpeningDetails(stored, target)
    else:
        from syncline.core.storage.migration import _migrate

        details = _migrate(store, strategy, progress, stored)
    if strategy.before_open is not None:
        strategy.before_open(store, details)
    return details


def _refuse_newer(store: LocalStore, stored: int | None) -> None:
    if stored is not None and stored > store.schema_version:
        raise MigrationError(
            f"the store at {store.backend.url} has schema version {stored}, newer than "
            f"this code's version {store.schema_version}; upgrade the application")
