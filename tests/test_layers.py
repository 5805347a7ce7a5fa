"""Issue 16, step 2: core in layers. The old flat modules are the new ones under their old
names and warn; the storage layer works without sync and announces writes to listeners; a
syncing store hands out repositories with the sync look-ups."""

from __future__ import annotations

import ast
import importlib
import sys
from pathlib import Path
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.model.schema import EntityRegistry, EntitySpec
from syncline.core.storage.local import LocalStore
from syncline.core.storage.repository import Repository
from syncline.core.sync.repository import SyncRepository

registry = EntityRegistry()


@registry.entity("layers_tasks", syncs=True)
@attrs.define
class Task:
    id: str
    title: str = ""


MOVED = {
    "errors": "model.errors", "clock": "model.clock", "values": "model.values",
    "query": "model.query", "evaluate": "model.evaluate", "schema": "model.schema",
    "convert": "model.convert", "backend": "spi.backend", "transport": "spi.transport",
    "hookspecs": "spi.hookspecs", "config": "storage.config", "watch": "storage.watch",
    "migration": "storage.migration", "schema_dump": "storage.schema_dump",
    "outbox": "sync.outbox", "plan": "sync.plan", "worker": "sync.worker",
}


@pytest.mark.parametrize("old", sorted(MOVED))
def test_an_old_module_is_the_new_one_and_warns(old: str) -> None:
    name = f"syncline.core.{old}"
    new = importlib.import_module(f"syncline.core.{MOVED[old]}")
    sys.modules.pop(name, None)
    with pytest.warns(DeprecationWarning, match=f"syncline.core.{MOVED[old]}"):
        module = importlib.import_module(name)
    assert module is new


def test_the_old_names_that_moved_apart_still_import() -> None:
    sys.modules.pop("syncline.core.repository", None)
    with pytest.warns(DeprecationWarning, match="syncline.core.storage.repository"):
        old = importlib.import_module("syncline.core.repository")
    assert old.Repository is Repository and old.Dao is syncline.Dao
    for name in ("schema", "migration", "config"):
        sys.modules.pop(f"syncline.core.{name}", None)
    with pytest.warns(DeprecationWarning):
        schema = importlib.import_module("syncline.core.schema")
        migration = importlib.import_module("syncline.core.migration")
        config = importlib.import_module("syncline.core.config")
    from syncline.core.spi.helpers import is_json
    from syncline.core.spi.migration_ops import MigrationOps
    from syncline.core.spi.options import Option
    assert schema._is_json is is_json and migration.MigrationOps is MigrationOps
    assert config.Option is Option
    from syncline.core.sync import SyncEngine, sync_lock
    from syncline.core.sync.engine import SyncEngine as engine_class
    from syncline.core.sync.lock import sync_lock as lock_class
    assert SyncEngine is engine_class and sync_lock is lock_class


def test_the_storage_layer_alone_queues_nothing_and_announces_writes() -> None:
    from syncline.backends.memory import MemoryBackend

    heard: list[tuple[str, str, list[Any]]] = []

    def listener(spec: EntitySpec, action: str, records: Any, before: Any) -> None:
        heard.append((spec.table.name, action, [key for key, _ in records]))

    store = LocalStore(MemoryBackend("memory://"), [Task])
    store._open()
    with store:
        store.on_write(listener)
        tasks = store.repository(Task)
        assert type(tasks) is Repository and not hasattr(tasks, "pending")
        tasks.insert(Task("t1"))
        tasks.upsert_many([Task("t1", "again"), Task("t2")])
        tasks.delete("t1")
        assert heard == [("layers_tasks", "create", ["t1"]), ("layers_tasks", "create", ["t2"]),
                         ("layers_tasks", "update", ["t1"]), ("layers_tasks", "delete", ["t1"])]
        assert "_syncline_outbox" not in store.backend.table_names()


def test_a_syncing_store_hands_out_sync_repositories() -> None:
    with syncline.open("memory://", entities=[Task]) as store:
        tasks = store.repository(Task)
        assert isinstance(tasks, SyncRepository)
        tasks.insert(Task("t1"))
        state = tasks.sync_state("t1")
        assert state is not None and state.status is syncline.SyncStatus.PENDING
        assert [t.id for t in tasks.pending()] == ["t1"]
        assert store.outbox.pending_count() == 1


WRITES = {"insert_values", "upsert_values", "update_values", "insert_many", "upsert_many",
          "update",
          "update_where", "delete_many", "delete_where", "increment"}


def test_only_the_writer_writes_rows_and_records_touched_tables() -> None:
    """Watchers hear of every internal write because none bypasses ``store.writer``: no
    module but the writer calls a backend's write methods or ``touched()`` (backends and
    their migration code excepted: they are the backend)."""
    root = Path(syncline.__file__).parent
    found = []
    for path in sorted(root.rglob("*.py")):
        rel = path.relative_to(root).as_posix()
        if rel.startswith(("backends/", "testing/")) or rel == "core/storage/writer.py":
            continue
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if not (isinstance(node, ast.Call) and isinstance(node.func, ast.Attribute)):
                continue
            target = node.func.value
            owner = target.attr if isinstance(target, ast.Attribute) else getattr(
                target, "id", "")
            if node.func.attr == "touched" or (
                    node.func.attr in WRITES and owner in ("backend", "_backend")):
                found.append(f"{rel}:{node.lineno} {owner}.{node.func.attr}()")
    assert found == []


# -- import circles -------------------------------------------------------------------------

#: old module paths kept for one release; they import their new places and nothing imports
#: them (they go with the next release, docs/architecture.md)
SHIMS = {"syncline.core.serverside"}
#: the pytest plugin is the testing suites' face to pytest (entry point ``pytest11``); it
#: counts with syncline.testing, whose fixtures and stores it hands out
ROOM_OF = {"syncline.plugins.pytest_plugin": "syncline.testing"}


def import_graph() -> dict[str, set[str]]:
    """syncline's modules -> the syncline modules they import: every import statement, at
    module level, inside functions and under ``TYPE_CHECKING``."""
    root = Path(syncline.__file__).parent
    files: dict[str, Path] = {}
    for path in root.rglob("*.py"):
        parts = list(path.relative_to(root.parent).with_suffix("").parts)
        files[".".join(parts[:-1] if parts[-1] == "__init__" else parts)] = path
    graph: dict[str, set[str]] = {}
    for name, path in files.items():
        package = name if path.name == "__init__.py" else name.rpartition(".")[0]
        found: set[str] = set()
        for node in ast.walk(ast.parse(path.read_text(encoding="utf-8"))):
            if isinstance(node, ast.Import):
                targets = [a.name for a in node.names]
            elif isinstance(node, ast.ImportFrom):
                base = node.module or ""
                if node.level:
                    up = package.split(".")[:len(package.split(".")) - node.level + 1]
                    base = ".".join([*up, base] if base else up)
                targets = [f"{base}.{a.name}" if f"{base}.{a.name}" in files else base
                           for a in node.names]
            else:
                continue
            for target in targets:
                while target and target not in files:
                    target = target.rpartition(".")[0]
                if target and target != name:
                    found.add(target)
        graph[name] = found
    return {m: deps - SHIMS for m, deps in graph.items() if m not in SHIMS}


def circles(graph: dict[str, set[str]]) -> list[list[str]]:
    """The strongly connected components of more than one node (Tarjan's algorithm)."""
    index: dict[str, int] = {}
    low: dict[str, int] = {}
    stack: list[str] = []
    out: list[list[str]] = []

    def visit(node: str) -> None:
        index[node] = low[node] = len(index)
        stack.append(node)
        for dep in sorted(graph.get(node, ())):
            if dep not in index:
                visit(dep)
                low[node] = min(low[node], low[dep])
            elif dep in stack:
                low[node] = min(low[node], index[dep])
        if low[node] == index[node]:
            component = []
            while True:
                dep = stack.pop()
                component.append(dep)
                if dep == node:
                    break
            if len(component) > 1:
                out.append(sorted(component))

    for node in sorted(graph):
        if node not in index:
            visit(node)
    return out


def room(module: str, graph: dict[str, set[str]]) -> str:
    """The room a module is in: a top-level package or module of ``syncline/`` (``core``,
    ``server``, ``testing``, the CLI's ``cli``...; a subpackage such as ``testing.syncing``
    counts with its room), or one of core's layer packages (``core.model``...); ``syncline``
    is the public facade (``syncline/__init__.py``, whose imports are lazy)."""
    if module in ROOM_OF:
        return ROOM_OF[module]
    parts = module.split(".")
    if len(parts) == 1:
        return module
    if parts[1] == "core" and len(parts) > 3:
        return ".".join(parts[:3])
    if parts[1] == "core" and len(parts) == 3 and any(
            m.startswith(module + ".") for m in graph):
        return module
    return ".".join(parts[:2])


def test_no_file_circle_is_larger_than_three() -> None:
    assert [c for c in circles(import_graph()) if len(c) > 3] == []


def test_no_package_imports_its_way_back_to_itself() -> None:
    graph = import_graph()
    rooms: dict[str, set[str]] = {}
    for module, deps in graph.items():
        here = room(module, graph)
        rooms.setdefault(here, set()).update(
            room(d, graph) for d in deps if room(d, graph) != here)
    assert circles(rooms) == []
