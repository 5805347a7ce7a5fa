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
import functools
import json
import re
import threading
import typing
import uuid
from collections.abc import Callable, Mapping, Sequence
from types import CodeType
from typing import Any

import cattrs
from cattrs.gen import make_dict_structure_fn, make_dict_unstructure_fn, override

from syncline.core.model.checks import checker
from syncline.core.model.errors import SerializationError
from syncline.core.model.schema import (
    CustomType,
    EntitySpec,
    FieldSpec,
    TypeRegistry,
    is_internal,
    is_json,
)
from syncline.core.model.values import (
    INT64_MAX,
    INT64_MIN,
    KIND_CHECKS,
    MAX_ID_LENGTH,
    MAX_INDEXED_BYTES,
    check_bool,
    check_bytes,
    check_date,
    check_datetime,
    check_decimal,
    check_float,
    check_int,
    check_json,
    check_json_any,
    check_length,
    check_str,
    check_uuid,
    describe,
    json_native,
    nested_payloads,
)

Row = dict[str, Any]
Hook = Callable[[Any], Any]


def _type_name(value: Any) -> str:
    return type(value).__name__


#: Validate an aware datetime and return it in UTC; naive datetimes are refused.
utc_datetime = check_datetime


def _expect(tp: type) -> Hook:
    def check(value: Any) -> Any:
        if isinstance(value, tp):
            return value
        raise SerializationError(
            f"expected {tp.__name__}, got {describe(value)} ({_type_name(value)})"
        )

    return check


def _parsed(parse: Callable[[str], Any], what: str) -> Callable[[Any], Any]:
    """A parser of wire text that refuses anything but a str and raises SerializationError."""

    def run(value: Any) -> Any:
        if not isinstance(value, str):
            raise SerializationError(
                f"expected {what} as a string, got {describe(value)} ({_type_name(value)})")
        try:
            return parse(value)
        except (ValueError, ArithmeticError) as exc:
            raise SerializationError(f"{describe(value)} is not {what}: {exc}") from None

    return run


def _structure_datetime(value: Any, _: Any) -> dt.datetime:
    if isinstance(value, str):
        value = _parsed(dt.datetime.fromisoformat, "an ISO 8601 datetime")(value)
    return utc_datetime(value)


def _structure_date(value: Any, _: Any) -> dt.date:
    if isinstance(value, str):
        value = _parsed(dt.date.fromisoformat, "an ISO 8601 date")(value)
    return check_date(value)


def _structure_uuid(value: Any, _: Any) -> uuid.UUID:
    return value if isinstance(value, uuid.UUID) else _parsed(uuid.UUID, "a UUID")(value)


def _structure_decimal(value: Any, _: Any) -> decimal.Decimal:
    if isinstance(value, float):
        raise SerializationError(f"refusing to make a Decimal from float {value!r}; pass a str")
    return value if isinstance(value, decimal.Decimal) else decimal.Decimal(value)


_unstructure_date = check_date


def _enum_structure_factory(tp: Any) -> Callable[[Any, Any], Any]:
    def structure(value: Any, _t: Any) -> Any:
        try:
            return tp(value)
        except ValueError:
            raise SerializationError(
                f"{describe(value)} is not a value of {tp.__name__} (values: "
                f"{', '.join(repr(m.value) for m in tp)[:200]}); was a member removed? "
                f"migrate the stored rows to a declared value") from None

    return structure


def _is_enum(tp: Any) -> bool:
    return isinstance(tp, type) and issubclass(tp, enum.Enum)


def _json_container(tp: Any) -> type:
    origin = typing.get_origin(tp) or tp
    return list if origin is list else dict


def structure_hook(func: Hook) -> Callable[[Any, Any], Any]:
    """A cattrs structure hook from a one-argument function; row codecs call ``func`` directly."""

    def hook(value: Any, _tp: Any) -> Any:
        return func(value)

    hook.one_arg = func  # type: ignore[attr-defined]
    return hook


def _same(value: Any) -> Any:
    return value


def trusting(hook: Hook, trusted: Hook) -> Hook:
    """``hook`` (an unstructure hook that checks and converts), knowing ``trusted``: the same
    conversion without the checks, for values already checked
    (:attr:`RowCodec.to_tuple_trusted`)."""
    hook.trusted = trusted  # type: ignore[attr-defined]
    return hook


def make_converter(types: TypeRegistry | None = None) -> cattrs.Converter:
    """The library's converter: validating hooks to and from canonical storage values."""
    conv = cattrs.Converter()
    # Every value a row codec does not pass through goes through one of these: each checks
    # the value domain (syncline.core.model.values) and gives the canonical form.
    conv.register_unstructure_hook(dt.datetime, check_datetime)
    conv.register_structure_hook(dt.datetime, _structure_datetime)
    conv.register_unstructure_hook(dt.date, check_date)
    conv.register_structure_hook(dt.date, _structure_date)
    conv.register_unstructure_hook(uuid.UUID, check_uuid)
    conv.register_structure_hook(uuid.UUID, _structure_uuid)
    conv.register_unstructure_hook(decimal.Decimal, check_decimal)
    conv.register_structure_hook(decimal.Decimal, _structure_decimal)
    conv.register_unstructure_hook(bytes, check_bytes)
    conv.register_unstructure_hook(str, check_str)
    conv.register_unstructure_hook(int, check_int)
    conv.register_unstructure_hook(float, check_float)
    conv.register_unstructure_hook(bool, check_bool)
    conv.register_structure_hook_factory(_is_enum, _enum_structure_factory)

    def json_unstructure_factory(tp: Any) -> Hook:
        if json_native(tp):
            return trusting(lambda value: check_json(value, tp), _same)
        # Elements of other types (attrs classes ...): their unstructured form must be JSON.
        container = _json_container(tp)
        base: Hook = (conv.gen_unstructure_iterable(tp) if container is list
                      else conv.gen_unstructure_mapping(tp))

        def unstructure(value: Any) -> Any:
            if not isinstance(value, container):
                raise SerializationError(
                    f"expected a {container.__name__}, got {describe(value)} "
                    f"({_type_name(value)})"
                )
            return check_json_any(base(value))

        return trusting(unstructure, base)

    conv.register_unstructure_hook_factory(is_json, json_unstructure_factory)

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
        conv.register_unstructure_hook(custom.python_type,
                                       _then(custom.to_storage, custom.kind))
        conv.register_structure_hook(custom.python_type, _from_storage(custom.from_storage))
    return conv


def _then(to_storage: Hook, kind: str) -> Hook:
    """A plugin type's conversion, then the domain check of the kind it is stored as."""
    check = KIND_CHECKS.get(kind, check_json_any)
    return lambda value: check(to_storage(value))


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


def store_json(conv: cattrs.Converter, base: cattrs.Converter, *,
               dump: Callable[[Any], Any], load: Callable[[Any], Any]) -> None:
    """Make ``conv`` (a copy of ``base``) store JSON fields in a backend's own form: ``dump``
    turns a field's canonical JSON-able value into it, ``load`` turns it back."""

    def unstructure(tp: Any) -> Any:
        inner = base.get_unstructure_hook(tp)
        hook: Hook = lambda value: dump(inner(value))  # noqa: E731
        plain = getattr(inner, "trusted", None)
        return hook if plain is None else trusting(hook, lambda value: dump(plain(value)))

    def structure(tp: Any) -> Any:
        if json_is_native(tp):
            return structure_hook(load)
        inner = base.get_structure_hook(tp)
        return lambda value, _t: inner(load(value), tp)

    conv.register_unstructure_hook_factory(is_json, unstructure)
    conv.register_structure_hook_factory(is_json, structure)


def store_json_as_text(conv: cattrs.Converter, base: cattrs.Converter) -> None:
    """:func:`store_json` as text (:func:`dumps_json`), for backends without a JSON type."""
    store_json(conv, base, dump=dumps_json, load=json.loads)


def dumps_json(value: Any) -> str:
    """Canonical JSON text: sorted keys, no spaces, so equal values give equal text."""
    try:
        return _json_encode(value)
    except (TypeError, ValueError, RecursionError) as exc:
        raise SerializationError(f"value is not JSON-serializable: {exc}") from None


# A JSON string, or a number in exponent notation with a positive exponent (Python writes
# floats from 1e16 up so). Strings are matched whole so that their contents are left alone.
_BIG_FLOAT = re.compile(r'"(?:[^"\\]|\\.)*"|(-?\d+(?:\.\d+)?e\+\d+)')


def _positional(match: re.Match[str]) -> str:
    number = match.group(1)
    if number is None:
        return match.group()
    return format(decimal.Decimal(number), "f") + ".0"


def dumps_jsonb(value: Any) -> str:
    """JSON text for PostgreSQL's jsonb, which keeps a number's digits but not its notation:
    ``1e+16`` would come back as the int 10000000000000000. Floats written in exponent notation
    with a positive exponent are written positionally with a ``.0``, so they come back floats."""
    text = dumps_json(value)
    if "e+" not in text:
        return text
    return _BIG_FLOAT.sub(_positional, text)


#: the domain check of a passthrough field, by its Python type
_NATIVE_CHECKS: dict[Any, Hook] = {
    str: check_str, int: check_int, float: check_float, bool: check_bool, bytes: check_bytes,
    dt.date: check_date, dt.datetime: check_datetime, uuid.UUID: check_uuid,
    decimal.Decimal: check_decimal,
}

#: per passthrough type, a Python expression (over ``{v}``) true when the value is already in
#: its canonical form and domain: the codec's fast path; anything else takes the slow path
_FAST: dict[Any, str] = {
    str: "(type({v}) is str and {v}.isascii() and '\\x00' not in {v})",
    int: f"(type({{v}}) is int and {INT64_MIN} <= {{v}} <= {INT64_MAX})",
    float: "(type({v}) is float and {v} - {v} == 0.0 and {v} != 0.0)",
    bool: "({v} is True or {v} is False)",
    bytes: "type({v}) is bytes",
}


def _limit(spec: EntitySpec, f: FieldSpec) -> tuple[int, str] | None:
    """The size limit of a str/bytes field: ids, and values PostgreSQL must index."""
    if f.kind not in ("text", "bytes") or f.enum_type is not None or f.custom:
        return None
    if is_internal(spec.cls):
        return None  # syncline's own tables: keys made of limited ids
    if f.name == spec.primary_key:
        return MAX_ID_LENGTH, "chars"
    if any(f.column in index.columns for index in spec.table.indexes):
        return MAX_INDEXED_BYTES, "bytes"
    return None


def _coercer(owner: str, f: FieldSpec, limit: tuple[int, str] | None = None) -> Hook:
    """Slow path for a passthrough field: None, conversions, the domain, the size limit."""
    target: type = f.python_type
    check = _NATIVE_CHECKS.get(target)

    def coerce(value: Any) -> Any:
        if value is None:
            if f.nullable:
                return None
            raise SerializationError(
                f"{owner}.{f.name} is None but the field is not optional "
                f"(declare it as {target.__name__} | None to allow it)"
            )
        try:
            if check is not None:
                value = check(value)
            elif isinstance(value, target):
                value = target(value)
            else:
                raise SerializationError(
                    f"expected {target.__name__}, got {describe(value)} ({_type_name(value)})")
            if limit is not None:
                if limit[1] == "chars":
                    if len(value) > limit[0]:
                        raise SerializationError(
                            f"{describe(value)} has {len(value)} characters; a primary key "
                            f"holds at most {limit[0]}")
                else:
                    check_length(value, limit[0], "an indexed field")
        except SerializationError as exc:
            raise SerializationError(f"{owner}.{f.name}: {exc}") from None
        return value

    return coerce


def _not_null() -> Any:
    raise SerializationError("None in a field that is not optional")


@functools.lru_cache(maxsize=1024)
def _compiled(src: str, filename: str) -> CodeType:
    """The code of a codec's source: stores opened with the same entities compile it once."""
    code: CodeType = compile(src, filename, "exec")
    return code


class RowCodec:
    """Compiled conversion between one entity class and the rows of one backend."""

    def __init__(self, spec: EntitySpec, converter: cattrs.Converter,
                 passthrough: frozenset[type]) -> None:
        self.spec = spec
        self.owner = spec.cls.__name__
        self._internal = is_internal(spec.cls)
        #: the JSON fields of syncline's own tables: they hold whole payloads
        self._nested = frozenset(f.name for f in spec.fields if f.kind == "json")
        self._encoders: dict[str, Hook] = {}
        self._decoders: dict[str, Hook | None] = {}
        ns: dict[str, Any] = {"cls": spec.cls, "_not_null": _not_null,
                              "_bad_read": self._bad_read}
        enc_parts: list[str] = []  # one expression per field, in column order
        trusted_parts: list[str] = []  # ... the same without the domain checks
        dec_row: list[str] = []  # constructor arguments from a row dict
        dec_tuple: list[str] = []  # ... and from a tuple in column order
        for i, f in enumerate(spec.fields):
            attr = f"o.{f.name}"
            key = repr(f.column)
            native = f.python_type in passthrough and f.enum_type is None and not f.custom
            if native:
                limit = _limit(spec, f)
                coerce = _coercer(self.owner, f, limit)
                ns[f"c{i}"] = coerce
                tname = f"t{i}"
                ns[tname] = f.python_type
                fast = _FAST.get(f.python_type)
                if f.python_type is decimal.Decimal:
                    cond = "False"  # finiteness and size: always checked
                else:
                    cond = (fast or f"type({{v}}) is {tname}").format(v=attr)
                if limit is not None:
                    cond = f"({cond} and len({attr}) <= {limit[0]})"
                if f.nullable:
                    cond += f" or {attr} is None"
                enc_parts.append(f"({attr} if {cond} else c{i}({attr}))")
                trusted_parts.append(attr)
                self._encoders[f.name] = coerce
                self._decoders[f.name] = None
                dec_row.append(f"{f.alias}=r[{key}]")
                dec_tuple.append(f"{f.alias}=r[{i}]")
                continue
            hook = converter.get_unstructure_hook(f.python_type)
            dec = self._decoder(f, converter)
            ns[f"h{i}"] = hook  # errors are located and named by to_row's slow path
            ns[f"d{i}"] = dec
            ns[f"u{i}"] = getattr(hook, "trusted", hook)
            self._encoders[f.name] = self._wrap(f, hook)
            self._decoders[f.name] = dec
            if f.nullable:
                enc_parts.append(f"(None if {attr} is None else h{i}({attr}))")
                trusted_parts.append(f"(None if {attr} is None else u{i}({attr}))")
                dec_row.append(f"{f.alias}=(None if r[{key}] is None else d{i}(r[{key}]))")
                dec_tuple.append(f"{f.alias}=(None if r[{i}] is None else d{i}(r[{i}]))")
            else:
                enc_parts.append(f"(h{i}({attr}) if {attr} is not None else _not_null())")
                trusted_parts.append(f"u{i}({attr})")
                dec_row.append(f"{f.alias}=d{i}(r[{key}])")
                dec_tuple.append(f"{f.alias}=d{i}(r[{i}])")
        #: per field with declared checks, the function testing its stored values
        self._checks: dict[str, Hook] = {}
        for i, f in enumerate(spec.fields):
            declared = [c for c in spec.table.checks if c.column == f.column]
            if declared:
                self._checks[f.name] = ns[f"k{i}"] = checker(self.owner, f.name, declared)
                enc_parts[i] = f"k{i}({enc_parts[i]})"
                trusted_parts[i] = f"k{i}({trusted_parts[i]})"
        keys = [repr(f.column) for f in spec.fields]
        src = (
            "def to_row(o):\n    return {"
            + ", ".join(f"{k}: {e}" for k, e in zip(keys, enc_parts, strict=True)) + "}\n"
            "def to_tuple(o):\n    return (" + ", ".join(enc_parts) + ",)\n"
            "def to_tuple_trusted(o):\n    return (" + ", ".join(trusted_parts) + ",)\n"
            "def from_row(r):\n    try:\n        return cls(" + ", ".join(dec_row) + ")\n"
            "    except Exception as e:\n        _bad_read(r, e)\n"
            "def from_tuple(r):\n    try:\n        return cls(" + ", ".join(dec_tuple) + ")\n"
            "    except Exception as e:\n        _bad_read(r, e)\n"
        )
        exec(_compiled(src, f"<syncline codec {self.owner}>"), ns)
        self._to_row: Callable[[Any], Row] = ns["to_row"]
        self._to_tuple: Callable[[Any], tuple[Any, ...]] = ns["to_tuple"]
        #: :meth:`to_tuple` of an entity whose values are known to be in the value domain:
        #: the same stored values, no checks (the sync server's own rows, made of values it
        #: checked on the way in); anything not proven so goes through :meth:`to_tuple`
        self.to_tuple_trusted: Callable[[Any], tuple[Any, ...]] = ns["to_tuple_trusted"]
        self.from_row: Callable[[Mapping[str, Any]], Any] = ns["from_row"]
        #: an entity from a tuple of stored values in column order
        self.from_tuple: Callable[[Sequence[Any]], Any] = ns["from_tuple"]

    def _bad_read(self, row: Any, exc: Exception) -> None:
        """Raise an error naming the field whose stored value could not be read."""
        for i, f in enumerate(self.spec.fields):
            value = row[f.column] if isinstance(row, Mapping) else row[i]
            dec = self._decoders.get(f.name)
            if value is None or dec is None:
                continue
            try:
                dec(value)
            except Exception as field_exc:
                raise SerializationError(
                    f"{self.owner}.{f.name}: cannot read the stored value {describe(value)}: "
                    f"{field_exc}") from exc
        raise SerializationError(
            f"cannot make a {self.owner} from a stored row: {exc}") from exc

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
                raise SerializationError(f"{owner}.{f.name}: {exc}") from None
            except Exception as exc:
                raise SerializationError(
                    f"{owner}.{f.name}: cannot store {describe(value)} as "
                    f"{f.python_type!r}: {exc}"
                ) from None

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
                f"expected a {self.owner}, got {describe(obj)} ({_type_name(obj)})"
            )
        if self._internal:
            with nested_payloads():
                return self._encode_checked(compiled, obj)
        return self._encode_checked(compiled, obj)

    def _encode_checked(self, compiled: Callable[[Any], Any], obj: Any) -> Any:
        try:
            return compiled(obj)
        except Exception as exc:
            self._explain(obj, exc)
            raise

    def _explain(self, obj: Any, exc: Exception) -> None:
        """Raise an error naming the field that failed (the fast path does not know it)."""
        for f in self.spec.fields:
            self.checked(f.name, self.encode(f.name, getattr(obj, f.name)))
        raise SerializationError(f"cannot store {describe(obj)}: {exc}") from exc

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
        if self._internal and field in self._nested:
            with nested_payloads():
                return enc(value)
        return enc(value)

    def checked(self, field: str, stored: Any) -> Any:
        """``stored`` (a value of ``field`` as :meth:`encode` made it) if it passes the field's
        declared checks, else an :class:`IntegrityError` naming them (for partial updates)."""
        check = self._checks.get(field)
        return stored if check is None else check(stored)

    def decode(self, field: str, value: Any) -> Any:
        dec = self._decoders[field]
        return value if dec is None or value is None else dec(value)


def make_wire_converter(types: TypeRegistry | None = None) -> cattrs.Converter:
    """Entities <-> JSON-able dicts for the sync protocol.

    Datetimes travel as ISO 8601 in UTC, dates as ISO, UUIDs and Decimals as strings, bytes as
    base64, enums by value. Structuring refuses unknown keys, so a payload can only write the
    entity's declared fields, and is strict: a value is accepted only when it has the JSON type
    its field declares (``true``/``false`` for bool, an integer for int, a number for float, a
    string for str, datetime, date, UUID, Decimal and bytes, a list for list fields ...) and is
    inside the value domain (:mod:`syncline.core.model.values`); nothing is converted from another
    type.
    """
    import base64
    import binascii

    # Start from the library's validating hooks, then give every value a JSON form.
    wire = make_converter(types).copy(forbid_extra_keys=True)
    wire.register_unstructure_hook(dt.datetime, lambda v: utc_datetime(v).isoformat())
    wire.register_unstructure_hook(dt.date, lambda v: check_date(v).isoformat())
    wire.register_unstructure_hook(uuid.UUID, lambda v: str(check_uuid(v)))
    wire.register_unstructure_hook(decimal.Decimal, lambda v: str(check_decimal(v)))
    wire.register_unstructure_hook(bytes, lambda v: base64.b64encode(check_bytes(v))
                                   .decode("ascii"))

    def b64(text: str) -> bytes:
        try:
            return base64.b64decode(text, validate=True)
        except binascii.Error as exc:
            raise ValueError(f"not base64: {exc}") from None

    strict: dict[Any, Hook] = {
        str: check_str, int: check_int, float: check_float, bool: check_bool,
        bytes: _parsed(b64, "base64 bytes"),
        dt.datetime: lambda v: check_datetime(
            _parsed(dt.datetime.fromisoformat, "an ISO 8601 datetime")(v)),
        dt.date: lambda v: check_date(_parsed(dt.date.fromisoformat, "an ISO 8601 date")(v)),
        uuid.UUID: _parsed(uuid.UUID, "a UUID"),
        decimal.Decimal: lambda v: check_decimal(_parsed(decimal.Decimal, "a decimal number")(v)),
    }
    for tp, func in strict.items():
        wire.register_structure_hook(tp, structure_hook(func))

    def enum_factory(tp: Any) -> Callable[[Any, Any], Any]:
        kinds = {type(m.value) for m in tp}
        loose = _enum_structure_factory(tp)

        def structure(value: Any, _t: Any) -> Any:
            if type(value) not in kinds:
                raise SerializationError(
                    f"expected a value of {tp.__name__} "
                    f"({', '.join(repr(m.value) for m in tp)[:200]}), got {describe(value)} "
                    f"({_type_name(value)})")
            return loose(value, tp)

        return structure

    wire.register_structure_hook_factory(_is_enum, enum_factory)

    def json_factory(tp: Any) -> Callable[[Any, Any], Any]:
        if json_native(tp):
            return lambda value, _t: check_json(value, tp)
        container = _json_container(tp)

        def structure(value: Any, _t: Any) -> Any:
            if not isinstance(value, container):
                raise SerializationError(
                    f"expected a {container.__name__}, got {describe(value)} "
                    f"({_type_name(value)})")
            return wire.structure(check_json_any(value), tp)

        return structure

    wire.register_structure_hook_factory(is_json, json_factory)

    # Entities with local-only fields travel without them; structured, those get their default.
    def local_fields(tp: Any) -> tuple[str, ...]:
        spec = getattr(tp, "__syncline_entity__", None)
        return spec.local_fields if isinstance(spec, EntitySpec) and spec.cls is tp else ()

    def without_local(tp: Any) -> dict[str, Any]:
        return {name: override(omit=True) for name in local_fields(tp)}

    wire.register_unstructure_hook_factory(
        lambda tp: bool(local_fields(tp)),
        lambda tp: make_dict_unstructure_fn(tp, wire, **without_local(tp)))
    wire.register_structure_hook_factory(
        lambda tp: bool(local_fields(tp)),
        lambda tp: make_dict_structure_fn(tp, wire, _cattrs_forbid_extra_keys=True,
                                          **without_local(tp)))
    return wire


_SHARED_MAX = 256  # entries per cache below; the oldest go first
_shared_lock = threading.Lock()
_shared_converters: dict[tuple[CustomType, ...], tuple[cattrs.Converter, cattrs.Converter]] = {}
_shared_codecs: dict[tuple[int, int, frozenset[type]],
                     tuple[EntitySpec, cattrs.Converter, RowCodec]] = {}


def _bounded(cache: dict[Any, Any]) -> None:
    while len(cache) > _SHARED_MAX:
        del cache[next(iter(cache))]


def shared_converters(types: TypeRegistry | None = None) -> tuple[cattrs.Converter,
                                                                   cattrs.Converter]:
    """:func:`make_converter` and :func:`make_wire_converter` for ``types``, built once per set
    of registered types and shared by the stores opened with it (opening a store is cheaper).
    Never register hooks on them: ``.copy()`` first."""
    key = tuple(types or ())  # CustomType is frozen: the same registrations share
    with _shared_lock:
        found = _shared_converters.get(key)
        if found is None:
            found = _shared_converters[key] = (make_converter(types), make_wire_converter(types))
            _bounded(_shared_converters)
        return found


def shared_codec(spec: EntitySpec, converter: cattrs.Converter,
                 passthrough: frozenset[type]) -> RowCodec:
    """The :class:`RowCodec` of ``spec`` on a converter nobody changes any more (one shared
    between stores), built once. A new spec (another entity class, a changed declaration) is
    another entry: specs are frozen and looked up by identity."""
    key = (id(spec), id(converter), passthrough)
    with _shared_lock:
        found = _shared_codecs.get(key)
        if found is not None and found[0] is spec and found[1] is converter:
            return found[2]
    codec = RowCodec(spec, converter, passthrough)
    with _shared_lock:  # the entry keeps spec and converter alive, so their ids stay theirs
        _shared_codecs[key] = (spec, converter, codec)
        _bounded(_shared_codecs)
    return codec


def _explain(err: BaseException, tp: Any) -> str:
    if isinstance(err, SerializationError):
        return str(err)
    if isinstance(err, KeyError):
        return "required field missing"
    if isinstance(err, cattrs.ForbiddenExtraKeysError):
        return f"unknown field(s) {', '.join(sorted(err.extra_fields))}"
    expected = f" (expected {getattr(tp, '__name__', tp)})" if tp is not None else ""
    return f"{type(err).__name__}: {err}{expected}"


def describe_error(exc: BaseException, path: str = "payload") -> str:
    """One line saying what was wrong with a structured value, naming the field at fault
    (``path`` names the whole value: ``payload.title``, ``config.store.url``)."""
    if isinstance(exc, cattrs.BaseValidationError):
        try:
            return "; ".join(cattrs.transform_error(exc, path=path, format_exception=_explain))
        except RecursionError:
            pass
    return str(exc)[:1000]
