"""Configuration: arguments, then ``SYNCLINE_*`` environment variables, then a file.

The file is ``syncline.toml`` in the working directory, or the ``[tool.syncline]`` table of
``pyproject.toml`` there, or the file named by ``SYNCLINE_CONFIG``. Every source is structured
into :class:`Config` by cattrs; an unknown key or a wrong type names the key and the source.
"""

from __future__ import annotations

import contextlib
import os
import tomllib
from pathlib import Path
from typing import Any

import attrs
import cattrs
import platformdirs

from syncline.core.errors import ConfigurationError

ENV_PREFIX = "SYNCLINE_"
DEFAULT_APP_NAME = "syncline"


@attrs.define
class StoreConfig:
    """Where and how the local store lives."""

    #: Backend URL: ``memory://``, ``sqlite:///path/app.db``, ``postgresql://...``.
    url: str | None = None
    #: Application name; the default SQLite file lives in this application's data folder.
    app_name: str = DEFAULT_APP_NAME
    #: The schema version the application's entities describe.
    schema_version: int = 1
    #: Backend-specific options (for example ``busy_timeout`` or ``pool_size``).
    options: dict[str, Any] = attrs.Factory(dict)


@attrs.define
class SyncConfig:
    """Where the sync server is."""

    #: Transport URL: ``mock://``, ``http://host:port/``.
    transport: str | None = None
    #: Bearer token sent to the server.
    token: str | None = None


@attrs.define
class Config:
    store: StoreConfig = attrs.Factory(StoreConfig)
    sync: SyncConfig = attrs.Factory(SyncConfig)


_converter = cattrs.Converter(forbid_extra_keys=True)


def _structure_int(value: Any, _: Any) -> int:
    if isinstance(value, bool) or not isinstance(value, int | str):
        raise ValueError(f"expected an integer, got {value!r}")
    return int(value)


_converter.register_structure_hook(int, _structure_int)


def _describe(exc: Exception) -> str:
    if isinstance(exc, cattrs.BaseValidationError):
        return "; ".join(cattrs.transform_error(exc, path="config"))
    return str(exc)


def structure(data: dict[str, Any], source: str) -> Config:
    """Build a :class:`Config` from a mapping, naming ``source`` in any error."""
    try:
        return _converter.structure(data, Config)
    except Exception as exc:
        expected = {
            "store": [a.name for a in attrs.fields(StoreConfig)],
            "sync": [a.name for a in attrs.fields(SyncConfig)],
        }
        raise ConfigurationError(
            f"invalid configuration in {source}: {_describe(exc)}. Expected sections and keys: "
            + "; ".join(f"[{k}] {', '.join(v)}" for k, v in expected.items())
        ) from exc


def find_config_file(cwd: Path | None = None) -> tuple[Path, dict[str, Any]] | None:
    """The configuration file and its syncline table, or None when there is none."""
    explicit = os.environ.get(ENV_PREFIX + "CONFIG")
    base = cwd or Path.cwd()
    if explicit:
        path = Path(explicit)
        if not path.is_file():
            raise ConfigurationError(
                f"{ENV_PREFIX}CONFIG names {explicit!r}, which is not a file; point it at a "
                f"syncline.toml or unset it"
            )
        return path, _read_toml(path, pyproject=path.name == "pyproject.toml")
    candidate = base / "syncline.toml"
    if candidate.is_file():
        return candidate, _read_toml(candidate, pyproject=False)
    candidate = base / "pyproject.toml"
    if candidate.is_file():
        table = _read_toml(candidate, pyproject=True)
        if table:
            return candidate, table
    return None


def _read_toml(path: Path, pyproject: bool) -> dict[str, Any]:
    try:
        data = tomllib.loads(path.read_text(encoding="utf-8"))
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc}") from exc
    if pyproject:
        table = data.get("tool", {}).get("syncline", {})
        return table if isinstance(table, dict) else {}
    return data


def _from_env(environ: dict[str, str]) -> dict[str, Any]:
    out: dict[str, Any] = {}
    sections = {"STORE": StoreConfig, "SYNC": SyncConfig}
    for key, value in environ.items():
        if not key.startswith(ENV_PREFIX) or key in (ENV_PREFIX + "CONFIG",):
            continue
        rest = key[len(ENV_PREFIX):]
        for section, cls in sections.items():
            prefix = section + "_"
            if rest.startswith(prefix):
                name = rest[len(prefix):].lower()
                if name in {a.name for a in attrs.fields(cls)} and name != "options":
                    out.setdefault(section.lower(), {})[name] = value
    return out


def _merge(base: dict[str, Any], top: dict[str, Any]) -> dict[str, Any]:
    out = dict(base)
    for key, value in top.items():
        if isinstance(value, dict) and isinstance(out.get(key), dict):
            out[key] = _merge(out[key], value)
        else:
            out[key] = value
    return out


def load_config(
    overrides: dict[str, Any] | None = None,
    *,
    environ: dict[str, str] | None = None,
    cwd: Path | None = None,
) -> Config:
    """Merge file, environment and ``overrides`` (highest precedence) into a Config."""
    found = find_config_file(cwd)
    merged: dict[str, Any] = {}
    if found is not None:
        path, table = found
        structure(table, str(path))  # report file errors against the file
        merged = table
    env = _from_env(dict(os.environ if environ is None else environ))
    if env:
        structure(env, "environment variables " + ", ".join(
            f"{ENV_PREFIX}{s.upper()}_{k.upper()}" for s, d in env.items() for k in d))
        merged = _merge(merged, env)
    if overrides:
        structure(overrides, "arguments")
        merged = _merge(merged, overrides)
    return structure(merged, "the merged configuration")


def default_store_url(app_name: str) -> str:
    """A SQLite file in the platform's user-data folder for ``app_name``."""
    folder = Path(platformdirs.user_data_dir(app_name, appauthor=False))
    return f"sqlite:///{folder / (app_name + '.db')}"


# -- backend options and URL query parameters ----------------------------------------------------

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
