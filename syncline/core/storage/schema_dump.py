"""Schema dumps: the declared schema of a version as JSON, and comparing a store against one.

``syncline schema dump`` writes ``syncline_schema_v<N>.json`` into a folder; tests open a store
at any dumped version (:mod:`syncline.testing.migrations`), fill it, migrate it and compare.
"""

from __future__ import annotations

import json
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs
import cattrs

from syncline.core.model.errors import MigrationError
from syncline.core.model.schema import TableSpec, Trigger, View, spec_of

if TYPE_CHECKING:
    from syncline.core.storage.local import LocalStore

FORMAT = "syncline-schema/1"
_conv = cattrs.Converter()


@attrs.frozen
class SchemaDump:
    """One version's declared schema, as dumped."""

    version: int
    tables: tuple[TableSpec, ...]
    syncing: frozenset[str] = frozenset()
    views: tuple[View, ...] = ()
    triggers: tuple[Trigger, ...] = ()

    def entities(self) -> list[type]:
        """Entity classes storing exactly these tables (fields named and typed as columns)."""
        from syncline.core.model.schema import entity_for_table

        return [entity_for_table(t, t.name in self.syncing, f"{t.name}_v{self.version}")
                for t in self.tables]


def dump(version: int, entities: Iterable[type], views: Sequence[View] = (),
         triggers: Sequence[Trigger] = ()) -> SchemaDump:
    specs = [spec_of(c) for c in entities]
    return SchemaDump(version, tuple(s.table for s in specs),
                      frozenset(s.table.name for s in specs if s.syncs), tuple(views),
                      tuple(triggers))


def to_json(schema: SchemaDump) -> dict[str, Any]:
    return {
        "format": FORMAT,
        "version": schema.version,
        "tables": [{**_conv.unstructure(t), "syncs": t.name in schema.syncing}
                   for t in schema.tables],
        "views": [{"name": v.name, "sql": v.sql} for v in schema.views],
        "triggers": [{"name": t.name, "table": t.table, "sql": _plain(t.sql)}
                     for t in schema.triggers],
    }


def _plain(sql: Any) -> Any:
    if isinstance(sql, str):
        return sql
    if isinstance(sql, dict):
        return {k: _plain(v) for k, v in sql.items()}
    return list(sql)


def from_json(data: dict[str, Any], where: str = "the dump") -> SchemaDump:
    if data.get("format") != FORMAT:
        raise MigrationError(f"{where} is not a syncline schema dump (format {FORMAT} expected)")
    try:
        tables = []
        syncing = set()
        for t in data["tables"]:
            t = dict(t)
            if t.pop("syncs", False):
                syncing.add(t["name"])
            tables.append(_conv.structure(t, TableSpec))
        return SchemaDump(
            int(data["version"]), tuple(tables), frozenset(syncing),
            tuple(View(v["name"], v["sql"]) for v in data.get("views", ())),
            tuple(Trigger(t["name"], t["table"], t["sql"]) for t in data.get("triggers", ())))
    except (KeyError, TypeError, ValueError, cattrs.BaseValidationError) as exc:
        raise MigrationError(f"{where} is not a valid syncline schema dump: {exc}") from exc


def dump_path(folder: str | Path, version: int) -> Path:
    return Path(folder) / f"syncline_schema_v{version}.json"


def write(folder: str | Path, schema: SchemaDump) -> Path:
    """Write ``syncline_schema_v<N>.json`` into ``folder`` (created if missing)."""
    path = dump_path(folder, schema.version)
    path.parent.mkdir(parents=True, exist_ok=True)
    path.write_text(json.dumps(to_json(schema), indent=2, sort_keys=True) + "\n")
    return path


def read(folder: str | Path, version: int) -> SchemaDump:
    path = dump_path(folder, version)
    if not path.exists():
        have = ", ".join(str(v) for v in versions(folder)) or "none"
        raise MigrationError(f"no schema dump for version {version} in {folder} "
                             f"(versions dumped: {have}); run syncline schema dump")
    return from_json(json.loads(path.read_text()), str(path))


def versions(folder: str | Path) -> list[int]:
    out = []
    for path in Path(folder).glob("syncline_schema_v*.json"):
        number = path.stem.removeprefix("syncline_schema_v")
        if number.isdigit():
            out.append(int(number))
    return sorted(out)


def differences(store: LocalStore) -> list[str]:
    """How the store's stored schema differs from the one its code declares (empty: none).

    syncline's own tables are compared too; SQL backends compare through Alembic's metadata
    comparison (tables, columns, types, nullability, indexes, foreign keys), plus view and
    trigger names.
    """
    ops = store.backend.migration_ops()
    with ops.transaction():
        return ops.differences(store.tables(), store.views, store.triggers)
