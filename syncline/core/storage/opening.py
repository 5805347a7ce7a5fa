"""What a store does when it opens: the schema version check, and the declarations of how to
create and migrate it (:class:`MigrationStrategy`, :class:`Schema`, :class:`OpeningDetails`,
:class:`MigrationListener`).

Opening a store whose stored version is the code's imports nothing more; creating or upgrading
one runs :mod:`syncline.core.storage.migration` (the :class:`~.migration.Migrator` and the
backend's migration operations), imported then. See docs/migrations.md.
"""

from __future__ import annotations

from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import TYPE_CHECKING, Any, TypeAlias

import attrs

from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import Trigger, View

if TYPE_CHECKING:
    from syncline.core.storage.local import LocalStore
    from syncline.core.storage.migration import Migrator, TableMigration

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


#: a payload transform: a payload (a JSON object) of one version's shape -> the other's
PayloadTransform: TypeAlias = Callable[[dict[str, Any]], dict[str, Any]]


def _as_mapping(value: Mapping[str, Any]) -> dict[str, Any]:
    return dict(value)


@attrs.frozen
class PreviousSchema:
    """The schema version just before a :class:`Schema`'s, whose clients a sync server keeps
    serving (docs/migrations.md, "Clients one version behind").

    ``entities`` are the entities as that version declared them (copies, in an
    ``EntityRegistry`` of their own). How a payload changes shape is derived from both
    declarations (a field added with a default or nullable, a field dropped) and from
    ``renamed`` (table -> {new field: old field}) and the ``renamed`` columns of ``tables``
    (the ``TableMigration`` objects of the step); ``upgrade_payload[table]`` (old shape -> new)
    and ``downgrade_payload[table]`` (new -> old, None: no way back) declare the rest.
    """

    version: int
    entities: Sequence[type] = attrs.field(converter=_as_tuple)
    renamed: Mapping[str, Mapping[str, str]] = attrs.field(factory=dict, converter=_as_mapping)
    tables: Sequence[TableMigration] = attrs.field(default=(), converter=_as_tuple)
    upgrade_payload: Mapping[str, PayloadTransform] = attrs.field(factory=dict,
                                                                  converter=_as_mapping)
    downgrade_payload: Mapping[str, PayloadTransform | None] = attrs.field(
        factory=dict, converter=_as_mapping)


@attrs.frozen
class Schema:
    """Everything a store's schema is made of, with its version and how to migrate to it.

    ``previous`` describes the version before, for a sync server that keeps serving its
    clients while they upgrade (see :class:`PreviousSchema`)."""

    version: int
    entities: Sequence[type] = attrs.field(converter=_as_tuple)
    views: Sequence[View] = attrs.field(default=(), converter=_as_tuple)
    triggers: Sequence[Trigger] = attrs.field(default=(), converter=_as_tuple)
    migration: MigrationStrategy | None = None
    previous: PreviousSchema | None = None

    def __attrs_post_init__(self) -> None:
        if self.previous is not None and self.previous.version != self.version - 1:
            raise MigrationError(
                f"Schema {self.version}: previous describes version {self.previous.version}; "
                f"it must be the version just before, {self.version - 1}")


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
