"""Schema-violating requests against every endpoint, generated from the server's own OpenAPI
document (schemathesis, negative mode), on SQLite and PostgreSQL server stores.

Each case goes to the app in-process (ASGI, no network): no answer is a 5xx, every answer
matches the document's response schemas, none takes long, and a refused request (4xx) leaves
the store exactly as it was. (Whether a 2xx was right is not checked: a payload that breaks its
entity's schema is answered 200 with that mutation ``rejected``, as documented.)
"""

from __future__ import annotations

import itertools
from collections.abc import Iterator
from typing import Any

import attrs
import pytest
import schemathesis
from hypothesis import HealthCheck, settings
from schemathesis.checks import not_a_server_error
from schemathesis.generation import GenerationMode
from schemathesis.specs.openapi.checks import response_schema_conformance

import syncline
from syncline.server.app import ServerConfig, SyncApp, create_app
from syncline.server.openapi import openapi_document
from syncline.server.tables import AppliedMutation, ChangeEntry, ServerRecord

pytestmark = pytest.mark.slow

registry = syncline.EntityRegistry()


@registry.entity("fuzz_docs", syncs=True)
@attrs.define
class Doc:
    id: str
    title: str
    pages: int = 0
    tags: list[str] | None = None


@registry.entity("fuzz_board", syncs=True)
@attrs.define
class Pin:
    id: str
    text: str


CASES = 300  # per endpoint and store
CONFIG = dict(tokens={"fuzz-token": "fuzzer"}, shared=["fuzz_board"], max_mutations=20,
              max_body_bytes=64 * 1024)
_schemas = itertools.count()

schema = schemathesis.openapi.from_dict(openapi_document(
    SyncApp(ServerConfig(**CONFIG), [Doc, Pin]).describe()))  # type: ignore[arg-type]
schema.config.generation.update(modes=[GenerationMode.NEGATIVE], deterministic=True)
# /v1/health and /v1/schema take no input: nothing of theirs can violate the schema
schema = schema.exclude(path=["/v1/health", "/v1/schema"])
# The live stream never ends by itself, so a request that happens to be valid would hold the
# case forever (and in-process ASGI buffers whole answers): tests/test_live.py fuzzes its
# parameters over a real server, reading each answer's head and first event only.
schema = schema.exclude(path=["/v1/changes/live"])


class Served:
    """The app, opened by the test (not by an ASGI lifespan: schemathesis keeps those open
    until the process ends), and what a refused request must leave as it was."""

    def __init__(self, store: str) -> None:
        self.app = create_app(ServerConfig(store=store, **CONFIG),  # type: ignore[arg-type]
                              [Doc, Pin])
        self.sync: SyncApp = self.app.state.sync
        self.sync.open()

    async def __call__(self, scope: Any, receive: Any, send: Any) -> None:
        if scope["type"] == "lifespan":  # refused before any message: "no lifespan support"
            raise RuntimeError("the test opens and closes the store itself")
        await self.app(scope, receive, send)

    def snapshot(self) -> tuple[Any, ...]:
        server = self.sync.server
        assert server is not None
        store = server.store
        return (server.committed_seq(), store.repository(Doc).count(),
                store.repository(Pin).count(), store.repository(ChangeEntry).count(),
                store.repository(AppliedMutation).count(),
                store.repository(ServerRecord).count())


@pytest.fixture(scope="module", params=["sqlite", "postgresql"])
def served(request: pytest.FixtureRequest,
           tmp_path_factory: pytest.TempPathFactory) -> Iterator[Served]:
    if request.param == "sqlite":
        store = f"sqlite:///{tmp_path_factory.mktemp('fuzz')}/server.db"
    else:
        base: str = request.getfixturevalue("syncline_postgres_url")
        store = f"{base}?schema=fuzz{next(_schemas)}"
    app = Served(store)
    try:
        yield app
    finally:
        app.sync.close()


@schema.parametrize()
@settings(max_examples=CASES, deadline=None, suppress_health_check=list(HealthCheck),
          derandomize=True)
def test_schema_violating_requests_are_refused_cleanly(case: Any, served: Served) -> None:
    before = served.snapshot()
    response = case.call(app=served, headers={"Authorization": "Bearer fuzz-token"},
                         timeout=20)
    case.validate_response(response, checks=[not_a_server_error, response_schema_conformance])
    if 400 <= response.status_code < 500:
        assert served.snapshot() == before, (response.status_code, response.text)
