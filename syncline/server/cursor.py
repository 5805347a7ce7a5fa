"""The server's pull cursors: opaque to clients, bound to an epoch and a principal."""

from __future__ import annotations

import base64
import hashlib
import json
from typing import Any

import attrs

from syncline.core.model.errors import InvalidCursorError


def _principal_tag(principal: str) -> str:
    return hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()[:12]


@attrs.frozen
class Cursor:
    """Where a pull resumes: after the log position ``pos`` (``(txid, seq)``). ``bound`` is
    set while a pull from the start pages through the snapshot: tombstones below it are
    left out (the new client never had those records)."""

    pos: tuple[int, int]
    bound: tuple[int, int] | None = None


def encode_cursor(epoch: str, seq: int | tuple[int, int], principal: str,
                  bound: tuple[int, int] | None = None) -> str:
    """A cursor after position ``seq`` (an int: ``(0, seq)``); old cursors keep their form."""
    txid, number = (0, seq) if isinstance(seq, int) else seq
    data: dict[str, Any] = {"e": epoch, "s": number, "p": _principal_tag(principal)}
    if txid:
        data["t"] = txid
    if bound is not None:
        data["b"] = list(bound)
    raw = json.dumps(data)
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def _int(value: Any) -> bool:
    return type(value) is int and 0 <= value < 2**63


def decode_cursor(cursor: str | None, epoch: str, principal: str,
                  committed: tuple[int, int] | int | None = None) -> Cursor | None:
    """Where to read after: None for no cursor or another epoch's cursor (from the start).

    :class:`InvalidCursorError` for a cursor this server did not issue: not one of its
    encodings, another principal's, or (given ``committed``, a position no issued cursor is
    beyond: see :meth:`syncline.server.order.LogOrder.committed`) one beyond the log, which
    would otherwise answer empty pages forever.
    """
    if not cursor:
        return None
    try:
        if len(cursor) > 1000:
            raise ValueError("too long to be a cursor of this server")
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.b64decode(padded.encode("ascii"), altchars=b"-_",
                                           validate=True))
        if not isinstance(data, dict) or not {"e", "s", "p"} <= set(data) <= {
                "e", "s", "p", "t", "b"}:
            raise ValueError("not a cursor of this server")
        cursor_epoch, seq, txid = data["e"], data["s"], data.get("t", 0)
        bound = data.get("b")
        if not isinstance(cursor_epoch, str) or not _int(seq) or not _int(txid) or \
                not isinstance(data["p"], str):
            raise ValueError("not a cursor of this server")
        if bound is not None:
            if not (isinstance(bound, list) and len(bound) == 2 and all(map(_int, bound))):
                raise ValueError("not a cursor of this server")
            bound = (bound[0], bound[1])
        if data["p"] != _principal_tag(principal):
            raise ValueError("the cursor belongs to someone else")
        if encode_cursor(cursor_epoch, (txid, seq), principal, bound) != cursor.rstrip("="):
            raise ValueError("not a cursor of this server")
    except (ValueError, RecursionError) as exc:  # binascii, JSON and Unicode errors included
        raise InvalidCursorError(
            f"invalid cursor {cursor[:40]!r}: not a cursor this server issued to you ({exc}); "
            f"pass the cursor of the previous page, or none to start over") from exc
    if cursor_epoch != epoch:
        return None  # from before a reset: read from the start again
    if committed is not None:
        top = (0, committed) if isinstance(committed, int) else committed
        # txids: every issued one is at or below the watermark; numbers: at or below the last
        if txid > top[0] or seq > top[1] or (
                bound is not None and (bound[0] > top[0] or bound[1] > top[1] + 1)):
            raise InvalidCursorError(
                f"invalid cursor {cursor[:40]!r}: it is beyond the server's sequence "
                f"({(txid, seq)} > {top}), so this server did not issue it; pull from the "
                f"start (no cursor)")
    return Cursor((txid, seq), bound)
