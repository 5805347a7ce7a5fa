"""The live sync suite: a server on the backend under test streams change notices, and clients
pull as soon as they are told (docs/sync.md, Live sync).

Subclass :class:`LiveSuite` in a test module that provides ``store_url`` (a fresh store URL on
the backend under test, as the conformance suites' fixture): it becomes the server's store. The
clients' workers poll only every :data:`NEVER` seconds, so a change that arrives came through
the stream.
"""

from __future__ import annotations

import threading
from collections.abc import Iterator
from typing import Any

import pytest

import syncline
from syncline.plugins.http import HTTPTransport
from syncline.server.app import ServerConfig
from syncline.testing.server import LiveServer
from syncline.testing.transport_suite import ENTITIES, Item
from syncline.testing.waits import wait_until

#: the workers' polling interval in these tests: an hour, so only the stream can bring changes
NEVER = 3600.0
#: generous deadlines for a busy machine (never a measure of speed)
DEADLINE = 60.0
TOKENS = {"alice-token": "alice", "alice-2": "alice", "bob-token": "bob"}


#: wait on a condition (the shared helper, under the name these suites use)
wait_for = wait_until


def device(url: str, token: str, **worker: Any) -> syncline.Store:
    """A client store on ``url`` whose worker polls only every :data:`NEVER` seconds."""
    store = syncline.open("memory://", entities=ENTITIES, transport=url,
                          transport_options={"token": token})
    store.start_sync_worker(interval=NEVER, **worker)
    return store


def streaming(store: syncline.Store) -> bool:
    worker = store._worker
    return worker is not None and worker.streaming


class Notices:
    """A raw live stream read in a thread: the change numbers it told, in order."""

    def __init__(self, url: str, token: str) -> None:
        self.transport = HTTPTransport(url, {"token": token})
        source = self.transport.notifications()
        assert source is not None
        self.source = source
        self.seen: list[int] = []
        self.thread = threading.Thread(target=self._read, daemon=True)
        self.thread.start()

    def _read(self) -> None:
        try:
            for seq in self.source:
                self.seen.append(seq)
        except Exception:  # closed by the test, or the server went away
            pass

    def close(self) -> None:
        self.source.close()
        self.transport.close()


class LiveSuite:
    """Live sync over the reference HTTP server whose store is ``store_url``."""

    config: dict[str, Any] = {}

    @pytest.fixture
    def live(self, store_url: str) -> Iterator[LiveServer]:
        config = ServerConfig(store=store_url, tokens=TOKENS, live_heartbeat=0.5,
                              **self.config)
        with LiveServer(config, ENTITIES) as server:
            yield server

    def test_a_write_on_one_device_reaches_a_watcher_on_another_without_polling(
            self, live: LiveServer) -> None:
        a, b = device(live.url, "alice-token"), device(live.url, "alice-2")
        try:
            wait_for(lambda: streaming(a) and streaming(b), "both streams to open")
            seen = threading.Event()
            watch = b.repository(Item).watch()
            watch.subscribe(lambda items: seen.set() if any(
                i.id == "x" and i.name == "second" for i in items) else None)
            a.repository(Item).insert(Item("x", "first"))
            a.repository(Item).upsert(Item("x", "second", 2))
            assert seen.wait(DEADLINE), "B's watcher never saw A's write"
            assert b.repository(Item).all() == [Item("x", "second", 2)]
        finally:
            a.close()
            b.close()

    def test_a_principal_is_never_told_of_another_principals_changes(
            self, live: LiveServer) -> None:
        alice, bob = Notices(live.url, "alice-token"), Notices(live.url, "bob-token")
        writer = HTTPTransport(live.url, {"token": "alice-token"})
        bobs = HTTPTransport(live.url, {"token": "bob-token"})
        try:
            wait_for(lambda: bool(alice.seen and bob.seen), "both streams' first notice")
            bob_ready = len(bob.seen)
            for i in range(5):
                answer = writer.push([create_mutation(f"a{i}", "alice's")])
                assert answer.results[0].status == "applied"
            last = answer.results[0].version or 0
            wait_for(lambda: bool(alice.seen) and alice.seen[-1] >= last,
                     "alice to be told of her own change")
            writer.limits()  # one more round trip through the server's loop
            own = bobs.push([create_mutation("b1", "bob's")]).results[0].version or 0
            wait_for(lambda: bool(bob.seen) and bob.seen[-1] >= own,
                     "bob to be told of his change")
            assert bob.seen[bob_ready:] == [own], "bob was told of alice's changes"
        finally:
            for closing in (alice, bob, writer, bobs):
                closing.close()

    def test_a_client_is_not_told_of_its_own_push(self, live: LiveServer) -> None:
        own, other = Notices(live.url, "alice-token"), Notices(live.url, "alice-2")
        writer = HTTPTransport(live.url, {"token": "alice-token"})
        try:
            wait_for(lambda: bool(own.seen and other.seen), "both streams' first notice")
            ready = len(own.seen)
            mine = own.transport.push([create_mutation("m", "own")]).results[0].version or 0
            wait_for(lambda: other.seen[-1] >= mine, "the other device to be told")
            theirs = writer.push([create_mutation("t", "another")]).results[0].version or 0
            wait_for(lambda: own.seen[-1] >= theirs, "the first to be told of another's")
            assert own.seen[ready:] == [theirs], "a client was told of its own push"
        finally:
            for closing in (own, other, writer):
                closing.close()

    def test_a_client_that_reconnects_resumes_from_its_cursor(self, live: LiveServer) -> None:
        a, b = device(live.url, "alice-token"), device(live.url, "alice-2", fallback=NEVER)
        try:
            wait_for(lambda: streaming(a) and streaming(b), "both streams to open")
            a.repository(Item).insert(Item("before", "1"))
            wait_for(lambda: b.repository(Item).get("before") is not None, "the first write")
            opened = b._worker.opened  # type: ignore[union-attr]
            live.sync.live.drop()  # the server ends every stream: B reconnects
            a.repository(Item).insert(Item("during", "2"))
            a.repository(Item).upsert(Item("before", "1 again", 1))
            wait_for(lambda: b._worker.opened > opened,  # type: ignore[union-attr]
                     "B's stream to reopen")
            wait_for(lambda: b.repository(Item).get("during") is not None and
                     b.repository(Item).get("before") == Item("before", "1 again", 1),
                     "B to catch up after reconnecting")
            a.repository(Item).insert(Item("after", "3"))
            wait_for(lambda: b.repository(Item).get("after") is not None, "a later write")
            assert b.repository(Item).all() == a.repository(Item).all()
            assert b.quarantined() == []
        finally:
            a.close()
            b.close()

    def test_a_client_process_killed_mid_stream_is_let_go(self, live: LiveServer) -> None:
        import subprocess
        import sys

        code = ("import sys, time\n"
                "from syncline.testing.live_suite import Notices\n"
                f"n = Notices({live.url!r}, 'bob-token')\n"
                "while not n.seen: time.sleep(0.01)\n"
                "print('listening', flush=True)\n"
                "time.sleep(600)\n")
        process = subprocess.Popen([sys.executable, "-c", code], stdout=subprocess.PIPE)
        try:
            assert process.stdout is not None
            assert process.stdout.readline().strip() == b"listening"
            assert live.sync.live.clients == 1
            process.kill()  # no goodbye
            process.wait()
            wait_for(lambda: live.sync.live.clients == 0, "the server to let the stream go")
            writer = HTTPTransport(live.url, {"token": "bob-token"})
            try:  # and the server goes on serving
                assert writer.push([create_mutation("k", "after")]).results[0].status == \
                    "applied"
            finally:
                writer.close()
        finally:
            process.kill()
            process.wait()

    def test_the_stream_refuses_cleanly_what_it_cannot_serve(self, live: LiveServer) -> None:
        import httpx

        url = live.url + "v1/changes/live"
        assert httpx.get(url).status_code == 401
        auth = {"Authorization": "Bearer bob-token"}
        bad = httpx.get(url, params={"entities": "nope"}, headers=auth)
        assert bad.status_code == 422
        assert bad.json()["error"]["code"] == "unknown_entity"
        bad = httpx.get(url, params={"since": "1"}, headers=auth)
        assert bad.status_code == 422
        assert bad.json()["error"]["field"] == "since"


def create_mutation(record_id: str, name: str) -> Any:
    import uuid

    from syncline.core.model.schema import spec_of
    from syncline.core.spi.transport import Mutation

    return Mutation(uuid.uuid4().hex, spec_of(Item).table.name, "create", record_id,
                    {"id": record_id, "name": name, "size": 0})
