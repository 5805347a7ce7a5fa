"""The transport contract and the sync protocol's messages.

Messages are frozen attrs classes; :func:`to_wire` and :func:`from_wire` turn them into JSON-able
dicts and back (HTTP is one encoding of them). A transport moves a push batch to the server and
a pull page back; it raises :class:`RetryableTransportError` for failures worth retrying (offline,
timeouts, 5xx, 429) and :class:`PermanentTransportError` for the rest.
"""

from __future__ import annotations

import abc
import typing
from collections.abc import Iterator, Mapping, Sequence
from typing import Any, Literal, TypeVar

import attrs
import cattrs

from syncline.core.model.convert import describe_error
from syncline.core.model.errors import SerializationError, TransportError

Action = Literal["create", "update", "delete", "command"]
ResultStatus = Literal["applied", "duplicate", "conflict", "rejected", "retry"]
ChangeOp = Literal["upsert", "delete"]

M = TypeVar("M")

#: the version of the sync protocol this syncline speaks; over HTTP a client sends it as the
#: ``Syncline-Protocol`` header and the server publishes the range it accepts
PROTOCOL_VERSION = 2
#: fields a message carries only when set: a peer of an older protocol never sees them (its
#: parser refuses unknown keys), and fingerprints of older messages stay as they were
_NEWER_FIELDS = {"base", "fields"}


@attrs.frozen
class Mutation:
    """One change pushed to the server; ``id`` is its idempotency key."""

    id: str
    entity: str
    action: Action
    record_id: str | None = None
    payload: dict[str, Any] | None = None
    #: The server version the change was based on (None for a create or a command).
    base_version: int | None = None
    #: The command's name when ``action == "command"``.
    command: str | None = None
    #: Protocol 2, update: the payload is a patch (the changed fields only) and this holds
    #: those fields' values at ``base_version`` (a field missing here: unknown base).
    base: dict[str, Any] | None = None


@attrs.frozen
class MutationResult:
    """The server's answer to one mutation."""

    id: str
    status: ResultStatus
    #: applied/duplicate: the record's id on the server (differs when the server assigns ids).
    server_id: str | None = None
    #: applied/duplicate/conflict: the record's version on the server now.
    version: int | None = None
    #: conflict: the server's current record (None when it was deleted); command: its answer.
    record: dict[str, Any] | None = None
    #: conflict: when the server's record was last written (server clock, ISO 8601).
    updated_at: str | None = None
    #: rejected/retry: why.
    reason: str | None = None
    #: retry: seconds to wait before trying again.
    retry_after: float | None = None
    #: conflict of a patch: the fields changed concurrently on the server (the others merge).
    fields: list[str] | None = None


@attrs.frozen
class PushResponse:
    results: list[MutationResult]
    server_time: str | None = None


@attrs.frozen
class Change:
    """One committed change on the server, as a pull returns it."""

    entity: str
    record_id: str
    op: ChangeOp
    version: int
    payload: dict[str, Any] | None = None
    updated_at: str | None = None
    #: the mutation that made this change, so its author recognises its own write
    mutation_id: str | None = None


@attrs.frozen
class PullPage:
    changes: list[Change]
    #: Opaque: pass it to the next pull. Never made by the client.
    cursor: str
    more: bool
    #: Changes when the server's data was reset; the client then pulls from the start again.
    epoch: str
    server_time: str | None = None
    #: False on a last page when changes committed before it are still held back behind a
    #: running transaction (PostgreSQL's watermark): a later pull brings them, so what this
    #: pull did not return may still exist. Servers that never hold changes back say True.
    settled: bool = True


def concurrent_fields(patch: dict[str, Any], base: dict[str, Any],
                      current: dict[str, Any]) -> list[str]:
    """The fields of ``patch`` changed in ``current`` since ``base``: those whose current
    value is neither the base value (missing: unknown, so changed) nor the patch's. The
    server decides a patch's conflict with it, the client a pulled change's."""
    missing = object()
    return sorted(f for f, value in patch.items()
                  if current.get(f) != value and current.get(f) != base.get(f, missing))


class RetryableTransportError(TransportError):
    """The server could not be reached or asked to wait; trying again later may work.

    ``status`` is the HTTP-like status when the server answered (5xx, 429), None when it
    could not be reached or the answer was lost: the engine splits a batch that keeps
    getting a 5xx, to find the one mutation the server cannot take.
    """

    def __init__(self, message: str, retry_after: float | None = None,
                 status: int | None = None) -> None:
        super().__init__(message)
        self.retry_after = retry_after
        self.status = status


class PermanentTransportError(TransportError):
    """The server refused the request as such; retrying the same request will not help.

    ``status`` is the HTTP-like status (413: the batch is too large, split it).
    """

    def __init__(self, message: str, status: int | None = None) -> None:
        super().__init__(message)
        self.status = status


class CursorRejectedError(PermanentTransportError):
    """The server refused the pull cursor (it did not issue it, or it is beyond its
    sequence); the engine forgets its cursor and pulls from the start, keeping its queue."""


class ProtocolMismatchError(PermanentTransportError):
    """The server does not speak this client's protocol version (or the client not the
    server's): nothing is sent, the queue is kept, and the sync reports the error until one
    side is upgraded."""


class UpgradeRequiredError(ProtocolMismatchError):
    """The server does not serve this client's schema version (older than the versions it
    accepts, or a change it cannot give in the client's shape; HTTP: 409 ``upgrade_required``):
    nothing was applied, the queue is kept and goes once the app is upgraded."""


@attrs.frozen
class PushLimits:
    """What the server accepts in one push, published by the server (HTTP: ``GET v1/limits``).

    The engine sizes its batches by both: at most ``max_mutations`` mutations and at most
    ``max_bytes`` bytes of JSON body.
    """

    max_mutations: int = 1000
    max_bytes: int = 10 * 1024 * 1024


class Notifications(abc.ABC):
    """A live stream of "pull now" notices from the server (see docs/sync.md, Live sync).

    Iterating blocks until the next notice and yields the newest change number the server
    knows of (a hint: the client pulls as usual, so nothing is skipped or repeated); the
    first notice comes as soon as the stream is open, so a client catches up on what it
    missed while away. The iteration ends or raises a :class:`TransportError` when the stream
    breaks; :meth:`close` ends it from any thread. A thread worker consumes it directly; an
    asyncio worker can run it in a thread or implement the same over an async client.
    """

    @abc.abstractmethod
    def __iter__(self) -> Iterator[int]:
        """Each notice's change number, as it arrives."""

    @abc.abstractmethod
    def close(self) -> None:
        """End the stream (the iteration stops)."""


class Transport(abc.ABC):
    """Moves sync messages between a client store and a server. Register by URL scheme."""

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        self.url = url
        self.options: dict[str, Any] = dict(options or {})

    @abc.abstractmethod
    def push(self, mutations: Sequence[Mutation]) -> PushResponse:
        """Send a batch; the response has one result per mutation, in the same order."""

    @abc.abstractmethod
    def pull(self, cursor: str | None, limit: int,
             entities: Sequence[str] | None = None) -> PullPage:
        """Changes after ``cursor`` (None: from the start), at most ``limit`` of them."""

    #: the protocol version spoken with the server (a transport lowers it to the server's);
    #: below 2 the engine sends whole records for updates instead of patches
    protocol: int = PROTOCOL_VERSION

    def limits(self) -> PushLimits | None:
        """The server's push limits, when it publishes them (None: unknown, use defaults).
        Called once per engine, before the first push; may raise a TransportError."""
        return None

    def notifications(self, entities: Sequence[str] | None = None) -> Notifications | None:
        """Open a live stream of change notices for ``entities`` (None: all the principal
        syncs); None when this transport has none (the worker then polls). May raise a
        TransportError when the stream cannot be opened now."""
        return None

    def close(self) -> None:  # noqa: B027 - optional for transports without resources
        """Release connections."""


def _strict_converter() -> cattrs.Converter:
    """The protocol's converter: a field takes only its declared JSON type (no ``"6"`` for an
    int, no ``null`` for a str, no string for a list); nothing is converted."""
    from syncline.core.model.values import describe

    conv = cattrs.Converter(forbid_extra_keys=True)

    def exact(*types: type) -> Any:
        names = " or ".join(t.__name__ for t in types)

        def structure(value: Any, _t: Any) -> Any:
            if type(value) in types:
                return value
            raise SerializationError(
                f"expected {names}, got {describe(value)} ({type(value).__name__})")

        return structure

    conv.register_structure_hook(str, exact(str))
    conv.register_structure_hook(int, exact(int))
    conv.register_structure_hook(bool, exact(bool))
    number = exact(int, float)
    conv.register_structure_hook(float, lambda v, t: float(number(v, t)))

    def container(kind: type) -> Any:
        def factory(tp: Any) -> Any:
            args = typing.get_args(tp)

            def structure(data: Any, _t: Any) -> Any:
                value: Any = data
                if type(data) is not kind:
                    raise SerializationError(
                        f"expected a {'JSON object' if kind is dict else 'list'}, got "
                        f"{describe(value)} ({type(value).__name__})")
                if kind is dict:
                    key: Any = args[0] if args else str
                    item: Any = args[1] if args else Any
                    return {conv.structure(k, key): v if item is Any else conv.structure(v, item)
                            for k, v in value.items()}
                item = args[0] if args else Any
                return [v if item is Any else conv.structure(v, item) for v in value]

            return structure

        return factory

    def origin_is(kind: type) -> Any:
        def test(t: Any) -> bool:
            origin: Any = typing.get_origin(t)
            return origin is kind

        return test

    conv.register_structure_hook_factory(origin_is(dict), container(dict))
    conv.register_structure_hook_factory(origin_is(list), container(list))
    return conv


_wire = _strict_converter()


def _omit_newer_when_unset(conv: cattrs.Converter, *classes: type) -> None:
    from cattrs.gen import make_dict_unstructure_fn, override

    for cls in classes:
        newer: dict[str, Any] = {f.name: override(omit_if_default=True)
                                 for f in attrs.fields(cls) if f.name in _NEWER_FIELDS}
        conv.register_unstructure_hook(cls, make_dict_unstructure_fn(cls, conv, **newer))


_omit_newer_when_unset(_wire, Mutation, MutationResult)


def to_wire(message: Any) -> dict[str, Any]:
    """A protocol message as a JSON-able dict."""
    out: dict[str, Any] = _wire.unstructure(message)
    return out


def mutation_wire(m: Mutation) -> dict[str, Any]:
    """``to_wire(m)`` for a mutation whose payload holds JSON values only (checked ones: the
    converter would copy them as they are), built without the converter: the push's hot
    path sizes and fingerprints every mutation."""
    wire = {"id": m.id, "entity": m.entity, "action": m.action, "record_id": m.record_id,
            "payload": m.payload, "base_version": m.base_version, "command": m.command}
    if m.base is not None:  # as to_wire: set only (protocol 1 peers never see it)
        wire["base"] = m.base
    return wire


def from_wire(data: Any, cls: type[M]) -> M:
    """Parse a JSON-able dict into a message, naming the field at fault."""
    try:
        return _wire.structure(data, cls)
    except Exception as exc:
        raise SerializationError(
            f"invalid {cls.__name__}: {describe_error(exc, path='$')}") from exc
