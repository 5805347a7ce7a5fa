"""``jsonl:///path/data.jsonl``: a store in one append-only JSON-lines file.

The rows live in memory (this reuses syncline's memory backend for queries, transactions and
isolation); every committed transaction appends one line listing what it changed, and opening
the store replays the file. Values JSON cannot hold are written as tagged objects.
"""

from __future__ import annotations

import base64
import datetime as dt
import decimal
import json
import os
import uuid
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import cattrs

from syncline import BackendUnavailableError, hookimpl
from syncline.backends.memory import Change, MemoryBackend, MemoryDatabase, MemoryTable
from syncline.core.model.schema import TableSpec
from syncline.core.spi.helpers import url_path

_specs = cattrs.Converter()


def encode(value: Any) -> Any:
    if isinstance(value, bytes):
        return {"$b": base64.b64encode(value).decode()}
    if isinstance(value, dt.datetime):
        return {"$dt": value.isoformat()}
    if isinstance(value, dt.date):
        return {"$d": value.isoformat()}
    if isinstance(value, uuid.UUID):
        return {"$u": str(value)}
    if isinstance(value, decimal.Decimal):
        return {"$n": str(value)}
    return value


def decode(value: Any) -> Any:
    if isinstance(value, dict):
        tag, raw = next(iter(value.items()))
        return {
            "$b": lambda r: base64.b64decode(r), "$dt": dt.datetime.fromisoformat,
            "$d": dt.date.fromisoformat, "$u": uuid.UUID, "$n": decimal.Decimal,
        }[tag](raw)
    return value


class JsonlBackend(MemoryBackend):
    """Rows in memory, every commit appended to a JSON-lines file."""

    capabilities = frozenset({"persistent", "savepoints", "concurrent_writers",
                              "exact_decimals"})

    def __init__(self, url: str, options: Mapping[str, Any] | None = None) -> None:
        super().__init__(url, options)
        path = url_path(url)
        if path is None:
            raise BackendUnavailableError(
                f"jsonl URL {url!r} needs a path: jsonl:///relative/data.jsonl or "
                f"jsonl:////absolute/data.jsonl")
        self.path = Path(path)
        self.name = ""  # a database of its own at every open, never shared as memory://name

    def file_path(self) -> str:
        return str(self.path)

    def open(self) -> None:
        if not self.path.parent.is_dir():
            raise BackendUnavailableError(
                f"cannot open {self.url}: folder {self.path.parent} does not exist")
        super().open()

    def load(self, db: MemoryDatabase) -> None:
        if not self.path.exists():
            return
        with self.path.open(encoding="utf-8") as f:
            for line in f:
                if line.endswith("\n"):  # a torn last line was never committed
                    self._replay(db, json.loads(line))

    @staticmethod
    def _replay(db: MemoryDatabase, ops: list[list[Any]]) -> None:
        for op in ops:
            kind = op[0]
            if kind == "create":
                db.tables[op[1]] = MemoryTable(_specs.structure(op[2], TableSpec))
            elif kind == "drop":
                db.tables.pop(op[1], None)
            elif kind == "version":
                db.version = op[1]
            elif kind == "put":
                table, key = db.tables[op[1]], decode(op[2])
                table.remove(key)
                table.put(key, {k: decode(v) for k, v in op[3].items()})
            elif kind == "del":
                db.tables[op[1]].remove(decode(op[2]))

    def committed(self, undo: list[Change]) -> None:
        db = self.db
        ops: list[list[Any]] = []
        for op, table, key, _old in undo:
            if op == "row":
                t = db.tables.get(table)
                row = t.rows.get(key) if t is not None else None
                if row is None:
                    ops.append(["del", table, encode(key)])
                else:
                    ops.append(["put", table, encode(key),
                                {k: encode(v) for k, v in row.items()}])
            elif op in ("create", "index") and table in db.tables:
                ops.append(["create", table, _specs.unstructure(db.tables[table].spec)])
            elif op == "drop":
                ops.append(["drop", table])
            elif op == "version":
                ops.append(["version", db.version])
        with self.path.open("a", encoding="utf-8") as f:
            f.write(json.dumps(ops, separators=(",", ":")) + "\n")
            f.flush()
            os.fsync(f.fileno())
        super().committed(undo)


@hookimpl
def syncline_register_backends(registry: Any) -> None:
    registry.register("jsonl", JsonlBackend, description="a JSON-lines file (example plugin)")


@hookimpl
def syncline_register_test_stores(registry: Any) -> None:
    # A fresh store for `pytest --syncline-backend jsonl` (not a default: installing this
    # plugin must not change which backends an application's tests run on).
    registry.register("jsonl", lambda tmp_path: f"jsonl:///{tmp_path}/data.jsonl",
                      description="a JSON-lines file in the test's tmp_path")
