"""Checks and length bounds declared with ``syncline.field()``: every backend refuses a value
breaking one, names the field, the check and the value, and leaves the stored data as it was."""

from __future__ import annotations

from collections.abc import Callable
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

registry = EntityRegistry()


@registry.entity("suite_checked")
@attrs.define
class Checked:
    """A product with a bounded title, a price range and a closed set of states."""

    id: str
    title: str = syncline.field(min_length=1, max_length=8)
    price: float = syncline.field(default=0.0, check=(F.price >= 0) & (F.price < 1000))
    stock: int | None = syncline.field(default=None, check=F.stock != -1)
    state: str | None = syncline.field(default=None, check=F.state.in_(["new", "old"]))


GOOD = Checked("c1", "ok", 5.0, 3, "new")
#: (a value breaking one check, the words its error must hold)
BAD: list[tuple[dict[str, Any], list[str]]] = [
    ({"title": ""}, ["Checked.title", "length(title) >= 1", "''"]),
    ({"title": "ninechars"}, ["Checked.title", "length(title) <= 8", "'ninechars'"]),
    ({"price": -0.5}, ["Checked.price", "price >= 0", "-0.5"]),
    ({"price": 1000.0}, ["Checked.price", "price < 1000", "1000.0"]),
    ({"stock": -1}, ["Checked.stock", "stock != -1", "-1"]),
    ({"state": "lost"}, ["Checked.state", "state IN ('new', 'old')", "'lost'"]),
]


class CheckSuite(StoreSuite):
    """Declared checks and length bounds, on every write path."""

    @pytest.fixture
    def checked(self, open_store: Any) -> syncline.Repository[Checked]:
        store: Store = open_store(entities=[Checked])
        repo = store.repository(Checked)
        repo.insert(GOOD)
        return repo

    @pytest.mark.parametrize(("change", "words"), BAD)
    def test_a_breaking_value_is_refused_on_every_write_path(
            self, checked: syncline.Repository[Checked], change: dict[str, Any],
            words: list[str]) -> None:
        bad = attrs.evolve(GOOD, id="c2", **change)
        writes: list[Callable[[], object]] = [
            lambda: checked.insert(bad),
            lambda: checked.insert_many([attrs.evolve(GOOD, id="c3"), bad]),
            lambda: checked.upsert(attrs.evolve(bad, id="c1")),
            lambda: checked.upsert_many([attrs.evolve(bad, id="c1")]),
            lambda: checked.update("c1", **change),
            lambda: checked.update_where(F.id == "c1", **change),
        ]
        for write in writes:
            with pytest.raises(syncline.IntegrityError) as info:
                write()
            for word in words:
                assert word in str(info.value)
            assert checked.all() == [GOOD]

    def test_values_on_the_bounds_and_nulls_pass(
            self, checked: syncline.Repository[Checked]) -> None:
        edge = [Checked("e1", "x", 0.0, None, None), Checked("e2", "eightch8", 999.5, 0, "old")]
        checked.insert_many(edge)
        checked.update("c1", title="a" * 8, price=0, stock=None, state=None)
        assert checked.find(where=F.id != "c1") == edge
        assert checked.get("c1") == Checked("c1", "a" * 8, 0.0, None, None)

    def test_the_backend_itself_refuses_a_row_breaking_a_check(
            self, checked: syncline.Repository[Checked]) -> None:
        """A row written past the repository (as a pull or a migration writes) is refused by
        the backend, as a database's CHECK constraint refuses it."""
        backend = checked.store.backend
        row = {"id": "c9", "title": "t", "price": -3.0, "stock": None, "state": None}
        with pytest.raises(syncline.IntegrityError, match="ck_suite_checked_price_1"):
            backend.upsert_many(checked.table, [row])
        assert checked.all() == [GOOD]

    def test_the_checks_are_part_of_the_stored_schema(
            self, checked: syncline.Repository[Checked]) -> None:
        names = [c.name for c in checked.table.checks]
        assert names == ["ck_suite_checked_title_1", "ck_suite_checked_title_2",
                         "ck_suite_checked_price_1", "ck_suite_checked_price_2",
                         "ck_suite_checked_stock_1", "ck_suite_checked_state_1"]
        assert differences(cast(LocalStore, checked.store)) == []
