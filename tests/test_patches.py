"""Protocol 2: an update carries the changed fields only and the server merges field by field;
a conflict only when the same field changed on both sides, decided per field."""

from __future__ import annotations

import uuid
from collections.abc import Iterator
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.model.schema import EntityRegistry
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.spi.transport import Mutation
from syncline.plugins.mock import MockServer

registry = EntityRegistry()


@registry.entity("patch_notes", syncs=True)
@attrs.define
class Note:
    id: str
    title: str
    body: str = ""
    count: int = 0


# The server's store on each bundled backend, from the suites' test stores (store_url).
pytestmark = pytest.mark.syncline_backends("memory", "sqlite", "postgresql")


@pytest.fixture
def server(store_url: str) -> Iterator[MockServer]:
    mock = MockServer(f"patches-{uuid.uuid4().hex[:8]}", entities=[Note], store_url=store_url)
    yield mock
    mock.close()


def device(server: MockServer, strategy: str = "server_wins", **options: Any) -> syncline.Store:
    return syncline.open("memory://", entities=[Note], transport=f"mock://{server.name}",
                         transport_options={"principal": "alice", **options},
                         sync_options={"strategy": strategy})


def shared_note(server: MockServer, *stores: syncline.Store) -> Note:
    note = Note("n1", "title", "body", 5)
    stores[0].repository(Note).upsert(note)
    for s in stores:
        assert s.sync().ok
    return note


def spy_on(server: MockServer) -> list[Mutation]:
    """The mutations the server receives from now on."""
    sent: list[Mutation] = []
    original = server.push

    def spy(mutations: Any, principal: str | None = None) -> Any:
        sent.extend(mutations)
        return original(mutations, principal)

    setattr(server, "push", spy)  # noqa: B010 - an instance attribute over the method
    return sent


def stored(server: MockServer) -> Note:
    note = server.store.repository(Note).get("n1")
    assert note is not None
    return note


def test_two_devices_editing_different_fields_both_keep_their_edits(
        server: MockServer) -> None:
    phone, laptop = device(server), device(server)
    shared_note(server, phone, laptop)
    phone.repository(Note).update("n1", title="phone's title")
    laptop.repository(Note).update("n1", body="laptop's body")
    first, second = phone.sync(), laptop.sync()
    assert first.conflicts == [] and second.conflicts == []
    assert attrs.astuple(stored(server)) == ("n1", "phone's title", "laptop's body", 5)
    # the laptop got the merged record with its answer; the phone pulls it
    assert laptop.repository(Note).get("n1") == stored(server)
    assert phone.sync().conflicts == []
    assert phone.repository(Note).get("n1") == stored(server)
    # a field the patch leaves out keeps its value (count 5 does not become 0)
    assert stored(server).count == 5


def test_a_merge_answered_while_newer_edits_wait_reaches_the_device(
        server: MockServer) -> None:
    phone, laptop = device(server), device(server)
    shared_note(server, phone, laptop)
    laptop.repository(Note).update("n1", body="laptop's body")
    assert laptop.sync().ok
    original = server.push

    def edit_meanwhile(mutations: Any, principal: str | None = None) -> Any:
        phone.repository(Note).update("n1", count=7)  # queued while the push is out
        setattr(server, "push", original)  # noqa: B010 - once
        return original(mutations, principal)

    setattr(server, "push", edit_meanwhile)  # noqa: B010 - an instance attribute
    phone.repository(Note).update("n1", title="phone's title")
    report = phone.sync()  # its patch merges with the laptop's body; count waits
    assert report.conflicts == []
    assert phone.sync().conflicts == []
    both = Note("n1", "phone's title", "laptop's body", 7)
    assert phone.repository(Note).get("n1") == stored(server) == both
    assert laptop.sync().ok and laptop.repository(Note).get("n1") == both


def test_the_patch_sends_the_changed_fields_and_their_base(server: MockServer) -> None:
    phone = device(server)
    shared_note(server, phone)
    sent = spy_on(server)
    notes = phone.repository(Note)
    notes.upsert(Note("n1", "new title", "body", 5))
    notes.update("n1", count=6)
    notes.update("n1", count=5)  # changed back: not part of the patch
    assert phone.sync().ok
    (m,) = sent
    assert (m.action, m.payload, m.base) == ("update", {"title": "new title"},
                                             {"title": "title"})


def test_a_pulled_change_of_other_fields_merges_with_queued_edits(server: MockServer) -> None:
    phone, laptop = device(server), device(server)
    shared_note(server, phone, laptop)
    laptop.repository(Note).update("n1", body="laptop's body")  # queued, not pushed yet
    phone.repository(Note).update("n1", title="phone's title")
    assert phone.sync().ok
    report = laptop.sync_engine.pull()
    assert report.conflicts == []
    assert attrs.astuple(laptop.repository(Note).get("n1")) == (  # type: ignore[arg-type]
        "n1", "phone's title", "laptop's body", 5)
    assert laptop.sync().conflicts == []
    assert attrs.astuple(stored(server)) == ("n1", "phone's title", "laptop's body", 5)


@pytest.mark.parametrize(("strategy", "title"), [
    ("server_wins", "phone's title"), ("client_wins", "laptop's title"),
    ("last_write_wins", "laptop's title")])
def test_the_same_field_edited_concurrently_conflicts_and_the_strategy_decides_it(
        server: MockServer, strategy: str, title: str) -> None:
    phone, laptop = device(server), device(server, strategy)
    shared_note(server, phone, laptop)
    phone.repository(Note).update("n1", title="phone's title")
    assert phone.sync().ok
    laptop.repository(Note).update("n1", title="laptop's title", count=9)  # written later
    report = laptop.sync()
    (conflict,) = report.conflicts
    assert (conflict.fields, conflict.changed) == (("title",), ("count", "title"))
    laptop.sync()
    # the strategy decided the title; the laptop's count (no conflict) is kept either way
    assert attrs.astuple(stored(server)) == ("n1", title, "body", 9)
    assert laptop.repository(Note).get("n1") == stored(server)


class TakeLongerTitle:
    @syncline.hookimpl
    def syncline_resolve_conflict(self, store: Any, conflict: Any) -> Any:
        if conflict.fields != ("title",):
            return None
        longer = max(conflict.local.title, conflict.server.title, key=len)
        return syncline.Resolution.merge(attrs.evolve(conflict.server, title=longer,
                                                      count=conflict.local.count))


def test_a_plugin_resolves_a_field_conflict(server: MockServer) -> None:
    register_plugin(TakeLongerTitle(), "test-longer-title")
    try:
        phone, laptop = device(server), device(server)
        shared_note(server, phone, laptop)
        phone.repository(Note).update("n1", title="short", body="phone's body")
        assert phone.sync().ok
        laptop.repository(Note).update("n1", title="a longer title", count=7)
        assert len(laptop.sync().conflicts) == 1
        laptop.sync()
        assert attrs.astuple(stored(server)) == ("n1", "a longer title", "phone's body", 7)
    finally:
        unregister_plugin("test-longer-title")


def test_a_protocol_1_client_sends_whole_records_and_keeps_working(server: MockServer) -> None:
    old = device(server, protocol=1)
    new = device(server)
    shared_note(server, old, new)
    sent = spy_on(server)
    old.repository(Note).update("n1", title="old client")
    assert old.sync().ok
    assert sent[-1].base is None and sent[-1].payload == {
        "id": "n1", "title": "old client", "body": "body", "count": 5}
    # the new client's patch merges with it; the old client pulls the result
    new.repository(Note).update("n1", body="new client")
    assert new.sync().conflicts == []
    assert old.sync().ok
    assert attrs.astuple(old.repository(Note).get("n1")) == (  # type: ignore[arg-type]
        "n1", "old client", "new client", 5)
    # a whole-record update based on an old version conflicts as in protocol 1
    new.repository(Note).update("n1", count=1)
    assert new.sync().ok
    old.repository(Note).update("n1", title="again")
    assert len(old.sync().conflicts) == 1


def test_bad_patches_are_rejected_and_store_nothing(server: MockServer) -> None:
    phone = device(server)
    shared_note(server, phone)
    version = stored(server)
    srv = server.server
    state = phone.repository(Note).sync_state("n1")
    assert state is not None
    base = state.server_version
    results = srv.push([
        Mutation("p1", "patch_notes", "update", "n1", {"nope": 1}, base, base={}),
        Mutation("p2", "patch_notes", "update", "n1", {"count": "x"}, base, base={}),
        Mutation("p3", "patch_notes", "create", "n2", {"id": "n2", "title": "t"},
                 base={"title": "x"}),
        Mutation("p4", "patch_notes", "update", "n1", {"count": 1}, base, base=[]),  # type: ignore[arg-type]
    ], "alice").results
    assert [r.status for r in results] == ["rejected"] * 4, results
    assert "unknown field(s) nope" in (results[0].reason or "")
    assert "base is for updates" in (results[2].reason or "")
    assert "base must be a JSON object" in (results[3].reason or "")
    assert stored(server) == version
    assert server.store.repository(Note).get("n2") is None


class RefuseTitle:
    """A server hook refusing one title (the update is rejected and dead-lettered)."""

    @syncline.hookimpl
    def syncline_after_record_write(self, entity: str, after: dict[str, Any] | None) -> None:
        if entity == "patch_notes" and after is not None and after["title"] == "refused":
            raise ValueError("not this title yet")


def dead_letter_a_title(phone: syncline.Store) -> None:
    """Edit the note's title to one the server refuses: the update is dead-lettered."""
    register_plugin(RefuseTitle(), "patch-refuse-title")
    try:
        phone.repository(Note).update("n1", title="refused")
        assert phone.sync().rejected
    finally:
        unregister_plugin("patch-refuse-title")


def test_a_requeued_dead_letter_is_still_sent_as_a_patch(server: MockServer) -> None:
    phone, laptop = device(server), device(server)
    shared_note(server, phone, laptop)
    dead_letter_a_title(phone)
    [dead] = phone.outbox.dead_letters()
    assert [b.id for b in phone.outbox.bases.all()] == [dead.id]
    laptop.repository(Note).update("n1", body="laptop's body")
    assert laptop.sync().ok
    sent = spy_on(server)
    assert phone.outbox.requeue() == 1
    report = phone.sync()
    assert report.ok and report.conflicts == [], report
    (m,) = sent
    assert (m.payload, m.base) == ({"title": "refused"}, {"title": "title"})
    assert stored(server) == Note("n1", "refused", "laptop's body", 5)
    assert phone.outbox.bases.all() == []


def test_purging_dead_letters_drops_their_bases(server: MockServer) -> None:
    phone = device(server)
    shared_note(server, phone)
    dead_letter_a_title(phone)
    assert len(phone.outbox.bases.all()) == 1
    assert phone.outbox.purge_dead() == 1
    assert phone.outbox.bases.all() == [] and phone.outbox.dead_letters() == []
