"""Entity declarations: what is accepted, and the errors for what is not."""

from __future__ import annotations

import datetime as dt
import enum
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.model.schema import EntityRegistry, spec_of


@pytest.fixture
def reg() -> EntityRegistry:
    return EntityRegistry()


def test_entity_records_table_indexes_and_kinds(reg: EntityRegistry) -> None:
    @reg.entity("posts", indexes=[("user_id", "created_at"), "content"], unique=["local_id"])
    @attrs.define
    class Post:
        id: str
        user_id: str
        content: str
        created_at: dt.datetime
        local_id: str | None = None
        tags: list[str] | None = None

    spec = spec_of(Post)
    assert spec.table.name == "posts"
    assert spec.primary_key == "id"
    assert [(i.columns, i.unique) for i in spec.table.indexes] == [
        (("user_id", "created_at"), False), (("content",), False), (("local_id",), True)]
    kinds = {c.name: (c.kind, c.nullable) for c in spec.table.columns}
    assert kinds["created_at"] == ("datetime", False)
    assert kinds["tags"] == ("json", True)


def test_table_name_defaults_to_class_name(reg: EntityRegistry) -> None:
    @reg.entity()
    @attrs.define
    class Thing:
        id: int

    assert spec_of(Thing).table.name == "thing"


def test_unsupported_type_names_class_and_field(reg: EntityRegistry) -> None:
    with pytest.raises(syncline.EntityDefinitionError, match=r"Bad\.when.*cannot be stored"):
        @reg.entity("bad")
        @attrs.define
        class Bad:
            id: str
            when: complex


def test_missing_primary_key(reg: EntityRegistry) -> None:
    with pytest.raises(syncline.EntityDefinitionError, match="primary key field 'id'"):
        @reg.entity("nokey")
        @attrs.define
        class NoKey:
            name: str


def test_optional_primary_key_is_refused(reg: EntityRegistry) -> None:
    with pytest.raises(syncline.EntityDefinitionError, match="primary key"):
        @reg.entity("optkey")
        @attrs.define
        class OptKey:
            id: str | None


def test_two_entities_on_one_table(reg: EntityRegistry) -> None:
    @reg.entity("shared")
    @attrs.define
    class First:
        id: str

    with pytest.raises(syncline.EntityDefinitionError, match="already declared by"):
        @reg.entity("shared")
        @attrs.define
        class Second:
            id: str


def test_two_entities_on_one_table_in_one_store() -> None:
    a, b = EntityRegistry(), EntityRegistry()

    @a.entity("same")
    @attrs.define
    class One:
        id: str

    @b.entity("same")
    @attrs.define
    class Two:
        id: str

    with pytest.raises(syncline.EntityDefinitionError, match="both use table 'same'"):
        syncline.open("memory://", entities=[One, Two])


def test_not_an_attrs_class(reg: EntityRegistry) -> None:
    with pytest.raises(syncline.EntityDefinitionError, match="not an attrs class"):
        @reg.entity("plain")
        class Plain:
            id: str


def test_unknown_index_field(reg: EntityRegistry) -> None:
    with pytest.raises(syncline.EntityDefinitionError, match="index field 'nope'"):
        @reg.entity("idx", indexes=["nope"])
        @attrs.define
        class Idx:
            id: str


def test_mixed_enum_is_refused(reg: EntityRegistry) -> None:
    class Mixed(enum.Enum):
        A = 1
        B = "b"

    with pytest.raises(syncline.EntityDefinitionError, match="all-int or all-str"):
        @reg.entity("mixed")
        @attrs.define
        class HasMixed:
            id: str
            m: Mixed


def test_non_entity_gets_a_clear_error() -> None:
    @attrs.define
    class Plain:
        id: str

    with pytest.raises(syncline.EntityDefinitionError, match="not a syncline entity"):
        syncline.open("memory://", entities=[Plain])


def test_private_attrs_fields_use_their_alias(reg: EntityRegistry) -> None:
    @reg.entity("aliased")
    @attrs.define
    class Aliased:
        id: str
        _secret: str = "s"

    with syncline.open("memory://", entities=[Aliased]) as store:
        store.repository(Aliased).upsert(Aliased("a", secret="x"))
        got: Any = store.repository(Aliased).get("a")
        assert got._secret == "x"


@pytest.mark.parametrize(("options", "annotation", "words"), [
    ({"max_length": 3}, int, "min_length/max_length bound str fields"),
    ({"min_length": -1}, str, "an int >= 0"),
    ({"min_length": 5, "max_length": 2}, str, "min_length=5 is above max_length=2"),
    ({"check": syncline.F.other >= 0}, int, "must compare F.x itself"),
    ({"check": (syncline.F.x >= 0) | (syncline.F.x < -5)}, int, "must compare F.x itself"),
    ({"check": syncline.F.x > "a"}, str, "a check on a text field compares with =="),
    ({"check": syncline.F.x >= "0"}, int, "check value '0' must be a finite int"),
    ({"check": syncline.F.x >= float("inf")}, float, "must be a finite"),
    ({"check": syncline.F.x >= 0}, dt.date, "checks compare int, float, bool and str"),
])
def test_bad_checks_are_refused_naming_the_field(reg: EntityRegistry, options: dict[str, Any],
                                                 annotation: Any, words: str) -> None:
    cls = attrs.make_class("Bad", {"id": attrs.field(type=int),
                                   "x": syncline.field(type=annotation, **options)})
    with pytest.raises(syncline.EntityDefinitionError, match=r"Bad\.x") as info:
        reg.entity("bad")(cls)
    assert words in str(info.value)


def test_checks_are_named_per_table_and_field(reg: EntityRegistry) -> None:
    @reg.entity("shop")
    @attrs.define
    class Shop:
        id: int
        name: str = syncline.field(min_length=1, max_length=20)
        rating: float = syncline.field(default=0.0, check=(syncline.F.rating >= 0)
                                       & (syncline.F.rating <= 5))

    checks = spec_of(Shop).table.checks
    assert [(c.name, c.describe()) for c in checks] == [
        ("ck_shop_name_1", "length(name) >= 1"), ("ck_shop_name_2", "length(name) <= 20"),
        ("ck_shop_rating_1", "rating >= 0"), ("ck_shop_rating_2", "rating <= 5")]


@pytest.mark.parametrize(("syncs", "name", "default", "words"), [
    (False, "note", None, "a field of a syncing entity"),
    (True, "id", None, "not its primary key"),
    (True, "note", attrs.NOTHING, "has a default"),
])
def test_bad_local_fields_are_refused(reg: EntityRegistry, syncs: bool, name: str,
                                      default: Any, words: str) -> None:
    fields = {"id": attrs.field(type=str), "note": attrs.field(type=str | None, default=None)}
    fields[name] = syncline.field(type=str | None, local=True, default=default)
    with pytest.raises(syncline.EntityDefinitionError, match=rf"Bad\.{name}") as info:
        reg.entity("bad", syncs=syncs)(attrs.make_class("Bad", fields))
    assert words in str(info.value)


@pytest.mark.parametrize(("fields", "words"), [
    ({"id": syncline.field(type=int, column="key")}, "the primary key is stored under its"),
    ({"a": syncline.field(type=int, column="b"), "b": attrs.field(type=int)},
     "two fields are stored in column 'b'"),
    ({"a": syncline.field(type=int, column="not a name")}, "must be an identifier"),
    ({"a": syncline.field(type=int, column="_syncline_x")}, "must be an identifier"),
])
def test_bad_column_names_are_refused(reg: EntityRegistry, fields: dict[str, Any],
                                      words: str) -> None:
    with pytest.raises(syncline.EntityDefinitionError, match="Bad") as info:
        reg.entity("bad")(attrs.make_class("Bad", {"id": attrs.field(type=int), **fields}))
    assert words in str(info.value)
