"""A client process with a live worker and queued writes is SIGKILLed mid-stream: the server
lets its stream go (its live-client count returns to what it was), other clients keep being
told, and the client restarted on the same store resumes from its cursor, pushes its queue
exactly once and converges. On the client stores that outlive a process (SQLite, PostgreSQL)."""

from __future__ import annotations

import itertools
import json
import subprocess
import sys
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncline.plugins.http import HTTPTransport
from syncline.server.app import ServerConfig
from syncline.server.tables import AppliedMutation
from syncline.testing.live_suite import TOKENS, Notices, create_mutation, wait_for
from syncline.testing.server import LiveServer
from syncline.testing.transport_suite import ENTITIES

QUEUED = 20
_n = itertools.count()


@pytest.fixture(params=["sqlite", "postgresql"])
def client_store(request: pytest.FixtureRequest, tmp_path: Path) -> str:
    if request.param == "sqlite":
        return f"sqlite:///{tmp_path}/client.db"
    postgres: str = request.getfixturevalue("syncline_postgres_url")
    return f"{postgres}?schema=liveclient{next(_n)}"


@pytest.fixture
def live(tmp_path: Path) -> Iterator[LiveServer]:
    config = ServerConfig(store=f"sqlite:///{tmp_path}/server.db", tokens=TOKENS,
                          live_heartbeat=0.5)
    with LiveServer(config, ENTITIES) as server:
        yield server


def _client(*args: str) -> subprocess.Popen[bytes]:
    return subprocess.Popen([sys.executable, "-m", "syncline.testing.live_client", *args],
                            stdout=subprocess.PIPE)


def test_a_client_killed_mid_stream_with_queued_writes_is_let_go_and_resumes(
        live: LiveServer, client_store: str) -> None:
    writer = HTTPTransport(live.url, {"token": "alice-token"})
    other = Notices(live.url, "alice-token")
    client = resumed = None
    try:
        assert writer.push([create_mutation("seen", "before")]).results[0].status == "applied"
        wait_for(lambda: bool(other.seen), "the other client's stream")
        baseline = live.sync.live.clients
        client = _client("queue", live.url, client_store, str(QUEUED))
        assert client.stdout is not None
        assert client.stdout.readline().strip() == b"ready"
        assert live.sync.live.clients == baseline + 1
        client.kill()  # mid-stream, its queue unpushed: no goodbye
        client.wait()
        wait_for(lambda: live.sync.live.clients == baseline, "the server to let it go")

        told = len(other.seen)
        answer = writer.push([create_mutation("while-dead", "missed by the client")])
        version = answer.results[0].version or 0
        wait_for(lambda: len(other.seen) > told and other.seen[-1] >= version,
                 "the other client to be told")

        queued = [f"q{i}" for i in range(QUEUED)]
        resumed = _client("resume", live.url, client_store, *queued, "seen", "while-dead")
        assert resumed.stdout is not None
        held = json.loads(resumed.stdout.readline())
        assert resumed.wait(60) == 0
        assert held == sorted([*queued, "seen", "while-dead"])
        wait_for(lambda: live.sync.live.clients == baseline, "the resumed client's stream to go")

        changes = []
        cursor = None
        while True:  # the server's change log from the start: each record once, created once
            page = writer.pull(cursor, 1000)
            changes += page.changes
            cursor = page.cursor
            if not page.more:
                break
        assert sorted(c.record_id for c in changes) == held
        # one applied mutation per write: the queue was pushed once, nothing twice
        assert live.sync.store.repository(AppliedMutation).count() == QUEUED + 2
    finally:
        for process in (client, resumed):
            if process is not None:
                process.kill()
                process.wait()
        other.close()
        writer.close()
