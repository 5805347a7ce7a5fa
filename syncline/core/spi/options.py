"""Backend options, URL query parameters and URL schemes: what a backend declares
(``Backend.options_spec``) and the checks every backend gets for free."""

from __future__ import annotations

import contextlib
from typing import Any

import attrs

from syncline.core.model.errors import BackendUnavailableError, ConfigurationError


def scheme_of(url: str) -> str:
    """The URL's scheme, lower-cased (``sqlite:///app.db`` -> ``sqlite``)."""
    scheme, sep, _ = url.partition("://")
    if not sep or not scheme:
        raise ConfigurationError(
            f"store URL {url!r} has no scheme; write it like memory://, sqlite:///path/app.db "
            f"or postgresql://user@host/db"
        )
    return scheme.lower()


def url_path(url: str) -> str | None:
    """The file a ``scheme:///relative/file`` or ``scheme:////absolute/file`` URL names
    (``relative/file``, ``/absolute/file``; any query dropped); None for ``scheme://``.
    A URL with anything else after ``://`` is a BackendUnavailableError saying how to write it.
    """
    scheme = scheme_of(url)
    rest = split_url(url)[0].partition("://")[2]
    if not rest:
        return None
    if rest.startswith("/") and len(rest) > 1:
        return rest[1:]
    raise BackendUnavailableError(
        f"{scheme} URL {url!r} is not understood; use {scheme}:///relative/file or "
        f"{scheme}:////absolute/file")


_TRUE = ("true", "1", "yes", "on")
_FALSE = ("false", "0", "no", "off")
_KIND_NAMES = {bool: "true or false", int: "an integer", float: "a number", str: "a string"}


@attrs.frozen
class Option:
    """One option a backend takes, as ``options={...}``, ``[store.options]`` or a URL query
    parameter (``sqlite:///app.db?busy_timeout=2``); declared in ``Backend.options_spec``."""

    #: bool, int, float (an int is accepted too) or str
    kind: type
    default: Any
    help: str = ""
    #: for str options: the values allowed (matched without regard to case)
    choices: tuple[str, ...] = ()
    #: for numbers: the smallest value allowed
    minimum: float | None = None

    def describe(self) -> str:
        what = ("one of " + ", ".join(self.choices)) if self.choices else _KIND_NAMES[self.kind]
        if self.minimum is not None:
            what += f" >= {self.minimum:g}"
        return f"{what}, default {self.default!r}"

    def check(self, value: Any, from_url: bool) -> Any:
        """``value`` as this option's type; ValueError saying what is wrong otherwise."""
        kind = self.kind
        if from_url and isinstance(value, str) and kind is not str:
            text = value.strip().lower()
            if kind is bool:
                if text in _TRUE + _FALSE:
                    return text in _TRUE
            else:
                with contextlib.suppress(ValueError):
                    value = int(text) if kind is int else float(text)
        if kind is bool:
            if not isinstance(value, bool):
                raise ValueError(f"expected {_KIND_NAMES[bool]}")
            return value
        if kind in (int, float):
            ok = isinstance(value, int) if kind is int else isinstance(value, int | float)
            if isinstance(value, bool) or not ok:
                raise ValueError(f"expected {_KIND_NAMES[kind]}")
            if kind is float:
                value = float(value)
                if value != value or value in (float("inf"), float("-inf")):
                    raise ValueError("expected a finite number")
            if self.minimum is not None and value < self.minimum:
                raise ValueError(f"expected at least {self.minimum:g}")
            return value
        if not isinstance(value, str):
            raise ValueError(f"expected {_KIND_NAMES[str]}")
        if self.choices:
            for choice in self.choices:
                if value.strip().lower() == choice.lower():
                    return choice
            raise ValueError("expected one of " + ", ".join(self.choices))
        return value


#: The transaction isolation a store asks for. Backends whose transactions are serializable
#: anyway (memory, SQLite) accept and ignore it; PostgreSQL runs at that level.
ISOLATION = Option(str, "repeatable read", "transaction isolation level",
                   choices=("read committed", "repeatable read", "serializable"))


def split_url(url: str) -> tuple[str, dict[str, str]]:
    """``scheme://rest?a=1&b=2`` -> (``scheme://rest``, {"a": "1", "b": "2"}); a parameter
    given twice, or a part without ``=``, is a ConfigurationError."""
    from urllib.parse import unquote

    base, sep, query = url.partition("?")
    params: dict[str, str] = {}
    if not sep:
        return base, params
    for part in query.split("&"):
        if not part:
            continue
        name, eq, value = part.partition("=")
        name, value = unquote(name), unquote(value)
        if not eq or not name:
            raise ConfigurationError(
                f"URL {_redact(url)!r}: query part {part!r} is not name=value")
        if name in params:
            raise ConfigurationError(f"URL {_redact(url)!r} gives parameter {name!r} twice")
        params[name] = value
    return base, params


def _redact(url: str) -> str:
    """The URL with any password replaced by ***."""
    scheme, sep, rest = url.partition("://")
    netloc, slash, tail = rest.partition("/")
    if "@" in netloc:
        user, _, host = netloc.rpartition("@")
        if ":" in user:
            netloc = user.partition(":")[0] + ":***@" + host
    return scheme + sep + netloc + slash + tail


def resolve_options(
    declared: dict[str, Option] | Any,
    url: str,
    options: dict[str, Any] | Any,
    *,
    driver_parameters: frozenset[str] = frozenset(),
) -> tuple[str, dict[str, Any], dict[str, str]]:
    """Check a backend's options and URL query parameters against what it declares.

    Returns the URL without its query, every declared option (given or default, of its
    declared type), and the query parameters meant for the driver (``driver_parameters``).
    An unknown or mistyped option or parameter, or one given both ways with two values, is a
    :class:`ConfigurationError` naming it and listing the choices.
    """
    scheme = url.partition("://")[0] or "this"
    base, params = split_url(url)
    known = "; ".join(f"{name} ({opt.describe()})" for name, opt in sorted(declared.items()))
    known = known or "none"
    out: dict[str, Any] = {}
    driver: dict[str, str] = {}
    for name, raw in params.items():
        if name in driver_parameters and name not in declared:
            driver[name] = raw
            continue
        opt = declared.get(name)
        if opt is None:
            extra = ("; the driver's connection parameters ("
                     + ", ".join(sorted(driver_parameters)) + ")" if driver_parameters else "")
            raise ConfigurationError(
                f"unknown URL parameter {name!r} in {_redact(url)!r}: the {scheme}:// backend "
                f"takes {known}{extra}")
        try:
            out[name] = opt.check(raw, from_url=True)
        except ValueError as exc:
            raise ConfigurationError(
                f"URL parameter {name}={raw!r} in {_redact(url)!r}: {exc} ({name}: "
                f"{opt.help or opt.describe()})") from None
    for name, raw in dict(options or {}).items():
        opt = declared.get(name)
        if opt is None:
            raise ConfigurationError(
                f"unknown store option {name!r} for the {scheme}:// backend; its options: "
                f"{known}")
        try:
            value = opt.check(raw, from_url=False)
        except ValueError as exc:
            raise ConfigurationError(
                f"store option {name}={raw!r} for the {scheme}:// backend: {exc} ({name}: "
                f"{opt.help + '; ' if opt.help else ''}{opt.describe()})") from None
        if name in out and out[name] != value:
            raise ConfigurationError(
                f"store option {name} is {value!r} but the URL says {out[name]!r}; give it once")
        out[name] = value
    for name, opt in declared.items():
        out.setdefault(name, opt.default)
    return base, out, driver
