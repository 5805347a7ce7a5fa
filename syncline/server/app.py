"""The reference sync server: the sync protocol over HTTP, as a Starlette app.

``POST /v1/push`` and ``POST /v1/pull`` carry the protocol's messages as JSON (gzip welcome both
ways); ``GET /v1/health``, ``GET /v1/schema`` and ``GET /v1/openapi.json`` describe the server.
Every request is authenticated (plugins first, then bearer tokens from configuration, then
JWTs) and every record belongs to the principal that wrote it. Errors share one format,
``{"error": {"status": 413, "code": "too_large", "message": "...", "field": null}}``, and a
refused request changes nothing. The app holds no state besides its store, so several
processes can serve one PostgreSQL database.
"""

from __future__ import annotations

import json
import logging
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
from starlette.middleware.gzip import GZipMiddleware
from starlette.requests import Request
from starlette.responses import JSONResponse, Response
from starlette.routing import Route

import syncline
from syncline.core.errors import (
    AuthenticationError,
    NotFoundError,
    SerializationError,
    SynclineError,
)
from syncline.core.migration import Schema
from syncline.core.schema import spec_of
from syncline.core.serverside import SERVER_ENTITIES, SyncServer
from syncline.core.transport import Mutation, from_wire, to_wire
from syncline.server.auth import Principal, authenticate
from syncline.server.openapi import openapi_document

log = logging.getLogger("syncline.server")


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
    #: the app's schema (version, migration): the store is created or migrated to it on open
    schema: Schema | None = None


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


def error_response(err: HTTPError) -> JSONResponse:
    body = {"error": {"status": err.status, "code": err.code, "message": err.message,
                      "field": err.field}}
    return JSONResponse(body, status_code=err.status, headers=err.headers)


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

    def open(self) -> None:
        schema = self.config.schema
        entities = SERVER_ENTITIES if schema is not None else [*self.entities, *SERVER_ENTITIES]
        self.store = syncline.open(self.config.store, entities=entities, schema=schema,
                                   options=server_store_options(self.config.store_options))
        self.server = SyncServer(self.store, assign_ids=self.config.assign_ids,
                                 max_page=self.config.max_page, shared=self.config.shared)

    def close(self) -> None:
        if self.store is not None:
            self.store.close()
            self.store = None

    # -- request plumbing --------------------------------------------------------------------

    async def _body(self, request: Request) -> Any:
        limit = self.config.max_body_bytes
        length = request.headers.get("content-length")
        if length is not None and (not length.isdigit() or int(length) > limit):
            raise HTTPError(413, "too_large", f"the body exceeds {limit} bytes")
        chunks, size = [], 0
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
            return json.loads(raw)
        except (ValueError, UnicodeDecodeError) as exc:
            raise HTTPError(400, "bad_json", f"the body is not JSON: {exc}") from exc

    def _principal(self, request: Request) -> Principal:
        headers = {k.lower(): v for k, v in request.headers.items()}
        try:
            answer = self.store.plugins.hooks.authenticate(headers, self.config)
            principal = authenticate(headers, self.config, answer)
        except AuthenticationError as exc:
            raise HTTPError(401, "unauthenticated", str(exc),
                            headers={"WWW-Authenticate": "Bearer"}) from exc
        self.limiter.check(principal.id)
        return principal

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
        return JSONResponse({"status": "ok", "epoch": epoch, "version": syncline.__version__})

    async def schema(self, request: Request) -> Response:
        return JSONResponse(self.describe())

    def describe(self) -> dict[str, Any]:
        entities = []
        for cls in self.entities:
            spec = spec_of(cls)
            entities.append({
                "name": spec.table.name, "primary_key": spec.primary_key,
                "shared": spec.table.name in self.config.shared,
                "fields": [{"name": f.name, "kind": f.kind, "nullable": f.nullable}
                           for f in spec.fields],
            })
        return {"entities": entities, "limits": {
            "max_body_bytes": self.config.max_body_bytes,
            "max_mutations": self.config.max_mutations, "max_page": self.config.max_page}}

    async def openapi(self, request: Request) -> Response:
        return JSONResponse(openapi_document(self.describe()))

    async def push(self, request: Request) -> Response:
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
            try:
                mutations.append(from_wire(item, Mutation))
            except SerializationError as exc:
                raise HTTPError(422, "invalid", str(exc), field=f"mutations[{i}]") from exc
        ids = [m.id for m in mutations]
        if len(set(ids)) != len(ids):
            raise HTTPError(409, "duplicate_id", "a mutation id appears twice in the batch",
                            field="mutations")
        self._allowed(principal, [m.entity for m in mutations if m.action != "command"])
        server = self.server
        assert server is not None
        response = await run_in_threadpool(server.push, mutations, principal.id)
        return JSONResponse(to_wire(response))

    async def pull(self, request: Request) -> Response:
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
        names = entities or [spec_of(c).table.name for c in self.entities]
        self._allowed(principal, names)
        server = self.server
        assert server is not None
        try:
            page = await run_in_threadpool(server.pull, cursor, min(limit, self.config.max_page),
                                           names, principal.id)
        except SerializationError as exc:
            raise HTTPError(422, "invalid", str(exc), field="cursor") from exc
        except NotFoundError as exc:
            raise HTTPError(404, "not_found", str(exc), field="entities") from exc
        return JSONResponse(to_wire(page))


def create_app(config: ServerConfig, entities: Sequence[type]) -> Starlette:
    """The server as an ASGI app (run it with uvicorn, or ``syncline serve``)."""
    sync = SyncApp(config, entities)

    def guarded(endpoint: Any) -> Any:
        async def handler(request: Request) -> Response:
            try:
                result: Response = await endpoint(request)
                return result
            except HTTPError as err:
                return error_response(err)
            except SerializationError as exc:
                return error_response(HTTPError(422, "invalid", str(exc)))
            except Exception:
                log.exception("the sync server failed on %s %s", request.method, request.url.path)
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
        Route("/v1/push", guarded(sync.push), methods=["POST"]),
        Route("/v1/pull", guarded(sync.pull), methods=["POST"]),
    ]
    app = Starlette(routes=routes, lifespan=lifespan,
                    middleware=[Middleware(GZipMiddleware, minimum_size=1024)])
    app.state.sync = sync

    async def not_found(request: Request, exc: Exception) -> Response:
        code = getattr(exc, "status_code", 404)
        return error_response(HTTPError(code, "not_found" if code == 404 else "bad_request",
                                        f"no endpoint {request.method} {request.url.path}"))

    app.add_exception_handler(404, not_found)
    app.add_exception_handler(405, not_found)
    return app
