"""The syncline command, through click's runner and as a real process."""

from __future__ import annotations

import json
import os
import subprocess
import sys
import time
from pathlib import Path

from click.testing import CliRunner

import syncline
from syncline.cli import main
from syncline.examples.social import Post


def test_help_lists_every_command() -> None:
    result = CliRunner().invoke(main, ["--help"])
    assert result.exit_code == 0
    for command in ("demo", "init", "plugins", "quickstart", "serve", "status", "sync"):
        assert command in result.output
    for command in ("demo", "init", "plugins", "serve", "status", "sync"):
        assert CliRunner().invoke(main, [command, "--help"]).exit_code == 0


def test_quickstart_on_a_given_store(tmp_path: Path) -> None:
    result = CliRunner().invoke(main, ["quickstart", "--store", f"sqlite:///{tmp_path}/d.db"])
    assert result.exit_code == 0, result.output
    assert "12 posts stored" in result.output


def test_errors_are_one_line_with_exit_code_2(tmp_path: Path) -> None:
    for args in (["quickstart", "--store", "nosuch://x"],
                 ["status", "--store", f"sqlite:///{tmp_path}/missing/dir/x.db"],
                 ["sync", "--store", "memory://", "--entities", "no.such.module"],
                 ["sync", "--store", "memory://", "--entities", "syncline.examples.social",
                  "--transport", "nosuch://x"]):
        result = CliRunner().invoke(main, args)
        assert result.exit_code == 2, (args, result.output)
        assert result.output.startswith("error: ") and "Traceback" not in result.output
        assert len(result.output.strip().splitlines()) == 1


def test_debug_shows_the_traceback() -> None:
    result = CliRunner().invoke(main, ["--debug", "quickstart", "--store", "nosuch://x"])
    assert result.exit_code != 0 and isinstance(result.exception, syncline.SynclineError)


def test_missing_config_file_is_one_line(tmp_path: Path) -> None:
    env = {**os.environ, "SYNCLINE_CONFIG": str(tmp_path / "nope.toml")}
    out = subprocess.run([sys.executable, "-m", "syncline.cli", "status"], env=env,
                         capture_output=True, text=True, timeout=60)
    assert out.returncode == 2 and out.stderr.startswith("error: SYNCLINE_CONFIG")


def test_status_and_sync_against_an_unreachable_server(tmp_path: Path) -> None:
    url = f"sqlite:///{tmp_path}/app.db"
    with syncline.open(url, entities=[Post]) as store:
        import datetime as dt

        now = dt.datetime.now(dt.UTC)
        store.repository(Post).insert(Post("p1", "u1", "hello", now, now))
    args = ["sync", "--store", url, "--entities", "syncline.examples.social",
            "--transport", "http://127.0.0.1:9/"]  # nothing listens on port 9
    result = CliRunner().invoke(main, args)
    assert result.exit_code == 1 and "cannot reach the server" in result.output
    status = CliRunner().invoke(main, ["status", "--store", url, "--json"])
    assert status.exit_code == 0, status.output
    queue = json.loads(status.output)["queue"]
    assert queue == [{"entity": "posts", "state": "pending", "count": 1}]


def test_demo_end_to_end_as_a_process(tmp_path: Path) -> None:
    env = {**os.environ, "TMPDIR": str(tmp_path / "tmp")}
    (tmp_path / "tmp").mkdir()
    out = subprocess.run([sys.executable, "-m", "syncline.cli", "demo"], capture_output=True,
                         text=True, env=env, cwd=tmp_path, timeout=120)
    assert out.returncode == 0, out.stderr[-3000:]
    for step in ("1. Offline", "2. Online", "3. A conflict", "4. Live", "5. Summary"):
        assert step in out.stdout
    assert out.stdout.count("laptop's watcher sees it") == 3
    assert "Edited on the phone, later" in out.stdout
    assert list((tmp_path / "tmp").iterdir()) == []  # it leaves nothing behind



def test_status_shows_quarantined_records(tmp_path: Path) -> None:
    import datetime as dt

    from syncline.core.sync.outbox import Quarantined

    url = f"sqlite:///{tmp_path}/app.db"
    with syncline.open(url, entities=[Post]) as store:
        store.outbox.quarantine.insert(Quarantined(
            "posts/p9", "posts", "p9", 7, "SerializationError: posts.likes: not an int",
            dt.datetime.now(dt.UTC), "upsert", {"id": "p9"}))
    status = CliRunner().invoke(main, ["status", "--store", url, "--json"])
    assert status.exit_code == 0, status.output
    [q] = json.loads(status.output)["quarantined"]
    assert (q["entity"], q["record_id"], q["version"]) == ("posts", "p9", 7)
    table = CliRunner().invoke(main, ["status", "--store", url])
    assert table.exit_code == 0 and "quarantined" in table.output and "p9" in table.output


def test_serve_refuses_a_timeout_out_of_range() -> None:
    result = CliRunner().invoke(main, ["serve", "--entities", "syncline.examples.social",
                                       "--header-timeout", "0"])
    assert result.exit_code == 2 and "header-timeout must be a number of seconds" in \
        result.output


def test_serve_applies_its_timeouts_and_cors_options(tmp_path: Path) -> None:
    import socket

    import httpx

    from syncline.testing.server import free_port

    port = free_port()
    process = subprocess.Popen(
        [sys.executable, "-m", "syncline.cli", "serve", "--entities", "syncline.examples.social",
         "--allow-anonymous", "--port", str(port), "--header-timeout", "0.5",
         "--cors-origin", "https://app.example.org", "--log-level", "warning"],
        stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    try:
        for _ in range(600):  # until it answers (a busy machine starts it slowly)
            try:
                health = httpx.get(f"http://127.0.0.1:{port}/v1/health",
                                   headers={"Origin": "https://app.example.org"})
                break
            except httpx.TransportError:
                assert process.poll() is None, process.stderr.read() if process.stderr else ""
                time.sleep(0.1)
        assert health.headers["access-control-allow-origin"] == "https://app.example.org"
        with socket.create_connection(("127.0.0.1", port), timeout=30) as sock:
            sock.sendall(b"GET /v1/health HTTP/1.1\r\nHost: x\r\n")  # never finished
            raw = b""
            while chunk := sock.recv(4096):
                raw += chunk
        assert raw.startswith(b"HTTP/1.1 408 ") and b'"code":"timeout"' in raw
    finally:
        process.terminate()
        process.wait(30)
