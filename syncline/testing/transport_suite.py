"""The transport conformance suite: a transport must carry the protocol faithfully.

Subclass it and provide a ``transport_env`` fixture returning a :class:`TransportEnv`: the
transport under test, the :class:`SyncServer` it reaches (with the suite's entities), and a
way to make the server unreachable (one mixin per concern: push, pull, outages). The
bundled mock transport runs it in
``tests/test_transport_suite.py``; an HTTP or WebSocket transport does the same.
"""

from __future__ import annotations

from collections.abc import Callable

import attrs
import pytest

import syncline
from syncline.core.spi.transport import (
    Mutation,
    PermanentTransportError,
    RetryableTransportError,
    Transport,
)
from syncline.server.engine import SyncServer

registry = syncline.EntityRegistry()


@registry.entity("transport_items", syncs=True)
@attrs.define
class Item:
    id: str
    name: str
    size: int = 0


ENTITIES: list[type] = [Item]


@attrs.define
class TransportEnv:
    transport: Transport
    server: SyncServer
    #: make every call fail as a real outage would (the transport must say: retryable)
    go_offline: Callable[[], None]


def create(mid: str, rid: str, name: str = "x") -> Mutation:
    return Mutation(mid, "transport_items", "create", rid, {"id": rid, "name": name, "size": 1})


class TransportPushSuite:
    """Pushes: one result per mutation, in order; duplicates, conflicts, rejections."""

    def test_push_answers_each_mutation_in_order(self, transport_env: TransportEnv) -> None:
        t = transport_env.transport
        response = t.push([create("m1", "a"), create("m2", "b")])
        assert [r.id for r in response.results] == ["m1", "m2"]
        assert [r.status for r in response.results] == ["applied", "applied"]
        assert all(r.version is not None for r in response.results)

    def test_a_retried_mutation_is_a_duplicate(self, transport_env: TransportEnv) -> None:
        t = transport_env.transport
        first = t.push([create("m1", "a")]).results[0]
        again = t.push([create("m1", "a")]).results[0]
        assert again.status == "duplicate" and again.version == first.version
        reused = t.push([create("m1", "other")]).results[0]
        assert reused.status == "rejected" and reused.reason

    def test_conflicts_carry_the_servers_record(self, transport_env: TransportEnv) -> None:
        t = transport_env.transport
        t.push([create("m1", "a", "first")])
        stale = Mutation("m2", "transport_items", "update", "a",
                         {"id": "a", "name": "stale", "size": 2}, base_version=-1)
        result = t.push([stale]).results[0]
        assert result.status == "conflict"
        assert result.record == {"id": "a", "name": "first", "size": 1}

    def test_bad_payloads_are_rejected_not_fatal(self, transport_env: TransportEnv) -> None:
        bad = Mutation("m1", "transport_items", "create", "a", {"id": "a", "nope": 1})
        result = transport_env.transport.push([bad]).results[0]
        assert result.status == "rejected" and "nope" in (result.reason or "")



class TransportPullSuite:
    """Pulls: every change, page after page; a cursor the server did not issue is refused."""

    def test_pull_pages_through_every_change(self, transport_env: TransportEnv) -> None:
        t = transport_env.transport
        t.push([create(f"m{i}", f"r{i}") for i in range(5)])
        seen: list[str] = []
        cursor = None
        for _ in range(10):
            page = t.pull(cursor, 2, ["transport_items"])
            seen += [c.record_id for c in page.changes]
            cursor = page.cursor
            assert page.epoch
            if not page.more:
                break
        assert seen == [f"r{i}" for i in range(5)]
        assert t.pull(cursor, 2).changes == []

    def test_a_foreign_cursor_is_refused(self, transport_env: TransportEnv) -> None:
        with pytest.raises(PermanentTransportError):
            transport_env.transport.pull("not-a-cursor", 10)



class TransportOutageSuite:
    """A server that cannot be reached is a retryable error, never a permanent one."""

    def test_an_unreachable_server_is_retryable(self, transport_env: TransportEnv) -> None:
        transport_env.go_offline()
        with pytest.raises(RetryableTransportError):
            transport_env.transport.push([create("m1", "a")])
        with pytest.raises(RetryableTransportError):
            transport_env.transport.pull(None, 10)


class TransportSuite(TransportPushSuite, TransportPullSuite, TransportOutageSuite):
    """Subclass and provide a ``transport_env`` fixture."""
