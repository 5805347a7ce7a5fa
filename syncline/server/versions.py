"""Schema versions that coexist: a server at schema version N keeps serving clients of N-1.

The server's schema may declare the version before (:class:`syncline.PreviousSchema`): the
entities as they were and how payloads change shape. :class:`Versions` holds what one server
accepts; :class:`OldShape` translates one older client's traffic: pushed payloads (records,
patches and their bases) are upgraded to the current shape before the engine decides them,
and the records the answers and pulled changes carry are downgraded to the client's shape.
Whatever cannot be translated is refused as a whole with :class:`UpgradeRequiredError`
(HTTP 409 ``upgrade_required``) before anything is applied: the client keeps its queue.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs

from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import EntitySpec, FieldSpec, spec_of
from syncline.core.spi.transport import (
    Mutation,
    MutationResult,
    PullPage,
    PushResponse,
    UpgradeRequiredError,
)
from syncline.core.storage.opening import PayloadTransform, PreviousSchema

log = logging.getLogger("syncline.server")


def _default(spec: EntitySpec, f: FieldSpec) -> tuple[bool, Any]:
    """Whether field ``f`` has a value a record lacking it takes (its default, or None when
    nullable), and that value (as Python)."""
    attribute = attrs.fields_dict(spec.cls).get(f.name)
    default: Any = attribute.default if attribute is not None else attrs.NOTHING
    if isinstance(default, attrs.Factory):  # type: ignore[arg-type]
        return True, default.factory(None) if default.takes_self else default.factory()
    if default is not attrs.NOTHING:
        return True, default
    return f.nullable, None


def _fits(source: FieldSpec, target: FieldSpec) -> bool:
    """Whether every value of ``source`` is a value of ``target`` as it is."""
    return (source.kind == target.kind and source.python_type == target.python_type
            and (target.nullable or not source.nullable))


@attrs.frozen
class EntityShape:
    """How one entity's payloads change between the client's version and the server's."""

    name: str
    #: old field -> new field, for the fields both versions have (renamed or not)
    fields: Mapping[str, str]
    #: the old-only fields a downgraded record needs, with their values (wire form)
    fill: Mapping[str, Any]
    up: PayloadTransform | None = None
    down: PayloadTransform | None = None
    #: why a push (an old payload) or a record of the new shape cannot be translated
    no_upgrade: str | None = None
    no_downgrade: str | None = None

    def upgrade(self, payload: dict[str, Any]) -> dict[str, Any]:
        """An old payload (a whole record or a patch's fields) in the current shape: renamed
        fields renamed, fields the server dropped left out."""
        if self.up is not None:
            return dict(self.up(dict(payload)))
        return {self.fields[k]: v for k, v in payload.items() if k in self.fields}

    def downgrade(self, record: dict[str, Any]) -> dict[str, Any]:
        """A current record in the client's shape."""
        if self.down is not None:
            return dict(self.down(dict(record)))
        out = {old: record[new] for old, new in self.fields.items() if new in record}
        return {**self.fill, **out}

    def old_names(self, names: Sequence[str]) -> list[str]:
        back = {new: old for old, new in self.fields.items()}
        return [back[n] for n in names if n in back]


def _shape(old: EntitySpec, new: EntitySpec, renamed: Mapping[str, str],
           previous: PreviousSchema, wire: Any) -> EntityShape:
    name = new.table.name
    old_fields = {f.name: f for f in old.fields if not f.local}
    new_fields = {f.name: f for f in new.fields if not f.local}
    for new_name, old_name in renamed.items():
        if new_name not in new_fields or old_name not in old_fields:
            raise MigrationError(
                f"PreviousSchema {previous.version}: {name} renames {old_name!r} to "
                f"{new_name!r}, but the fields are {', '.join(old_fields)} (then) and "
                f"{', '.join(new_fields)} (now)")
    pairs = {renamed.get(n, n): n for n in new_fields if renamed.get(n, n) in old_fields}
    up_problems = [f"{o} -> {n} changes its type" for o, n in pairs.items()
                   if not _fits(old_fields[o], new_fields[n])]
    up_problems += [f"{n} is new, with no default" for n in new_fields
                    if n not in pairs.values() and not _default(new, new_fields[n])[0]]
    down_problems = [f"{n} -> {o} changes its type" for o, n in pairs.items()
                     if not _fits(new_fields[n], old_fields[o])]
    fill: dict[str, Any] = {}
    for o, f in old_fields.items():
        if o in pairs:
            continue
        has, value = _default(old, f)
        if has:
            fill[o] = None if value is None else wire.unstructure(value)
        else:
            down_problems.append(f"{o} was dropped, and the client's version has no default")
    up = previous.upgrade_payload.get(name)
    declared_down = name in previous.downgrade_payload
    down = previous.downgrade_payload.get(name)
    no_upgrade = None if up is not None or not up_problems else (
        f"{'; '.join(up_problems)} (declare upgrade_payload[{name!r}])")
    if declared_down and down is None:
        no_downgrade: str | None = "its migration declares no way back (downgrade_payload None)"
    else:
        no_downgrade = None if down is not None or not down_problems else (
            f"{'; '.join(down_problems)} (declare downgrade_payload[{name!r}])")
    return EntityShape(name, pairs, fill, up, down, no_upgrade, no_downgrade)


def _print(m: Mutation) -> str | None:
    """The fingerprint of ``m`` as sent (None: what the engine refuses anyway)."""
    from syncline.server.engine import fingerprint, invalid_mutation

    return None if invalid_mutation(m) is not None else fingerprint(m)


class Versions:
    """The schema versions a server accepts: its own and, when its schema declares it
    (``Schema.previous``), the one before; the shapes of that one's entities."""

    def __init__(self, current: int, specs: Mapping[str, EntitySpec],
                 previous: PreviousSchema | None, wire: Any) -> None:
        self.current = current
        self.previous = previous
        if previous is not None and previous.version != current - 1:
            raise MigrationError(
                f"the server is at schema version {current} and its PreviousSchema describes "
                f"{previous.version}; it must describe {current - 1}")
        self.old: OldShape | None = None
        if previous is not None:
            self.old = OldShape(previous, current, specs, wire)

    @property
    def accepted(self) -> dict[str, int]:
        """The range published in ``/v1/health`` and ``/v1/schema`` (``"schema"``)."""
        low = self.previous.version if self.previous is not None else self.current
        return {"min": low, "max": self.current}

    def shape(self, client: int | None) -> OldShape | None:
        """How to serve a client of schema version ``client`` (None: not said, the server's
        own): None when it is the server's, its :class:`OldShape` when one behind; raises
        :class:`UpgradeRequiredError` outside the range."""
        if client is None or client == self.current:
            return None
        if self.old is not None and client == self.old.version:
            return self.old
        accepted = self.accepted
        if client > self.current:
            raise UpgradeRequiredError(
                f"this client is at schema version {client}, newer than the server's "
                f"{self.current}: upgrade the server (it accepts schema versions "
                f"{accepted['min']} to {accepted['max']}); the client's queued changes are "
                f"kept meanwhile", status=409)
        raise UpgradeRequiredError(
            f"this client is at schema version {client}; the server accepts schema versions "
            f"{accepted['min']} to {accepted['max']}: upgrade the app to schema version "
            f"{self.current}; its queued changes are kept and sync once it is upgraded",
            status=409)


class OldShape:
    """Serves clients of the version before the server's (see the module's docstring)."""

    def __init__(self, previous: PreviousSchema, current: int,
                 specs: Mapping[str, EntitySpec], wire: Any) -> None:
        self.version = previous.version
        self.current = current
        old_specs = {spec_of(c).table.name: spec_of(c) for c in previous.entities
                     if spec_of(c).syncs}
        renamed: dict[str, dict[str, str]] = {t: dict(m) for t, m in previous.renamed.items()}
        for migration in previous.tables:
            new = spec_of(migration.entity)
            old = old_specs.get(new.table.name)
            if old is None:
                continue
            for new_column, old_column in migration.renamed.items():
                renamed.setdefault(new.table.name, {})[new.field_of_column(new_column)] = \
                    old.field_of_column(old_column)
        for where, names in (("renamed", renamed), ("upgrade_payload", previous.upgrade_payload),
                             ("downgrade_payload", previous.downgrade_payload)):
            unknown = sorted(set(names) - (set(old_specs) & set(specs)))
            if unknown:
                raise MigrationError(
                    f"PreviousSchema {self.version}: {where} names {', '.join(unknown)}, not an "
                    f"entity of both versions ({', '.join(sorted(set(old_specs) & set(specs)))})")
        #: entities of both versions, by table name
        self.entities = {name: _shape(old, specs[name], renamed.get(name, {}), previous, wire)
                         for name, old in old_specs.items() if name in specs}
        #: the client's entities the server no longer serves
        self.gone = sorted(set(old_specs) - set(specs))
        self._told = False

    def _refuse(self, entity: str, why: str) -> UpgradeRequiredError:
        return UpgradeRequiredError(
            f"the server is at schema version {self.current}, this client at {self.version}: "
            f"{entity} {why}, so this client cannot sync it; upgrade the app to schema "
            f"version {self.current} (its queued changes are kept and sync then)", status=409)

    def _served(self, what: str) -> None:
        level = logging.DEBUG if self._told else logging.INFO
        self._told = True
        log.log(level, "serving a client of schema version %d (the server is at %d): %s",
                self.version, self.current, what)

    def entity(self, name: str, pushing: bool) -> EntityShape | None:
        """The shape of ``name`` for this client (None: not an entity of its version);
        raises :class:`UpgradeRequiredError` when it cannot be translated."""
        if name in self.gone:
            raise self._refuse(name, f"is no longer served (schema version {self.current} "
                                     f"dropped it)")
        shape = self.entities.get(name)
        if shape is None:
            return None
        # A record the client cannot read can be neither pulled nor answered to a push
        # (a conflict carries it): no way back refuses both.
        why = shape.no_downgrade or (shape.no_upgrade if pushing else None)
        if why is not None:
            raise self._refuse(name, f"changed: {why}")
        return shape

    # -- push --------------------------------------------------------------------------------

    def push(self, mutations: Sequence[Mutation],
             apply: Callable[[list[Mutation], list[str | None]], PushResponse]) -> PushResponse:
        """Upgrade ``mutations``, ``apply`` them, and answer in the client's shape. Nothing is
        applied when one of them cannot be upgraded (UpgradeRequiredError).

        Each upgraded mutation is applied with the fingerprint of the mutation as sent, so a
        replay of it is known whatever version the client is at by then (an app upgraded
        while a push's answer was lost sends it again as it was, under its new version)."""
        shapes = [None if m.action == "command" or type(m.entity) is not str
                  else self.entity(m.entity, pushing=True) for m in mutations]
        sent: list[Mutation] = []
        prints: list[str | None] = []
        answers: dict[int, MutationResult] = {}
        for i, (m, shape) in enumerate(zip(mutations, shapes, strict=True)):
            try:
                upgraded, print_ = self._upgrade(m, shape), _print(m)
            except Exception as exc:  # the app's transform failed on this payload
                answers[i] = MutationResult(m.id, "rejected", reason=(
                    f"this {m.entity} payload of schema version {self.version} cannot be "
                    f"upgraded to {self.current}: {type(exc).__name__}: {exc}"))
                continue
            sent.append(upgraded)
            prints.append(print_)
        self._served(f"{len(mutations)} mutation(s) pushed, upgraded")
        response = apply(sent, prints) if sent else PushResponse([])
        applied = iter(response.results)
        results = []
        for i, (m, shape) in enumerate(zip(mutations, shapes, strict=True)):
            result = answers.get(i) or next(applied)
            results.append(result if shape is None else self._answer(m, shape, result))
        return attrs.evolve(response, results=results)

    @staticmethod
    def _upgrade(m: Mutation, shape: EntityShape | None) -> Mutation:
        if shape is None or m.action == "delete" or type(m.payload) is not dict:
            return m  # a command, or what the engine refuses as it is
        payload = shape.upgrade(m.payload)
        base = shape.upgrade(m.base) if type(m.base) is dict else m.base
        if m.action == "update" and base is None:
            # A whole record of the old shape lacks the fields added since: sent as a patch,
            # they keep their stored values rather than being reset to defaults.
            base = {}
        return attrs.evolve(m, payload=payload, base=base)

    @staticmethod
    def _answer(m: Mutation, shape: EntityShape, result: MutationResult) -> MutationResult:
        record = result.record
        if isinstance(record, dict):
            record = shape.downgrade(record)
        fields = result.fields
        if fields is not None:
            # only a patch's answer names fields (a whole record went as a patch here)
            fields = shape.old_names(fields) if m.base is not None else None
        return attrs.evolve(result, record=record, fields=fields)

    # -- pull --------------------------------------------------------------------------------

    def pull_entities(self, entities: Sequence[str] | None, served: Sequence[str]) -> list[str]:
        """The entities a pull of this client reads: those it names (all of its version the
        server serves when none); UpgradeRequiredError when one cannot be given its shape."""
        names = list(entities) if entities else [n for n in served if n in self.entities]
        for name in names:
            self.entity(name, pushing=False)
        if not names:
            raise self._refuse("(every entity)", "is of the new version")
        return names

    def page(self, page: PullPage) -> PullPage:
        """``page`` in the client's shape."""
        changes = []
        for change in page.changes:
            shape = self.entities.get(change.entity)  # None: one it asked for by name that
            if shape is not None and isinstance(change.payload, dict):  # is new: as it is
                change = attrs.evolve(change, payload=shape.downgrade(change.payload))
            changes.append(change)
        self._served(f"{len(changes)} change(s) pulled, downgraded")
        return attrs.evolve(page, changes=changes)
