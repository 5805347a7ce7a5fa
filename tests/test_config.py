"""Configuration: precedence, files, environment, defaults and errors."""

from __future__ import annotations

from pathlib import Path

import attrs
import pytest

import syncline
from syncline.core.storage.config import load_config

registry = syncline.EntityRegistry()


@registry.entity("notes")
@attrs.define
class Note:
    id: str
    text: str


@pytest.fixture(autouse=True)
def clean_env(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Path:
    for key in list(__import__("os").environ):
        if key.startswith("SYNCLINE_"):
            monkeypatch.delenv(key)
    monkeypatch.chdir(tmp_path)
    return tmp_path


def test_syncline_toml_is_read(tmp_path: Path) -> None:
    (tmp_path / "syncline.toml").write_text('[store]\nurl = "memory://"\napp_name = "notes"\n')
    cfg = load_config()
    assert cfg.store.url == "memory://" and cfg.store.app_name == "notes"


def test_pyproject_tool_table_is_read(tmp_path: Path) -> None:
    (tmp_path / "pyproject.toml").write_text(
        '[project]\nname = "x"\n[tool.syncline.store]\nurl = "sqlite://"\n')
    assert load_config().store.url == "sqlite://"


def test_precedence_arguments_then_environment_then_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    (tmp_path / "syncline.toml").write_text(
        '[store]\nurl = "memory://file"\napp_name = "fromfile"\nschema_version = 4\n')
    monkeypatch.setenv("SYNCLINE_STORE_URL", "memory://env")
    monkeypatch.setenv("SYNCLINE_STORE_SCHEMA_VERSION", "7")
    cfg = load_config()
    assert (cfg.store.url, cfg.store.app_name, cfg.store.schema_version) == (
        "memory://env", "fromfile", 7)
    cfg = load_config({"store": {"url": "memory://arg"}})
    assert cfg.store.url == "memory://arg"


def test_unknown_key_names_key_and_file(tmp_path: Path) -> None:
    (tmp_path / "syncline.toml").write_text('[store]\nurll = "memory://"\n')
    with pytest.raises(syncline.ConfigurationError) as info:
        load_config()
    message = str(info.value)
    assert "urll" in message and "syncline.toml" in message and "url" in message


def test_wrong_type_names_key(tmp_path: Path) -> None:
    (tmp_path / "syncline.toml").write_text('[store]\nschema_version = "three"\n')
    with pytest.raises(syncline.ConfigurationError, match="schema_version"):
        load_config()


def test_wrong_environment_value_names_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCLINE_STORE_SCHEMA_VERSION", "x")
    with pytest.raises(syncline.ConfigurationError, match="SYNCLINE_STORE_SCHEMA_VERSION"):
        load_config()


def test_missing_config_file_from_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("SYNCLINE_CONFIG", "/nonexistent/syncline.toml")
    with pytest.raises(syncline.ConfigurationError, match="SYNCLINE_CONFIG"):
        load_config()


def test_open_uses_configuration_file(tmp_path: Path) -> None:
    (tmp_path / "syncline.toml").write_text(f'[store]\nurl = "sqlite:///{tmp_path}/c.db"\n')
    with syncline.open(entities=[Note]) as store:
        store.repository(Note).upsert(Note("1", "hi"))
    assert (tmp_path / "c.db").exists()


def test_no_configuration_opens_sqlite_in_user_data_folder(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("XDG_DATA_HOME", str(tmp_path / "data"))
    monkeypatch.setenv("HOME", str(tmp_path / "home"))
    with syncline.open(entities=[Note], app_name="notesapp") as store:
        store.repository(Note).upsert(Note("1", "hi"))
        assert store.backend.url.startswith("sqlite:///")
    assert (tmp_path / "data" / "notesapp" / "notesapp.db").exists()


def test_unknown_scheme_lists_available_schemes() -> None:
    with pytest.raises(syncline.UnknownSchemeError) as info:
        syncline.open("nosuch://x", entities=[Note])
    message = str(info.value)
    assert "memory://" in message and "sqlite://" in message and "pip install" in message


def test_url_without_scheme() -> None:
    with pytest.raises(syncline.ConfigurationError, match="no scheme"):
        syncline.open("app.db", entities=[Note])


def test_sqlite_in_missing_folder_is_unavailable(tmp_path: Path) -> None:
    with pytest.raises(syncline.BackendUnavailableError, match="does not exist"):
        syncline.open(f"sqlite:///{tmp_path}/no/such/dir/x.db", entities=[Note])


def test_backend_options_reach_the_backend(tmp_path: Path) -> None:
    with syncline.open(f"sqlite:///{tmp_path}/o.db", entities=[Note],
                       options={"busy_timeout": 1.5}) as store:
        assert getattr(store.backend, "busy_timeout") == 1.5  # noqa: B009
