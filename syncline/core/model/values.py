"""The value domain: per declared field type, the values every bundled backend holds and gives
back equal, and the checks that refuse everything else.

One rule for the whole project. The row codec (:mod:`syncline.core.model.convert`) applies
it to every write and every query value before a backend sees them, on every backend; the
sync server applies the same checks (with JSON's stricter typing) to pushed payloads, and the
client to pulled ones.
docs/backends.md has the table.

=================  ==========================================================================
type               domain
=================  ==========================================================================
``int``            an ``int`` (not a ``bool``) from -2**63 to 2**63-1 (int64)
``float``          a finite ``float`` (an ``int`` is converted); ``-0.0`` is stored as ``0.0``
``str``            no NUL character, no lone surrogate (so every value has a UTF-8 form)
``bool``           ``True`` or ``False`` only (not ``1``, not ``"no"``)
``bytes``          any ``bytes`` (``bytearray``/``memoryview`` are converted)
``Decimal``        finite (no NaN, sNaN or Infinity), at most 131072 digits before the point
                   and 16383 after (PostgreSQL ``numeric``'s limits)
``datetime``       timezone-aware, and its UTC instant within years 1..9999
``date``           a ``date`` that is not a ``datetime``
``UUID``           a ``UUID``
``Enum``           a member of the declared enum (or a value naming one)
``list``/``dict``  JSON only: ``dict`` with ``str`` keys, ``list``, ``str``, ``int``, ``float``,
                   ``bool``, ``None``; each scalar inside the domain above; at most
                   :data:`MAX_JSON_DEPTH` nested containers; elements of the declared type
                   (``list[str]`` holds strs); no tuples, sets or int keys
=================  ==========================================================================

Limits: a ``str`` primary key has at most :data:`MAX_ID_LENGTH` characters (so do record and
mutation ids on the wire); a ``str`` or ``bytes`` value of another indexed field at most
:data:`MAX_INDEXED_BYTES` bytes (UTF-8), so that PostgreSQL's index rows can hold it.
"""

from __future__ import annotations

import datetime as dt
import decimal
import functools
import math
import re
import reprlib
import types
import typing
import uuid
from collections.abc import Callable
from contextvars import ContextVar
from typing import Any

from syncline.core.model.errors import SerializationError

INT64_MIN = -(2**63)
INT64_MAX = 2**63 - 1
#: nested lists/dicts a JSON field may hold (the field's own value is level 1)
MAX_JSON_DEPTH = 64
#: characters of a str primary key, a record id or a mutation id
MAX_ID_LENGTH = 255
#: UTF-8 bytes of a str or bytes value in an indexed field other than the primary key
MAX_INDEXED_BYTES = 800
#: digits of a Decimal before and after the point (PostgreSQL numeric)
DECIMAL_MAX_INTEGER_DIGITS = 131072
DECIMAL_MAX_FRACTION_DIGITS = 16383

Check = Callable[[Any], Any]

#: the JSON depth the running check allows (syncline's own tables hold whole payloads, whose
#: fields are one to three levels down: see nested_payloads)
_depth_limit: ContextVar[int] = ContextVar("syncline_json_depth", default=MAX_JSON_DEPTH)


class nested_payloads:
    """Allow the few extra levels of syncline's own JSON columns (a payload holding entity
    fields, a result holding a payload) while encoding a row of its internal tables.

    A class, not a generator context manager: it wraps every write of those tables."""

    __slots__ = ("_token",)

    def __enter__(self) -> None:
        self._token = _depth_limit.set(MAX_JSON_DEPTH + 4)

    def __exit__(self, *exc: object) -> None:
        _depth_limit.reset(self._token)

_repr = reprlib.Repr()
_repr.maxlevel = 3
_repr.maxstring = 60
_repr.maxother = 60
_repr.maxlist = _repr.maxtuple = _repr.maxdict = _repr.maxset = 6


def describe(value: Any) -> str:
    """A short, safe repr for messages: bounded in length and depth, never raising."""
    if isinstance(value, int) and not isinstance(value, bool) and value.bit_length() > 128:
        return f"an int of {value.bit_length()} bits ({'-' if value < 0 else ''}about 2**" \
               f"{value.bit_length() - 1})"
    try:
        return _repr.repr(value)
    except Exception:  # a repr that fails or recurses: name the type only
        return f"a {type(value).__name__}"


def _name(value: Any) -> str:
    return type(value).__name__


# -- scalars -----------------------------------------------------------------------------------


def check_int(value: Any) -> int:
    if isinstance(value, int) and not isinstance(value, bool):
        if INT64_MIN <= value <= INT64_MAX:
            return int(value)
        raise SerializationError(
            f"{describe(value)} is outside int64; an int field holds -2**63 .. 2**63-1 "
            f"(store bigger numbers as Decimal)")
    raise SerializationError(f"expected an int, got {describe(value)} ({_name(value)})")


def check_float(value: Any) -> float:
    if isinstance(value, float | int) and not isinstance(value, bool):
        try:
            out = float(value)
        except OverflowError:
            out = math.inf
        if out - out == 0.0:  # finite
            return out if out != 0.0 else 0.0  # -0.0 is stored as 0.0 everywhere
        raise SerializationError(
            f"{describe(value)} is not a finite number; a float field holds finite floats "
            f"only (NaN and infinities cannot travel as JSON): use None for 'no value'")
    raise SerializationError(f"expected a float, got {describe(value)} ({_name(value)})")


_SURROGATE = re.compile("[\ud800-\udfff]")


def check_str(value: Any) -> str:
    if not isinstance(value, str):
        raise SerializationError(f"expected a str, got {describe(value)} ({_name(value)})")
    if "\x00" in value:
        raise SerializationError(
            f"{describe(value)} contains a NUL character (\\x00), which PostgreSQL cannot "
            f"store; remove it or store the value as bytes")
    if not value.isascii():
        found = _SURROGATE.search(value)
        if found is not None:
            raise SerializationError(
                f"{describe(value)} contains a lone surrogate {found.group()!r} at "
                f"{found.start()}: not text (it has no UTF-8 form); decode your input "
                f"with errors='replace' or store bytes")
    return value if type(value) is str else str(value)


def check_bool(value: Any) -> bool:
    if value is True or value is False:
        return value
    raise SerializationError(
        f"expected True or False, got {describe(value)} ({_name(value)})")


def check_bytes(value: Any) -> bytes:
    if type(value) is bytes:
        return value
    if isinstance(value, bytes | bytearray | memoryview):
        return bytes(value)
    raise SerializationError(f"expected bytes, got {describe(value)} ({_name(value)})")


def check_decimal(value: Any) -> decimal.Decimal:
    if not isinstance(value, decimal.Decimal):
        hint = "; pass a str such as Decimal('1.5')" if isinstance(value, float) else ""
        raise SerializationError(
            f"expected a Decimal, got {describe(value)} ({_name(value)}){hint}")
    if not value.is_finite():
        raise SerializationError(
            f"Decimal {value} is not finite; a Decimal field holds finite values only "
            f"(use None for 'no value')")
    exponent = value.as_tuple().exponent
    assert isinstance(exponent, int)  # finite
    if exponent < -DECIMAL_MAX_FRACTION_DIGITS or (
            value and value.adjusted() >= DECIMAL_MAX_INTEGER_DIGITS):
        raise SerializationError(
            f"Decimal {describe(value)} is too large or too precise: at most "
            f"{DECIMAL_MAX_INTEGER_DIGITS} digits before the point and "
            f"{DECIMAL_MAX_FRACTION_DIGITS} after")
    return value


def check_datetime(value: Any) -> dt.datetime:
    """An aware datetime, returned in UTC; naive ones and unrepresentable instants refused."""
    if not isinstance(value, dt.datetime):
        raise SerializationError(f"expected a datetime, got {describe(value)} ({_name(value)})")
    if value.tzinfo is None or value.utcoffset() is None:
        raise SerializationError(
            f"naive datetime {value.isoformat()} has no time zone; pass an aware datetime "
            f"such as datetime.now(timezone.utc)")
    try:
        return value.astimezone(dt.UTC)
    except OverflowError:
        raise SerializationError(
            f"datetime {value.isoformat()} is outside years 1..9999 in UTC") from None


def check_date(value: Any) -> dt.date:
    if isinstance(value, dt.datetime):
        raise SerializationError(
            f"expected a date, got the datetime {value.isoformat()}; pass value.date() for "
            f"a date field, or declare the field as datetime")
    if not isinstance(value, dt.date):
        raise SerializationError(f"expected a date, got {describe(value)} ({_name(value)})")
    return value if type(value) is dt.date else dt.date(value.year, value.month, value.day)


def check_uuid(value: Any) -> uuid.UUID:
    if isinstance(value, uuid.UUID):
        return value if type(value) is uuid.UUID else uuid.UUID(int=value.int)
    raise SerializationError(f"expected a UUID, got {describe(value)} ({_name(value)})")


#: per storage kind, the check giving a value's canonical form (JSON: see check_json)
KIND_CHECKS: dict[str, Check] = {
    "text": check_str, "integer": check_int, "float": check_float, "boolean": check_bool,
    "bytes": check_bytes, "decimal": check_decimal, "datetime": check_datetime,
    "date": check_date, "uuid": check_uuid,
}


def check_id(value: Any, what: str = "id") -> str:
    """A record or mutation id: a str in the str domain of at most MAX_ID_LENGTH characters."""
    if not isinstance(value, str):
        raise SerializationError(
            f"{what} must be a string, got {describe(value)} ({_name(value)})")
    try:
        check_str(value)
    except SerializationError as exc:
        raise SerializationError(f"{what}: {exc}") from None
    if not value or len(value) > MAX_ID_LENGTH:
        raise SerializationError(
            f"{what} has {len(value)} characters; ids have 1 to {MAX_ID_LENGTH}")
    return value


def check_length(value: Any, limit: int, what: str) -> None:
    """Refuse a str/bytes value longer than ``limit`` bytes (UTF-8 for str)."""
    size = len(value) if not isinstance(value, str) or value.isascii() else len(
        value.encode("utf-8"))
    if size > limit:
        raise SerializationError(
            f"{describe(value)} is {size} bytes; {what} holds at most {limit} bytes "
            f"(PostgreSQL cannot index longer values)")


# -- JSON --------------------------------------------------------------------------------------


def _split_union(tp: Any) -> tuple[Any, ...] | None:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        return typing.get_args(tp)
    return None


_JSON_SCALARS: dict[Any, Check] = {
    str: check_str, int: check_int, float: check_float, bool: check_bool,
}


def json_native(tp: Any) -> bool:
    """Whether ``tp`` describes JSON values only (then check_json can check it fully)."""
    if tp in (Any, list, dict, type(None)) or tp in _JSON_SCALARS:
        return True
    union = _split_union(tp)
    if union is not None:
        return all(json_native(a) for a in union)
    origin = typing.get_origin(tp)
    args = typing.get_args(tp)
    if origin is list:
        return all(json_native(a) for a in args)
    if origin is dict:
        return (not args or args[0] is str) and all(json_native(a) for a in args[1:])
    return False


_BASES: tuple[tuple[type, Check], ...] = (
    (str, str.__str__), (int, int.__index__), (float, float.__float__), (list, list),
    (dict, dict))


class _Walk:
    """One walk over a JSON value: checks types and the domain, finds where it fails."""

    def __init__(self) -> None:
        self.limit = _depth_limit.get()
        self.changed = False  # a -0.0 was found: the canonical value is a copy

    def fail(self, path: str, message: str) -> SerializationError:
        if len(path) > 120:
            path = path[:50] + "..." + path[-50:]
        where = f" at {path}" if path else ""
        return SerializationError(f"{message}{where}")

    def value(self, value: Any, tp: Any, path: str, depth: int) -> Any:
        if tp is Any:
            return self.any(value, path, depth)
        union = _split_union(tp)
        if union is not None:
            if value is None and type(None) in union:
                return None
            errors = []
            for option in union:
                if option is type(None):
                    continue
                try:
                    return self.value(value, option, path, depth)
                except SerializationError as exc:
                    errors.append(str(exc))
            raise self.fail("", "; ".join(errors) if len(errors) == 1 else
                            f"{describe(value)} matches none of {tp}: {'; '.join(errors)}")
        if tp is type(None):
            if value is None:
                return None
            raise self.fail(path, f"expected None, got {describe(value)}")
        scalar = _JSON_SCALARS.get(tp)
        if scalar is not None:
            return self.scalar(scalar, value, path)
        origin = typing.get_origin(tp) or tp
        args = typing.get_args(tp)
        if origin is list:
            return self.list(value, args[0] if args else Any, path, depth)
        if origin is dict:
            return self.dict(value, args[1] if len(args) == 2 else Any, path, depth)
        raise self.fail(path, f"{tp!r} is not a JSON type")

    def scalar(self, check: Check, value: Any, path: str) -> Any:
        try:
            out = check(value)
        except SerializationError as exc:
            raise self.fail(path, str(exc)) from None
        if out is not value and type(out) is float and value == 0.0:
            self.changed = True
        return out

    def any(self, value: Any, path: str, depth: int) -> Any:
        if value is None or value is True or value is False:
            return value
        kind = type(value)
        if kind is str:
            return self.scalar(check_str, value, path)
        if kind is int:
            return self.scalar(check_int, value, path)
        if kind is float:
            return self.scalar(check_float, value, path)
        if kind is list:
            return self.list(value, Any, path, depth)
        if kind is dict:
            return self.dict(value, Any, path, depth)
        if isinstance(value, tuple | set | frozenset):
            raise self.fail(path, f"a {kind.__name__} is not JSON; pass a list")
        for base, plain in _BASES:  # subclasses (str and int enums ...): their plain value
            if isinstance(value, base):
                self.changed = True
                return self.any(plain(value), path, depth)
        raise self.fail(path, f"{describe(value)} ({kind.__name__}) is not a JSON value; JSON "
                              f"fields hold dict (str keys), list, str, int, float, bool, None")

    def _deeper(self, path: str, depth: int) -> int:
        if depth >= self.limit:
            raise self.fail(path, f"JSON nested deeper than {self.limit} levels")
        return depth + 1

    def list(self, value: Any, item: Any, path: str, depth: int) -> Any:
        if not isinstance(value, list):
            hint = "; pass a list" if isinstance(value, tuple | set | frozenset) else ""
            raise self.fail(path, f"expected a list, got {describe(value)} "
                                  f"({_name(value)}){hint}")
        depth = self._deeper(path, depth)
        out = [self.value(v, item, f"{path}[{i}]", depth) for i, v in enumerate(value)]
        return out if self.changed else value

    def dict(self, value: Any, item: Any, path: str, depth: int) -> Any:
        if not isinstance(value, dict):
            raise self.fail(path, f"expected a dict, got {describe(value)} ({_name(value)})")
        depth = self._deeper(path, depth)
        out = {}
        for k, v in value.items():
            if type(k) is not str:
                raise self.fail(path, f"key {describe(k)} ({_name(k)}) is not a str; JSON "
                                      f"objects have str keys (convert it: str(key))")
            try:
                check_str(k)
            except SerializationError as exc:
                raise self.fail(path, f"key: {exc}") from None
            out[k] = self.value(v, item, f"{path}[{k!r:.40}]", depth)
        return out if self.changed else value


# The fast path: most values are valid and already canonical. It checks them without
# building paths or copies and says only whether the walk would hand back the value itself;
# anything else (an error to explain, a -0.0 to rewrite, a subclass, a union it cannot
# settle at once) goes to the walk.

def _ok_str(value: str) -> bool:
    return "\x00" not in value and (value.isascii() or _SURROGATE.search(value) is None)


def _ok_any(value: Any, depth: int, limit: int) -> bool:
    kind = type(value)
    if kind is str:
        return _ok_str(value)
    if kind is int:
        return bool(INT64_MIN <= value <= INT64_MAX)
    if kind is float:
        return value - value == 0.0 and (value != 0.0 or math.copysign(1.0, value) > 0)
    if value is None or kind is bool:
        return True
    if depth >= limit:
        return False
    if kind is dict:
        return all(type(k) is str and _ok_str(k) and _ok_any(v, depth + 1, limit)
                   for k, v in value.items())
    if kind is list:
        return all(_ok_any(v, depth + 1, limit) for v in value)
    return False


@functools.lru_cache(maxsize=512)
def _shape(tp: Any) -> tuple[str, Any]:
    """What the fast path checks for a declared type: ("any", _), ("scalar", tp), ("list" or
    "dict", the item type), ("first", the first option of a union), ("none", None or not)."""
    if tp is Any:
        return ("any", None)
    if tp in _JSON_SCALARS:
        return ("scalar", tp)
    union = _split_union(tp)
    if union is not None:  # the walk takes the first option that fits: only that one here
        first = next((o for o in union if o is not type(None)), None)
        return ("first", (first, type(None) in union))
    origin = typing.get_origin(tp) or tp
    args = typing.get_args(tp)
    if origin is list:
        return ("list", args[0] if args else Any)
    if origin is dict:
        return ("dict", args[1] if len(args) == 2 else Any)
    return ("none", None)


def _ok(value: Any, tp: Any, depth: int, limit: int) -> bool:
    try:
        kind, arg = _shape(tp)
    except TypeError:  # an unhashable type form: the walk knows it
        return False
    if kind == "any":
        return _ok_any(value, depth, limit)
    if kind == "scalar":
        return type(value) is arg and _ok_any(value, depth, limit)
    if kind == "first":
        first, nullable = arg
        if value is None:
            return bool(nullable)
        return first is not None and _ok(value, first, depth, limit)
    if kind == "none" or depth >= limit:
        return False
    if kind == "list":
        if type(value) is not list:
            return False
        if arg is Any:
            return all(_ok_any(v, depth + 1, limit) for v in value)
        return all(_ok(v, arg, depth + 1, limit) for v in value)
    if type(value) is not dict:
        return False
    if arg is Any:
        return all(type(k) is str and _ok_str(k) and _ok_any(v, depth + 1, limit)
                   for k, v in value.items())
    return all(type(k) is str and _ok_str(k) and _ok(v, arg, depth + 1, limit)
               for k, v in value.items())


def check_json(value: Any, tp: Any = Any) -> Any:
    """The canonical form of a JSON field's value of declared type ``tp`` (JSON-native types
    only: see :func:`json_native`); raise SerializationError saying where it fails."""
    if _ok(value, tp, 0, _depth_limit.get()):
        return value
    walk = _Walk()
    return walk.value(value, tp, "", 0)


def check_json_any(value: Any) -> Any:
    """check_json for a value of no declared element type (``list``/``dict`` contents)."""
    if _ok_any(value, 0, _depth_limit.get()):
        return value
    return _Walk().any(value, "", 0)
