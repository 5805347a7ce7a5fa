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


def _error() -> dict[str, Any]:
    return {"description": "an error", "content": {"application/json": {"schema": {
        "$ref": "#/components/schemas/Error"}}}}


def openapi_document(schema: dict[str, Any]) -> dict[str, Any]:
    limits = schema["limits"]
    entities = [e["name"] for e in schema["entities"]]
    records = {
        e["name"]: {
            "type": "object",
            "properties": {f["name"]: ({**_KIND_SCHEMA[f["kind"]], "nullable": True}
                                       if f["nullable"] else _KIND_SCHEMA[f["kind"]])
                           for f in e["fields"]},
            "additionalProperties": False,
        }
        for e in schema["entities"]
    }
    mutation = {
        "type": "object", "required": ["id", "entity", "action"], "additionalProperties": False,
        "properties": {
            "id": {"type": "string"}, "entity": {"type": "string"},
            "action": {"type": "string", "enum": ["create", "update", "delete", "command"]},
            "record_id": {"type": "string", "nullable": True},
            "payload": {"type": "object", "nullable": True},
            "base_version": {"type": "integer", "nullable": True},
            "command": {"type": "string", "nullable": True},
        },
    }
    result = {"type": "object", "properties": {
        "id": {"type": "string"},
        "status": {"type": "string",
                   "enum": ["applied", "duplicate", "conflict", "rejected", "retry"]},
        "server_id": {"type": "string", "nullable": True},
        "version": {"type": "integer", "nullable": True},
        "record": {"type": "object", "nullable": True},
        "updated_at": {"type": "string", "nullable": True},
        "reason": {"type": "string", "nullable": True},
        "retry_after": {"type": "number", "nullable": True},
    }}
    change = {"type": "object", "properties": {
        "entity": {"type": "string"}, "record_id": {"type": "string"},
        "op": {"type": "string", "enum": ["upsert", "delete"]}, "version": {"type": "integer"},
        "payload": {"type": "object", "nullable": True},
        "updated_at": {"type": "string", "nullable": True},
        "mutation_id": {"type": "string", "nullable": True},
    }}
    errors = {str(code): _error()
              for code in (400, 401, 403, 404, 409, 413, 415, 422, 429, 500, 503)}
    secured: list[dict[str, list[str]]] = [{"bearer": []}]
    return {
        "openapi": "3.0.3",
        "info": {"title": "syncline sync protocol", "version": "1"},
        "paths": {
            "/v1/health": {"get": {"operationId": "health", "security": [], "responses": {
                "200": {"description": "the server is up"}}}},
            "/v1/schema": {"get": {"operationId": "schema", "security": [], "responses": {
                "200": {"description": "entities and limits"}}}},
            "/v1/push": {"post": {
                "operationId": "push", "security": secured,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "required": ["mutations"], "additionalProperties": False,
                    "properties": {"mutations": {
                        "type": "array", "maxItems": limits["max_mutations"],
                        "items": {"$ref": "#/components/schemas/Mutation"}}}}}}},
                "responses": {"200": {"description": "one result per mutation", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "results": {"type": "array",
                                    "items": {"$ref": "#/components/schemas/Result"}},
                        "server_time": {"type": "string", "nullable": True}}}}}},
                    **errors}}},
            "/v1/pull": {"post": {
                "operationId": "pull", "security": secured,
                "requestBody": {"required": True, "content": {"application/json": {"schema": {
                    "type": "object", "additionalProperties": False, "properties": {
                        "cursor": {"type": "string", "nullable": True},
                        "limit": {"type": "integer", "minimum": 1,
                                  "maximum": limits["max_page"]},
                        "entities": {"type": "array",
                                     "items": {"type": "string", "enum": entities}}}}}}},
                "responses": {"200": {"description": "a page of changes", "content": {
                    "application/json": {"schema": {"type": "object", "properties": {
                        "changes": {"type": "array",
                                    "items": {"$ref": "#/components/schemas/Change"}},
                        "cursor": {"type": "string"}, "more": {"type": "boolean"},
                        "epoch": {"type": "string"},
                        "server_time": {"type": "string", "nullable": True}}}}}},
                    **errors}}},
        },
        "components": {
            "securitySchemes": {"bearer": {"type": "http", "scheme": "bearer"}},
            "schemas": {
                "Mutation": mutation, "Result": result, "Change": change,
                "Error": {"type": "object", "properties": {"error": {"type": "object"}}},
                **{f"Record_{name}": rec for name, rec in records.items()},
            },
        },
        "x-syncline-limits": limits,
    }
