"""The chaos kit (syncline.testing.chaos): the proxy, the verifier, and the torture test.

The torture test runs the seed's social app on three device processes syncing through
``syncline serve`` behind the chaos proxy, kills the devices at random at least 30 times, drains
and verifies: 0 lost, 0 doubled, 0 stuck. The device script and the server's command handlers
below are what an app writes (docs/testing.md, "Chaos testing your app"); the device processes
load them from this file.
"""

from __future__ import annotations

import contextlib
import datetime as dt
import os
import random
import socket
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.model.query import F
from syncline.core.store import Store
from syncline.core.sync.engine import Backoff
from syncline.examples.social import ENTITIES, Message, MessagesDao, Post, PostsDao, SyncQueueDao
from syncline.testing.chaos import (
    Add,
    ChaosProxy,
    ChaosRunner,
    Delete,
    Device,
    DeviceScript,
    Fault,
    HistoryEntry,
    JournalWrite,
    Put,
    Rates,
    ServerProcess,
    Snapshot,
    read_journal,
    read_sqlite_history,
    verify,
)
from syncline.testing.waits import wait_until

HERE = Path(__file__).resolve()

# == the app under test: the seed's social app =================================================


class SocialCommands:
    """The server's side of the app's commands: a like or a comment counts on its post."""

    @syncline.hookimpl
    def syncline_handle_command(self, server: Any, principal: str, name: str,
                                payload: dict[str, Any] | None) -> dict[str, Any] | None:
        field = {"like_post": "likes_count", "comment_post": "comments_count"}.get(name)
        if field is None or payload is None:
            return None
        post = server.store.repository(Post).get(payload["post_id"])
        if post is None:
            raise ValueError(f"no post {payload['post_id']!r}")
        bumped = attrs.evolve(post, **{field: getattr(post, field) + 1})
        server.write(bumped, principal)
        return {field: getattr(bumped, field)}


class SocialDevice(DeviceScript):
    """One of the user's devices: posts, likes and comments them (commands), writes, edits
    and deletes messages, all through the app's DAOs; the sync worker syncs meanwhile.
    Half the new posts are liked or commented at once and half the new messages edited at
    once: a command, or an update, right behind the create it depends on."""

    pace = 0.02
    sync_interval = 0.3
    drain_timeout = 60.0

    def open(self, device: Device) -> Store:
        return syncline.open(
            device.store_url, entities=ENTITIES, transport=device.server_url,
            transport_options={"token": device.token, "timeout": 3.0},
            sync_options={"backoff": Backoff(base=0.2, cap=1.0), "batch_size": 10})

    def react(self, device: Device, rng: random.Random, post_id: str) -> None:
        command, field = rng.choice([("like_post", "likes_count"),
                                     ("comment_post", "comments_count")])
        with device.write(Add("posts", post_id, field)):
            SyncQueueDao(device.store).enqueue(command, {"post_id": post_id})

    def edit(self, device: Device, message: Message) -> None:
        edited = attrs.evolve(message, content=f"edited {device.name}#{device.seq + 1}")
        with device.write(Put("messages", edited.id, {"content": edited.content})):
            MessagesDao(device.store).upsert_message(edited)

    def step(self, device: Device, rng: random.Random) -> None:
        store, me, n = device.store, device.name, device.seq + 1
        now = dt.datetime.now(dt.UTC)
        roll = rng.random()
        posts = store.repository(Post).find(order_by=F.created_at.desc(), limit=20)
        if roll < 0.25 or not posts:
            post = Post(f"{me}-p{n}", me, f"post {me}#{n}", now, now)
            with device.write(Put("posts", post.id, {"content": post.content})):
                PostsDao(store).upsert_post(post)
            if rng.random() < 0.5:
                self.react(device, rng, post.id)
        elif roll < 0.55:
            self.react(device, rng, rng.choice(posts[:4] if rng.random() < 0.7 else posts).id)
        else:
            mine = store.repository(Message).find(F.sender_id == me, order_by="created_at")
            if roll < 0.75 or not mine:
                message = Message(f"{me}-m{n}", "c1", me, "friend", f"message {me}#{n}", now)
                with device.write(Put("messages", message.id, {"content": message.content})):
                    MessagesDao(store).upsert_message(message)
                if rng.random() < 0.5:
                    self.edit(device, message)
            elif roll < 0.9:
                self.edit(device, rng.choice(mine))
            else:
                gone = rng.choice(mine).id
                with device.write(Delete("messages", gone)):
                    MessagesDao(store).delete_message(gone)


# == the torture test ==========================================================================

KILLS = 40
SEED = int(os.environ.get("SYNCLINE_CHAOS_SEED", "1"))


@pytest.mark.slow
def test_social_app_on_three_devices_survives_kills_and_a_bad_network(tmp_path: Path) -> None:
    started = time.monotonic()
    server_db = tmp_path / "server.db"
    with ServerProcess(f"sqlite:///{server_db}", entities="syncline.examples.social.models",
                       plugins=[f"{HERE}:SocialCommands"], log=tmp_path / "server.log",
                       tokens={"chaos-token": "alice"}) as server, \
            ChaosProxy(server.url, seed=SEED, rates=Rates.stormy(1.5)) as proxy, \
            ChaosRunner(f"{HERE}:SocialDevice", tmp_path / "devices", proxy.url, devices=3,
                        token="chaos-token", seed=SEED) as runner:
        stats = runner.run(kills=KILLS, steps=(2, 12))
        faults = proxy.stats
        proxy.calm()
        devices = runner.drain(proxy.url, timeout=120)
        observed = runner.server_snapshot(server.url)
        report = runner.verify(observed, devices, read_sqlite_history(server_db))
        elapsed = time.monotonic() - started
        print(f"\n{elapsed:.1f} s; {stats.kills} kills ({dict(stats.landed)}), "
              f"{stats.steps} steps; proxy {faults}\n{report.summary()}")
        assert stats.kills >= KILLS
        assert report.committed > 0
        assert report.ok, (
            f"{report.summary()}\nproxy: {faults}\nworkdir: {tmp_path}\n" + "\n".join(
                f"--- {name} log:\n{runner.log_tail(name, 1500)}" for name in runner.names))


# == the proxy, for real =======================================================================


class Upstream:
    """A TCP server: reads requests ending in a newline, answers each with 2000 bytes."""

    ANSWER = 2000

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.received: list[bytes] = []  # per connection, everything it got
        self.answered = 0
        self._stop = False
        self.thread = threading.Thread(target=self._accept, daemon=True)
        self.thread.start()

    def _accept(self) -> None:
        self.listener.settimeout(0.1)
        while not self._stop:
            try:
                conn, _ = self.listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            threading.Thread(target=self._serve, args=(conn,), daemon=True).start()

    def _serve(self, conn: socket.socket) -> None:
        index = len(self.received)
        self.received.append(b"")
        with conn:
            buffer = b""
            while True:
                try:
                    data = conn.recv(65536)
                except OSError:
                    return
                if not data:
                    return
                self.received[index] += data
                buffer += data
                while b"\n" in buffer:
                    line, buffer = buffer.split(b"\n", 1)
                    self.answered += 1
                    conn.sendall((line.upper() * (self.ANSWER // max(1, len(line)) + 1))[
                        :self.ANSWER - 1] + b"\n")

    def close(self) -> None:
        self._stop = True
        self.listener.close()


@pytest.fixture
def upstream() -> Iterator[Upstream]:
    server = Upstream()
    yield server
    server.close()


def exchange(sock: socket.socket, request: bytes, timeout: float = 5.0) -> bytes:
    """Send a request, read the answer up to its newline or until the connection ends."""
    sock.settimeout(timeout)
    sock.sendall(request)
    answer = b""
    while not answer.endswith(b"\n"):
        data = sock.recv(65536)
        if not data:
            break
        answer += data
    return answer


def connect(proxy: ChaosProxy) -> socket.socket:
    return socket.create_connection(("127.0.0.1", proxy.port), timeout=5)


REQUEST = b"x" * 500 + b"\n"


def test_proxy_passes_and_keeps_connections_alive(upstream: Upstream) -> None:
    with ChaosProxy(("127.0.0.1", upstream.port)) as proxy, connect(proxy) as sock:
        for _ in range(3):
            assert exchange(sock, REQUEST) == (b"X" * 1999 + b"\n")
        assert proxy.stats["connections"] == 1 and proxy.stats["exchanges"] == 3
        assert proxy.url == f"http://127.0.0.1:{proxy.port}/"


def test_proxy_delays_both_ways(upstream: Upstream) -> None:
    rates = Rates(min_delay=0.2, max_delay=0.25)
    with ChaosProxy(("127.0.0.1", upstream.port), rates=rates) as proxy, connect(proxy) as sock:
        proxy.schedule(Fault.DELAY)
        before = time.monotonic()
        assert exchange(sock, REQUEST).endswith(b"\n")
        assert time.monotonic() - before >= 0.4
        before = time.monotonic()
        assert exchange(sock, REQUEST).endswith(b"\n")  # the schedule is used up: no delay
        assert proxy.stats["delay"] == 1


@pytest.mark.parametrize("fault", [Fault.CUT_REQUEST, Fault.RESET_REQUEST])
def test_proxy_cuts_a_request_midway(upstream: Upstream, fault: Fault) -> None:
    with ChaosProxy(("127.0.0.1", upstream.port), schedule=[fault]) as proxy, \
            connect(proxy) as sock:
        if fault is Fault.RESET_REQUEST:
            with pytest.raises(ConnectionResetError):
                exchange(sock, REQUEST)
        else:
            assert exchange(sock, REQUEST) == b""  # closed, no answer
        wait_until(lambda: proxy.stats.get(fault.value) == 1, f"the proxy to play {fault}")
    # the upstream reads the cut part in its thread
    wait_until(lambda: len(upstream.received) == 1, "the upstream to read the cut request")
    assert len(upstream.received[0]) < len(REQUEST)
    assert upstream.answered == 0  # the server never saw a whole request


@pytest.mark.parametrize("fault", [Fault.CUT_RESPONSE, Fault.RESET_RESPONSE])
def test_proxy_cuts_an_answer_midway(upstream: Upstream, fault: Fault) -> None:
    with ChaosProxy(("127.0.0.1", upstream.port), schedule=[Fault.PASS, fault]) as proxy, \
            connect(proxy) as sock:
        assert len(exchange(sock, REQUEST)) == Upstream.ANSWER  # the first one passes
        try:
            answer = exchange(sock, REQUEST)
        except ConnectionResetError:
            assert fault is Fault.RESET_RESPONSE
        else:
            assert len(answer) < Upstream.ANSWER and not answer.endswith(b"\n")
        wait_until(lambda: proxy.stats.get(fault.value) == 1, f"the proxy to play {fault}")
    assert upstream.received == [REQUEST * 2] and upstream.answered == 2  # it did act


@pytest.mark.parametrize("fault", [Fault.DROP_REQUEST, Fault.DROP_RESPONSE])
def test_proxy_drops_into_silence(upstream: Upstream, fault: Fault) -> None:
    with ChaosProxy(("127.0.0.1", upstream.port), schedule=[fault]) as proxy, \
            connect(proxy) as sock:
        with pytest.raises(TimeoutError):
            exchange(sock, REQUEST, timeout=0.5)
        assert proxy.stats[fault.value] == 1
    answered = 1 if fault is Fault.DROP_RESPONSE else 0
    wait_until(lambda: upstream.answered == answered, f"the upstream to answer {answered}")


def test_proxy_offline_resets_and_refuses(upstream: Upstream) -> None:
    with ChaosProxy(("127.0.0.1", upstream.port)) as proxy, connect(proxy) as sock:
        assert exchange(sock, REQUEST).endswith(b"\n")
        proxy.offline = True
        cut = (ConnectionResetError, BrokenPipeError, ConnectionRefusedError)
        deadline = time.monotonic() + 60  # the pump notices within 0.1 s, later when busy
        while True:
            try:
                exchange(sock, REQUEST)
            except cut:
                break
            assert time.monotonic() < deadline, "the proxy never cut the open connection"
        # the reset may come while connecting on a busy machine: connect inside the raises
        with pytest.raises(cut), connect(proxy) as again:
            exchange(again, REQUEST)
        proxy.offline = False
        with connect(proxy) as back:
            assert exchange(back, REQUEST).endswith(b"\n")
        assert proxy.stats["refused"] >= 1


def test_proxy_random_faults_follow_the_seed(upstream: Upstream) -> None:
    def run(seed: int) -> list[Fault]:
        with ChaosProxy(("127.0.0.1", upstream.port), seed=seed,
                        rates=Rates.stormy(2.0)) as proxy:
            proxy.rates.max_delay = 0.01
            proxy.rates.hold = 0.2
            for _ in range(30):
                with connect(proxy) as sock, contextlib.suppress(OSError):
                    exchange(sock, REQUEST, timeout=0.3)
            wait_until(lambda: proxy.serving() == 0, "the proxy to finish the connections")
            return [e.fault for e in proxy.events]

    first = run(5)
    assert len(set(first)) >= 3
    assert run(5) == first


def test_proxy_resets_when_the_server_is_down() -> None:
    port = socket.create_server(("127.0.0.1", 0))
    dead = port.getsockname()[1]
    port.close()
    with ChaosProxy(("127.0.0.1", dead)) as proxy:
        # The reset can reach the client while it is still connecting (a descheduled client on
        # a busy machine) or at its first exchange.
        with pytest.raises((ConnectionResetError, BrokenPipeError)), connect(proxy) as sock:
            exchange(sock, REQUEST)
        assert proxy.stats["upstream_refused"] == 1


# == the verifier, on made-up runs ==============================================================


def w(device: str, seq: int, *effects: Any, committed: bool = True,
      aborted: bool = False) -> JournalWrite:
    return JournalWrite(device, seq, effects, committed=committed, aborted=aborted)


JOURNALS = {
    "d1": [w("d1", 1, Put("posts", "p1", {"content": "a"})),
           w("d1", 2, Put("posts", "p1", {"content": "b"})),
           w("d1", 3, Add("posts", "p1", "likes_count")),
           w("d1", 4, Put("messages", "m1", {"content": "hi"})),
           w("d1", 5, Delete("messages", "m1"))],
    "d2": [w("d2", 1, Add("posts", "p1", "likes_count")),
           w("d2", 2, Add("posts", "p1", "likes_count"))],
}


def snapshot(likes: int = 3, content: str = "b", **extra: Any) -> Snapshot:
    records = {"posts": {"p1": {"id": "p1", "content": content, "likes_count": likes}},
               "messages": {}}
    return Snapshot(records, **extra)


def test_verifier_passes_a_good_run() -> None:
    report = verify(JOURNALS, snapshot(), {"d1": snapshot(), "d2": snapshot()})
    assert report.ok, report.summary()
    assert report.committed == 7 and report.in_doubt == 0


def test_verifier_finds_a_lost_write_on_the_server_and_a_device() -> None:
    report = verify(JOURNALS, snapshot(content="a"), {"d1": snapshot(), "d2": snapshot(
        content="a")})
    assert [(f.kind, f.where, f.what) for f in report.findings] == [
        ("lost", "server", "posts/p1"), ("lost", "device d2", "posts/p1")]
    assert "holds the earlier write #1 of d1" in report.findings[0].detail
    missing = verify(JOURNALS, Snapshot({"posts": {}}), {})
    assert [f.what for f in missing.lost] == ["posts/p1"]


def test_verifier_finds_doubled_and_lost_additions() -> None:
    doubled = verify(JOURNALS, snapshot(likes=4), {})
    assert [(f.kind, f.what) for f in doubled.findings] == [("doubled", "posts/p1.likes_count")]
    assert "holds 4, expected 3" in doubled.findings[0].detail
    lost = verify(JOURNALS, snapshot(likes=1), {})
    assert [(f.kind, f.what) for f in lost.findings] == [("lost", "posts/p1.likes_count")]
    assert lost.counts() == {"lost": 1, "doubled": 0, "out_of_order": 0, "stuck": 0,
                             "unexplained": 0}


def test_verifier_finds_a_resurrected_delete_and_unexplained_records() -> None:
    server = snapshot()
    server.records["messages"]["m1"] = {"id": "m1", "content": "hi"}
    server.records["posts"]["p9"] = {"id": "p9", "content": "?"}
    report = verify(JOURNALS, server, {})
    assert [(f.kind, f.what) for f in report.findings] == [
        ("lost", "messages/m1"), ("unexplained", "posts/p9")]
    assert verify(JOURNALS, server, {}, ignore=["posts", "messages"]).counts()[
        "unexplained"] == 0


def test_verifier_tolerates_only_the_write_in_doubt() -> None:
    journals = {"d1": [*JOURNALS["d1"],
                       w("d1", 6, Put("posts", "p1", {"content": "c"}), committed=False),
                       w("d1", 7, Add("posts", "p1", "likes_count"), committed=False)],
                "d2": JOURNALS["d2"]}
    for content in ("b", "c"):
        for likes in (3, 4):
            report = verify(journals, snapshot(likes=likes, content=content), {})
            assert report.ok, report.summary()
            assert report.in_doubt == 2
    assert not verify(journals, snapshot(likes=5, content="c"), {}).ok
    only = {"d1": [w("d1", 1, Put("messages", "m7", {"content": "x"}), committed=False)]}
    empty: dict[str, dict[str, dict[str, Any]]] = {"messages": {}}
    for records in (empty, {"messages": {"m7": {"id": "m7", "content": "x"}}}):
        assert verify(only, Snapshot(records), {}).ok
    wrong = Snapshot({"messages": {"m7": {"id": "m7", "content": "y"}}})
    assert [f.kind for f in verify(only, wrong, {}).findings] == ["lost"]
    assert not verify(journals, snapshot(content="a"), {}).ok
    aborted = {"d1": [w("d1", 1, Put("posts", "p1", {"content": "a"}), aborted=True)]}
    report = verify(aborted, Snapshot({"posts": {}}), {})
    assert report.ok and report.aborted == 1


def test_verifier_finds_stuck_queues() -> None:
    device = snapshot(pending=2, dead=["command like_post: no post"],
                      failed=["posts p1 failed: boom"], drained=False, note="gave up")
    report = verify(JOURNALS, snapshot(), {"d1": device})
    assert [(f.kind, f.what) for f in report.findings] == [
        ("stuck", "queue"), ("stuck", "dead letter"), ("stuck", "record state"),
        ("stuck", "drain")]
    assert all(f.where == "device d1" for f in report.findings)


def test_verifier_reads_the_history_for_doubles_and_order() -> None:
    def h(seq: int, record: str, op: str, payload: dict[str, Any] | None,
          mutation: str | None) -> HistoryEntry:
        entity = "posts" if record.startswith("p") else "messages"
        return HistoryEntry(seq, entity, record, op, payload, mutation)

    good = [h(1, "p1", "upsert", {"content": "a", "likes_count": 0}, "x1"),
            h(2, "p1", "upsert", {"content": "b", "likes_count": 0}, "x2"),
            h(3, "p1", "upsert", {"content": "b", "likes_count": 1}, None),
            h(4, "m1", "upsert", {"content": "hi"}, "x3"),
            h(5, "m1", "delete", None, "x4")]
    assert verify(JOURNALS, snapshot(), {}, good).ok
    twice = [*good, h(6, "p1", "upsert", {"content": "b", "likes_count": 1}, "x2")]
    assert [(f.kind, f.what) for f in verify(JOURNALS, snapshot(), {}, twice).findings] == [
        ("doubled", "mutation x2")]
    backwards = [good[1], good[0]]
    report = verify(JOURNALS, snapshot(content="a"), {}, backwards)
    assert [f.kind for f in report.findings] == ["lost", "out_of_order"]
    assert "applied #1 of d1 after #2" in report.findings[1].detail


def test_device_journal_survives_a_cut_line_and_records_in_doubt_writes(
        tmp_path: Path) -> None:
    device = Device("d1", tmp_path, "http://127.0.0.1:1/", seed=3)
    with device.write(Put("posts", "p1", {"content": "a"})) as seq:
        assert seq == 1
    with pytest.raises(RuntimeError), device.write(Delete("posts", "p1")):
        raise RuntimeError("the commit failed")
    device._line({"t": "intent", "seq": 3, "effects": [Add("posts", "p1", "n").to_json()]})
    device.close()
    with (tmp_path / "d1.journal").open("ab") as f:
        f.write(b'{"t":"ack","se')  # the kill cut this line
    writes = read_journal(tmp_path / "d1.journal")
    assert [(x.seq, x.committed, x.aborted, x.in_doubt) for x in writes] == [
        (1, True, False, False), (2, False, True, False), (3, False, False, True)]
    again = Device("d1", tmp_path, "http://127.0.0.1:1/", seed=3)  # a restart carries on
    assert again.seq == 3 and again.rng().random() == random.Random("3/d1/4").random()
    with again.write(Put("posts", "p2", {"content": "b"})) as seq:
        assert seq == 4
    again.close()
    assert [x.seq for x in read_journal(tmp_path / "d1.journal")] == [1, 2, 3, 4]
