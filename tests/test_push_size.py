"""The push's hot path builds a mutation's wire form without the converter (the client sizes
it, the server fingerprints it): the same dict and bytes as ``to_wire``."""

from __future__ import annotations

import json
from typing import Any

from hypothesis import given
from hypothesis import strategies as st

from syncline.core.spi.transport import Mutation, mutation_wire, to_wire
from syncline.core.sync.engine import _wire_bytes

json_values: Any = st.recursive(
    st.none() | st.booleans() | st.integers(-2**63, 2**63 - 1)
    | st.floats(allow_nan=False, allow_infinity=False) | st.text(),
    lambda inner: st.lists(inner, max_size=4) | st.dictionaries(st.text(), inner, max_size=4),
    max_leaves=20)


@given(st.text(min_size=1), st.sampled_from(["create", "update", "delete", "command"]),
       st.none() | st.text(), st.none() | st.dictionaries(st.text(), json_values, max_size=6),
       st.none() | st.integers(0, 2**63 - 1), st.none() | st.text())
def test_push_size_is_the_wire_size(mid: str, action: Any, record_id: str | None,
                                    payload: dict[str, Any] | None, base: int | None,
                                    command: str | None) -> None:
    m = Mutation(mid, "notes", action, record_id, payload, base, command)
    assert mutation_wire(m) == to_wire(m)
    body = json.dumps(to_wire(m), separators=(",", ":"), ensure_ascii=False).encode()
    assert _wire_bytes(m) == len(body)
