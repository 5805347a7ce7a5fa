"""The reference sync server: the sync protocol over HTTP, as a Starlette app.

``POST /v1/push`` and ``POST /v1/pull`` carry the protocol's messages as JSON (gzip welcome both
ways); ``GET /v1/health``, ``GET /v1/schema`` and ``GET /v1/openapi.json`` describe the server.
Every request is authenticated (plugins first, then bearer tokens from configuration, then
JWTs) and every record belongs to the principal that wrote it. Errors share one format,
``{"error": {"status": 413, "code": "too_large", "message": "...", "field": null}}``, and a
refused request changes nothing, and no input makes it answer 5xx: a 503 (with Retry-After)
means the store is unreachable or busy, a 500 a fault of the server itself (logged with its
traceback). The app holds no state besides its store, so several processes can serve one
PostgreSQL database.

Logs go to ``syncline.server`` (faults, the store unavailable) and its children
``.push`` and ``.pull`` (each request: counts and duration; rejected mutations with their
reasons; pulled changes left out), ``.auth`` (refused credentials) and ``.http`` (refused
requests, clients that went away mid-request).
"""

from __future__ import annotations

import asyncio
import datetime as dt
import json
import logging
import math
import sqlite3
import threading
import time
import zlib
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from typing import Any

import attrs
from starlette.applications import Starlette
from starlette.concurrency import run_in_threadpool
from starlette.middleware import Middleware
from starlette.middleware.cors import CORSMiddleware
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import ClientDisconnect, Request
from starlette.responses import JSONResponse, Response, StreamingResponse
from starlette.routing import Route

import syncline
from syncline.core.model.errors import (
    AuthenticationError,
    BackendError,
    BackendUnavailableError,
    ConfigurationError,
    InvalidCursorError,
    NotFoundError,
    SerializationError,
    SynclineError,
    TransactionConflictError,
)
from syncline.core.model.schema import spec_of
from syncline.core.spi.transport import (
    PROTOCOL_VERSION,
    Mutation,
    PullPage,
    PushResponse,
    UpgradeRequiredError,
    from_wire,
    to_wire,
)
from syncline.core.storage.migration import Schema
from syncline.server.auth import Principal, authenticate
from syncline.server.engine import SyncServer
from syncline.server.http11 import Timeouts
from syncline.server.notices import Notifier, Subscription, notifier_for
from syncline.server.openapi import openapi_document
from syncline.server.store import open_server_store
from syncline.server.wire import sendable, to_json

log = logging.getLogger("syncline.server")
push_log = logging.getLogger("syncline.server.push")
pull_log = logging.getLogger("syncline.server.pull")
http_log = logging.getLogger("syncline.server.http")

#: how deep a request body may nest JSON arrays and objects (a mutation's payload sits three
#: levels down); deeper bodies are refused before anything else reads them
MAX_BODY_DEPTH = 100
#: seconds a client is told to wait (Retry-After) when the store is unavailable or busy
UNAVAILABLE_RETRY_AFTER = 5


@attrs.define
class ServerConfig:
    """How the server runs: its store, who may use it, and its limits."""

    store: str = "memory://"
    #: bearer token -> principal id
    tokens: dict[str, str] = attrs.Factory(dict)
    #: HMAC secret or PEM public key to verify JWTs (None: JWTs are not accepted)
    jwt_key: str | None = None
    jwt_algorithms: list[str] = attrs.Factory(lambda: ["HS256"])
    jwt_audience: str | None = None
    jwt_issuer: str | None = None
    #: let requests without credentials in, as principal "anonymous" (development only)
    allow_anonymous: bool = False
    max_body_bytes: int = 4 * 1024 * 1024
    max_mutations: int = 500
    max_page: int = 1000
    #: requests per principal per minute (0: no limit)
    rate_limit: int = 0
    #: principal -> entities it may push to and pull (missing: all)
    permissions: dict[str, list[str]] = attrs.Factory(dict)
    #: the server gives created records ids of its own
    assign_ids: bool = False
    #: entities whose records every principal shares (the others are private to their creator)
    shared: list[str] = attrs.Factory(list)
    store_options: dict[str, Any] = attrs.Factory(dict)
    #: days deletions stay in the change log as tombstones (0: forever)
    tombstone_retention_days: float = 30.0
    #: days mutation results stay to answer retries as duplicates (0: forever)
    mutation_retention_days: float = 30.0
    #: the app's schema (version, migration): the store is created or migrated to it on open
    schema: Schema | None = None
    #: seconds a JWT's exp (and nbf, iat) may be off (0: none; clocks should be in sync)
    jwt_leeway: float = 0.0
    #: origins browsers may call the server from (CORS; empty: none, "*": any)
    cors_origins: list[str] = attrs.Factory(list)
    #: seconds to wait for a request head, for the next piece of a body, and on an idle
    #: keep-alive connection (uvicorn; see syncline.server.http11)
    header_timeout: float = 10.0
    body_timeout: float = 30.0
    keep_alive_timeout: float = 5.0
    #: live change streams (GET /v1/changes/live) one process holds at most; more: 503
    max_live_clients: int = 1000
    #: seconds between two heartbeats on a live stream (a dead connection shows in one)
    live_heartbeat: float = 15.0

    def timeouts(self) -> Timeouts:
        return Timeouts(self.header_timeout, self.body_timeout, self.keep_alive_timeout)


def server_store_options(options: dict[str, Any]) -> dict[str, Any]:
    """A server store's options: writers queue on the sequence row, so READ COMMITTED is both
    safe and free of serialization failures (PostgreSQL; other backends ignore it)."""
    return {"isolation": "read committed", **options}


class HTTPError(Exception):
    def __init__(self, status: int, code: str, message: str, field: str | None = None,
                 headers: dict[str, str] | None = None) -> None:
        super().__init__(message)
        self.status, self.code, self.message, self.field = status, code, message, field
        self.headers = headers or {}


class JSON(JSONResponse):
    """A JSON answer that is always valid JSON in UTF-8.

    A value JSON cannot carry as it is (a lone surrogate, NaN or an infinity: only ever a
    bad stored value, as pushes are validated) is escaped or sent as null, and logged, rather
    than failing the answer.
    """

    def render(self, content: Any) -> bytes:
        try:
            return to_json(content)
        except (ValueError, TypeError):
            log.info("an answer held values JSON cannot carry as they are (lone surrogates "
                     "escaped, NaN and infinities sent as null)")
            return json.dumps(_finite(content), ensure_ascii=True, allow_nan=False,
                              separators=(",", ":")).encode("ascii")


def _finite(value: Any) -> Any:
    if isinstance(value, float) and not math.isfinite(value):
        return None
    if isinstance(value, dict):
        return {k: _finite(v) for k, v in value.items()}
    if isinstance(value, list | tuple):
        return [_finite(v) for v in value]
    return value


def error_response(err: HTTPError) -> JSONResponse:
    body = {"error": {"status": err.status, "code": err.code, "message": err.message,
                      "field": err.field}}
    return JSON(body, status_code=err.status, headers=err.headers)


def depth_problem(body: Any, limit: int = MAX_BODY_DEPTH) -> str | None:
    """Where ``body`` nests deeper than ``limit`` levels (a field path), or None."""
    stack: list[tuple[Any, int]] = [(body, 1)] if isinstance(body, dict | list) else []
    while stack:
        value, depth = stack.pop()
        children = value.values() if isinstance(value, dict) else value
        if depth > limit:
            return _deep_path(body, limit)
        stack.extend((c, depth + 1) for c in children if isinstance(c, dict | list))
    return None


def _deep_path(body: Any, limit: int) -> str:
    stack: list[tuple[Any, str, int]] = [(body, "", 1)]
    while stack:
        value, path, depth = stack.pop()
        if not isinstance(value, dict | list):
            continue
        if depth > limit:
            return path or "(the body)"
        items = value.items() if isinstance(value, dict) else enumerate(value)
        for key, child in items:
            where = f"{path}[{key}]" if isinstance(value, list) else \
                (f"{path}.{key}" if path else str(key))
            stack.append((child, where, depth + 1))
    return "(the body)"


#: a mutation's fields and the JSON types each takes (checked exactly: 1 is no string, "6" no
#: integer, true no integer)
_ENVELOPE: dict[str, tuple[type, ...]] = {
    "id": (str,), "entity": (str,), "action": (str,), "record_id": (str, type(None)),
    "payload": (dict, type(None)), "base_version": (int, type(None)),
    "command": (str, type(None)), "base": (dict, type(None)),
}
_JSON_NAMES = {str: "a string", int: "an integer", dict: "an object", type(None): "null"}


def envelope_problem(item: dict[str, Any]) -> str | None:
    """What is wrong with a mutation's fields (a JSON object), naming the field; None if
    nothing is. Types are checked exactly: 1 is no string, "6" no integer, true no integer.
    (The values, such as an id's length or a NUL in it, are the server's to check: it rejects
    that one mutation.)"""
    for name in item:
        if name not in _ENVELOPE:
            return f"{name}: unknown field; a mutation has {', '.join(_ENVELOPE)}"
    for name in ("id", "entity", "action"):
        if name not in item:
            return f"{name} is required"
    for name, types in _ENVELOPE.items():
        value = item.get(name)
        if not isinstance(value, types) or isinstance(value, bool):
            wanted = " or ".join(_JSON_NAMES[t] for t in types)
            return f"{name} must be {wanted}, not {json.dumps(value)[:40]}"
    if item["action"] not in ("create", "update", "delete", "command"):
        return (f"action {item['action']!r} is unknown; actions: create, update, delete, "
                "command")
    return None


class RateLimiter:
    """A token bucket per principal: ``per_minute`` requests, refilled continuously."""

    def __init__(self, per_minute: int) -> None:
        self.per_minute = per_minute
        self._buckets: dict[str, tuple[float, float]] = {}
        self._lock = threading.Lock()

    def check(self, principal: str) -> None:
        if self.per_minute <= 0:
            return
        now = time.monotonic()
        rate = self.per_minute / 60.0
        with self._lock:
            tokens, last = self._buckets.get(principal, (float(self.per_minute), now))
            tokens = min(float(self.per_minute), tokens + (now - last) * rate)
            if tokens < 1.0:
                wait = max(1, int((1.0 - tokens) / rate) + 1)
                self._buckets[principal] = (tokens, now)
                raise HTTPError(429, "rate_limited", f"too many requests; retry in {wait} s",
                                headers={"Retry-After": str(wait)})
            self._buckets[principal] = (tokens - 1.0, now)


class SyncApp:
    """The endpoints, bound to one store and configuration."""

    def __init__(self, config: ServerConfig, entities: Sequence[type]) -> None:
        self.config = config
        if not entities and config.schema is not None:
            entities = config.schema.entities
        self.entities = [e for e in entities if spec_of(e).syncs]
        if not self.entities:
            raise SynclineError("the server has no syncing entities to serve; pass entities "
                                "declared with @syncline.entity(..., syncs=True)")
        self.store: Any = None
        self.server: SyncServer | None = None
        self.limiter = RateLimiter(config.rate_limit)
        self.live: Notifier | None = None

    def open(self) -> None:
        schema = self.config.schema
        self.store = open_server_store(
            self.config.store, [] if schema is not None else self.entities, schema=schema,
            options=server_store_options(self.config.store_options))
        config = self.config
        for name in ("tombstone_retention_days", "mutation_retention_days"):
            value = getattr(config, name)
            if type(value) not in (int, float) or not 0 <= value < 100_000:
                raise ConfigurationError(f"{name} must be a number of days from 0 (forever) "
                                         f"to 100000, got {value!r}")

        def days(value: float) -> dt.timedelta | None:
            return dt.timedelta(days=value) if value > 0 else None

        self.server = SyncServer(self.store, assign_ids=config.assign_ids,
                                 max_page=config.max_page, shared=config.shared,
                                 tombstone_retention=days(config.tombstone_retention_days),
                                 mutation_retention=days(config.mutation_retention_days))
        self.live = notifier_for(self.store, config.max_live_clients)
        self.server.live = self.live
        self.live.start()

    def close(self) -> None:
        if self.live is not None:
            self.live.close()
            self.live = None
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- request plumbing --------------------------------------------------------------------

    async def _body(self, request: Request) -> Any:
        limit = self.config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and (not (length.isascii() and length.isdigit())
                                   or int(length) > limit):
            raise HTTPError(413, "too_large", f"the body exceeds {limit} bytes")
        media = request.headers.get("content-type")
        if media_problem(media):
            raise HTTPError(415, "bad_media_type", "the body must be sent as 'Content-Type: "
                            f"application/json', not {(media or 'none')[:80]!r}")
        chunks: list[bytes] = []
        size = 0
        async for chunk in request.stream():
            size += len(chunk)
            if size > limit:
                raise HTTPError(413, "too_large", f"the body exceeds {limit} bytes")
            chunks.append(chunk)
        raw = b"".join(chunks)
        encoding = request.headers.get("content-encoding", "identity").lower()
        if encoding == "gzip":
            try:
                inflater = zlib.decompressobj(16 + zlib.MAX_WBITS)
                raw = inflater.decompress(raw, limit + 1)
            except zlib.error as exc:
                raise HTTPError(400, "bad_encoding", f"invalid gzip body: {exc}") from exc
            if len(raw) > limit or inflater.unconsumed_tail:
                raise HTTPError(413, "too_large", f"the unpacked body exceeds {limit} bytes")
        elif encoding != "identity":
            raise HTTPError(415, "bad_encoding", f"unsupported Content-Encoding {encoding!r}; "
                            "send identity or gzip")
        try:
            body = json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, "bad_json", f"the body is not JSON: {exc}") from exc
        except RecursionError as exc:
            raise HTTPError(422, "too_deep", f"the body nests JSON deeper than "
                            f"{MAX_BODY_DEPTH} levels") from exc
        deep = depth_problem(body)
        if deep is not None:
            raise HTTPError(422, "too_deep", f"{deep} nests JSON deeper than {MAX_BODY_DEPTH} "
                            "levels (arrays and objects, counted from the body)", field=deep)
        return body

    def _principal(self, request: Request) -> Principal:
        negotiate(request)
        if self.server is not None:
            try:
                self.server.versions.shape(schema_of(request))
            except UpgradeRequiredError as exc:
                raise upgrade_required(exc) from exc
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            answer = self.store.plugins.hooks.authenticate(headers, self.config)
            principal = authenticate(headers, self.config, answer)
        except AuthenticationError as exc:
            raise HTTPError(401, "unauthenticated", str(exc),
                            headers={"WWW-Authenticate": "Bearer"}) from exc
        request.state.principal = principal.id
        self.limiter.check(principal.id)
        return principal

    def _known(self, request: Request) -> set[str]:
        """The entity names a request may name: the served ones, and for a client of the
        schema version before, its own (the server refuses those it cannot translate)."""
        known = {spec_of(c).table.name for c in self.entities}
        assert self.server is not None
        old = self.server.versions.old
        if old is not None and schema_of(request) == old.version:
            known |= {*old.entities, *old.gone}
        return known

    def _allowed(self, principal: Principal, entities: Sequence[str]) -> None:
        allowed = self.config.permissions.get(principal.id)
        if allowed is None or "*" in allowed:
            return
        for name in entities:
            if name and name not in allowed:
                raise HTTPError(403, "forbidden",
                                f"principal {principal.id!r} may not sync {name!r}")

    # -- endpoints ---------------------------------------------------------------------------

    async def health(self, request: Request) -> Response:
        assert self.server is not None
        epoch = await run_in_threadpool(lambda: self.server.epoch)  # type: ignore[union-attr]
        return JSONResponse({"status": "ok", "epoch": epoch, "version": syncline.__version__,
                             "protocol": PROTOCOLS, "schema_version": self.schema_version(),
                             "schema": self.schemas()})

    async def schema(self, request: Request) -> Response:
        return JSONResponse(self.describe())

    async def whoami(self, request: Request) -> Response:
        principal = self._principal(request)
        allowed = self.config.permissions.get(principal.id)
        names = [spec_of(c).table.name for c in self.entities]
        if allowed is not None and "*" not in allowed:
            names = [n for n in names if n in allowed]
        return JSONResponse({"principal": principal.id, "entities": names,
                             "shared": [n for n in names if n in self.config.shared]})

    def schema_version(self) -> int:
        return self.store.schema_version if self.store is not None else 1

    def schemas(self) -> dict[str, int]:
        """The schema versions of clients this server serves (``{"min", "max"}``)."""
        if self.server is None:
            version = self.schema_version()
            return {"min": version, "max": version}
        return self.server.versions.accepted

    def _entities(self, classes: Sequence[type]) -> list[dict[str, Any]]:
        entities = []
        for cls in classes:
            spec = spec_of(cls)
            entities.append({
                "name": spec.table.name, "primary_key": spec.primary_key,
                "shared": spec.table.name in self.config.shared,
                "fields": [{"name": f.name, "kind": f.kind, "nullable": f.nullable}
                           for f in spec.fields if not f.local],
            })
        return entities

    def describe_previous(self) -> dict[str, Any] | None:
        """The entities of the schema version before, whose clients the server serves
        (``{"version", "entities"}``), or None."""
        previous = self.server.versions.previous if self.server is not None else None
        if previous is None:
            return None
        return {"version": previous.version, "entities": self._entities(
            [c for c in previous.entities if spec_of(c).syncs])}

    def describe(self) -> dict[str, Any]:
        entities = self._entities(self.entities)
        config = self.config
        return {"entities": entities, "protocol": PROTOCOLS,
                "schema_version": self.schema_version(), "schema": self.schemas(),
                "limits": {
                    "max_body_bytes": config.max_body_bytes,
                    "max_mutations": config.max_mutations, "max_page": config.max_page,
                    "max_depth": MAX_BODY_DEPTH, "rate_limit": config.rate_limit,
                    "header_timeout": config.header_timeout,
                    "body_timeout": config.body_timeout,
                    "keep_alive_timeout": config.keep_alive_timeout,
                    "max_live_clients": config.max_live_clients,
                    "live_heartbeat": config.live_heartbeat}}

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(self.describe(), self.describe_previous()))

    async def push(self, request: Request) -> Response:
        started = time.perf_counter()
        principal = self._principal(request)
        body = await self._body(request)
        if not isinstance(body, dict) or not isinstance(body.get("mutations"), list):
            raise HTTPError(422, "invalid", "the body must be {\"mutations\": [...]}",
                            field="mutations")
        raw = body["mutations"]
        if len(raw) > self.config.max_mutations:
            raise HTTPError(413, "too_many", f"{len(raw)} mutations; at most "
                            f"{self.config.max_mutations} per push", field="mutations")
        extra = set(body) - {"mutations"}
        if extra:
            raise HTTPError(422, "invalid", f"unknown field {sorted(extra)[0]!r}",
                            field=sorted(extra)[0])
        mutations: list[Mutation] = []
        for i, item in enumerate(raw):
            if not isinstance(item, dict):
                raise HTTPError(422, "invalid", f"mutations[{i}] must be an object",
                                field=f"mutations[{i}]")
            problem = envelope_problem(item)
            if problem is None and item.get("base") is not None and protocol_of(request) < 2:
                problem = "base: a patch needs Syncline-Protocol 2 or later"
            if problem is not None:
                raise HTTPError(422, "invalid", f"mutations[{i}].{problem}",
                                field=f"mutations[{i}]")
            try:
                mutations.append(from_wire(item, Mutation))
            except SerializationError as exc:
                raise HTTPError(422, "invalid", str(exc), field=f"mutations[{i}]") from exc
        known = self._known(request)
        for i, m in enumerate(mutations):
            if m.action != "command" and m.entity not in known:
                raise HTTPError(422, "unknown_entity", f"mutations[{i}].entity: "
                                f"{unknown_entity(m.entity, known)}",
                                field=f"mutations[{i}].entity")
        ids = [m.id for m in mutations]
        if len(set(ids)) != len(ids):
            raise HTTPError(409, "duplicate_id", "a mutation id appears twice in the batch",
                            field="mutations")
        self._allowed(principal, [m.entity for m in mutations if m.action != "command"])
        server = self.server
        assert server is not None
        try:
            response = await run_in_threadpool(server.push, mutations, principal.id,
                                               schema_of(request), client=client_of(request))
        except UpgradeRequiredError as exc:
            raise upgrade_required(exc) from exc
        self._log_push(principal, mutations, response, time.perf_counter() - started)
        return JSON(to_wire(response))

    @staticmethod
    def _log_push(principal: Principal, mutations: list[Mutation], response: PushResponse,
                  seconds: float) -> None:
        counts = dict.fromkeys(("applied", "duplicate", "conflict", "rejected", "retry"), 0)
        for m, result in zip(mutations, response.results, strict=False):
            counts[result.status] = counts.get(result.status, 0) + 1
            if result.status == "rejected":
                push_log.info("push by %r: mutation %r (%s %s %r) rejected: %s", principal.id,
                              m.id, m.action, m.entity, m.record_id or m.command, result.reason)
            elif result.status == "conflict":
                push_log.debug("push by %r: mutation %r (%s %s %r) conflicts at version %s",
                               principal.id, m.id, m.action, m.entity, m.record_id,
                               result.version)
        # INFO when something was not applied as sent; a clean push is DEBUG
        clean = counts["applied"] + counts["duplicate"] == len(mutations)
        push_log.log(logging.DEBUG if clean else logging.INFO,
                     "push by %r: %d mutations: %s in %.1f ms", principal.id, len(mutations),
                     ", ".join(f"{n} {status}" for status, n in counts.items()),
                     seconds * 1000)

    async def changes_live(self, request: Request) -> Response:
        principal = self._principal(request)
        known = [spec_of(c).table.name for c in self.entities]
        raw = request.query_params.get("entities")
        allowed = self.config.permissions.get(principal.id)
        names = [n for n in raw.split(",") if n] if raw else [
            n for n in known if allowed is None or "*" in allowed or n in allowed]
        for name in names:
            if name not in known:
                raise HTTPError(422, "unknown_entity", f"entities: {unknown_entity(name, known)}",
                                field="entities")
        extra = set(request.query_params) - {"entities"}
        if extra:
            raise HTTPError(422, "invalid", f"unknown parameter {sorted(extra)[0][:40]!r}; "
                            "the stream takes entities=a,b", field=sorted(extra)[0][:40])
        self._allowed(principal, names)
        live = self.live
        sub = live.subscribe(principal.id, names, client_of(request)) if live else None
        if live is None or sub is None:
            raise HTTPError(503, "unavailable", f"this server process holds its maximum of "
                            f"{self.config.max_live_clients} live streams; poll, and retry in "
                            f"{UNAVAILABLE_RETRY_AFTER} s",
                            headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)})
        request.scope["syncline.live"] = True  # closed at shutdown (syncline.server.http11)
        committed = await run_in_threadpool(self.committed_seq)
        return StreamingResponse(
            live_events(sub, live, committed, self.config.live_heartbeat),
            media_type="text/event-stream",
            headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})

    def committed_seq(self) -> int:
        assert self.server is not None
        return self.server.committed_seq()

    async def pull(self, request: Request) -> Response:
        started = time.perf_counter()
        principal = self._principal(request)
        body = await self._body(request)
        if not isinstance(body, dict):
            raise HTTPError(422, "invalid", "the body must be a JSON object")
        extra = set(body) - {"cursor", "limit", "entities"}
        if extra:
            raise HTTPError(422, "invalid", f"unknown field {sorted(extra)[0]!r}",
                            field=sorted(extra)[0])
        cursor = body.get("cursor")
        limit = body.get("limit", self.config.max_page)
        entities = body.get("entities")
        if cursor is not None and not isinstance(cursor, str):
            raise HTTPError(422, "invalid", "cursor must be a string or null", field="cursor")
        if isinstance(limit, bool) or not isinstance(limit, int) or limit < 1:
            raise HTTPError(422, "invalid", "limit must be a positive integer", field="limit")
        if entities is not None and (not isinstance(entities, list) or
                                     not all(isinstance(e, str) for e in entities)):
            raise HTTPError(422, "invalid", "entities must be a list of names",
                            field="entities")
        known = self._known(request)
        for name in entities or ():
            if name not in known:
                raise HTTPError(422, "unknown_entity", f"entities: "
                                f"{unknown_entity(name, known)}", field="entities")
        names = entities or [spec_of(c).table.name for c in self.entities]
        self._allowed(principal, names)
        server = self.server
        assert server is not None
        try:
            page: PullPage = await run_in_threadpool(
                server.pull, cursor, min(limit, self.config.max_page), entities or None,
                principal.id, schema_of(request))
        except UpgradeRequiredError as exc:
            raise upgrade_required(exc) from exc
        except InvalidCursorError as exc:
            raise HTTPError(400, "invalid_cursor", str(exc), field="cursor") from exc
        except SerializationError as exc:
            raise HTTPError(422, "invalid", str(exc), field="cursor") from exc
        except NotFoundError as exc:
            raise HTTPError(422, "unknown_entity", str(exc), field="entities") from exc
        try:
            content = to_json(pull_body(page, request))
        except Exception:  # one stored change that cannot be sent
            page = sendable(page)  # leaves out (and logs) what JSON cannot carry
            content = to_json(pull_body(page, request))
        pull_log.debug("pull by %r: %d changes%s in %.1f ms", principal.id, len(page.changes),
                       " (more)" if page.more else "", (time.perf_counter() - started) * 1000)
        return Response(content, media_type="application/json")


def pull_body(page: PullPage, request: Request) -> dict[str, Any]:
    """A pull's answer; ``settled`` is protocol 2 (a protocol 1 client refuses unknown keys)."""
    body = to_wire(page)
    if protocol_of(request) < 2:
        del body["settled"]
    return body


def sse(event: str, seq: int, extra: str = "") -> bytes:
    data = json.dumps({"seq": seq}, separators=(",", ":"))
    return f"{extra}event: {event}\nid: {seq}\ndata: {data}\n\n".encode()


async def live_events(sub: Subscription, live: Notifier, committed: int,
                      heartbeat: float) -> AsyncIterator[bytes]:
    """A live stream's events: ``ready`` at once (the client pulls, catching up on what it
    missed while away), then ``change`` when the principal's data changed, and a comment
    line every ``heartbeat`` seconds."""
    try:
        yield sse("ready", committed, f"retry: {LIVE_RETRY_MS}\n")
        while True:
            try:
                await asyncio.wait_for(sub.event.wait(), heartbeat)
            except TimeoutError:
                yield b": heartbeat\n\n"
                continue
            if sub.ended:
                return
            seq = sub.take()
            yield sse("change", seq)
    finally:
        live.unsubscribe(sub)


#: milliseconds an EventSource waits before reconnecting (the SSE "retry" field)
LIVE_RETRY_MS = 1000

#: request headers a browser may send across origins (CORS)
CORS_HEADERS = ("Authorization", "Content-Type", "Content-Encoding", "Syncline-Protocol",
                "Syncline-Schema", "Syncline-Client")
#: the protocol versions this server accepts (published in /v1/health and /v1/schema)
PROTOCOLS = {"min": 1, "max": PROTOCOL_VERSION}


def protocol_of(request: Request) -> int:
    """The protocol version of a request :func:`negotiate` accepted."""
    return int(request.headers.get("syncline-protocol", "1").strip())


def negotiate(request: Request) -> None:
    """Refuse a client whose ``Syncline-Protocol`` (missing: 1, the first version) is outside
    :data:`PROTOCOLS`, or whose ``Syncline-Schema`` is not a version number."""
    sent = request.headers.get("syncline-protocol", "1").strip()
    version = int(sent) if sent.isascii() and sent.isdigit() and len(sent) < 10 else None
    if version is None or not PROTOCOLS["min"] <= version <= PROTOCOLS["max"]:
        raise HTTPError(400, "unsupported_protocol", f"this server speaks the sync protocol "
                        f"versions {PROTOCOLS['min']} to {PROTOCOLS['max']}, the client sent "
                        f"Syncline-Protocol {sent[:20]!r}; upgrade the older side",
                        field="Syncline-Protocol")
    schema = request.headers.get("syncline-schema")
    if schema is not None and not (schema.isascii() and schema.strip().isdigit()
                                   and len(schema) < 10):
        raise HTTPError(400, "invalid", f"Syncline-Schema must be the client's schema version "
                        f"(an integer), not {schema[:20]!r}", field="Syncline-Schema")
    client = request.headers.get("syncline-client")
    if client is not None and not (client.isascii() and 0 < len(client) <= 64 and all(
            c.isalnum() or c in "-_.:" for c in client)):
        raise HTTPError(400, "invalid", f"Syncline-Client must be the client's id (1 to 64 "
                        f"letters, digits, '-', '_', '.' or ':'), not {client[:20]!r}",
                        field="Syncline-Client")


def client_of(request: Request) -> str | None:
    """The client's id (``Syncline-Client``, checked by :func:`negotiate`), if it sent one:
    its live stream is not told of its own pushes."""
    return request.headers.get("syncline-client")


def schema_of(request: Request) -> int | None:
    """The client's schema version (``Syncline-Schema``, checked by :func:`negotiate`);
    None when not sent: a client from before the header, served as the server's own."""
    sent = request.headers.get("syncline-schema")
    return None if sent is None else int(sent.strip())


def upgrade_required(exc: UpgradeRequiredError) -> HTTPError:
    """The answer to a client whose schema version the server does not serve."""
    return HTTPError(409, "upgrade_required", str(exc), field="Syncline-Schema")


def media_problem(media: str | None) -> bool:
    """Whether a Content-Type is not JSON in UTF-8 (``application/json``, maybe with
    ``charset=utf-8``)."""
    if media is None:
        return True
    kind, _, params = media.partition(";")
    if kind.strip().lower() != "application/json":
        return True
    for param in params.split(";"):
        name, _, value = param.strip().partition("=")
        if name and (name.lower() != "charset" or value.strip('"').lower() != "utf-8"):
            return True
    return False


def unknown_entity(name: Any, known: Any) -> str:
    return (f"unknown entity {str(name)[:80]!r}; the server syncs: "
            f"{', '.join(sorted(known))}")


def _unavailable(exc: BaseException) -> bool:
    """Whether ``exc`` says the store is unreachable or busy (worth a 503), not broken."""
    if isinstance(exc, BackendUnavailableError | TransactionConflictError):
        return True
    if isinstance(exc, BackendError):
        cause = exc.__cause__
        return isinstance(cause, sqlite3.OperationalError) and any(
            word in str(cause) for word in ("locked", "busy"))
    return False


def _peer(request: Request) -> str:
    client = request.client
    return f"{client.host}:{client.port}" if client else "unknown"


def _who(request: Request) -> str | None:
    return getattr(request.state, "principal", None)


def refused(request: Request, err: HTTPError) -> None:
    """Log a refused request: one line at INFO (DEBUG for 429)."""
    http_log.log(logging.DEBUG if err.status == 429 else logging.INFO,
                 "%s %s refused with %d %s (principal %r, client %s): %s%s", request.method,
                 request.url.path, err.status, err.code, _who(request), _peer(request),
                 err.message, f" [field {err.field}]" if err.field else "")


def log_config(level: str = "info") -> dict[str, Any]:
    """uvicorn's logging configuration with syncline's loggers added at ``level`` (to stderr,
    each line naming its logger): what ``syncline serve --log-level`` runs with."""
    import copy

    from uvicorn.config import LOGGING_CONFIG

    config: dict[str, Any] = copy.deepcopy(LOGGING_CONFIG)
    config["formatters"]["syncline"] = {"()": "uvicorn.logging.DefaultFormatter",
                                        "fmt": "%(levelprefix)s %(name)s: %(message)s"}
    config["handlers"]["syncline"] = {"formatter": "syncline", "class": "logging.StreamHandler",
                                      "stream": "ext://sys.stderr"}
    config["loggers"]["syncline"] = {"handlers": ["syncline"], "level": level.upper(),
                                     "propagate": False}
    return config


def create_app(config: ServerConfig, entities: Sequence[type]) -> Starlette:
    """The server as an ASGI app (run it with uvicorn, or ``syncline serve``)."""
    sync = SyncApp(config, entities)

    def guarded(endpoint: Any) -> Any:
        async def handler(request: Request) -> Response:
            try:
                result: Response = await endpoint(request)
                return result
            except HTTPError as err:
                refused(request, err)
                return error_response(err)
            except ClientDisconnect:
                # One line, not a traceback: the request was not complete, so nothing was done.
                http_log.info("%s %s: the client (%s, principal %r) went away before sending "
                              "the whole request; nothing was done", request.method,
                              request.url.path, _peer(request), _who(request))
                return Response(status_code=400)
            except SerializationError as exc:
                bad = HTTPError(422, "invalid", str(exc))
                refused(request, bad)
                return error_response(bad)
            except Exception as exc:
                if _unavailable(exc):
                    log.warning("%s %s: the store is unavailable, answering 503: %s",
                                request.method, request.url.path, exc)
                    return error_response(HTTPError(
                        503, "unavailable", "the server's store is unavailable or busy; "
                        f"retry in {UNAVAILABLE_RETRY_AFTER} s",
                        headers={"Retry-After": str(UNAVAILABLE_RETRY_AFTER)}))
                log.exception("the sync server failed on %s %s", request.method,
                              request.url.path)
                return error_response(HTTPError(500, "internal", "the server failed; see its log"))

        return handler

    @asynccontextmanager
    async def lifespan(app: Starlette) -> AsyncIterator[None]:
        await run_in_threadpool(sync.open)
        try:
            yield
        finally:
            await run_in_threadpool(sync.close)

    routes = [
        Route("/v1/health", guarded(sync.health), methods=["GET"]),
        Route("/v1/schema", guarded(sync.schema), methods=["GET"]),
        Route("/v1/openapi.json", guarded(sync.openapi), methods=["GET"]),
        Route("/v1/whoami", guarded(sync.whoami), methods=["GET"]),
        Route("/v1/push", guarded(sync.push), methods=["POST"]),
        Route("/v1/pull", guarded(sync.pull), methods=["POST"]),
        Route("/v1/changes/live", guarded(sync.changes_live), methods=["GET"]),
    ]
    middleware = [Middleware(GZipMiddleware, minimum_size=1024)]
    if config.cors_origins:
        middleware.insert(0, Middleware(
            CORSMiddleware, allow_origins=list(config.cors_origins),
            allow_methods=["GET", "POST"], allow_headers=list(CORS_HEADERS),
            expose_headers=["Retry-After", "WWW-Authenticate"], max_age=600))

    async def failed(request: Request, exc: Exception) -> Response:
        # what escaped every handler (a middleware's fault): still the error shape
        log.error("the sync server failed on %s %s", request.method, request.url.path,
                  exc_info=exc)
        return error_response(HTTPError(500, "internal", "the server failed; see its log"))

    app = Starlette(routes=routes, lifespan=lifespan, middleware=middleware,
                    exception_handlers={Exception: failed})
    app.state.sync = sync

    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        return error_response(HTTPError(code, "not_found" if code == 404 else "bad_request",
                                        f"no endpoint {request.method} {request.url.path}"))

    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, not_found)
    return app
