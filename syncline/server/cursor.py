"""The server's pull cursors: opaque to clients, bound to an epoch and a principal."""

from __future__ import annotations

import base64
import hashlib
import json

from syncline.core.errors import InvalidCursorError


def _principal_tag(principal: str) -> str:
    return hashlib.sha256(principal.encode("utf-8", "surrogatepass")).hexdigest()[:12]


def encode_cursor(epoch: str, seq: int, principal: str) -> str:
    raw = json.dumps({"e": epoch, "s": seq, "p": _principal_tag(principal)})
    return base64.urlsafe_b64encode(raw.encode()).decode().rstrip("=")


def decode_cursor(cursor: str | None, epoch: str, principal: str,
                  committed: int | None = None) -> int:
    """The sequence number after which to read: 0 for no cursor or another epoch's cursor.

    :class:`InvalidCursorError` for a cursor this server did not issue: not one of its
    encodings, another principal's, or (given ``committed``, the committed sequence counter)
    one beyond the sequence, which would otherwise answer empty pages forever.
    """
    if not cursor:
        return 0
    try:
        if len(cursor) > 1000:
            raise ValueError("too long to be a cursor of this server")
        padded = cursor + "=" * (-len(cursor) % 4)
        data = json.loads(base64.b64decode(padded.encode("ascii"), altchars=b"-_",
                                           validate=True))
        if not isinstance(data, dict) or set(data) != {"e", "s", "p"}:
            raise ValueError("not a cursor of this server")
        cursor_epoch, seq = data["e"], data["s"]
        if not isinstance(cursor_epoch, str) or type(seq) is not int or seq < 0 or \
                not isinstance(data["p"], str):
            raise ValueError("not a cursor of this server")
        if data["p"] != _principal_tag(principal):
            raise ValueError("the cursor belongs to someone else")
        if encode_cursor(cursor_epoch, seq, principal) != cursor.rstrip("="):
            raise ValueError("not a cursor of this server")
    except (ValueError, RecursionError) as exc:  # binascii, JSON and Unicode errors included
        raise InvalidCursorError(
            f"invalid cursor {cursor[:40]!r}: not a cursor this server issued to you ({exc}); "
            f"pass the cursor of the previous page, or none to start over") from exc
    if cursor_epoch != epoch:
        return 0  # from before a reset: read from the start again
    if committed is not None and seq > committed:
        raise InvalidCursorError(
            f"invalid cursor {cursor[:40]!r}: it is beyond the server's sequence ({seq} > "
            f"{committed}), so this server did not issue it; pull from the start (no cursor)")
    return seq
