"""Random writes, faults and syncs on several clients and the server: they always converge.

When the faults stop and every client syncs twice, clients and server hold identical data, no
mutation took effect twice, and every local write that never reached the server is a recorded
conflict on the client that made it.
"""

from __future__ import annotations

import itertools
import os
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import RuleBasedStateMachine, initialize, rule, run_state_machine_as_test

import syncline
from syncline.core.model.clock import FakeClock
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.store import Store
from syncline.core.sync.engine import Backoff, Conflict, Strategy
from syncline.plugins.mock import MockServer

registry = syncline.EntityRegistry()
_names = itertools.count()


@registry.entity("conv_notes", syncs=True)
@attrs.define
class Note:
    id: str
    text: str
    tags: list[str] | None = None


@registry.entity("conv_bumps")
@attrs.define
class Bump:
    """What the server's ``bump`` command did: how often each command took effect."""

    id: str
    times: int = 0


class BumpHandler:
    @syncline.hookimpl
    def syncline_handle_command(self, server: Any, principal: str, name: str,
                                payload: dict[str, Any] | None) -> dict[str, Any] | None:
        if name != "bump" or payload is None:
            return None
        bumps = server.store.repository(Bump)
        seen = bumps.get(payload["n"])
        bumps.upsert(Bump(payload["n"], (seen.times if seen else 0) + 1))
        return {}


@pytest.fixture(autouse=True)
def bump_plugin() -> Iterator[None]:
    register_plugin(BumpHandler(), "conv-bump")
    yield
    unregister_plugin("conv-bump")


IDS = ["a", "b", "c", "d"]
EXAMPLES = 200 if os.environ.get("CI") == "true" else 60
clients_idx = st.integers(0, 2)
ids = st.sampled_from(IDS)


def make_machine(urls: list[str], strategy: Strategy) -> type[RuleBasedStateMachine]:
    class Convergence(RuleBasedStateMachine):
        @initialize()
        def setup(self) -> None:
            self.clock = FakeClock()
            self.name = f"conv-{next(_names)}"
            self.server = MockServer(self.name, entities=[Note, Bump], clock=self.clock)
            # The server's log keeps one entry per record (compaction), not its history:
            # record what each push applied, to tell a lost write from an overwritten one.
            self.applied: list[tuple[str, str | None, str | None]] = []
            sync_server = self.server.server
            push = sync_server.push

            def recording_push(mutations: Any, *args: Any, **kwargs: Any) -> Any:
                response = push(mutations, *args, **kwargs)  # principal, schema: as they come
                for m, r in zip(mutations, response.results, strict=True):
                    if r.status == "applied":
                        self.applied.append((m.id, m.record_id, (m.payload or {}).get("text")))
                return response

            sync_server.push = recording_push  # type: ignore[method-assign]
            self.commands: list[str] = []
            self.clients: list[Store] = []
            self.conflicts: list[list[tuple[int, Conflict]]] = []
            self.last_write: list[dict[str, tuple[int, str | None]]] = []
            self.counter = 0
            for i, url in enumerate(urls):
                store = syncline.open(
                    url.format(n=next(_names)), entities=[Note],
                    transport=f"mock://{self.name}", clock=self.clock,
                    sync_options={"strategy": strategy, "backoff": Backoff(1.0, 30.0),
                                  "max_retries": 1000, "batch_size": 3, "page_size": 2})
                self.clients.append(store)
                self.conflicts.append([])
                self.last_write.append({})
                store.sync_engine.on_conflict(
                    lambda c, i=i: self.conflicts[i].append((self.counter, c)))

        def _tick(self) -> int:
            self.counter += 1
            return self.counter

        @rule(c=clients_idx, rid=ids, tagged=st.booleans())
        def local_upsert(self, c: int, rid: str, tagged: bool) -> None:
            n = self._tick()
            text = f"c{c}-{n}"
            self.clients[c].repository(Note).upsert(Note(rid, text, ["t"] if tagged else None))
            self.last_write[c][rid] = (n, text)

        @rule(c=clients_idx, rid=ids)
        def local_delete(self, c: int, rid: str) -> None:
            n = self._tick()
            self.clients[c].repository(Note).delete(rid)
            self.last_write[c][rid] = (n, None)

        @rule(rid=ids)
        def server_upsert(self, rid: str) -> None:
            self.server.server.write(Note(rid, f"server-{self._tick()}"))

        @rule(rid=ids)
        def server_delete(self, rid: str) -> None:
            self._tick()
            self.server.server.delete(Note, rid)

        @rule(c=clients_idx)
        def command(self, c: int) -> None:
            n = f"cmd-{self._tick()}"
            self.clients[c].enqueue_command("bump", {"n": n})
            self.commands.append(n)

        @rule(c=clients_idx)
        def sync(self, c: int) -> None:
            self.clients[c].sync()

        @rule(c=clients_idx)
        def push_only(self, c: int) -> None:
            self.clients[c].sync_engine.push()

        @rule(fault=st.sampled_from(["offline", "online", "fail", "lose", "repeat", "retry"]))
        def fault(self, fault: str) -> None:
            if fault == "offline":
                self.server.offline = True
            elif fault == "online":
                self.server.offline = False
            elif fault == "fail":
                self.server.fail_next(1)
            elif fault == "lose":
                self.server.lose_next_responses(1)
            elif fault == "repeat":
                self.server.repeat_pages = not self.server.repeat_pages
            else:
                self.server.retry_after_next(1, seconds=5)

        @rule(seconds=st.sampled_from([1, 10, 100]))
        def time_passes(self, seconds: int) -> None:
            self.clock.advance(seconds)

        def teardown(self) -> None:
            if not hasattr(self, "server"):
                return
            try:
                self.check()
            finally:
                for store in self.clients:
                    store.close()
                self.server.close()

        def check(self) -> None:
            self.server.heal()
            self.clock.advance(1000)
            for _ in range(2):
                for store in self.clients:
                    report = store.sync()
                    assert report.failures == [] and report.rejected == [], report
            server_notes = self.server.server.store.repository(Note).all()
            for store in self.clients:
                assert store.outbox.pending_count() == 0
                assert store.outbox.dead_letters() == []
                assert store.repository(Note).all() == server_notes, store
            bumps = self.server.server.store.repository(Bump).all()
            assert sorted(b.id for b in bumps) == sorted(self.commands)
            assert [b for b in bumps if b.times != 1] == [], "a command took effect twice"
            made_by = [mid for mid, _, _ in self.applied]
            assert len(made_by) == len(set(made_by)), "a mutation took effect twice"
            texts = {(rid, text) for _, rid, text in self.applied}
            for i, writes in enumerate(self.last_write):
                for rid, (when, text) in writes.items():
                    if text is None or (rid, text) in texts:
                        continue  # a delete, or the write reached the server
                    recorded = [c for n, c in self.conflicts[i] if n >= when and
                                c.record_id == rid]
                    assert recorded, f"client {i} lost its write {text!r} to {rid!r} silently"

    return Convergence


def run(machine: type[RuleBasedStateMachine], examples: int) -> None:
    run_state_machine_as_test(machine, settings=settings(
        max_examples=examples, stateful_step_count=30, deadline=None,
        suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much]))


@pytest.mark.parametrize("strategy", [Strategy.SERVER_WINS, Strategy.CLIENT_WINS,
                                      Strategy.LAST_WRITE_WINS])
def test_clients_converge_on_memory_and_sqlite(strategy: Strategy) -> None:
    run(make_machine(["memory://", "sqlite://", "memory://"], strategy),
        EXAMPLES if strategy is Strategy.SERVER_WINS else EXAMPLES // 4)


@pytest.fixture
def pg_url(postgres_url: str) -> Iterator[str]:
    yield postgres_url + "?schema=conv{n}"


def test_clients_converge_with_a_postgresql_client(pg_url: str) -> None:
    run(make_machine(["memory://", pg_url, "sqlite://"], Strategy.SERVER_WINS),
        max(10, EXAMPLES // 8))


