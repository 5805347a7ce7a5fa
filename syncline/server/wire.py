"""Strict JSON out: the encoding, and pull pages without the changes JSON cannot carry."""

from __future__ import annotations

import json
import logging
from typing import Any

import attrs

from syncline.core.spi.transport import PullPage, to_wire

#: stored changes a pull leaves out are logged here (a warning each)
pull_log = logging.getLogger("syncline.server.pull")


def skipped(seq: Any, what: str, reason: str) -> None:
    """Log a stored change a pull leaves out: it cannot be read back or sent as JSON."""
    pull_log.warning("pull skipped change seq=%s (%s): %s; clients do not receive it until the "
                     "record is written again on the server", seq, what, reason)


def to_json(content: Any) -> bytes:
    """Strict JSON (RFC 8259) in UTF-8: ValueError for NaN, infinities or a lone surrogate."""
    return json.dumps(content, ensure_ascii=False, allow_nan=False,
                      separators=(",", ":")).encode("utf-8")


def sendable(page: PullPage) -> PullPage:
    """``page`` without the changes JSON cannot carry (a lone surrogate, NaN, nesting too
    deep to encode), each logged. The cursor is unchanged: clients move past them."""
    kept = []
    for change in page.changes:
        try:
            to_json(to_wire(change))
        except Exception as exc:  # whatever fails to encode one change leaves that one out
            skipped(change.version, f"entity {change.entity!r}, record {change.record_id!r}",
                    f"it cannot be sent as JSON: {exc}")
            continue
        kept.append(change)
    return attrs.evolve(page, changes=kept)
