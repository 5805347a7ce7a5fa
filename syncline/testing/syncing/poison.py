"""Issue 13, findings 5 and 6: one bad mutation never blocks the others."""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import Any

import pytest

from syncline.core.spi.transport import (
    Mutation,
    PermanentTransportError,
    PushLimits,
    PushResponse,
    RetryableTransportError,
    to_wire,
)
from syncline.core.store import Store
from syncline.plugins.mock import MockServer
from syncline.testing.syncing.base import TrustFixtures
from syncline.testing.syncing.entities import Post


class PoisonSuite(TrustFixtures):
    """Poison mutations are isolated, outages are not poison, batches fit the server."""

    # -- finding 5: one bad mutation never blocks the others ---------------------------------

    def test_finding_5_a_poison_mutation_is_isolated_and_the_rest_flow(
            self, client_factory: Callable[..., Store], server: MockServer,
            monkeypatch: pytest.MonkeyPatch) -> None:
        client = client_factory(max_retries=3)
        real_push = server.push

        def push(mutations: Sequence[Mutation], principal: str = "anonymous") -> PushResponse:
            if any(m.record_id == "poison" for m in mutations):
                raise RetryableTransportError("500 the server failed", status=500)
            return real_push(mutations, principal)

        monkeypatch.setattr(server, "push", push)
        posts = client.repository(Post)
        for i in range(10):
            posts.insert(Post(f"ok{i}", "x"))
            if i == 4:
                posts.insert(Post("poison", "x"))
        client.sync()
        on_server = server.server.store.repository(Post)
        assert on_server.count() == 10  # the first round already pushed every valid one
        for _ in range(10):
            client.clock.sleep(3600)
            client.sync()
        [dead] = client.outbox.dead_letters()
        assert dead.record_id == "poison" and "500 the server failed" in (dead.error or "")
        assert client.outbox.pending_count() == 0
        assert posts.failed() == [Post("poison", "x")]

    def test_a_server_outage_is_not_a_poison(self, client_factory: Callable[..., Store],
                                             server: MockServer,
                                             monkeypatch: pytest.MonkeyPatch) -> None:
        client = client_factory(max_retries=1)

        def down(*args: Any, **kwargs: Any) -> Any:
            raise RetryableTransportError("500 the database is down", status=500)

        monkeypatch.setattr(server, "push", down)
        monkeypatch.setattr(server, "pull", down)
        client.repository(Post).insert(Post("a", "x"))
        for _ in range(20):
            client.sync()
            client.clock.sleep(3600)
        assert client.outbox.dead_letters() == []
        monkeypatch.undo()
        self.drain(client)
        assert server.server.store.repository(Post).get("a") == Post("a", "x")

    # -- finding 6: batches sized by bytes, split on 413 -------------------------------------

    @pytest.mark.parametrize("published", [True, False])
    def test_finding_6_batches_over_the_body_limit_are_split(
            self, client: Store, server: MockServer, monkeypatch: pytest.MonkeyPatch,
            published: bool) -> None:
        limit = 40_000
        real_push = server.push
        sizes: list[int] = []

        def push(mutations: Sequence[Mutation], principal: str = "anonymous") -> PushResponse:
            import json

            size = len(json.dumps({"mutations": [to_wire(m) for m in mutations]}))
            if size > limit:
                raise PermanentTransportError(f"413 the body exceeds {limit} bytes", status=413)
            sizes.append(size)
            return real_push(mutations, principal)

        monkeypatch.setattr(server, "push", push)
        if published:
            monkeypatch.setattr(server, "limits", PushLimits(max_bytes=limit), raising=False)
        posts = client.repository(Post)
        posts.insert_many([Post(f"big{i}", "x" * 5_000) for i in range(30)])
        posts.insert(Post("huge", "y" * (limit + 1)))
        report = client.sync()
        assert server.server.store.repository(Post).count() == 30
        assert all(s <= limit for s in sizes)
        [dead] = client.outbox.dead_letters()
        assert dead.record_id == "huge" and report.rejected
