"""Live sync: the suite over the reference server on every backend, the mock transport's
stream, and the notifier's filtering."""

from __future__ import annotations

import asyncio
import itertools
from collections.abc import Iterator

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

import syncline
from syncline.plugins.mock import MockServer
from syncline.server.app import ServerConfig
from syncline.server.notices import SHARED, BlockingSubscription, Notifier
from syncline.testing.live_suite import NEVER, LiveSuite, wait_for
from syncline.testing.server import LiveServer
from syncline.testing.transport_suite import ENTITIES, Item

_names = itertools.count()


class TestLive(LiveSuite):
    """On each bundled backend as the server's store (memory, SQLite, PostgreSQL)."""


@pytest.fixture
def mock() -> Iterator[MockServer]:
    with MockServer(f"live-{next(_names)}", entities=ENTITIES) as server:
        yield server


def _device(server: MockServer, **worker: float) -> syncline.Store:
    store = syncline.open("memory://", entities=ENTITIES, transport=f"mock://{server.name}")
    store.start_sync_worker(interval=NEVER, **worker)
    return store


def test_the_mock_transport_streams_changes_too(mock: MockServer) -> None:
    a, b = _device(mock), _device(mock)
    try:
        wait_for(lambda: bool(b._worker and b._worker.streaming), "B's stream")
        a.repository(Item).insert(Item("x", "from A"))
        wait_for(lambda: b.repository(Item).get("x") is not None, "B to see A's write")
        mock.server.write(Item("y", "from the server"))
        wait_for(lambda: b.repository(Item).get("y") is not None, "B to see the server's")
    finally:
        a.close()
        b.close()


def test_a_broken_stream_falls_back_to_polling_and_reconnects(mock: MockServer) -> None:
    b = _device(mock, fallback=0.2)
    try:
        wait_for(lambda: bool(b._worker and b._worker.streaming), "B's stream")
        mock.live_enabled = False  # no stream to come back to: only polling brings changes
        mock.drop_live_streams()
        wait_for(lambda: not b._worker.streaming, "the stream to break")  # type: ignore[union-attr]
        mock.server.write(Item("polled", "while the stream is down"))
        wait_for(lambda: b.repository(Item).get("polled") is not None, "a poll to bring it")
        mock.live_enabled = True
        wait_for(lambda: bool(b._worker and b._worker.streaming), "the stream to reopen")
        b._worker.fallback = NEVER  # type: ignore[union-attr]
        mock.server.write(Item("told", "after reconnecting"))
        wait_for(lambda: b.repository(Item).get("told") is not None, "the stream to bring it")
        assert {i.id for i in b.repository(Item).all()} == {"polled", "told"}
    finally:
        b.close()


def test_an_offline_server_breaks_the_stream_and_the_client_catches_up(
        mock: MockServer) -> None:
    a, b = _device(mock), _device(mock, fallback=NEVER)
    try:
        wait_for(lambda: bool(b._worker and b._worker.streaming), "B's stream")
        mock.offline = True
        wait_for(lambda: not b._worker.streaming, "the stream to break")  # type: ignore[union-attr]
        mock.server.write(Item("missed", "while B was away"))
        mock.offline = False
        wait_for(lambda: b.repository(Item).get("missed") is not None,
                 "B to catch up when its stream reopens")
    finally:
        a.close()
        b.close()


def test_a_worker_without_live_polls_only() -> None:
    with MockServer(f"live-{next(_names)}", entities=ENTITIES) as server:
        store = syncline.open("memory://", entities=ENTITIES,
                              transport=f"mock://{server.name}")
        try:
            worker = store.start_sync_worker(interval=NEVER, live=False)
            assert worker._listener is None and not worker.streaming
        finally:
            store.close()


def test_the_notifier_tells_owners_and_sharers_only() -> None:
    live = Notifier(max_clients=3)
    alice = BlockingSubscription("alice", frozenset({"posts", "boards"}))
    bob = BlockingSubscription("bob", frozenset({"posts"}))
    for sub in (alice, bob):
        assert live.add(sub) is sub
    live.publish([("alice", "posts")], 7)
    assert alice.wait(1.0) == 7 and bob.wait(0.0) is None
    live.publish([(SHARED, "boards")], 8)  # bob does not sync boards
    assert alice.wait(1.0) == 8 and bob.wait(0.0) is None
    live.publish([(SHARED, "posts")], 9)
    assert alice.wait(1.0) == 9 and bob.wait(1.0) == 9
    live.publish([("alice", "posts")], 10)
    live.publish([("alice", "posts")], 11)  # coalesced: the newest number, once
    assert alice.wait(1.0) == 11 and alice.wait(0.0) is None


def test_a_client_is_not_told_of_its_own_push_but_every_other_client_is() -> None:
    live = Notifier()
    own = BlockingSubscription("alice", frozenset({"posts"}), client="c1")
    other = BlockingSubscription("alice", frozenset({"posts"}), client="c2")
    anonymous = BlockingSubscription("alice", frozenset({"posts"}))  # sent no id
    bob = BlockingSubscription("bob", frozenset({"posts"}), client="c1")  # same id, not alice
    for sub in (own, other, anonymous, bob):
        live.add(sub)
    live.publish([(SHARED, "posts")], 3, origin=("alice", "c1"))
    assert own.wait(0.0) is None
    assert other.wait(1.0) == anonymous.wait(1.0) == bob.wait(1.0) == 3
    live.publish([(SHARED, "posts")], 4, origin=("alice", "c2"))  # another device's push
    assert own.wait(1.0) == 4


def test_a_mock_worker_s_own_push_costs_no_second_pull(mock: MockServer) -> None:
    a, b = _device(mock), _device(mock)
    try:
        wait_for(lambda: bool(a._worker and a._worker.streaming and b._worker and
                              b._worker.streaming), "the streams")
        pulls = {"n": 0}
        pull = a.sync_engine.transport.pull

        def counted(*args: object) -> object:
            pulls["n"] += 1
            return pull(*args)  # type: ignore[arg-type]

        a.sync_engine.transport.pull = counted  # type: ignore[method-assign]
        a.repository(Item).insert(Item("mine", "from A"))
        wait_for(lambda: b.repository(Item).get("mine") is not None, "B to be told")
        assert a.wait_synced(Item, "mine")
        b.repository(Item).insert(Item("theirs", "from B"))  # A is told of B's push
        wait_for(lambda: a.repository(Item).get("theirs") is not None, "A to be told")
        # one round for A's own write (push, then pull) and one for B's: no third
        assert pulls["n"] == 2
    finally:
        a.close()
        b.close()


def test_the_notifier_holds_at_most_max_clients() -> None:
    live = Notifier(max_clients=1)
    first = BlockingSubscription("a", frozenset({"posts"}))
    assert live.add(first) is first
    assert live.add(BlockingSubscription("b", frozenset({"posts"}))) is None
    live.unsubscribe(first)
    assert live.clients == 0


def test_a_transaction_that_rolls_back_tells_nobody(mock: MockServer) -> None:
    sub = BlockingSubscription("anonymous", frozenset({"transport_items"}))
    mock.live.add(sub)
    mock.server.write(Item("ok", "committed"))
    assert sub.wait(5.0) is not None
    live = mock.live

    def failing() -> None:
        live.note("anonymous", "transport_items", 99)
        raise RuntimeError("rolled back")

    with pytest.raises(RuntimeError):
        mock.server._transaction(failing)
    mock.server._transaction(lambda: None)  # the next transaction forgets the failed notes
    assert sub.wait(0.0) is None


def test_async_subscriptions_are_told_on_their_loop() -> None:
    async def main() -> int:
        live = Notifier()
        sub = live.subscribe("alice", ["posts"])
        assert sub is not None
        await asyncio.get_running_loop().run_in_executor(
            None, live.publish, [("alice", "posts")], 5)
        await asyncio.wait_for(sub.event.wait(), 10)
        return sub.take()

    assert asyncio.run(main()) == 5


@pytest.fixture(scope="module")
def fuzzed(tmp_path_factory: pytest.TempPathFactory) -> Iterator[LiveServer]:
    config = ServerConfig(store=f"sqlite:///{tmp_path_factory.mktemp('live')}/server.db",
                          tokens={"t": "p"}, permissions={"p": ["transport_items"]})
    with LiveServer(config, ENTITIES) as server:
        yield server


_param = st.text(st.characters(codec="utf-8", exclude_categories=("Cs",)), max_size=20)


@given(params=st.dictionaries(st.sampled_from(["entities", "since", "x", "entities,"]),
                              _param | st.sampled_from(["transport_items", ",", ""]),
                              max_size=2),
       token=st.sampled_from(["t", "nope", "t\u00e9"]),
       protocol=st.sampled_from([None, "1", "2", "x"]))
@settings(max_examples=60, deadline=None, suppress_health_check=list(HealthCheck))
def test_the_stream_answers_any_parameters_with_its_first_event_or_a_4xx(
        fuzzed: LiveServer, params: dict[str, str], token: str, protocol: str | None) -> None:
    import httpx

    headers = {"Authorization": f"Bearer {token}"} if token.isascii() else {}
    if protocol is not None:
        headers["Syncline-Protocol"] = protocol
    with httpx.stream("GET", fuzzed.url + "v1/changes/live", params=params, headers=headers,
                      timeout=30) as response:
        assert response.status_code < 500, response.read()
        if response.status_code == 200:
            lines = response.iter_lines()
            assert next(lines).startswith("retry:")
            assert next(lines) == "event: ready"
        else:
            assert response.read() and response.json()["error"]["code"]


def test_a_server_full_of_streams_answers_503_and_the_client_polls(tmp_path: object) -> None:
    import httpx

    from syncline.testing.live_suite import Notices

    config = ServerConfig(store="memory://", tokens={"t": "p"}, max_live_clients=1)
    with LiveServer(config, ENTITIES) as server:
        first = Notices(server.url, "t")
        try:
            wait_for(lambda: bool(first.seen), "the first stream")
            full = httpx.get(server.url + "v1/changes/live", headers={"Authorization": "Bearer t"})
            assert full.status_code == 503 and full.headers["Retry-After"]
            assert "1 live streams" in full.json()["error"]["message"]
        finally:
            first.close()
        wait_for(lambda: server.sync.live.clients == 0, "the first stream to be let go")
        again = Notices(server.url, "t")
        try:
            wait_for(lambda: bool(again.seen), "a stream once there is room")
        finally:
            again.close()


def test_closing_a_store_ends_its_quiet_live_stream_at_once() -> None:
    # no heartbeat for an hour: only closing the socket can end the listener's blocked read
    config = ServerConfig(store="memory://", tokens={"t": "p"}, live_heartbeat=3600)
    with LiveServer(config, ENTITIES) as server:
        store = syncline.open("memory://", entities=ENTITIES, transport=server.url,
                              transport_options={"token": "t"})
        worker = store.start_sync_worker(interval=NEVER)
        wait_for(lambda: worker.streaming and worker.rounds > 0, "the stream")
        listener = worker._listener
        assert listener is not None
        store.close()  # waits for the listener up to 10 s (the heartbeat is an hour away)
        assert not listener.is_alive(), "the listener still reads its stream"
        wait_for(lambda: server.sync.live.clients == 0, "the server to let it go")
