"""Testing an app's migrations against its schema dumps, the way Drift's schema verifier does.

Dump every released version once (``syncline schema dump --schema myapp.db:schema
tests/schemas``), then::

    from syncline.testing.migrations import SchemaVerifier, upgrade_paths

    verifier = SchemaVerifier("tests/schemas")

    @pytest.mark.parametrize("old", verifier.versions()[:-1])
    def test_upgrade(old, syncline_store_url):
        store = verifier.open_at(syncline_store_url, old)        # the old tables, exactly
        posts = store.repository(store.entity_for_table("posts"))
        posts.insert(posts.entity(id="p1", ...))                # data as the old app wrote it
        store.close()
        store = verifier.migrate(syncline_store_url, myapp.db.schema)  # runs the migration,
        assert store.repository(Post).get("p1").title == ...          # then verifies the schema
"""

from __future__ import annotations

from pathlib import Path
from typing import Any

import syncline
from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import ForeignKeySpec, IndexSpec, TableSpec
from syncline.core.storage import schema_dump
from syncline.core.storage.migration import MigrationStrategy, Schema
from syncline.core.store import Store


class SchemaMismatch(MigrationError):
    """A store's schema differs from the declared one; ``differences`` lists how."""

    def __init__(self, message: str, differences: list[str]) -> None:
        super().__init__(message)
        self.differences = differences


class SchemaVerifier:
    """Opens stores at dumped versions and checks migrated stores against the declared schema."""

    def __init__(self, folder: str | Path) -> None:
        self.folder = Path(folder)

    def versions(self) -> list[int]:
        """The dumped versions, oldest first."""
        return schema_dump.versions(self.folder)

    def schema_at(self, version: int) -> schema_dump.SchemaDump:
        return schema_dump.read(self.folder, version)

    def open_at(self, url: str, version: int, **options: Any) -> Store:
        """Create a new store at ``url`` holding exactly the tables, views and triggers of the
        dumped ``version``, with entity classes generated from them (find one with
        ``store.entity_for_table(name)``). The store must be new."""
        dumped = self.schema_at(version)

        def refuse_existing(m: Any, old: int, new: int) -> None:
            raise MigrationError(f"open_at needs a new store; {url} is at version {old}")

        store = syncline.open(url, entities=dumped.entities(), schema_version=version,
                              views=dumped.views, triggers=dumped.triggers,
                              migration=MigrationStrategy(on_upgrade=refuse_existing),
                              **options)
        if store.opening is None or not store.opening.was_created:
            store.close()
            raise MigrationError(f"open_at needs a new store; {url} already exists")
        return store

    def migrate(self, url: str, schema: Schema, **options: Any) -> Store:
        """Open ``url`` with the app's current schema (running its migration), then
        :meth:`verify` it. Returns the open store for checking the data."""
        store = syncline.open(url, schema=schema, **options)
        try:
            self.verify(store)
        except BaseException:
            store.close()
            raise
        return store

    @staticmethod
    def verify(store: Store) -> None:
        """Raise :class:`SchemaMismatch` unless the stored schema is the declared one."""
        from syncline.core.storage.schema_dump import differences

        found = differences(store)
        if found:
            raise SchemaMismatch(
                f"{store.backend.url} differs from the declared schema: " + "; ".join(found),
                found)

    def verify_against_dump(self, store: Store, version: int) -> None:
        """Raise :class:`SchemaMismatch` unless ``store`` matches the dumped ``version`` (a
        freshly created store of today's code should match today's dump)."""
        expected = {t.name: t for t in self.schema_at(version).tables}
        declared = {t.name: t for t in store.tables() if not t.name.startswith("_syncline")}
        found = []
        for name in sorted(expected.keys() | declared.keys()):
            if name not in declared:
                found.append(f"table {name} is in the dump of version {version} only")
            elif name not in expected:
                found.append(f"table {name} is not in the dump of version {version}")
            elif expected[name] != declared[name]:
                found += [f"table {name}: {d} (declared now vs the dump of version {version})"
                          for d in _table_differences(expected[name], declared[name])]
        if found:
            raise SchemaMismatch("; ".join(found), found)


def _table_differences(dumped: TableSpec, declared: TableSpec) -> list[str]:
    """How a table declared now differs from its dump, one phrase per difference."""
    out = []
    if dumped.primary_key != declared.primary_key:
        out.append(f"primary key {declared.primary_key}, dumped {dumped.primary_key}")
    old = {c.name: c for c in dumped.columns}
    new = {c.name: c for c in declared.columns}
    out += [f"column {n} is not in the dump" for n in new if n not in old]
    out += [f"column {n} is only in the dump" for n in old if n not in new]
    for name in (n for n in new if n in old):
        for what in ("kind", "nullable", "default"):
            now, then = getattr(new[name], what), getattr(old[name], what)
            if now != then:
                out.append(f"column {name} has {what} {now!r}, dumped {then!r}")
    for what, label in (("indexes", "index"), ("foreign_keys", "foreign key")):
        now, then = getattr(declared, what), getattr(dumped, what)
        out += [f"{label} {_show(x)} is not in the dump" for x in now if x not in then]
        out += [f"{label} {_show(x)} is only in the dump" for x in then if x not in now]
    return out or ["declared otherwise (same columns, keys and indexes; order differs)"]


def _show(element: IndexSpec | ForeignKeySpec) -> str:
    if isinstance(element, IndexSpec):
        return (f"{element.name} ({', '.join(element.columns)}"
                f"{', unique' if element.unique else ''})")
    delete = f", on delete {element.on_delete}" if element.on_delete else ""
    return f"{element.column} -> {element.ref_table}.{element.ref_column}{delete}"


def upgrade_paths(folder: str | Path, to_version: int) -> list[int]:
    """Every dumped version older than ``to_version``: parametrize upgrade tests over it."""
    return [v for v in schema_dump.versions(folder) if v < to_version]
