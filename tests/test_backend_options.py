"""Issue 14, "SQLite and the rest": URL query parameters and backend options are declared by
each backend and checked in one place; a failed SQLite open keeps no file descriptor."""

from __future__ import annotations

import gc
import os
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest
from click.testing import CliRunner

import syncline
from syncline.cli import main
from syncline.core.plugins import plugin_manager
from syncline.core.store import scheme_of

registry = syncline.EntityRegistry()


@registry.entity("opt_notes")
@attrs.define
class Note:
    id: str
    text: str


URLS = {
    "memory": "memory://",
    "sqlite": "sqlite:///{tmp}/a.db",
    "postgresql": "postgresql://nobody@127.0.0.1:1/db",  # refused before any connection
}


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> None:
    for key in list(os.environ):
        if key.startswith("SYNCLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)


def _url(kind: str, tmp_path: Path) -> str:
    return URLS[kind].format(tmp=tmp_path)


def _backend(url: str, options: dict[str, Any] | None = None) -> Any:
    return plugin_manager().backend_class(scheme_of(url))(url, options)


# -- URL query parameters ---------------------------------------------------------------------


def test_sqlite_mode_ro_is_a_parameter_not_part_of_the_file_name(tmp_path: Path) -> None:
    with pytest.raises(syncline.BackendUnavailableError, match="mode=ro"):
        syncline.open("sqlite:///ro.db?mode=ro", entities=[Note])
    assert sorted(os.listdir(tmp_path)) == []  # neither 'ro.db?mode=ro' nor 'ro.db'
    with syncline.open("sqlite:///ro.db", entities=[Note]) as store:
        store.repository(Note).insert(Note("a", "kept"))
    with syncline.open("sqlite:///ro.db?mode=ro", entities=[Note]) as store:
        notes = store.repository(Note)
        assert notes.all() == [Note("a", "kept")]
        with pytest.raises(syncline.BackendError, match="readonly"):
            notes.insert(Note("b", "refused"))
        assert notes.all() == [Note("a", "kept")]
    assert "ro.db?mode=ro" not in os.listdir(tmp_path)


def test_sqlite_mode_rw_needs_an_existing_file(tmp_path: Path) -> None:
    with pytest.raises(syncline.BackendUnavailableError, match="does not exist"):
        syncline.open("sqlite:///new.db?mode=rw", entities=[Note])
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize("kind", sorted(URLS))
def test_an_unknown_url_parameter_is_refused_naming_it_and_the_choices(
        kind: str, tmp_path: Path) -> None:
    url = _url(kind, tmp_path) + "?mood=ro"
    with pytest.raises(syncline.ConfigurationError, match=r"'mood'.*isolation") as info:
        syncline.open(url, entities=[Note])
    assert "unknown URL parameter" in str(info.value)
    assert os.listdir(tmp_path) == []


@pytest.mark.parametrize(("kind", "query", "match"), [
    ("sqlite", "busy_timeout=soon", "busy_timeout.*number"),
    ("sqlite", "mode=rx", "mode.*rwc, rw, ro"),
    ("sqlite", "mode=ro&mode=rw", "twice"),
    ("postgresql", "pool_size=many", "pool_size.*integer"),
    ("postgresql", "notify=perhaps", "notify.*true or false"),
    ("memory", "isolation=chaos", "isolation.*serializable"),
])
def test_a_mistyped_url_parameter_is_refused(kind: str, query: str, match: str,
                                             tmp_path: Path) -> None:
    with pytest.raises(syncline.ConfigurationError, match=match):
        syncline.open(_url(kind, tmp_path) + "?" + query, entities=[Note])


def test_url_parameters_set_options(tmp_path: Path) -> None:
    backend = _backend(f"sqlite:///{tmp_path}/a.db?busy_timeout=2.5&synchronous=full")
    assert backend.busy_timeout == 2.5 and backend.synchronous == "FULL"
    assert backend.path == f"{tmp_path}/a.db"
    pg = _backend("postgresql://u@h/db?schema=Mine&pool_size=3&sslmode=require"
                  "&application_name=app")
    assert pg.schema == "Mine" and pg.options["pool_size"] == 3
    assert dict(pg.sa_url.query) == {"sslmode": "require", "application_name": "app"}
    assert _backend("memory://shared?isolation=serializable").name == "shared"


def test_libpq_parameters_reach_the_driver(postgres_url: str) -> None:
    with syncline.open(f"{postgres_url}?application_name=optcheck&schema=optcheck",
                       entities=[Note]) as store:
        backend: Any = store.backend
        with backend._connection() as conn:
            assert conn.execute("SHOW application_name").fetchone() == ("optcheck",)


def test_a_url_parameter_and_an_option_that_disagree_are_refused(tmp_path: Path) -> None:
    with pytest.raises(syncline.ConfigurationError, match=r"busy_timeout.*give it once"):
        _backend(f"sqlite:///{tmp_path}/a.db?busy_timeout=1", {"busy_timeout": 2})
    assert _backend(f"sqlite:///{tmp_path}/a.db?busy_timeout=1",
                    {"busy_timeout": 1.0}).busy_timeout == 1.0


# -- options -----------------------------------------------------------------------------------


@pytest.mark.parametrize(("kind", "options", "match"), [
    ("sqlite", {"busy_timeout": "soon"}, r"busy_timeout='soon'.*expected a number"),
    ("sqlite", {"busy_timeout": True}, "busy_timeout.*number"),
    ("sqlite", {"busy_timeout": -1}, "busy_timeout.*at least 0"),
    ("sqlite", {"busy_timeot": 1}, r"unknown store option 'busy_timeot'.*busy_timeout"),
    ("sqlite", {"synchronous": "sometimes"}, "synchronous.*OFF, NORMAL, FULL, EXTRA"),
    ("postgresql", {"pool_size": 2.5}, "pool_size.*integer"),
    ("postgresql", {"ping_after": "10"}, "ping_after.*number"),
    ("postgresql", {"pool_sise": 3}, r"unknown store option 'pool_sise'.*pool_size"),
    ("memory", {"busy_timeout": 1}, r"unknown store option 'busy_timeout'.*isolation"),
])
def test_unknown_or_mistyped_options_are_configuration_errors(
        kind: str, options: dict[str, Any], match: str, tmp_path: Path) -> None:
    with pytest.raises(syncline.ConfigurationError, match=match):
        syncline.open(_url(kind, tmp_path), entities=[Note], options=options)
    assert os.listdir(tmp_path) == []  # refused before anything was created


def test_declared_options_are_filled_with_their_defaults(tmp_path: Path) -> None:
    backend = _backend(f"sqlite:///{tmp_path}/a.db", {"busy_timeout": 3})
    assert backend.options["busy_timeout"] == 3.0 and backend.options["mode"] == "rwc"
    assert backend.options["synchronous"] == "NORMAL"


def test_a_bad_option_in_syncline_toml_is_one_line_and_exit_2(tmp_path: Path) -> None:
    (tmp_path / "syncline.toml").write_text(
        f'[store]\nurl = "sqlite:///{tmp_path}/app.db"\n[store.options]\nbusy_timeout = "soon"\n')
    result = CliRunner().invoke(main, ["status"])
    assert result.exit_code == 2, result.output
    lines = [line for line in result.output.splitlines() if line.strip()]
    assert len(lines) == 1 and lines[0].startswith("error: "), result.output
    assert "busy_timeout" in lines[0] and "number" in lines[0]
    assert "Traceback" not in result.output


# -- a failed SQLite open releases its file ---------------------------------------------------


def _open_descriptors() -> int:
    return len(os.listdir("/proc/self/fd"))


@pytest.fixture
def no_gc() -> Iterator[None]:
    gc.collect()
    gc.disable()
    try:
        yield
    finally:
        gc.enable()


@pytest.mark.skipif(not Path("/proc/self/fd").is_dir(), reason="needs /proc/self/fd")
def test_twenty_failed_sqlite_opens_keep_no_descriptor(tmp_path: Path, no_gc: None) -> None:
    bad = tmp_path / "not-a-database.db"
    bad.write_bytes(b"this is no SQLite database, just text that is long enough " * 20)
    before = _open_descriptors()
    for _ in range(20):
        with pytest.raises(syncline.BackendUnavailableError, match="not a database"):
            syncline.open(f"sqlite:///{bad}", entities=[Note])
    assert _open_descriptors() == before
    assert bad.read_bytes().startswith(b"this is no SQLite database")


def test_syncline_init_takes_a_url_with_store_parameters(postgres_url: str) -> None:
    from sqlalchemy.engine import make_url
    from sqlalchemy_utils import drop_database

    missing = make_url(postgres_url).set(database=f"syncline_init_opts_{os.getpid()}")
    url = missing.render_as_string(hide_password=False) + "?schema=Opts&pool_size=2"
    result = CliRunner().invoke(main, ["init", url])
    assert result.exit_code == 0, result.output
    assert "created database" in result.output
    try:
        with syncline.open(url, entities=[Note]) as store:
            store.repository(Note).insert(Note("a", "b"))
            assert store.repository(Note).count() == 1
    finally:
        drop_database(missing.set(drivername="postgresql+psycopg"))
