"""A sync server's own tables, kept beside the entities it serves in the server's store.

The records' server metadata (version, owner, tombstone), the change log in server-assigned
order, the result of every applied mutation by mutation id, and the server's counters. They are
syncline's internal tables (never synced, never the application's) declared in a registry of
their own; :func:`syncline.server.open_server_store` adds them to a store.
"""

from __future__ import annotations

import datetime as dt
from typing import Any

import attrs

from syncline.core.model.schema import EntityRegistry, internal_entity

#: the server's tables (a registry of their own: the application's cannot claim their names)
tables = EntityRegistry()


def record_key(owner: str, entity: str, record_id: str) -> str:
    """A :class:`ServerRecord`'s key: the record ``record_id`` of ``entity`` that ``owner``
    (a principal, or the shared owner) holds."""
    return f"{owner}/{entity}/{record_id}"


@internal_entity(tables, "_syncline_server_records", primary_key="key",
                 indexes=[("owner", "entity")])
@attrs.define
class ServerRecord:
    key: str  # owner/entity/record_id
    owner: str
    entity: str
    record_id: str
    version: int
    updated_at: dt.datetime
    deleted: bool = False
    #: the mutation id of the create that made the record (a replay after the idempotency
    #: retention is recognised by it and never creates the record twice)
    created_by: str | None = None


@internal_entity(tables, "_syncline_changes", primary_key="seq",
                 indexes=[("owner", "seq"), ("op", "updated_at")])
@attrs.define
class ChangeEntry:
    """The latest change of one record (a new change replaces its record's entry): a pull
    from the start reads the current state, not the history. Its position in the log is
    ``(txid, seq)`` (syncline.server.order)."""

    seq: int
    owner: str
    entity: str
    record_id: str
    op: str
    updated_at: dt.datetime
    payload: dict[str, Any] | None = None
    mutation_id: str | None = None
    #: the writing transaction's id on PostgreSQL (the watermark's unit); 0 elsewhere
    txid: int = 0


@internal_entity(tables, "_syncline_mutations", primary_key="key")
@attrs.define
class AppliedMutation:
    key: str  # owner/mutation id
    fingerprint: str
    result: dict[str, Any]
    #: when it was applied (kept for the idempotency retention; None: before it was recorded)
    applied_at: dt.datetime | None = None


@internal_entity(tables, "_syncline_server_meta", primary_key="key")
@attrs.define
class ServerMeta:
    key: str
    value: int = 0
    text: str | None = None


#: every table of a server's store that is not an entity it serves
SERVER_ENTITIES: list[type] = [ServerRecord, ChangeEntry, AppliedMutation, ServerMeta]
