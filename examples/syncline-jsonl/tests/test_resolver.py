"""The newest-wins resolver decides conflicts of entities with an updated_at field."""

from __future__ import annotations

import datetime as dt

import attrs

import syncline
from syncline.plugins.mock import MockServer

reg = syncline.EntityRegistry()
T0 = dt.datetime(2025, 1, 1, tzinfo=dt.UTC)


@reg.entity("resolver_docs", syncs=True)
@attrs.define
class Doc:
    id: str
    body: str
    updated_at: dt.datetime


def test_the_newer_edit_wins_whatever_the_strategy(tmp_path) -> None:  # type: ignore[no-untyped-def]
    with MockServer("resolver", entities=[Doc]) as server:
        store = syncline.open(f"jsonl:///{tmp_path}/c.jsonl", entities=[Doc],
                              transport="mock://resolver",
                              sync_options={"strategy": "server_wins"})
        docs = store.repository(Doc)
        docs.insert(Doc("d", "v1", T0))
        store.sync()
        server.server.write(Doc("d", "server", T0 + dt.timedelta(minutes=1)))
        docs.update("d", body="mine, later", updated_at=T0 + dt.timedelta(minutes=2))
        report = store.sync()
        store.sync()
        assert len(report.conflicts) == 1
        assert server.server.store.repository(Doc).get("d").body == "mine, later"
        store.close()
