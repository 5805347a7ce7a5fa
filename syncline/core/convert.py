"""The cattrs converter: entity <-> storage row.

:func:`make_converter` builds the library's converter. Its hooks turn every supported field type
into a *canonical* value (aware UTC datetime, date, UUID, Decimal, enum value, JSON-able
list/dict) and back, validating on the way. A backend copies it and registers hooks for its own
storage forms (SQLite stores a datetime as ISO text, for instance). :class:`RowCodec` compiles,
per entity and backend, the two functions on the hot path: entity -> row dict and row -> entity.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import json
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from typing import Any

import attrs
import cattrs

from syncline.core.errors import SerializationError
from syncline.core.schema import EntitySpec, FieldSpec, TypeRegistry, _is_json

Row = dict[str, Any]
Hook = Callable[[Any], Any]


def _type_name(value: Any) -> str:
    return type(value).__name__


def utc_datetime(value: Any) -> dt.datetime:
    """Validate an aware datetime and return it in UTC; naive datetimes are refused."""
    if not isinstance(value, dt.datetime):
        raise SerializationError(f"expected a datetime, got {value!r} ({_type_name(value)})")
    if value.tzinfo is None or value.utcoffset() is None:
        raise SerializationError(
            f"naive datetime {value.isoformat()} has no time zone; pass an aware datetime "
            f"such as datetime.now(timezone.utc)"
        )
    return value.astimezone(dt.UTC)


def _expect(tp: type) -> Hook:
    def check(value: Any) -> Any:
        if isinstance(value, tp):
            return value
        raise SerializationError(
            f"expected {tp.__name__}, got {value!r} ({_type_name(value)})"
        )

    return check


def _structure_datetime(value: Any, _: Any) -> dt.datetime:
    if isinstance(value, str):
        value = dt.datetime.fromisoformat(value)
    return utc_datetime(value)


def _structure_date(value: Any, _: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise SerializationError(f"expected a date, got a datetime {value!r}")
    return value if isinstance(value, dt.date) else dt.date.fromisoformat(value)


def _structure_uuid(value: Any, _: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else uuid.UUID(value)


def _structure_decimal(value: Any, _: Any) -> decimal.Decimal:
    if isinstance(value, float):
        raise SerializationError(f"refusing to make a Decimal from float {value!r}; pass a str")
    return value if isinstance(value, decimal.Decimal) else decimal.Decimal(value)


def _unstructure_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime) or not isinstance(value, dt.date):
        raise SerializationError(f"expected a date, got {value!r} ({_type_name(value)})")
    return value


def _json_container(tp: Any) -> type:
    origin = typing.get_origin(tp) or tp
    return list if origin is list else dict


def structure_hook(func: Hook) -> Callable[[Any, Any], Any]:
    """A cattrs structure hook from a one-argument function; row codecs call ``func`` directly."""

    def hook(value: Any, _tp: Any) -> Any:
        return func(value)

    hook.one_arg = func  # type: ignore[attr-defined]
    return hook


def make_converter(types: TypeRegistry | None = None) -> cattrs.Converter:
    """The library's converter: validating hooks to and from canonical storage values."""
    conv = cattrs.Converter()
    conv.register_unstructure_hook(dt.datetime, utc_datetime)
    conv.register_structure_hook(dt.datetime, _structure_datetime)
    conv.register_unstructure_hook(dt.date, _unstructure_date)
    conv.register_structure_hook(dt.date, _structure_date)
    conv.register_unstructure_hook(uuid.UUID, _expect(uuid.UUID))
    conv.register_structure_hook(uuid.UUID, _structure_uuid)
    conv.register_unstructure_hook(decimal.Decimal, _expect(decimal.Decimal))
    conv.register_structure_hook(decimal.Decimal, _structure_decimal)
    conv.register_unstructure_hook(bytes, _expect(bytes))

    def json_unstructure_factory(tp: Any) -> Hook:
        container = _json_container(tp)
        base: Hook = lambda v: v  # noqa: E731
        if typing.get_args(tp):
            base = (conv.gen_unstructure_iterable(tp) if container is list
                    else conv.gen_unstructure_mapping(tp))

        def unstructure(value: Any) -> Any:
            if not isinstance(value, container):
                raise SerializationError(
                    f"expected a {container.__name__}, got {value!r} ({_type_name(value)})"
                )
            return base(value)

        return unstructure

    conv.register_unstructure_hook_factory(_is_json, json_unstructure_factory)

    def enum_unstructure_factory(tp: Any) -> Hook:
        def unstructure(value: Any) -> Any:
            if isinstance(value, tp):
                return value.value
            return tp(value).value  # a raw value is accepted if it names a member

        return unstructure

    conv.register_unstructure_hook_factory(
        lambda t: isinstance(t, type) and issubclass(t, enum.Enum), enum_unstructure_factory
    )
    for custom in types or ():
        conv.register_unstructure_hook(custom.python_type, custom.to_storage)
        conv.register_structure_hook(custom.python_type, _from_storage(custom.from_storage))
    return conv


def _from_storage(func: Hook) -> Callable[[Any, Any], Any]:
    return lambda value, _tp: func(value)


JSON_NATIVE = (str, int, float, bool, type(None), Any)


def json_is_native(tp: Any) -> bool:
    """True when a JSON type holds only JSON-native values, so loading needs no structuring."""
    if tp in (list, dict) or tp in JSON_NATIVE:
        return True
    origin = typing.get_origin(tp)
    if origin in (list, dict):
        args = typing.get_args(tp)
        if origin is dict and args and args[0] is not str:
            return False
        return all(json_is_native(a) for a in args)
    if origin is typing.Union or origin is getattr(__import__("types"), "UnionType", None):
        return all(json_is_native(a) for a in typing.get_args(tp))
    return False


_json_encode = json.JSONEncoder(sort_keys=True, separators=(",", ":"), allow_nan=False).encode


def dumps_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, so equal values give equal text."""
    try:
        return _json_encode(value)
    except (TypeError, ValueError) as exc:
        raise SerializationError(f"value is not JSON-serializable: {exc}") from exc


_COERCE: dict[str, tuple[type, ...]] = {
    "text": (str,),
    "integer": (int,),
    "float": (float, int),
    "boolean": (bool,),
    "bytes": (bytes, bytearray, memoryview),
}


def _coercer(owner: str, f: FieldSpec) -> Hook:
    """Slow path for a passthrough field whose value is not exactly of the field's type."""
    accepted = _COERCE.get(f.kind, (f.python_type,))
    target: type = f.python_type

    def coerce(value: Any) -> Any:
        if value is None:
            if f.nullable:
                return None
            raise SerializationError(
                f"{owner}.{f.name} is None but the field is not optional "
                f"(declare it as {target.__name__} | None to allow it)"
            )
        if isinstance(value, accepted) and not (f.kind == "integer" and isinstance(value, bool)):
            return target(value)
        raise SerializationError(
            f"{owner}.{f.name}: expected {target.__name__}, got {value!r} ({_type_name(value)})"
        )

    return coerce


class RowCodec:
    """Compiled conversion between one entity class and the rows of one backend."""

    def __init__(self, spec: EntitySpec, converter: cattrs.Converter,
                 passthrough: frozenset[type]) -> None:
        self.spec = spec
        self.owner = spec.cls.__name__
        self._encoders: dict[str, Hook] = {}
        self._decoders: dict[str, Hook | None] = {}
        ns: dict[str, Any] = {"cls": spec.cls}
        enc_parts: list[str] = []  # one expression per field, in column order
        dec_row: list[str] = []  # constructor arguments from a row dict
        dec_tuple: list[str] = []  # ... and from a tuple in column order
        for i, f in enumerate(spec.fields):
            attr = f"o.{f.name}"
            key = repr(f.name)
            native = f.python_type in passthrough and f.enum_type is None and not f.custom
            if native:
                coerce = _coercer(self.owner, f)
                ns[f"c{i}"] = coerce
                tname = f"t{i}"
                ns[tname] = f.python_type
                cond = f"type({attr}) is {tname}"
                if f.nullable:
                    cond += f" or {attr} is None"
                enc_parts.append(f"({attr} if {cond} else c{i}({attr}))")
                self._encoders[f.name] = self._checked_native(f, coerce)
                self._decoders[f.name] = None
                dec_row.append(f"{f.alias}=r[{key}]")
                dec_tuple.append(f"{f.alias}=r[{i}]")
                continue
            hook = converter.get_unstructure_hook(f.python_type)
            dec = self._decoder(f, converter)
            ns[f"h{i}"] = hook  # errors are located and named by to_row's slow path
            ns[f"d{i}"] = dec
            self._encoders[f.name] = self._wrap(f, hook)
            self._decoders[f.name] = dec
            if f.nullable:
                enc_parts.append(f"(None if {attr} is None else h{i}({attr}))")
                dec_row.append(f"{f.alias}=(None if r[{key}] is None else d{i}(r[{key}]))")
                dec_tuple.append(f"{f.alias}=(None if r[{i}] is None else d{i}(r[{i}]))")
            else:
                enc_parts.append(f"h{i}({attr})")
                dec_row.append(f"{f.alias}=d{i}(r[{key}])")
                dec_tuple.append(f"{f.alias}=d{i}(r[{i}])")
        keys = [repr(f.name) for f in spec.fields]
        src = (
            "def to_row(o):\n    return {"
            + ", ".join(f"{k}: {e}" for k, e in zip(keys, enc_parts, strict=True)) + "}\n"
            "def to_tuple(o):\n    return (" + ", ".join(enc_parts) + ",)\n"
            "def from_row(r):\n    return cls(" + ", ".join(dec_row) + ")\n"
            "def from_tuple(r):\n    return cls(" + ", ".join(dec_tuple) + ")\n"
        )
        exec(compile(src, f"<syncline codec {self.owner}>", "exec"), ns)
        self._to_row: Callable[[Any], Row] = ns["to_row"]
        self._to_tuple: Callable[[Any], tuple[Any, ...]] = ns["to_tuple"]
        self.from_row: Callable[[Mapping[str, Any]], Any] = ns["from_row"]
        #: an entity from a tuple of stored values in column order
        self.from_tuple: Callable[[Sequence[Any]], Any] = ns["from_tuple"]

    def _checked_native(self, f: FieldSpec, coerce: Hook) -> Hook:
        tp = f.python_type

        def encode(value: Any) -> Any:
            return value if type(value) is tp else coerce(value)

        return encode

    def _wrap(self, f: FieldSpec, hook: Hook) -> Hook:
        owner = self.owner

        def encode(value: Any) -> Any:
            if value is None:
                if f.nullable:
                    return None
                raise SerializationError(
                    f"{owner}.{f.name} is None but the field is not optional"
                )
            try:
                return hook(value)
            except SerializationError as exc:
                raise SerializationError(f"{owner}.{f.name}: {exc}") from exc
            except Exception as exc:
                raise SerializationError(
                    f"{owner}.{f.name}: cannot store {value!r} as {f.python_type!r}: {exc}"
                ) from exc

        return encode

    def _decoder(self, f: FieldSpec, converter: cattrs.Converter) -> Hook:
        hook = converter.get_structure_hook(f.python_type)
        one_arg: Hook | None = getattr(hook, "one_arg", None)
        if one_arg is not None:  # see structure_hook(): skip a call layer on the hot path
            return one_arg
        tp = f.python_type
        return lambda value: hook(value, tp)

    def to_row(self, obj: Any) -> Row:
        """The row for ``obj``; a wrong value raises :class:`SerializationError` naming it."""
        return self._encode_with(self._to_row, obj)  # type: ignore[no-any-return]

    def to_tuple(self, obj: Any) -> tuple[Any, ...]:
        """The stored values of ``obj`` in column order (the hot path of batch writes)."""
        return self._encode_with(self._to_tuple, obj)  # type: ignore[no-any-return]

    def _encode_with(self, compiled: Callable[[Any], Any], obj: Any) -> Any:
        if not isinstance(obj, self.spec.cls):
            raise SerializationError(
                f"expected a {self.owner}, got {obj!r} ({_type_name(obj)})"
            )
        try:
            return compiled(obj)
        except Exception as exc:
            self._explain(obj, exc)
            raise

    def _explain(self, obj: Any, exc: Exception) -> None:
        """Raise an error naming the field that failed (the fast path does not know it)."""
        for f in self.spec.fields:
            self.encode(f.name, getattr(obj, f.name))
        raise SerializationError(f"cannot store {obj!r}: {exc}") from exc

    def encode(self, field: str, value: Any) -> Any:
        """The stored form of one field's value (for partial updates and query values)."""
        try:
            enc = self._encoders[field]
        except KeyError:
            raise SerializationError(
                f"{self.owner} has no field {field!r}; fields: {', '.join(self._encoders)}"
            ) from None
        if value is None:
            if self.spec.field(field).nullable:
                return None
            raise SerializationError(f"{self.owner}.{field} is None but the field is not optional")
        return enc(value)

    def decode(self, field: str, value: Any) -> Any:
        dec = self._decoders[field]
        return value if dec is None or value is None else dec(value)


def attrs_field_names(cls: type) -> tuple[str, ...]:
    return tuple(a.name for a in attrs.fields(cls))


def make_wire_converter(types: TypeRegistry | None = None) -> cattrs.Converter:
    """Entities <-> JSON-able dicts for the sync protocol.

    Datetimes travel as ISO 8601 in UTC, dates as ISO, UUIDs and Decimals as strings, bytes as
    base64, enums by value. Structuring refuses unknown keys, so a payload can only write the
    entity's declared fields.
    """
    import base64

    # Start from the library's validating hooks, then give every value a JSON form.
    wire = make_converter(types).copy(forbid_extra_keys=True)
    wire.register_unstructure_hook(dt.datetime, lambda v: utc_datetime(v).isoformat())
    wire.register_unstructure_hook(dt.date, lambda v: _unstructure_date(v).isoformat())
    wire.register_unstructure_hook(uuid.UUID, lambda v: str(_expect(uuid.UUID)(v)))
    wire.register_unstructure_hook(decimal.Decimal, lambda v: str(_expect(decimal.Decimal)(v)))
    wire.register_unstructure_hook(bytes, lambda v: base64.b64encode(v).decode("ascii"))
    wire.register_structure_hook(bytes, lambda v, _t: v if isinstance(v, bytes)
                                 else base64.b64decode(v, validate=True))
    return wire
