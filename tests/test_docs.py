"""The documentation stays true: every hook documented, the README quickstart runs."""

from __future__ import annotations

import re
from pathlib import Path

import pytest

from syncline.core.spi import hookspecs

ROOT = Path(__file__).resolve().parent.parent


def test_every_hook_is_documented_for_plugin_authors() -> None:
    text = (ROOT / "docs" / "plugins.md").read_text()
    hooks = [name for name in dir(hookspecs) if name.startswith("syncline_")]
    assert hooks
    for name in hooks:
        assert f"`{name}(" in text, f"docs/plugins.md does not document {name}"
        assert getattr(hookspecs, name).__doc__, f"{name} has no docstring"


def test_readme_quickstart_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Quickstart\n\n```python\n(.*?)```", readme, re.DOTALL)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_quickstart"}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    assert (tmp_path / "app.db").exists()


def test_readme_sync_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Sync\n.*?```python\n(.*?)```", readme, re.DOTALL)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    namespace: dict[str, object] = {"__name__": "readme_sync"}
    exec(compile("import attrs, syncline\n" + code.group(1), "README.md", "exec"), namespace)
    namespace["server"].close()  # type: ignore[attr-defined]


def test_readme_migration_example_runs(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import datetime as dt

    import attrs

    import syncline
    from syncline.core.model import schema

    readme = (ROOT / "README.md").read_text()
    code = re.search(r"## Migrations\n.*?```python\n(.*?)```", readme, re.DOTALL)
    assert code is not None
    monkeypatch.chdir(tmp_path)
    monkeypatch.setattr(schema, "registry", schema.EntityRegistry())  # "posts" is taken above
    v1 = schema.EntityRegistry()

    @v1.entity("posts", indexes=[("user_id", "created_at")])
    @attrs.define
    class PostV1:
        id: str
        user_id: str
        content: str
        created_at: dt.datetime
        category: str

    now = dt.datetime(2026, 1, 2, tzinfo=dt.UTC)
    with syncline.open("sqlite:///app.db", entities=[PostV1]) as old:
        old.repository(PostV1).insert(PostV1("p1", "u1", "hello", now, "7"))
    namespace: dict[str, object] = {"__name__": "readme_migration", "dt": dt, "attrs": attrs,
                                    "syncline": syncline}
    exec(compile(code.group(1), "README.md", "exec"), namespace)
    store: syncline.Store = namespace["store"]  # type: ignore[assignment]
    post_cls: type = namespace["Post"]  # type: ignore[assignment]
    try:
        assert store.repository(post_cls).get("p1") == post_cls("p1", "u1", "hello", now, 7)
    finally:
        store.close()
