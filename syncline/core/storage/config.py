"""Configuration: arguments, then ``SYNCLINE_*`` environment variables, then a file.

The file is ``syncline.toml`` in the working directory, or the ``[tool.syncline]`` table of
``pyproject.toml`` there, or the file named by ``SYNCLINE_CONFIG``. Every source is structured
into :class:`Config` by cattrs; an unknown key or a wrong type names the key and the source.
"""

from __future__ import annotations

import copy
import os
import threading
from pathlib import Path
from typing import Any

import attrs
import cattrs

from syncline.core.model.convert import describe_error
from syncline.core.model.errors import ConfigurationError

# Backend options live in the SPI now; config re-exports them under their old names.
from syncline.core.spi.options import ISOLATION as ISOLATION
from syncline.core.spi.options import Option as Option
from syncline.core.spi.options import resolve_options as resolve_options
from syncline.core.spi.options import split_url as split_url

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
            f"invalid configuration in {source}: {describe_error(exc, path='config')}. "
            "Expected sections and keys: "
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


#: (file text, pyproject) -> its syncline table: every store opened reads the file, and parsing
#: it again was a good part of opening. Keyed by the text, so an edit is always read.
_parsed_files: dict[tuple[str, bool], dict[str, Any]] = {}
_parsed_lock = threading.Lock()


def _read_toml(path: Path, pyproject: bool) -> dict[str, Any]:
    import tomllib  # only when a configuration file exists

    try:
        text = path.read_text(encoding="utf-8")
        with _parsed_lock:
            cached = _parsed_files.get((text, pyproject))
        if cached is not None:
            return copy.deepcopy(cached)
        data = tomllib.loads(text)
    except (OSError, tomllib.TOMLDecodeError) as exc:
        raise ConfigurationError(f"cannot read configuration file {path}: {exc}") from exc
    if pyproject:
        table = data.get("tool", {}).get("syncline", {})
        data = table if isinstance(table, dict) else {}
    with _parsed_lock:
        _parsed_files[(text, pyproject)] = copy.deepcopy(data)
        while len(_parsed_files) > 16:
            del _parsed_files[next(iter(_parsed_files))]
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
    import platformdirs  # only for stores opened without a URL

    folder = Path(platformdirs.user_data_dir(app_name, appauthor=False))
    return f"sqlite:///{folder / (app_name + '.db')}"
