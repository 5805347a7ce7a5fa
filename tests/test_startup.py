"""What a process imports to open a store or run the CLI: only what it uses (issue #20).

Each case runs in a fresh interpreter and lists the modules it imported beyond those a bare
``python -c "import sqlite3"`` imports. Timings are in benchmarks/bench_startup.py.
"""

from __future__ import annotations

import json
import subprocess
import sys
import textwrap
from pathlib import Path

import pytest

from syncline.core.spi.entry_points import read_entry_points

#: never imported by opening an SQLite store that is at the code's schema version
NOT_FOR_AN_OPEN = (
    "sqlalchemy", "alembic", "psycopg", "asyncpg", "syncline.server",
    "syncline.backends.postgres.backend", "syncline.backends.sql",
    # the migration machinery: the store is up to date
    "syncline.core.storage.migration", "syncline.backends.sql_migration",
    "syncline.core.spi.migration_ops",
    # nor what the store does not use
    "syncline.core.sync.engine", "importlib.metadata", "asyncio", "httpx", "rich", "click",
)
NOT_FOR_THE_CLI = ("sqlalchemy", "alembic", "psycopg", "asyncpg", "syncline.server",
                   "syncline.core.storage.migration", "syncline.backends.postgres.backend")

APP = textwrap.dedent("""
    import attrs, syncline

    @syncline.entity("notes", indexes=["text"], syncs=True)
    @attrs.define
    class Note:
        id: str
        text: str
""")


def _imports(code: str, *args: str) -> set[str]:
    """The modules ``code`` imported beyond those of a bare interpreter (it prints them)."""
    listing = "\nimport json, sys\nprint(json.dumps(sorted(sys.modules)))\n"
    base = subprocess.run([sys.executable, "-c", "import sqlite3" + listing],
                          capture_output=True, text=True, check=True)
    run = subprocess.run([sys.executable, "-c", code + listing, *args],
                         capture_output=True, text=True, check=True)
    return set(json.loads(run.stdout.splitlines()[-1])) - set(json.loads(base.stdout))


def _found(modules: set[str], banned: tuple[str, ...]) -> list[str]:
    return sorted(m for m in modules if any(m == b or m.startswith(b + ".") for b in banned))


@pytest.fixture
def store_file(tmp_path: Path) -> Path:
    """An SQLite store at the code's version, with one note (made by another process)."""
    path = tmp_path / "app.db"
    subprocess.run([sys.executable, "-c", APP + textwrap.dedent("""
        import sys
        with syncline.open("sqlite:///" + sys.argv[1], entities=[Note]) as store:
            store.repository(Note).insert(Note(id="n1", text="hello"))
    """), str(path)], check=True)
    return path


def test_opening_an_up_to_date_sqlite_store_imports_only_what_it_uses(
        store_file: Path) -> None:
    modules = _imports(APP + textwrap.dedent("""
        import sys
        store = syncline.open("sqlite:///" + sys.argv[1], entities=[Note])
        assert store.repository(Note).get("n1").text == "hello"
        assert not store.opening.had_upgrade and not store.opening.was_created
        store.close()
    """), str(store_file))
    assert "syncline.backends.sqlite" in modules  # the case did run
    assert _found(modules, NOT_FOR_AN_OPEN) == []


def test_creating_an_sqlite_store_imports_no_sqlalchemy_alembic_or_server(
        tmp_path: Path) -> None:
    # Creating runs the migration machinery (on_create), but its DDL is the backend's own,
    # run on the sqlite3 connection.
    modules = _imports(APP + textwrap.dedent("""
        import sys
        with syncline.open("sqlite:///" + sys.argv[1], entities=[Note]) as store:
            assert store.opening.was_created
    """), str(tmp_path / "new.db"))
    assert "syncline.core.storage.migration" in modules
    assert _found(modules, ("sqlalchemy", "alembic", "psycopg", "asyncpg", "syncline.server",
                            "syncline.backends.postgres.backend")) == []


def test_upgrading_a_store_imports_the_migration_machinery(store_file: Path) -> None:
    # The other side of the rule above: a migration runs it, on first use.
    modules = _imports(APP + textwrap.dedent("""
        import sys
        strategy = syncline.MigrationStrategy(on_upgrade=lambda migrator, old, new: None)
        with syncline.open("sqlite:///" + sys.argv[1], entities=[Note], schema_version=2,
                           migration=strategy) as store:
            assert store.opening.had_upgrade
    """), str(store_file))
    assert _found(modules, ("syncline.core.storage.migration",)) != []


@pytest.mark.parametrize("command", [["--help"], ["plugins"], ["plugins", "--json"]])
def test_the_cli_imports_no_sqlalchemy_to_list_or_help(command: list[str]) -> None:
    modules = _imports(textwrap.dedent("""
        import sys
        from syncline.cli import main
        try:
            main(sys.argv[1:], prog_name="syncline")
        except SystemExit as exc:
            assert not exc.code, exc.code
    """), *command)
    assert "syncline.cli" in modules
    assert _found(modules, NOT_FOR_THE_CLI) == []
    if command == ["--help"]:
        assert _found(modules, ("rich",)) == []


def test_the_postgresql_backend_is_imported_when_its_scheme_is_used() -> None:
    modules = _imports(textwrap.dedent("""
        from syncline.core.plugins import plugin_manager
        manager = plugin_manager()
        assert "postgresql" in manager.backends.schemes()
        import sys
        assert "syncline.backends.postgres.backend" not in sys.modules
        assert manager.backend_class("postgresql").__name__ == "PostgresBackend"
    """))
    assert "syncline.backends.postgres.backend" in modules


@pytest.mark.parametrize("group", ["syncline", "pytest11", "console_scripts"])
def test_entry_points_are_the_ones_importlib_metadata_finds(group: str) -> None:
    import importlib.metadata

    def described(eps: object) -> list[tuple[str, str, str | None, str | None]]:
        return sorted((e.name, e.value, e.dist.name if e.dist else None,
                       e.dist.version if e.dist else None) for e in eps)  # type: ignore[attr-defined]

    assert described(read_entry_points(group)) == described(
        importlib.metadata.entry_points(group=group))
