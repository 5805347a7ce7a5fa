"""Fields stored under other column names (``syncline.field(column=...)``): the table has the
columns, the application the fields, and every query, index, key and check names the field."""

from __future__ import annotations

from typing import Any, cast

import attrs
import pytest

import syncline
from syncline import F
from syncline.core.model.schema import EntityRegistry
from syncline.core.storage.local import LocalStore
from syncline.core.storage.schema_dump import differences
from syncline.core.store import Store
from syncline.testing.backend.base import StoreSuite
from syncline.testing.requirements import requires

registry = EntityRegistry()


@registry.entity("suite_shelves")
@attrs.define
class Shelf:
    id: str
    label: str = syncline.field(column="shelf_name")


@registry.entity("suite_named", indexes=["title"], unique=["code"],
                 foreign_keys={"shelf": "suite_shelves.id"})
@attrs.define
class Book:
    """Fields renamed in Python, stored in their old columns."""

    id: str
    title: str = syncline.field(column="headline")
    code: str | None = syncline.field(default=None, column="legacy_code")
    price: float = syncline.field(default=0.0, column="cost", check=F.price >= 0)
    shelf: str | None = syncline.field(default=None, column="shelf_id")


BOOKS = [Book("b1", "Dune", "D-1", 9.5, "s1"), Book("b2", "Emma", "E-1", 3.0, "s1"),
         Book("b3", "Ulysses", None, 12.0, None)]


class ColumnNameSuite(StoreSuite):
    """Column names apart from field names, on every read and write path."""

    @pytest.fixture
    def books(self, open_store: Any) -> syncline.Repository[Book]:
        store: Store = open_store(entities=[Shelf, Book])
        store.repository(Shelf).insert(Shelf("s1", "fiction"))
        repo = store.repository(Book)
        repo.insert_many(BOOKS)
        return repo

    def test_the_table_has_the_columns_and_the_rows_hold_them(
            self, books: syncline.Repository[Book]) -> None:
        table = books.table
        assert table.column_names == ("id", "headline", "legacy_code", "cost", "shelf_id")
        assert [ix.columns for ix in table.indexes] == [("headline",), ("legacy_code",)]
        assert [(fk.column, fk.ref_column) for fk in table.foreign_keys] == [("shelf_id", "id")]
        assert [c.name for c in table.checks] == ["ck_suite_named_cost_1"]
        row = books.store.backend.get(table, "b1")
        assert row == {"id": "b1", "headline": "Dune", "legacy_code": "D-1", "cost": 9.5,
                       "shelf_id": "s1"}
        assert differences(cast(LocalStore, books.store)) == []

    def test_queries_and_writes_name_the_fields(self, books: syncline.Repository[Book]) -> None:
        assert books.get("b2") == BOOKS[1]
        assert [b.id for b in books.find(F.title >= "E", order_by=F.title.desc())] == [
            "b3", "b2"]
        assert [b.id for b in books.find({"code": "D-1"})] == ["b1"]
        assert books.count(F.code.is_null() | (F.price > 5)) == 2
        assert books.first(order_by=[F.shelf, F.price.desc()]) == BOOKS[2]
        assert books.update("b1", title="Dune Messiah", price=10.0).title == "Dune Messiah"
        assert books.update_where(F.shelf == "s1", code=None) == 2
        assert [b.id for b in books.find(F.code.is_null())] == ["b1", "b2", "b3"]
        assert books.delete_where(F.title.like("Dune%")) == 1
        assert [b.id for b in books.all()] == ["b2", "b3"]

    def test_unique_keys_and_checks_on_renamed_fields(
            self, books: syncline.Repository[Book]) -> None:
        with pytest.raises(syncline.IntegrityError):
            books.insert(Book("b4", "Copy", "D-1"))
        with pytest.raises(syncline.IntegrityError, match=r"Book\.price = -1\.0"):
            books.update("b1", price=-1.0)
        assert books.all() == BOOKS

    @requires("foreign_keys")
    def test_a_foreign_key_on_a_renamed_field(self, books: syncline.Repository[Book]) -> None:
        with pytest.raises(syncline.IntegrityError):
            books.insert(Book("b5", "Lost", shelf="nowhere"))
        assert books.count() == len(BOOKS)
