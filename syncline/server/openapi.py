"""The OpenAPI 3 document the server serves at ``/v1/openapi.json``."""

from __future__ import annotations

from typing import Any

_KIND_SCHEMA: dict[str, dict[str, Any]] = {
    "text": {"type": "string"}, "integer": {"type": "integer"}, "float": {"type": "number"},
    "boolean": {"type": "boolean"}, "bytes": {"type": "string", "format": "byte"},
    "datetime": {"type": "string", "format": "date-time"},
    "date": {"type": "string", "format": "date"}, "uuid": {"type": "string", "format": "uuid"},
    "decimal": {"type": "string"}, "json": {},
}


#: every error code the server answers with (the ``code`` of the error shape)
ERROR_CODES = ("bad_json", "bad_encoding", "bad_media_type", "bad_request", "invalid_cursor",
               "unauthenticated", "forbidden", "not_found", "duplicate_id", "too_large",
               "too_many", "invalid", "too_deep", "unknown_entity", "unsupported_protocol",
               "upgrade_required", "rate_limited", "timeout", "internal", "unavailable")

_ID = {"type": "string", "minLength": 1, "maxLength": 255}
_NULLABLE_STRING = {"type": "string", "nullable": True}


def _ref(name: str) -> dict[str, Any]:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict[str, Any], description: str) -> dict[str, Any]:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _object(required: list[str] | None = None, **properties: Any) -> dict[str, Any]:
    return {"type": "object", "required": required or list(properties),
            "properties": properties}


def _record(entity: dict[str, Any]) -> dict[str, Any]:
    return {"type": "object", "additionalProperties": False, "properties": {
        f["name"]: ({**_KIND_SCHEMA[f["kind"]], "nullable": True} if f["nullable"]
                    else _KIND_SCHEMA[f["kind"]])
        for f in entity["fields"]}}


def _record_mutation(name: str, old: int | None = None) -> dict[str, Any]:
    records = [_ref(f"Record_{name}"), _ref(f"Patch_{name}")]
    patches = [_ref(f"Patch_{name}")]
    if old is not None:  # a client of the schema version before sends its own shape
        records += [_ref(f"Record_{name}_v{old}"), _ref(f"Patch_{name}_v{old}")]
        patches += [_ref(f"Patch_{name}_v{old}")]
    return {"type": "object", "required": ["id", "entity", "action"],
            "additionalProperties": False, "properties": {
                "id": _ID, "entity": {"type": "string", "enum": [name]},
                "action": {"type": "string", "enum": ["create", "update", "delete"]},
                "record_id": {**_ID, "nullable": True},
                "payload": {"nullable": True, "anyOf": records},
                "base_version": {"type": "integer", "nullable": True},
                "command": _NULLABLE_STRING,
                "base": {"nullable": True, "anyOf" if old is not None else "allOf": patches}}}


def _patch(entity: dict[str, Any]) -> dict[str, Any]:
    """Protocol 2: an update's payload (the changed fields) and its base (their values at
    ``base_version``), any subset of the record's fields."""
    return {**_record(entity), "description": "any subset of the record's fields"}


def _change(name: str, old: int | None = None) -> dict[str, Any]:
    shapes = [_ref(f"Record_{name}")] + ([_ref(f"Record_{name}_v{old}")] if old else [])
    return _object(
        ["entity", "record_id", "op", "version"],
        entity={"type": "string", "enum": [name]}, record_id={"type": "string"},
        op={"type": "string", "enum": ["upsert", "delete"]}, version={"type": "integer"},
        payload={"nullable": True, "anyOf" if old else "allOf": shapes},
        updated_at=_NULLABLE_STRING, mutation_id=_NULLABLE_STRING)


def openapi_document(schema: dict[str, Any],
                     previous: dict[str, Any] | None = None) -> dict[str, Any]:
    """The OpenAPI 3.0 document of a server described by ``SyncApp.describe()``;
    ``previous`` (``{"version", "entities"}``, described alike) adds the shapes of the schema
    version before, which its clients send and receive (``Record_<entity>_v<version>``)."""
    limits = schema["limits"]
    protocol = schema["protocol"]
    names = [e["name"] for e in schema["entities"]]
    old_entities = [e for e in (previous or {}).get("entities", ()) if e["name"] in names]
    old = previous["version"] if previous is not None else None
    shaped = {e["name"] for e in old_entities}
    command = {
        "type": "object", "required": ["id", "entity", "action", "command"],
        "additionalProperties": False, "properties": {
            "id": _ID, "entity": {"type": "string"},
            "action": {"type": "string", "enum": ["command"]},
            "record_id": {**_ID, "nullable": True},
            "payload": {"type": "object", "nullable": True},
            "base_version": {"type": "integer", "nullable": True},
            "command": {"type": "string", "minLength": 1}}}
    result = _object(
        ["id", "status"], id={"type": "string"},
        status={"type": "string",
                "enum": ["applied", "duplicate", "conflict", "rejected", "retry"]},
        server_id=_NULLABLE_STRING, version={"type": "integer", "nullable": True},
        record={"type": "object", "nullable": True}, updated_at=_NULLABLE_STRING,
        reason=_NULLABLE_STRING, retry_after={"type": "number", "nullable": True},
        fields={"type": "array", "items": {"type": "string"}, "nullable": True})
    error = _object(error=_object(
        status={"type": "integer"}, code={"type": "string", "enum": list(ERROR_CODES)},
        message={"type": "string"}, field=_NULLABLE_STRING))
    versions = _object(min={"type": "integer"}, max={"type": "integer"})
    schema_range = schema.get("schema", {"min": 1, "max": schema["schema_version"]})
    limit_schema = _object(None, **{
        key: {"type": "integer" if isinstance(value, int) else "number"}
        for key, value in limits.items()})
    entity_schema = _object(
        name={"type": "string", "enum": names}, primary_key={"type": "string"},
        shared={"type": "boolean"}, fields={"type": "array", "items": _object(
            name={"type": "string"}, kind={"type": "string", "enum": list(_KIND_SCHEMA)},
            nullable={"type": "boolean"})})
    errors = {str(code): _json(_ref("Error"), "an error (see code)")
              for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)}
    header = [{"name": "Syncline-Protocol", "in": "header", "required": False,
               "description": "the client's protocol version (missing: 1)",
               "schema": {"type": "integer", "minimum": protocol["min"],
                          "maximum": protocol["max"]}},
              {"name": "Syncline-Schema", "in": "header", "required": False,
               "description": "the client's schema version (missing: the server's); outside "
                              "the published range: 409 upgrade_required",
               "schema": {"type": "integer", "minimum": schema_range["min"],
                          "maximum": schema_range["max"]}},
              {"name": "Syncline-Client", "in": "header", "required": False,
               "description": "the client's id: its live stream is not told of its own pushes",
               "schema": {"type": "string", "pattern": "^[A-Za-z0-9_.:-]{1,64}$"}}]
    secured: list[dict[str, list[str]]] = [{"bearer": []}]

    def body(schema: dict[str, Any]) -> dict[str, Any]:
        return {"required": True, "content": {"application/json": {"schema": schema}}}

    return {
        "openapi": "3.0.3",
        "info": {"title": "syncline sync protocol", "version": str(protocol["max"])},
        "paths": {
            "/v1/health": {"get": {"operationId": "health", "security": [], "responses": {
                "200": _json(_object(status={"type": "string", "enum": ["ok"]},
                                     epoch={"type": "string"}, version={"type": "string"},
                                     protocol=versions, schema_version={"type": "integer"},
                                     schema=versions),
                             "the server is up"), **errors}}},
            "/v1/schema": {"get": {"operationId": "schema", "security": [], "responses": {
                "200": _json(_object(entities={"type": "array", "items": entity_schema},
                                     protocol=versions, schema_version={"type": "integer"},
                                     schema=versions, limits=limit_schema),
                             "entities and limits"),
                **errors}}},
            "/v1/whoami": {"get": {
                "operationId": "whoami", "security": secured, "parameters": header,
                "responses": {"200": _json(_object(
                    principal={"type": "string"},
                    entities={"type": "array", "items": {"type": "string", "enum": names}},
                    shared={"type": "array", "items": {"type": "string", "enum": names}}),
                    "who the credentials stand for, and what they may sync"), **errors}}},
            "/v1/push": {"post": {
                "operationId": "push", "security": secured, "parameters": header,
                "requestBody": body({
                    "type": "object", "required": ["mutations"], "additionalProperties": False,
                    "properties": {"mutations": {
                        "type": "array", "maxItems": limits["max_mutations"],
                        "items": _ref("Mutation")}}}),
                "responses": {"200": _json(_object(
                    ["results"], results={"type": "array", "items": _ref("Result")},
                    server_time=_NULLABLE_STRING), "one result per mutation, in order"),
                    **errors}}},
            "/v1/pull": {"post": {
                "operationId": "pull", "security": secured, "parameters": header,
                "requestBody": body({
                    "type": "object", "additionalProperties": False, "properties": {
                        "cursor": _NULLABLE_STRING,
                        "limit": {"type": "integer", "minimum": 1},
                        "entities": {"type": "array",
                                     "items": {"type": "string", "enum": names}}}}),
                "responses": {"200": _json(_object(
                    ["changes", "cursor", "more", "epoch"],
                    changes={"type": "array", "items": _ref("Change")},
                    cursor={"type": "string"}, more={"type": "boolean"},
                    epoch={"type": "string"}, server_time=_NULLABLE_STRING,
                    settled={"type": "boolean"}),
                    "a page of changes"), **errors}}},
            "/v1/changes/live": {"get": {
                "operationId": "changesLive", "security": secured,
                "description": "server-sent events: `ready` at once, then `change` when the "
                               "principal's data changed (`data: {\"seq\": N}`: pull now), a "
                               "comment line as a heartbeat; see docs/protocol.md",
                "parameters": [*header, {
                    "name": "entities", "in": "query", "required": False,
                    "description": "comma-separated entity names (missing: all it may sync)",
                    "schema": {"type": "string"}}],
                "responses": {"200": {"description": "the stream", "content": {
                    "text/event-stream": {"schema": {"type": "string"}}}}, **errors}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Mutation": {"oneOf": [*(_ref(f"Mutation_{n}") for n in names),
                                       _ref("CommandMutation")]},
                "CommandMutation": command, "Result": result,
                "Change": {"oneOf": [_ref(f"Change_{n}") for n in names]},
                "Error": error,
                **{f"Mutation_{n}": _record_mutation(n, old if n in shaped else None)
                   for n in names},
                **{f"Change_{n}": _change(n, old if n in shaped else None) for n in names},
                **{f"Record_{e['name']}_v{old}": _record(e) for e in old_entities},
                **{f"Patch_{e['name']}_v{old}": _patch(e) for e in old_entities},
                **{f"Record_{e['name']}": _record(e) for e in schema["entities"]},
                **{f"Patch_{e['name']}": _patch(e) for e in schema["entities"]},
            },
        },
        "x-syncline-limits": limits,
        "x-syncline-protocol": protocol,
        "x-syncline-schema": schema_range,
    }
