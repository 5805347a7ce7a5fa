"""Plugin discovery: bundled entry points, a third-party distribution, broken plugins."""

from __future__ import annotations

import json
import sys
import textwrap
from collections.abc import Iterator
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

import syncline
from syncline.cli import main
from syncline.core import plugins
from syncline.core.model.errors import AuthenticationError

registry = syncline.EntityRegistry()


@registry.entity("plugged")
@attrs.define
class Plugged:
    id: str
    value: int = 0


def make_distribution(root: Path, name: str, module_source: str, entry: str | None = None) -> None:
    """A fake installed distribution: a module and a dist-info with a syncline entry point."""
    module = f"{name}_plugin"
    (root / f"{module}.py").write_text(textwrap.dedent(module_source))
    info = root / f"{name}-1.2.3.dist-info"
    info.mkdir()
    (info / "METADATA").write_text(f"Metadata-Version: 2.1\nName: {name}\nVersion: 1.2.3\n")
    (info / "entry_points.txt").write_text(f"[syncline]\n{entry or name} = {module}\n")


@pytest.fixture
def fresh_plugins(monkeypatch: pytest.MonkeyPatch, tmp_path: Path) -> Iterator[Path]:
    """A plugin manager that loads again, with tmp_path on sys.path for fake distributions."""
    monkeypatch.syspath_prepend(str(tmp_path))
    plugins.reset_plugin_manager()
    yield tmp_path
    for name in [m for m in sys.modules if m.endswith("_plugin")]:
        del sys.modules[name]
    plugins.reset_plugin_manager()


def test_bundled_backends_come_from_entry_points() -> None:
    manager = plugins.plugin_manager()
    for name in ("memory", "sqlite"):
        info = manager.plugins[name]
        assert info.distribution == "syncline"
        assert "syncline_register_backends" in info.hooks
        assert manager.schemes_of(name)["backends"] == [name]


def test_importing_syncline_loads_no_plugin() -> None:
    import subprocess

    code = ("import syncline, syncline.core.plugins as p, sys; "
            "print(p._manager is None and 'sqlalchemy' not in sys.modules)")
    out = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert out.stdout.strip() == "True"


THIRD_PARTY = """
    from syncline import hookimpl
    from syncline.backends.memory import MemoryBackend

    class DictBackend(MemoryBackend):
        pass

    @hookimpl
    def syncline_register_backends(registry):
        registry.register("dictdb", DictBackend, description="a third-party test backend")
"""


def test_third_party_backend_is_found_by_the_same_path(fresh_plugins: Path) -> None:
    make_distribution(fresh_plugins, "dictdb", THIRD_PARTY)
    info = plugins.plugin_manager().plugins["dictdb"]
    assert (info.distribution, info.version) == ("dictdb", "1.2.3")
    with syncline.open("dictdb://", entities=[Plugged]) as store:
        store.repository(Plugged).upsert(Plugged("a", 1))
        assert type(store.backend).__name__ == "DictBackend"
        assert store.repository(Plugged).get("a") == Plugged("a", 1)


def test_plugins_command_lists_third_party_plugin(fresh_plugins: Path) -> None:
    make_distribution(fresh_plugins, "dictdb", THIRD_PARTY)
    result = CliRunner().invoke(main, ["plugins", "--json"])
    assert result.exit_code == 0, result.output
    rows = {row["name"]: row for row in json.loads(result.output)}
    assert rows["dictdb"]["backends"] == ["dictdb"]
    assert rows["dictdb"]["distribution"] == "dictdb"
    assert rows["sqlite"]["distribution"] == "syncline"
    text = CliRunner().invoke(main, ["plugins"])
    assert "dictdb://" in text.output and "memory://" in text.output


def test_broken_plugin_names_plugin_and_distribution(fresh_plugins: Path) -> None:
    make_distribution(fresh_plugins, "broken", "import no_such_module_anywhere\n")
    with pytest.raises(syncline.PluginError) as info:
        plugins.plugin_manager()
    message = str(info.value)
    assert "'broken'" in message and "distribution broken" in message
    assert "SYNCLINE_DISABLE_PLUGINS=broken" in message


def test_disable_plugins_blocks_named_plugins(fresh_plugins: Path,
                                              monkeypatch: pytest.MonkeyPatch) -> None:
    make_distribution(fresh_plugins, "broken", "import no_such_module_anywhere\n")
    monkeypatch.setenv("SYNCLINE_DISABLE_PLUGINS", "broken, memory")
    manager = plugins.plugin_manager()
    assert "broken" not in manager.plugins and "memory" not in manager.plugins
    with pytest.raises(syncline.UnknownSchemeError, match="sqlite://"):
        syncline.open("memory://", entities=[Plugged])


def test_two_plugins_claiming_one_scheme(fresh_plugins: Path) -> None:
    make_distribution(fresh_plugins, "clash", """
        from syncline import hookimpl
        from syncline.backends.memory import MemoryBackend

        @hookimpl
        def syncline_register_backends(registry):
            registry.register("memory", MemoryBackend)
    """)
    with pytest.raises(syncline.PluginError, match="already registered"):
        plugins.plugin_manager()


def test_lazy_registration_names_package_to_install(fresh_plugins: Path) -> None:
    make_distribution(fresh_plugins, "lazy", """
        from syncline import hookimpl

        @hookimpl
        def syncline_register_backends(registry):
            registry.register("lazydb", "no_such_driver_pkg.backend:Backend",
                              requires="lazydb-driver")
    """)
    with pytest.raises(syncline.PluginError, match="pip install lazydb-driver"):
        syncline.open("lazydb://", entities=[Plugged])


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents


def test_plugin_adds_a_field_type(fresh_plugins: Path) -> None:
    class TypesPlugin:
        @syncline.hookimpl
        def syncline_register_types(self, registry: plugins.TypeRegistry) -> None:
            registry.register(Money, "integer", lambda m: m.cents, Money)

    plugins.register_plugin(TypesPlugin(), "money")
    types_registry = syncline.EntityRegistry()

    @types_registry.entity("priced")
    @attrs.define
    class Priced:
        id: str
        price: Money
        old_price: Money | None = None

    for url in ("memory://", "sqlite://"):
        with syncline.open(url, entities=[Priced]) as store:
            repo = store.repository(Priced)
            repo.upsert(Priced("a", Money(250)))
            assert repo.get("a") == Priced("a", Money(250))
            assert repo.count(syncline.F.price > Money(100)) == 1


def test_after_commit_hook_hears_commits(fresh_plugins: Path) -> None:
    heard: list[frozenset[str]] = []

    class Listener:
        @syncline.hookimpl
        def syncline_after_commit(self, store: syncline.Store, tables: frozenset[str]) -> None:
            heard.append(tables)

    class Failing:
        @syncline.hookimpl
        def syncline_after_commit(self) -> None:
            raise RuntimeError("a failing plugin does not undo the commit")

    plugins.register_plugin(Listener(), "listener")
    plugins.register_plugin(Failing(), "failing")
    with syncline.open("memory://", entities=[Plugged]) as store:
        store.repository(Plugged).upsert(Plugged("a"))
        assert store.repository(Plugged).count() == 1
    assert frozenset({"plugged"}) in heard


def test_plugin_cli_command(fresh_plugins: Path) -> None:
    import click

    @click.command("hello")
    def hello() -> None:
        click.echo("hello from a plugin")

    class Commands:
        @syncline.hookimpl
        def syncline_register_commands(self, registry: plugins.CommandRegistry) -> None:
            registry.register(hello)

    plugins.register_plugin(Commands(), "commands")
    result = CliRunner().invoke(main, ["hello"])
    assert result.output.strip() == "hello from a plugin"
    assert "hello" in CliRunner().invoke(main, ["--help"]).output


def test_a_misspelt_hook_fails_naming_it_and_the_known_ones(fresh_plugins: Path) -> None:
    class Typo:
        @syncline.hookimpl
        def syncline_register_backend(self, registry: object) -> None:
            raise AssertionError("never called")

    with pytest.raises(syncline.PluginError) as caught:
        plugins.register_plugin(Typo(), "typo")
    message = str(caught.value)
    assert "syncline_register_backend " in message
    assert "did you mean syncline_register_backends?" in message
    assert "syncline_after_commit" in message  # the known hooks are listed
    assert plugins.plugin_manager().pm.get_plugin("typo") is None  # not left half-registered


def test_registration_hooks_are_called_by_pluggy_for_their_plugin_only(
        fresh_plugins: Path) -> None:
    calls: list[str] = []

    class One:
        @syncline.hookimpl
        def syncline_register_backends(self, registry: object) -> None:
            calls.append("one")

    class Two:
        @syncline.hookimpl
        def syncline_register_backends(self, registry: object) -> None:
            calls.append("two")

    plugins.register_plugin(One(), "one")
    plugins.register_plugin(Two(), "two")
    assert calls == ["one", "two"]

    class Bad:
        @syncline.hookimpl
        def syncline_register_backends(self, registry: object, extra: object) -> None:
            raise AssertionError("never called")

    with pytest.raises(syncline.PluginError, match="'bad' cannot be registered"):
        plugins.register_plugin(Bad(), "bad")


def test_after_hooks_log_a_failure_and_the_others_still_run(
        fresh_plugins: Path, caplog: pytest.LogCaptureFixture) -> None:
    heard: list[str] = []

    class Failing:
        @syncline.hookimpl
        def syncline_after_pull(self, changes: list[object]) -> None:
            raise RuntimeError("broken plugin")

    class Listener:
        @syncline.hookimpl
        def syncline_after_pull(self, changes: list[object]) -> None:
            heard.append("listener")

    plugins.register_plugin(Listener(), "listener")
    plugins.register_plugin(Failing(), "failing")  # pluggy calls the last registered first
    hooks = plugins.plugin_manager().hooks
    with caplog.at_level("ERROR", logger="syncline.plugins"):
        hooks.after_pull(None, [])
        hooks.after_pull(None, [])
    assert heard == ["listener", "listener"]
    assert [r.message for r in caplog.records] == ["plugin 'failing' failed in "
                                                   "syncline_after_pull"] * 2


def test_a_failing_authentication_plugin_lets_nobody_in(fresh_plugins: Path) -> None:
    class Broken:
        @syncline.hookimpl
        def syncline_authenticate(self, headers: dict[str, str]) -> object:
            raise KeyError("authorization")

    plugins.register_plugin(Broken(), "broken-auth")
    with pytest.raises(AuthenticationError, match="authentication plugin failed"):
        plugins.plugin_manager().hooks.authenticate({}, None)
