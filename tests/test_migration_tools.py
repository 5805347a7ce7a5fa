"""Schema dumps, the SchemaVerifier for app developers, and the migrate / schema CLI commands."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import textwrap
import uuid
from pathlib import Path

import attrs
import pytest
from click.testing import CliRunner

import syncline
from syncline.cli import main
from syncline.core.model.schema import EntityRegistry
from syncline.core.storage import schema_dump
from syncline.testing.migrations import SchemaMismatch, SchemaVerifier, upgrade_paths

APP_V1 = '''
import attrs
import syncline

reg = syncline.EntityRegistry()

@reg.entity("posts", indexes=["author"], syncs=True)
@attrs.define
class Post:
    id: str
    author: str
    text: str

@reg.entity("comments",
            foreign_keys={"post_id": syncline.ForeignKey("posts.id", on_delete="cascade")})
@attrs.define
class Comment:
    id: int
    post_id: str
    body: str

schema = syncline.Schema(1, [Post, Comment],
                         views=[syncline.View("post_authors", "SELECT DISTINCT author FROM posts")])
'''

APP_V2 = '''
import attrs
import syncline

reg = syncline.EntityRegistry()

@reg.entity("posts", indexes=["author"], syncs=True)
@attrs.define
class Post:
    id: str
    author: str
    body: str
    likes: int = 0

@reg.entity("comments",
            foreign_keys={"post_id": syncline.ForeignKey("posts.id", on_delete="cascade")})
@attrs.define
class Comment:
    id: int
    post_id: str
    body: str

def to_2(m):
    m.alter_table(syncline.TableMigration(Post, renamed={"body": "text"}, new_columns=["likes"]))

schema = syncline.Schema(2, [Post, Comment],
                         views=[syncline.View("post_authors", "SELECT DISTINCT author FROM posts")],
                         migration=syncline.MigrationStrategy(on_upgrade=syncline.steps({2: to_2})))
broken = syncline.Schema(2, [Post, Comment],
                         views=[syncline.View("post_authors", "SELECT DISTINCT author FROM posts")],
                         migration=syncline.MigrationStrategy(on_upgrade=lambda m, o, n: None))
'''


def _app(tmp_path: Path, monkeypatch: pytest.MonkeyPatch, source: str) -> str:
    """Write the app's schema module under a fresh name and make it importable."""
    name = f"app_{uuid.uuid4().hex[:8]}"
    folder = tmp_path / "src"
    folder.mkdir(exist_ok=True)
    (folder / f"{name}.py").write_text(textwrap.dedent(source))
    monkeypatch.syspath_prepend(str(folder))
    return name


@pytest.fixture(params=["sqlite", "postgresql", "memory-named"])
def url(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/app.db"
    if request.param == "memory-named":
        return f"memory://verifier-{uuid.uuid4().hex}"
    base = request.getfixturevalue("postgres_url")
    return f"{base}?schema=v_{uuid.uuid4().hex[:12]}"


def test_dump_round_trips_tables_views_triggers_and_keys(tmp_path: Path) -> None:
    reg = EntityRegistry()

    @reg.entity("things", indexes=["name"], unique=["code"], syncs=True,
                foreign_keys={"parent": "things.id"})
    @attrs.define
    class Thing:
        id: str
        name: str
        code: int
        parent: str | None = None
        active: bool = True

    view = syncline.View("names", {"sqlite": "SELECT name FROM things",
                                   "postgresql": "SELECT name FROM things"})
    trigger = syncline.Trigger("t", "things", ["CREATE TRIGGER t ...", "second"])
    dumped = schema_dump.dump(3, [Thing], [view], [trigger])
    path = schema_dump.write(tmp_path, dumped)
    assert path.name == "syncline_schema_v3.json"
    again = schema_dump.read(tmp_path, 3)
    assert again == dumped
    assert json.loads(path.read_text())["tables"][0]["syncs"] is True
    [cls] = again.entities()
    assert syncline.Schema(3, [cls]).entities[0].__syncline_entity__.table == dumped.tables[0]
    with pytest.raises(syncline.MigrationError, match="no schema dump for version 4"):
        schema_dump.read(tmp_path, 4)


def test_a_file_that_is_not_a_dump_is_refused(tmp_path: Path) -> None:
    (tmp_path / "syncline_schema_v1.json").write_text('{"tables": []}')
    with pytest.raises(syncline.MigrationError, match="not a syncline schema dump"):
        schema_dump.read(tmp_path, 1)


def test_verifier_opens_an_old_version_migrates_and_verifies(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, url: str) -> None:
    import importlib

    v1 = importlib.import_module(_app(tmp_path, monkeypatch, APP_V1))
    v2 = importlib.import_module(_app(tmp_path, monkeypatch, APP_V2))
    dumps = tmp_path / "schemas"
    sql = not url.startswith("memory")  # the memory backend holds no views
    for app in (v1, v2):
        s = app.schema
        schema_dump.write(dumps, schema_dump.dump(s.version, s.entities,
                                                  s.views if sql else (), s.triggers))
    target = v2.schema if sql else attrs.evolve(v2.schema, views=())
    verifier = SchemaVerifier(dumps)
    assert verifier.versions() == [1, 2]
    assert upgrade_paths(dumps, 2) == [1]

    old = verifier.open_at(url, 1)
    posts = old.repository(old.entity_for_table("posts"))
    comments = old.repository(old.entity_for_table("comments"))
    posts.insert(posts.entity(id="p1", author="ada", text="hello"))
    comments.insert_many([comments.entity(id=i, post_id="p1", body=f"c{i}") for i in range(3)])
    assert old.outbox.pending_count() == 1
    old.close()
    with pytest.raises(syncline.MigrationError, match="needs a new store"):
        verifier.open_at(url, 1)

    store = verifier.migrate(url, target)
    try:
        assert store.repository(v2.Post).get("p1") == v2.Post("p1", "ada", "hello", 0)
        assert store.repository(v2.Comment).count() == 3
        [entry] = store.outbox.all_pending()
        assert entry.payload == {"id": "p1", "author": "ada", "body": "hello", "likes": 0}
        verifier.verify_against_dump(store, 2)
    finally:
        store.close()


def test_verifier_catches_a_migration_that_forgets_a_change(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    import importlib

    v1 = importlib.import_module(_app(tmp_path, monkeypatch, APP_V1))
    v2 = importlib.import_module(_app(tmp_path, monkeypatch, APP_V2))
    dumps = tmp_path / "schemas"
    schema_dump.write(dumps, schema_dump.dump(1, v1.schema.entities, v1.schema.views))
    verifier = SchemaVerifier(dumps)
    url = f"sqlite:///{tmp_path}/forgot.db"
    verifier.open_at(url, 1).close()
    with pytest.raises(SchemaMismatch) as err:
        verifier.migrate(url, v2.broken)
    assert "column posts.body is missing" in err.value.differences
    assert "column posts.text is not declared" in err.value.differences
    store = syncline.open(f"sqlite:///{tmp_path}/fresh.db", schema=v2.schema)
    try:
        with pytest.raises(SchemaMismatch) as err:
            verifier.verify_against_dump(store, 1)
    finally:
        store.close()
    where = "(declared now vs the dump of version 1)"
    assert err.value.differences == [  # the difference itself, not only that there is one
        f"table posts: column body is not in the dump {where}",
        f"table posts: column likes is not in the dump {where}",
        f"table posts: column text is only in the dump {where}"]


# -- the CLI ---------------------------------------------------------------------------------


def test_cli_dump_migrate_verify_and_status(tmp_path: Path,
                                            monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = _app(tmp_path, monkeypatch, APP_V1)
    v2 = _app(tmp_path, monkeypatch, APP_V2)
    runner = CliRunner(env={"COLUMNS": "1000"})  # no wrapping of messages with long tmp paths
    store = f"sqlite:///{tmp_path}/cli.db"

    result = runner.invoke(main, ["schema", "dump", "--schema", f"{v1}:schema",
                                  str(tmp_path / "dumps")])
    assert result.exit_code == 0, result.output
    assert (tmp_path / "dumps" / "syncline_schema_v1.json").exists()

    result = runner.invoke(main, ["migrate", "--store", store, "--schema", f"{v1}:schema"])
    assert result.exit_code == 0, result.output
    assert "created" in result.output and "version 1" in result.output

    result = runner.invoke(main, ["schema", "verify", "--store", store, "--schema", v1])
    assert result.exit_code == 0, result.output
    assert "matches" in result.output

    result = runner.invoke(main, ["schema", "verify", "--store", store, "--schema", v2])
    assert result.exit_code == 1, result.output
    assert "at schema version 1, the schema declares 2" in result.output
    assert "column posts.body is missing" in result.output

    result = runner.invoke(main, ["migrate", "--store", store, "--schema", v2])
    assert result.exit_code == 0, result.output
    assert "migrated" in result.output and "from version 1 to 2" in result.output
    result = runner.invoke(main, ["migrate", "--store", store, "--schema", v2])
    assert "already at version 2" in result.output

    result = runner.invoke(main, ["schema", "verify", "--store", store, "--schema", v2])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["status", "--store", store])  # a v2 store opens as it is
    assert result.exit_code == 0, result.output


def test_cli_migrate_refuses_a_newer_store_on_one_line(tmp_path: Path,
                                                      monkeypatch: pytest.MonkeyPatch) -> None:
    v1 = _app(tmp_path, monkeypatch, APP_V1)
    v2 = _app(tmp_path, monkeypatch, APP_V2)
    store = f"sqlite:///{tmp_path}/newer.db"
    runner = CliRunner()
    assert runner.invoke(main, ["migrate", "--store", store, "--schema", v2]).exit_code == 0
    result = runner.invoke(main, ["migrate", "--store", store, "--schema", v1])
    assert result.exit_code == 2
    assert result.output.count("\n") == 1
    assert "newer than this code's version 1" in result.output


@pytest.mark.parametrize("args, message", [
    (["migrate", "--store", "nope://x", "--schema", "json:dumps"], "is neither"),
    (["migrate", "--schema", "no_such_module_xyz:schema"], "cannot import schema module"),
    (["schema", "dump", "--schema", "json:nothing_here", "out"], "has no attribute"),
    (["schema", "verify", "--store", "nope://x", "--schema", "syncline.examples.social.models"],
     "nope"),
    (["migrate", "--store", "nope://x", "--schema", "syncline.examples.social.models"],
     "nope"),
    (["migrate", "--store", "postgresql://u@127.0.0.1:1/db",
      "--schema", "syncline.examples.social.models"], "cannot reach PostgreSQL"),
    (["schema", "verify", "--store", "postgresql://u@127.0.0.1:1/db",
      "--schema", "syncline.examples.social.models"], "cannot reach PostgreSQL"),
    (["schema", "dump", "--schema", "syncline.examples.social.models", "--version", "3", "out"],
     "--version 3 does not match"),
])
def test_cli_schema_commands_bad_input(args: list[str], message: str) -> None:
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 2, result.output
    assert result.output.startswith("error: ")
    assert message in result.output


def test_cli_migrate_as_a_subprocess(tmp_path: Path) -> None:
    (tmp_path / "app_sub.py").write_text(textwrap.dedent(APP_V1))
    store = f"sqlite:///{tmp_path}/sub.db"
    root = Path(syncline.__file__).parent.parent  # this checkout, installed or not
    env = {**os.environ, "PYTHONPATH": os.pathsep.join([str(tmp_path), str(root)])}
    done = subprocess.run([sys.executable, "-m", "syncline.cli", "migrate", "--store", store,
                           "--schema", "app_sub:schema"], capture_output=True, text=True,
                          env=env, timeout=60, cwd=tmp_path)
    assert done.returncode == 0, done.stderr
    assert "created" in done.stdout


@pytest.mark.parametrize("command", [["migrate"], ["schema", "verify"]])
def test_cli_schema_commands_with_a_missing_config_file(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch, command: list[str]) -> None:
    monkeypatch.setenv("SYNCLINE_CONFIG", str(tmp_path / "nope.toml"))
    result = CliRunner().invoke(main, [*command, "--schema", "syncline.examples.social.models"])
    assert result.exit_code == 2
    assert result.output.startswith("error: SYNCLINE_CONFIG")


def test_cli_migrate_the_social_example(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/social.db"
    result = CliRunner().invoke(main, ["migrate", "--store", store,
                                       "--schema", "syncline.examples.social.models"])
    assert result.exit_code == 0, result.output
    result = CliRunner().invoke(main, ["schema", "verify", "--store", store,
                                       "--schema", "syncline.examples.social.models"])
    assert result.exit_code == 0, result.output


def test_cli_migrate_and_verify_a_server_store(tmp_path: Path) -> None:
    store = f"sqlite:///{tmp_path}/server.db"
    spec = "syncline.examples.social.models"
    runner = CliRunner()
    result = runner.invoke(main, ["migrate", "--server", "--store", store, "--schema", spec])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["schema", "verify", "--server", "--store", store,
                                  "--schema", spec])
    assert result.exit_code == 0, result.output
    result = runner.invoke(main, ["schema", "verify", "--store", store, "--schema", spec])
    assert result.exit_code == 1  # without --server, the server's own tables are extra
    assert "_syncline_changes is not declared" in result.output


def test_cli_serve_needs_entities_or_a_schema() -> None:
    result = CliRunner().invoke(main, ["serve"])
    assert result.exit_code == 2
    assert "--entities" in result.output and "--schema" in result.output


# -- two processes (issue 19) ----------------------------------------------------------------

_OLD = EntityRegistry()


@_OLD.entity("counters")
@attrs.define
class CounterV1:
    id: int
    value: str


_MIGRATE_TO_2 = '''
import sys, attrs, syncline
reg = syncline.EntityRegistry()
@reg.entity("counters")
@attrs.define
class Counter:
    id: int
    value: int
store = syncline.open(sys.argv[1], entities=[Counter], schema_version=2,
                      migration=syncline.MigrationStrategy(on_upgrade=lambda m, o, n:
                          m.alter_column(Counter, "value", using="CAST(value AS INTEGER)")))
store.close()
'''


def test_an_old_process_stops_writing_once_another_process_migrated_the_file(
        tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/shared.db"
    with syncline.open(url, entities=[CounterV1], schema_version=1) as old:
        old.repository(CounterV1).insert(CounterV1(1, "7"))
        subprocess.run([sys.executable, "-c", _MIGRATE_TO_2, url], check=True, timeout=120)
        with pytest.raises(syncline.StaleSchemaError, match="migrated to schema version 2"):
            old.repository(CounterV1).insert(CounterV1(2, "not a number"))
        assert old.repository(CounterV1).count() == 1  # reading still works; nothing written


def test_a_migration_that_cannot_take_the_write_lock_says_so(tmp_path: Path) -> None:
    import sqlite3

    url = f"sqlite:///{tmp_path}/busy.db"
    syncline.open(url, entities=[CounterV1], schema_version=1).close()
    holder = sqlite3.connect(tmp_path / "busy.db", isolation_level=None)
    holder.execute("BEGIN IMMEDIATE")  # another process, migrating (or just writing)
    try:
        with pytest.raises(syncline.MigrationError) as err:
            syncline.open(url + "?busy_timeout=0.05", entities=[CounterV1], schema_version=2,
                          migration=syncline.MigrationStrategy(on_upgrade=lambda m, o, n: None))
    finally:
        holder.execute("ROLLBACK")
        holder.close()
    message = str(err.value)
    assert "upgrading from version 1 to version 2 did not start" in message
    assert "another process may be migrating it" in message
    assert "still at" not in message  # the other process may be about to commit version 2
