"""Local-only fields (``syncline.field(local=True)``): a pulled record keeps this device's values.

The wire format leaves them out (see ``make_wire_converter``), so a record from the server has
their defaults; before it is written over the local one, the local values are copied into it.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

import attrs

from syncline.core.model.schema import spec_of

if TYPE_CHECKING:
    from syncline.core.storage.local import LocalStore


def keep_local_values(store: LocalStore, cls: type, objs: Sequence[Any]) -> list[Any]:
    """``objs`` (records from the server) with the local-only values of the stored records of
    the same keys; records not stored yet keep their defaults. One read, none without such
    fields."""
    spec = spec_of(cls)
    if not spec.local_fields or not objs:
        return list(objs)
    codec = store.codec(cls)
    pk = spec.primary_key
    keys = [codec.encode(pk, getattr(o, pk)) for o in objs]
    stored = {r[pk]: r for r in store.backend.get_many(spec.table, keys)}
    local = [f for f in spec.fields if f.local]
    out = []
    for obj, key in zip(objs, keys, strict=True):
        row = stored.get(key)
        out.append(obj if row is None else attrs.evolve(obj, **{
            f.alias: codec.decode(f.name, row[f.column]) for f in local}))
    return out
