"""Opening a store again reuses what does not depend on the connection (converters, row codecs,
a parsed configuration file), and never what another declaration or type registry needs."""

from __future__ import annotations

import datetime as dt
import uuid
from pathlib import Path
from typing import Any

import attrs
import cattrs
import pytest

import syncline
from syncline.backends.memory import MemoryBackend
from syncline.core.model.schema import TypeRegistry
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.storage.config import load_config
from syncline.core.storage.local import LocalStore


def _declare(field_type: Any, default: Any) -> type:
    """A fresh declaration of table ``cached_items``: ``value`` has ``field_type``."""
    registry = syncline.EntityRegistry()

    @registry.entity("cached_items")
    @attrs.define
    class Item:
        id: str
        value: field_type = default  # type: ignore[valid-type]

    return Item


def test_a_store_opened_again_shares_codecs_and_reads_what_the_first_wrote(
        store_url: str) -> None:
    item = _declare(int, 0)
    with syncline.open(store_url, entities=[item]) as first:
        first.repository(item).upsert(item("a", 7))
        converter, wire, codec = first.converter, first.wire, first.codec(item)
    with syncline.open(store_url, entities=[item]) as second:
        assert (second.converter, second.wire) == (converter, wire)
        assert second.codec(item) is codec
        second.repository(item).upsert(item("b", 8))
        if "persistent" in second.backend.capabilities:
            assert second.repository(item).get("a") == item("a", 7)
        assert second.repository(item).get("b") == item("b", 8)


def test_a_redeclared_entity_gets_its_own_codec(store_url: str) -> None:
    as_int, as_text = _declare(int, 0), _declare(str, "")
    with syncline.open(store_url, entities=[as_int]) as ints:
        ints.repository(as_int).upsert(as_int("a", 1))
        codec = ints.codec(as_int)

    def recreate(migrator: Any, old: int, new: int) -> None:
        migrator.drop_table("cached_items")
        migrator.create_table(as_text)

    with syncline.open(store_url, entities=[as_text], schema_version=2,
                       migration=syncline.MigrationStrategy(on_upgrade=recreate)) as texts:
        assert texts.codec(as_text) is not codec
        texts.repository(as_text).upsert(as_text("b", "two"))
        assert texts.repository(as_text).get("b") == as_text("b", "two")
        with pytest.raises(syncline.SerializationError, match="value"):
            texts.repository(as_text).upsert(as_text("c", 3))


class Money:
    def __init__(self, cents: int) -> None:
        self.cents = cents

    def __eq__(self, other: object) -> bool:
        return isinstance(other, Money) and other.cents == self.cents


def test_a_type_registered_later_gets_converters_of_its_own() -> None:
    plain = _declare(int, 0)
    with syncline.open("memory://", entities=[plain]) as before:
        converter, wire = before.converter, before.wire

    class MoneyPlugin:
        @syncline.hookimpl
        def syncline_register_types(self, registry: TypeRegistry) -> None:
            registry.register(Money, "integer", lambda m: m.cents, Money)

    register_plugin(MoneyPlugin(), "cached-money")
    try:
        priced = _declare(Money, None)
        with syncline.open("memory://", entities=[priced]) as after:
            assert after.converter is not converter and after.wire is not wire
            after.repository(priced).upsert(priced("a", Money(5)))
            assert after.repository(priced).get("a") == priced("a", Money(5))
            assert after.wire.unstructure(priced("a", Money(5))) == {"id": "a", "value": 5}
    finally:
        unregister_plugin("cached-money")


class OptionedBackend(MemoryBackend):
    """A backend whose converter depends on the instance: it must not be shared."""

    shared_converter = False

    def make_converter(self, base: cattrs.Converter) -> cattrs.Converter:
        conv = super().make_converter(base)
        if self.url.endswith("text"):
            conv.register_unstructure_hook(dt.date, lambda v: v.isoformat())
        return conv


def test_a_backend_without_shared_converter_gets_its_own_per_store() -> None:
    item = _declare(dt.date, dt.date(2026, 1, 2))
    text = LocalStore(OptionedBackend("memory://text"), [item])
    plain = LocalStore(OptionedBackend("memory://plain"), [item])
    assert text.converter is not plain.converter and text.codec(item) is not plain.codec(item)
    assert text.codec(item).encode("value", dt.date(2026, 1, 2)) == "2026-01-02"
    assert plain.codec(item).encode("value", dt.date(2026, 1, 2)) == dt.date(2026, 1, 2)


def test_a_changed_configuration_file_is_read_again(
        tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    config = tmp_path / "syncline.toml"
    for url in ("memory://a", "memory://b", "memory://a"):  # same size, written at once
        config.write_text(f'[store]\nurl = "{url}"\n')
        assert load_config().store.url == url
    loaded = load_config()
    loaded.store.options["changed"] = True  # a caller's change stays its own
    assert "changed" not in load_config().store.options


def test_two_schemas_holding_different_declarations_of_a_table_each_get_their_own_sql(
        postgres_url: str) -> None:
    """PostgreSQL's DDL and statements are built once per table declaration and shared by every
    store: two schemas with the same table name but different columns never mix them up."""
    as_int, as_text = _declare(int, 0), _declare(str, "")
    run = uuid.uuid4().hex[:8]
    with syncline.open(f"{postgres_url}?schema=ints{run}", entities=[as_int]) as ints, \
            syncline.open(f"{postgres_url}?schema=texts{run}", entities=[as_text]) as texts:
        for i in range(3):  # in turns: each store's statements used after the other's
            ints.repository(as_int).upsert_many([as_int(f"k{i}", i), as_int(f"l{i}", -i)])
            texts.repository(as_text).upsert_many([as_text(f"k{i}", str(i))])
        assert sorted(r.value for r in ints.repository(as_int).all()) == [-2, -1, 0, 0, 1, 2]
        assert sorted(r.value for r in texts.repository(as_text).all()) == ["0", "1", "2"]
        with pytest.raises(syncline.SerializationError, match="value"):
            texts.repository(as_text).upsert(as_text("bad", 3))
