"""Issue 16: the public SPI for plugin authors. A memory-based backend persists itself through
MemoryBackend's public extension points; the process locks sit beside Backend.file_path();
URL paths are parsed by one helper; the old private names still work for one release and warn."""

from __future__ import annotations

from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import syncline
from syncline.backends import memory
from syncline.backends.memory import Change, MemoryBackend, MemoryDatabase, MemoryTable
from syncline.core.model.errors import BackendUnavailableError
from syncline.core.model.schema import spec_of
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.spi.helpers import url_path
from syncline.core.spi.hookspecs import hookimpl
from syncline.core.sync.lock import sync_lock

registry = syncline.EntityRegistry()


@registry.entity("spi_notes")
@attrs.define
class Note:
    id: str
    text: str = ""


#: what the test backend "persisted": the tables' specs, rows and the schema version
SAVED: dict[str, Any] = {}


class DictBackend(MemoryBackend):
    """A memory-based backend kept in SAVED between opens, on public names only."""

    def __init__(self, url: str, options: Any = None) -> None:
        super().__init__(url, options)
        self.name = ""

    def load(self, db: MemoryDatabase) -> None:
        for name, (spec, rows) in SAVED.get("tables", {}).items():
            table = db.tables[name] = MemoryTable(spec)
            for key, row in rows.items():
                table.put(key, dict(row))
        db.version = SAVED.get("version")

    def committed(self, undo: list[Change]) -> None:
        assert all(isinstance(change, Change) for change in undo)
        SAVED["tables"] = {name: (t.spec, dict(t.rows)) for name, t in self.db.tables.items()}
        SAVED["version"] = self.db.version
        super().committed(undo)


class DictPlugin:
    @hookimpl
    def syncline_register_backends(self, registry: Any) -> None:
        registry.register("dict", DictBackend, description="memory kept in a dict (test)")


@pytest.fixture
def dict_scheme() -> Iterator[None]:
    name = register_plugin(DictPlugin(), "spi-dict")
    yield
    unregister_plugin(name)


@pytest.mark.usefixtures("dict_scheme")
def test_a_memory_based_backend_persists_itself_through_public_extension_points() -> None:
    SAVED.clear()
    store = syncline.open("dict://", entities=[Note])
    store.repository(Note).insert(Note("a", "kept"))
    store.close()
    again = syncline.open("dict://", entities=[Note])
    assert again.repository(Note).get("a").text == "kept"
    assert again.backend.get_schema_version() == SAVED["version"]
    again.close()


def test_a_memory_table_keeps_its_unique_indexes_in_step() -> None:
    store = syncline.open("memory://", entities=[Note])
    table = store.backend.db.tables["spi_notes"]
    assert isinstance(table, MemoryTable) and table.spec.name == "spi_notes"
    table.put("k", {"id": "k", "text": "x"})
    assert table.remove("k") == {"id": "k", "text": "x"}
    assert table.remove("k") is None
    store.close()


def test_url_path_reads_file_urls() -> None:
    assert url_path("x:///data/app.db") == "data/app.db"
    assert url_path("x:////abs/app.db?a=1") == "/abs/app.db"
    assert url_path("x://") is None
    with pytest.raises(BackendUnavailableError, match=r"x:///relative/file"):
        url_path("x://host/app.db")


def test_the_sync_lock_sits_beside_the_backends_file(tmp_path: Path) -> None:
    store = syncline.open(f"sqlite:///{tmp_path}/a.db", entities=[Note])
    assert store.backend.file_path() == f"{tmp_path}/a.db"
    with sync_lock(store) as lock:
        assert lock.path == f"{tmp_path}/a.db.sync-lock"
    store.close()
    mem = syncline.open("memory://", entities=[Note])
    assert mem.backend.file_path() is None and sync_lock(mem).path is None
    mem.close()


class PathBackend(MemoryBackend):
    """A backend of the old kind: its file found through an undeclared ``path``."""

    def __init__(self, url: str, options: Any = None) -> None:
        super().__init__(url, options)
        self.path = "/nonexistent/old.db"


def test_the_old_ways_still_work_for_one_release_and_warn() -> None:
    with pytest.warns(DeprecationWarning, match="MemoryTable"):
        assert memory._Table is MemoryTable  # type: ignore[attr-defined]
    with pytest.warns(DeprecationWarning, match="MemoryDatabase"):
        assert memory._Database is MemoryDatabase  # type: ignore[attr-defined]
    backend = PathBackend("memory://")
    with pytest.warns(DeprecationWarning, match="file_path"):
        assert backend.file_path() == "/nonexistent/old.db"
    backend.open()
    table = MemoryTable(spec_of(Note).table)
    with pytest.warns(DeprecationWarning, match=r"t\.put"):
        backend._put(table, "k", {"id": "k", "text": ""})
    with pytest.warns(DeprecationWarning, match=r"t\.remove"):
        assert backend._remove(table, "k") == {"id": "k", "text": ""}
    backend.close()
