"""Live sync over two `syncline serve` processes on one PostgreSQL database: a push to one
process reaches the live clients of the other (LISTEN/NOTIFY), and a client whose server
process is killed mid-stream polls, reconnects and catches up."""

from __future__ import annotations

import contextlib
import itertools
from collections.abc import Iterator
from pathlib import Path

import pytest

from syncline.plugins.http import HTTPTransport
from syncline.testing.chaos import ServerProcess
from syncline.testing.live_suite import NEVER, Notices, create_mutation, device, streaming, wait_for
from syncline.testing.transport_suite import Item

_n = itertools.count()
TOKENS = {"t1": "team", "t2": "team", "other": "someone-else"}


@pytest.fixture
def servers(syncline_postgres_url: str, tmp_path: Path) -> Iterator[list[ServerProcess]]:
    store = f"{syncline_postgres_url}?schema=live{next(_n)}"
    with contextlib.ExitStack() as stack:
        started = [ServerProcess(store, entities="syncline.testing.transport_suite",
                                 tokens=TOKENS, log=tmp_path / f"server{i}.log")
                   for i in range(2)]
        for server in started:
            stack.callback(server.stop)
            server.start(timeout=120)  # a busy machine takes a while to start a process
        yield started


def test_a_push_to_one_process_reaches_live_clients_of_the_other(
        servers: list[ServerProcess]) -> None:
    a, b = device(servers[0].url, "t1"), device(servers[1].url, "t2")
    other, others = Notices(servers[1].url, "other"), HTTPTransport(servers[1].url,
                                                                    {"token": "other"})
    try:
        wait_for(lambda: streaming(a) and streaming(b) and bool(other.seen), "the streams")
        ready = len(other.seen)
        for i in range(3):
            a.repository(Item).insert(Item(f"x{i}", "from A"))
            wait_for(lambda i=i: b.repository(Item).get(f"x{i}") is not None,  # type: ignore[misc]
                     f"B (on the other process) to see x{i}")
        b.repository(Item).insert(Item("y", "from B"))
        wait_for(lambda: a.repository(Item).get("y") is not None, "A to see B's write")
        # the other principal is told of its own change only
        own = others.push([create_mutation("z", "someone else's")]).results[0].version or 0
        wait_for(lambda: bool(other.seen) and other.seen[-1] >= own, "its own notice")
        assert other.seen[ready:] == [own]
    finally:
        for closing in (a, b, other, others):
            closing.close()


def test_a_client_whose_server_process_is_killed_catches_up(
        servers: list[ServerProcess]) -> None:
    a, b = device(servers[0].url, "t1"), device(servers[1].url, "t2", fallback=1.0)
    try:
        wait_for(lambda: streaming(a) and streaming(b), "the streams")
        a.repository(Item).insert(Item("before", "1"))
        wait_for(lambda: b.repository(Item).get("before") is not None, "the first write")
        killed = servers[1]
        assert killed.process is not None
        killed.process.kill()  # mid-stream: no goodbye
        killed.process.wait()
        wait_for(lambda: not streaming(b), "B to notice its stream is gone")
        for i in range(5):
            a.repository(Item).insert(Item(f"during{i}", "while B's server was down"))
        a.repository(Item).upsert(Item("before", "1 again", 1))
        killed.start(timeout=120)  # on the same port
        wait_for(lambda: len(b.repository(Item).all()) == 6 and
                 b.repository(Item).get("before") == Item("before", "1 again", 1),
                 "B to catch up")
        wait_for(lambda: streaming(b), "B's stream to reopen")
        b._worker.fallback = NEVER  # type: ignore[union-attr]  # from here only the stream
        a.repository(Item).insert(Item("after", "2"))
        wait_for(lambda: b.repository(Item).get("after") is not None, "the stream again")
        assert b.repository(Item).all() == a.repository(Item).all()
        assert b.quarantined() == []
    finally:
        a.close()
        b.close()
