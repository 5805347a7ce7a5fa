"""docs/async.md stays true: its Starlette service runs in-process (its lifespan, then
requests through httpx.ASGITransport) against a real sync server, on every bundled backend."""

from __future__ import annotations

import asyncio
import importlib.util
import re
import sys
import time
from pathlib import Path
from types import ModuleType

import httpx
import pytest

from syncline.server.app import ServerConfig
from syncline.testing.aio.bridge import run_async
from syncline.testing.server import LiveServer

GUIDE = Path(__file__).resolve().parent.parent / "docs" / "async.md"
EXAMPLE = re.compile(r"<!-- example: (?P<name>[\w.]+) -->\n```python\n(?P<code>.*?)```",
                     re.DOTALL)


def load_example(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> ModuleType:
    match = EXAMPLE.search(GUIDE.read_text())
    assert match is not None and match.group("name") == "notes_service.py"
    path = tmp_path / match.group("name")
    path.write_text(match.group("code"))
    monkeypatch.chdir(tmp_path)  # its module-level app opens nothing until it starts
    spec = importlib.util.spec_from_file_location("notes_service", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    monkeypatch.setitem(sys.modules, "notes_service", module)
    spec.loader.exec_module(module)
    return module


def test_the_starlette_service_reads_writes_and_syncs_in_the_background(
        store_url: str, tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    service = load_example(tmp_path, monkeypatch)
    with LiveServer(ServerConfig(tokens={"t0k": "alice"}), [service.Note]) as live:
        app = service.create_app(store_url, live.url, token="t0k")

        async def main() -> str:
            # the app's lifespan (opening the store, the worker task), then its handlers, all
            # on one loop in debug mode with 10 ms slow-callback detection (run_async)
            async with app.router.lifespan_context(app), httpx.AsyncClient(
                    transport=httpx.ASGITransport(app=app), base_url="http://notes") as client:
                created = await client.post("/notes", json={"text": "buy milk"})
                assert created.status_code == 201
                note_id: str = created.json()["id"]
                assert (await client.post("/notes", json={"text": 3})).status_code == 422
                toggled = await client.post(f"/notes/{note_id}/toggle")
                assert toggled.status_code == 200 and toggled.json()["done"] is True
                assert (await client.post("/notes/nope/toggle")).status_code == 404
                listed = (await client.get("/notes")).json()
                assert [n["text"] for n in listed] == ["buy milk"]
                deadline = time.monotonic() + 60
                while (await client.get("/status")).json() != {"pending": 0,
                                                               "last_sync_ok": True}:
                    assert time.monotonic() < deadline, (await client.get("/status")).json()
                    await asyncio.sleep(0.05)
                return note_id

        note_id = run_async(main)
        held = live.sync.store.repository(service.Note).get(note_id)
        assert held == service.Note(note_id, "buy milk", done=True)
