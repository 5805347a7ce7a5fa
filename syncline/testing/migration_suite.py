"""The migration conformance suite: every migration behaviour, on any backend.

Subclass :class:`MigrationSuite` and give it a ``store_url`` fixture, as for the backend suite.
A store that forgets its data when closed (a private in-memory one) is always new, never
upgraded: the suite skips there, saying so; a backend that declares ``persistent`` and loses
a table when closed fails instead. Tests needing SQL (expressions, views, triggers) or
enforced foreign keys skip on backends without that capability.
"""

from __future__ import annotations

import datetime as dt
import threading
from collections.abc import Callable, Iterator
from typing import Any

import attrs
import pytest

import syncline
from syncline.core.model.errors import MigrationError
from syncline.core.model.query import F
from syncline.core.model.schema import (
    ColumnSpec,
    EntityRegistry,
    ForeignKey,
    TableSpec,
    Trigger,
    View,
)
from syncline.core.storage.migration import (
    MigrationStrategy,
    Migrator,
    TableMigration,
    execute,
    steps,
)
from syncline.core.storage.schema_dump import differences
from syncline.core.store import Store
from syncline.testing.requirements import SuiteBase, capabilities_of, requires, skip_unless

# Each version of the schema lives in a registry of its own: the same table, other shapes.
v1, v2, v3 = EntityRegistry(), EntityRegistry(), EntityRegistry()


@v1.entity("todos")
@attrs.define
class TodoV1:
    id: int
    title: str
    content: str
    category: str


@v2.entity("todos")
@attrs.define
class TodoIntCategory:
    id: int
    title: str
    content: str
    category: int | None


@v3.entity("todos")
@attrs.define
class TodoNullableContent:
    id: int
    title: str
    content: str | None
    category: str


@v2.entity("people")
@attrs.define
class PersonV2:
    id: int
    first_name: str
    last_name: str
    full_name: str


@v1.entity("people")
@attrs.define
class PersonV1:
    id: int
    first_name: str
    last_name: str


StoreFactory = Callable[..., Store]


def _todos_without(column: str, registry: EntityRegistry, name: str) -> type:
    """The v1 todo without ``column`` (declared here so each test gets its own registry)."""
    fields = {a.name: a.type for a in attrs.fields(TodoV1) if a.name != column}
    cls = attrs.make_class(name, {n: attrs.field(type=t) for n, t in fields.items()})
    return registry.entity("todos")(cls)


def _todos_renamed(registry: EntityRegistry) -> type:
    cls = attrs.make_class("TodoRenamed", {
        "id": attrs.field(type=int), "title": attrs.field(type=str),
        "body": attrs.field(type=str), "category": attrs.field(type=str)})
    return registry.entity("todos")(cls)


TODOS = [TodoV1(i, f"title {i}", f"content {i}", str(i % 5)) for i in range(1, 51)]


class MigrationSuite(SuiteBase):
    """Subclass and provide a ``store_url`` fixture (a fresh, empty store each time)."""

    @pytest.fixture
    def open_at(self, store_url: str) -> Iterator[StoreFactory]:
        opened: list[Store] = []

        def factory(version: int, entities: list[type], **kwargs: Any) -> Store:
            for store in opened:
                store.close()
            store = syncline.open(store_url, entities=entities, schema_version=version,
                                  **kwargs)
            opened.append(store)
            return store

        if not self._keeps_data(store_url):
            if "persistent" in self._capabilities(store_url):
                pytest.fail("the backend declares 'persistent' but a table created before "
                            "closing was gone after reopening: the capability is not honoured")
            pytest.skip("this store forgets its data when closed: it is always created anew, "
                        "never upgraded")
        yield factory
        for store in opened:
            store.close()

    @staticmethod
    def _keeps_data(url: str) -> bool:
        """Does a table outlive closing the backend? (Asked of the backend itself, so the
        store stays new: no schema version is written.)"""
        from syncline.core.plugins import plugin_manager
        from syncline.core.store import scheme_of

        cls = plugin_manager().backend_class(scheme_of(url))
        table = TableSpec("_syncline_probe", (ColumnSpec("id", "integer", primary_key=True),),
                          "id")
        backend = cls(url)
        backend.open()
        backend.create_table(table)
        backend.close()
        backend = cls(url)
        backend.open()
        kept = table.name in backend.table_names()
        backend.drop_table(table.name)
        backend.close()
        return kept

    @staticmethod
    def _capabilities(url: str) -> frozenset[str]:
        return capabilities_of(url)

    @staticmethod
    def require_url(url: str, capability: str) -> None:
        skip_unless(capabilities_of(url), capability)

    @staticmethod
    def require(store: Store, capability: str) -> None:
        skip_unless(store.backend.capabilities, capability)

    @staticmethod
    def differences(store: Store) -> list[str]:
        return differences(store)

    def _v1_todos(self, open_at: StoreFactory) -> Store:
        store = open_at(1, [TodoV1])
        store.repository(TodoV1).insert_many(TODOS)
        return store

    @staticmethod
    def _transformer(kind: str, store: Store, sql: str, fn: Callable[[Any], Any]) -> Any:
        if kind == "sql":
            MigrationSuite.require(store, "sql")
            return sql
        return fn

    # -- the seed's TableMigration examples -----------------------------------------------------

    @pytest.mark.parametrize("kind", ["sql", "python"])
    def test_change_a_column_type_with_a_cast(self, open_at: StoreFactory, kind: str) -> None:
        store = self._v1_todos(open_at)
        transform = self._transformer(kind, store, "CAST(category AS INTEGER)",
                                      lambda row: int(row["category"]))

        def upgrade(m: Migrator, old: int, new: int) -> None:
            if old <= 1:
                m.alter_table(TableMigration(TodoIntCategory,
                                             column_transformer={"category": transform}))

        store = open_at(2, [TodoIntCategory], migration=MigrationStrategy(on_upgrade=upgrade))
        got = sorted(store.repository(TodoIntCategory).all(), key=lambda t: t.id)
        assert got == [TodoIntCategory(t.id, t.title, t.content, int(t.category)) for t in TODOS]
        assert store.repository(TodoIntCategory).find(syncline.F.category == 3)
        assert self.differences(store) == []
        assert store.backend.get_schema_version() == 2

    def test_relax_a_constraint_by_copying(self, open_at: StoreFactory) -> None:
        self._v1_todos(open_at)

        def upgrade(m: Migrator, old: int, new: int) -> None:
            m.alter_table(TableMigration(TodoNullableContent))

        store = open_at(2, [TodoNullableContent],
                        migration=MigrationStrategy(on_upgrade=upgrade))
        repo = store.repository(TodoNullableContent)
        assert repo.count() == len(TODOS)
        repo.update(1, content=None)
        assert repo.get(1) == TodoNullableContent(1, "title 1", None, "1")
        assert self.differences(store) == []

    def test_delete_a_column(self, open_at: StoreFactory) -> None:
        self._v1_todos(open_at)
        reg = EntityRegistry()
        todo = _todos_without("category", reg, "TodoNoCategory")
        store = open_at(2, [todo], migration=MigrationStrategy(
            on_upgrade=lambda m, old, new: m.alter_table(TableMigration(todo))))
        got: list[Any] = sorted(store.repository(todo).all(), key=lambda t: t.id)
        assert [(t.id, t.title, t.content) for t in got] == [
            (t.id, t.title, t.content) for t in TODOS]
        assert self.differences(store) == []

    @pytest.mark.parametrize("how", ["renamed", "sql", "python", "migrator"])
    def test_rename_a_column(self, open_at: StoreFactory, how: str) -> None:
        store = self._v1_todos(open_at)
        todo = _todos_renamed(EntityRegistry())

        def upgrade(m: Migrator, old: int, new: int) -> None:
            if how == "renamed":
                m.alter_table(TableMigration(todo, renamed={"body": "content"}))
            elif how == "migrator":
                m.rename_column(todo, "content", "body")
            else:
                fn = self._transformer(how, store, "content", lambda row: row["content"])
                m.alter_table(TableMigration(todo, column_transformer={"body": fn}))

        if how == "sql":
            self.require(store, "sql")
        store = open_at(2, [todo], migration=MigrationStrategy(on_upgrade=upgrade))
        got: list[Any] = sorted(store.repository(todo).all(), key=lambda t: t.id)
        assert [(t.id, t.body) for t in got] == [(t.id, t.content) for t in TODOS]
        assert self.differences(store) == []

    @pytest.mark.parametrize("kind", ["sql", "python"])
    def test_combine_columns_into_a_new_one(self, open_at: StoreFactory, kind: str) -> None:
        store = open_at(1, [PersonV1])
        store.repository(PersonV1).insert_many(
            [PersonV1(i, f"Ada{i}", f"Lovelace{i}") for i in range(20)])
        fn = self._transformer(kind, store, "first_name || ' ' || last_name",
                               lambda row: f"{row['first_name']} {row['last_name']}")
        store = open_at(2, [PersonV2], migration=MigrationStrategy(
            on_upgrade=lambda m, old, new: m.alter_table(TableMigration(
                PersonV2, new_columns=["full_name"], column_transformer={"full_name": fn}))))
        people = sorted(store.repository(PersonV2).all(), key=lambda p: p.id)
        assert [p.full_name for p in people] == [f"Ada{i} Lovelace{i}" for i in range(20)]
        assert self.differences(store) == []

    def test_new_column_without_default_or_transformer_is_refused_before_anything_runs(
            self, open_at: StoreFactory) -> None:
        store = open_at(1, [PersonV1])
        store.repository(PersonV1).insert(PersonV1(1, "Ada", "Lovelace"))
        ran: list[str] = []

        def upgrade(m: Migrator, old: int, new: int) -> None:
            ran.append("started")
            m.alter_table(TableMigration(PersonV2, new_columns=["full_name"]))

        with pytest.raises(MigrationError, match=r"full_name.*no default"):
            open_at(2, [PersonV2], migration=MigrationStrategy(on_upgrade=upgrade))
        store = open_at(1, [PersonV1])
        assert store.repository(PersonV1).all() == [PersonV1(1, "Ada", "Lovelace")]
        assert store.backend.get_schema_version() == 1

    # -- Migrator operations ----------------------------------------------------------------------

    def test_add_column_with_a_default_then_drop_it(self, open_at: StoreFactory) -> None:
        store = open_at(1, [PersonV1])
        store.repository(PersonV1).insert(PersonV1(1, "Ada", "Lovelace"))
        reg = EntityRegistry()

        @reg.entity("people", indexes=["nickname"])
        @attrs.define
        class Person:
            id: int
            first_name: str
            last_name: str
            nickname: str = "none"
            age: int | None = None

        def upgrade(m: Migrator, old: int, new: int) -> None:
            m.add_column(Person, "nickname")
            m.add_column(Person, "age")
            m.create_index(Person)

        store = open_at(2, [Person], migration=MigrationStrategy(on_upgrade=upgrade))
        assert store.repository(Person).get(1) == Person(1, "Ada", "Lovelace", "none", None)
        assert self.differences(store) == []

        def downgrade_shape(m: Migrator, old: int, new: int) -> None:
            m.drop_index(PersonV1, "ix_people_nickname")
            m.drop_column(PersonV1, "nickname")
            m.drop_column(PersonV1, "age")

        store = open_at(3, [PersonV1], migration=MigrationStrategy(on_upgrade=downgrade_shape))
        assert store.repository(PersonV1).get(1) == PersonV1(1, "Ada", "Lovelace")
        assert self.differences(store) == []

    def test_add_column_without_default_is_refused(self, open_at: StoreFactory) -> None:
        open_at(1, [PersonV1]).repository(PersonV1).insert(PersonV1(1, "Ada", "Lovelace"))
        with pytest.raises(MigrationError, match="not nullable and has no default"):
            open_at(2, [PersonV2], migration=MigrationStrategy(
                on_upgrade=lambda m, old, new: m.add_column(PersonV2, "full_name")))
        assert open_at(1, [PersonV1]).repository(PersonV1).count() == 1

    def test_alter_column_nullability_and_type(self, open_at: StoreFactory) -> None:
        self._v1_todos(open_at)
        using = None

        def upgrade(m: Migrator, old: int, new: int) -> None:
            m.alter_column(TodoIntCategory, "category", using=using)

        store = open_at(2, [TodoIntCategory], migration=MigrationStrategy(on_upgrade=upgrade))
        got = sorted(store.repository(TodoIntCategory).all(), key=lambda t: t.id)
        assert [t.category for t in got] == [int(t.category) for t in TODOS]
        store.repository(TodoIntCategory).update(1, category=None)
        assert self.differences(store) == []

    def test_alter_column_makes_a_text_column_nullable(self, open_at: StoreFactory) -> None:
        self._v1_todos(open_at)
        store = open_at(2, [TodoNullableContent], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_column(TodoNullableContent, "content")))
        repo = store.repository(TodoNullableContent)
        repo.update(2, content=None)
        assert repo.get(2) == TodoNullableContent(2, "title 2", None, "2")
        assert repo.count() == len(TODOS)
        assert self.differences(store) == []

    def test_alter_column_reads_text_as_booleans_the_same_everywhere(
            self, open_at: StoreFactory, store_url: str) -> None:
        r1, r2 = EntityRegistry(), EntityRegistry()

        @r1.entity("flags")
        @attrs.define
        class Flag1:
            id: int
            on: str

        @r2.entity("flags")
        @attrs.define
        class Flag2:
            id: int
            on: bool

        store = open_at(1, [Flag1])
        store.repository(Flag1).insert_many([Flag1(1, "true"), Flag1(2, "false"),
                                             Flag1(3, "T"), Flag1(4, "0")])
        sql = "sql" in store.backend.capabilities
        using = """lower("on") IN ('true', 't', '1')""" if sql else None
        if store.backend.migration_ops().dialect == "sqlite":
            with pytest.raises(MigrationError, match="needs using="):
                open_at(2, [Flag2], migration=MigrationStrategy(
                    on_upgrade=lambda m, o, n: m.alter_column(Flag2, "on")))
        store = open_at(2, [Flag2], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_column(Flag2, "on", using=using)))
        got = sorted(store.repository(Flag2).all(), key=lambda f: f.id)
        assert [f.on for f in got] == [True, False, True, False]

    def test_rename_table_and_create_drop_table(self, open_at: StoreFactory) -> None:
        self._v1_todos(open_at)
        reg = EntityRegistry()
        tasks: type = reg.entity("tasks")(attrs.make_class("Task", {
            a.name: attrs.field(type=a.type) for a in attrs.fields(TodoV1)}))

        def upgrade(m: Migrator, old: int, new: int) -> None:
            m.rename_table("todos", tasks)
            m.create_table(PersonV1)
            m.drop_table(PersonV1)
            m.create(PersonV1)

        store = open_at(2, [tasks, PersonV1], migration=MigrationStrategy(on_upgrade=upgrade))
        assert store.repository(tasks).count() == len(TODOS)
        assert "todos" not in store.backend.table_names()
        assert self.differences(store) == []
        ops = store.backend.migration_ops()
        with ops.transaction():  # what opening a store asks: which declared tables exist
            assert ops.existing(["tasks", "todos", "people", "nope"]) == {"tasks", "people"}

    # -- views, triggers, foreign keys ------------------------------------------------------------

    def test_indexes_triggers_and_views_survive_a_rebuild(self, open_at: StoreFactory,
                                                          store_url: str) -> None:
        self.require_url(store_url, "sql")
        reg1, reg2 = EntityRegistry(), EntityRegistry()

        @reg1.entity("notes", indexes=["title"])
        @attrs.define
        class Note1:
            id: int
            title: str
            words: str

        @reg2.entity("notes", indexes=["title"])
        @attrs.define
        class Note2:
            id: int
            title: str
            words: int

        @reg1.entity("note_log")
        @attrs.define
        class NoteLog:
            id: int
            note_id: int

        view = View("note_titles", "SELECT id, title FROM notes")
        view_of_view = View("note_ids", "SELECT id FROM note_titles")
        trigger = Trigger("log_notes", "notes", {
            "sqlite": "CREATE TRIGGER log_notes AFTER INSERT ON notes BEGIN "
                      "INSERT INTO note_log (id, note_id) VALUES (NEW.id, NEW.id); END",
            "postgresql": [
                "CREATE OR REPLACE FUNCTION log_notes_fn() RETURNS trigger AS $$ BEGIN "
                "INSERT INTO note_log (id, note_id) VALUES (NEW.id, NEW.id); RETURN NEW; END "
                "$$ LANGUAGE plpgsql",
                "CREATE TRIGGER log_notes AFTER INSERT ON notes FOR EACH ROW "
                "EXECUTE FUNCTION log_notes_fn()"],
        })
        store = open_at(1, [Note1, NoteLog], views=[view, view_of_view], triggers=[trigger])
        store.repository(Note1).insert_many([Note1(i, f"t{i}", str(i * 3)) for i in range(10)])
        assert store.repository(NoteLog).count() == 10
        store = open_at(2, [Note2, NoteLog], views=[view, view_of_view], triggers=[trigger],
                        migration=MigrationStrategy(on_upgrade=lambda m, o, n: m.alter_table(
                            TableMigration(Note2, column_transformer={
                                "words": "CAST(words AS INTEGER)"}))))
        assert self.differences(store) == []
        store.repository(Note2).insert(Note2(100, "new", 7))
        assert store.repository(NoteLog).count() == 11  # the trigger is back
        assert execute(store, "SELECT count(*) FROM note_titles") == [(11,)]
        assert execute(store, "SELECT count(*) FROM note_ids") == [(11,)]

    def test_checks_are_added_by_a_rebuild_and_kept_by_the_next(
            self, open_at: StoreFactory) -> None:
        """A TableMigration adds declared checks and length bounds (the copy refuses a row
        breaking one, leaving the store at its version); a later rebuild keeps them."""
        reg1, reg2, reg3 = EntityRegistry(), EntityRegistry(), EntityRegistry()

        @reg1.entity("priced")
        @attrs.define
        class Priced1:
            id: int
            title: str
            price: float

        @reg2.entity("priced")
        @attrs.define
        class Priced2:
            id: int
            title: str = syncline.field(max_length=4)
            price: float = syncline.field(default=0.0, check=syncline.F.price >= 0)

        @reg3.entity("priced")
        @attrs.define
        class Priced3(Priced2):
            note: str | None = None

        store = open_at(1, [Priced1])
        store.repository(Priced1).insert_many([Priced1(1, "ok", 2.0), Priced1(2, "long!", -1.0)])
        with pytest.raises(MigrationError) as info:
            open_at(2, [Priced2], migration=MigrationStrategy(
                on_upgrade=lambda m, o, n: m.alter_table(TableMigration(Priced2))))
        assert "ck_priced_" in str(info.value)
        store = open_at(1, [Priced1])
        assert store.repository(Priced1).get(2) == Priced1(2, "long!", -1.0)
        assert any("check ck_priced_price_1" in d for d in self.differences(
            open_at(1, [Priced2])))
        store = open_at(1, [Priced1])
        store.repository(Priced1).update(2, title="fine", price=1.0)
        store = open_at(2, [Priced2], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_table(TableMigration(Priced2))))
        assert self.differences(store) == []
        store = open_at(3, [Priced3], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_table(
                TableMigration(Priced3, new_columns=["note"]))))
        assert self.differences(store) == []
        row = {"id": 3, "title": "t", "price": -2.0, "note": None}
        with pytest.raises(syncline.IntegrityError, match="ck_priced_price_1"):
            store.backend.upsert_many(store.repository(Priced3).table, [row])
        with pytest.raises(syncline.IntegrityError, match="length"):
            store.repository(Priced3).update(1, title="five!")
        assert sorted(store.repository(Priced3).all(), key=lambda p: p.id) == [
            Priced3(1, "ok", 2.0), Priced3(2, "fine", 1.0)]

    def test_renaming_a_field_with_its_old_column_needs_no_migration(
            self, open_at: StoreFactory) -> None:
        """``syncline.field(column="content")`` keeps the stored column: the store opens at the
        same version, unchanged, and a later rebuild keeps the column name."""
        reg1, reg2 = EntityRegistry(), EntityRegistry()

        memo1: type = reg1.entity("memos", indexes=["content"])(attrs.make_class("Memo1", {
            "id": attrs.field(type=int), "content": attrs.field(type=str)}))
        @reg2.entity("memos", indexes=["body"])
        @attrs.define
        class Memo2:
            id: int
            body: str = syncline.field(column="content")
            stars: int = syncline.field(default=0, column="rating")

        store = open_at(1, [memo1])
        store.repository(memo1).insert_many([memo1(i, f"memo {i}") for i in range(5)])
        reg3 = EntityRegistry()
        renamed: type = reg3.entity("memos", indexes=["body"])(attrs.make_class("Memo", {
            "id": attrs.field(type=int),
            "body": syncline.field(type=str, column="content")}))
        store = open_at(1, [renamed])
        assert self.differences(store) == []
        memos: syncline.Repository[Any] = store.repository(renamed)
        assert [m.body for m in memos.find(syncline.F.body >= "memo 3")] == ["memo 3", "memo 4"]
        store = open_at(2, [Memo2], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_table(
                TableMigration(Memo2, new_columns=["rating"]))))
        assert self.differences(store) == []
        assert store.backend.table_names().count("memos") == 1
        assert store.repository(Memo2).get(4) == Memo2(4, "memo 4", 0)

    def test_recreate_all_views(self, open_at: StoreFactory, store_url: str) -> None:
        self.require_url(store_url, "sql")
        old_view = View("titles", "SELECT id, title FROM todos")
        new_view = View("titles", "SELECT id, title, body FROM todos")
        store = open_at(1, [TodoV1], views=[old_view])
        store.repository(TodoV1).insert_many(TODOS)
        todo = _todos_renamed(EntityRegistry())

        def upgrade(m: Migrator, old: int, new: int) -> None:
            m.drop_view("titles")
            m.alter_table(TableMigration(todo, renamed={"body": "content"}))
            m.recreate_all_views()

        store = open_at(2, [todo], views=[new_view],
                        migration=MigrationStrategy(on_upgrade=upgrade))
        assert execute(store, "SELECT count(body) FROM titles") == [(len(TODOS),)]
        assert self.differences(store) == []

    def test_child_rows_survive_a_rebuild_of_their_parent(self, open_at: StoreFactory) -> None:
        reg1, reg2 = EntityRegistry(), EntityRegistry()

        @reg1.entity("authors")
        @attrs.define
        class Author1:
            id: int
            name: str

        @reg2.entity("authors")
        @attrs.define
        class Author2:
            id: int
            name: str
            shout: str

        @reg1.entity("books", foreign_keys={
            "author_id": ForeignKey("authors.id", on_delete="cascade")})
        @attrs.define
        class Book:
            id: int
            author_id: int

        store = open_at(1, [Author1, Book])
        self.require(store, "foreign_keys")
        store.repository(Author1).insert_many([Author1(i, f"a{i}") for i in range(5)])
        store.repository(Book).insert_many([Book(i, i % 5) for i in range(200)])
        store = open_at(2, [Author2, Book], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_table(TableMigration(
                Author2, new_columns=["shout"],
                column_transformer={"shout": lambda row: row["name"].upper()}))))
        assert store.repository(Book).count() == 200
        assert store.repository(Author2).get(3) == Author2(3, "a3", "A3")
        assert self.differences(store) == []
        store.repository(Author2).delete(4)  # the cascade still works
        assert store.repository(Book).count() == 160

    def test_a_table_referencing_itself_is_rebuilt(self, open_at: StoreFactory) -> None:
        r1, r2 = EntityRegistry(), EntityRegistry()

        @r1.entity("nodes", foreign_keys={"parent": "nodes.id"})
        @attrs.define
        class Node1:
            id: int
            parent: int | None = None

        @r2.entity("nodes", foreign_keys={"parent": "nodes.id"})
        @attrs.define
        class Node2:
            id: int
            parent: int | None = None
            depth: int = 0

        store = open_at(1, [Node1])
        store.repository(Node1).insert_many([Node1(0), Node1(1, 0), Node1(2, 1)])
        store = open_at(2, [Node2], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_table(TableMigration(
                Node2, new_columns=["depth"]))))
        assert sorted(store.repository(Node2).all(), key=lambda n: n.id) == [
            Node2(0), Node2(1, 0), Node2(2, 1)]
        assert self.differences(store) == []
        if "foreign_keys" in store.backend.capabilities:
            with pytest.raises(syncline.IntegrityError):
                store.repository(Node2).insert(Node2(9, 42))

    def test_a_broken_foreign_key_aborts_the_migration(self, open_at: StoreFactory) -> None:
        reg1 = EntityRegistry()

        @reg1.entity("authors")
        @attrs.define
        class Author:
            id: int
            name: str

        @reg1.entity("books", foreign_keys={"author_id": "authors.id"})
        @attrs.define
        class Book:
            id: int
            author_id: int

        store = open_at(1, [Author, Book])
        self.require(store, "foreign_keys")
        store.repository(Author).insert_many([Author(i, f"a{i}") for i in range(3)])
        store.repository(Book).insert_many([Book(i, i % 3) for i in range(9)])

        def upgrade(m: Migrator, old: int, new: int) -> None:  # drops author 0 on the way
            m.alter_table(TableMigration(Author, column_transformer={
                "id": "CASE WHEN id = 0 THEN 100 ELSE id END"}))

        with pytest.raises(MigrationError) as err:
            open_at(2, [Author, Book], migration=MigrationStrategy(on_upgrade=upgrade))
        assert "version 1" in str(err.value)
        assert "author_id" in str(err.value)  # the column, and the key by its value
        assert "(0)" in str(err.value) or "author_id = 0" in str(err.value)
        store = open_at(1, [Author, Book])
        assert store.repository(Book).count() == 9
        assert sorted(a.id for a in store.repository(Author).all()) == [0, 1, 2]

    # -- issue 19's regressions -----------------------------------------------------------------

    def test_a_table_with_two_foreign_keys_to_one_parent_is_rebuilt(
            self, open_at: StoreFactory) -> None:
        r1, r2 = EntityRegistry(), EntityRegistry()

        @r1.entity("authors", unique=["legacy_key"])
        @attrs.define
        class Author:
            id: int
            legacy_key: str

        keys = {"author_id": "authors.id", "legacy_author": "authors.legacy_key"}

        @r1.entity("books", foreign_keys=keys)
        @attrs.define
        class Book1:
            id: int
            author_id: int
            legacy_author: str

        @r2.entity("books", foreign_keys=keys)
        @attrs.define
        class Book2:
            id: int
            author_id: int
            legacy_author: str
            pages: int = 0

        store = open_at(1, [Author, Book1])
        store.repository(Author).insert_many([Author(i, f"k{i}") for i in range(3)])
        store.repository(Book1).insert_many([Book1(i, i % 3, f"k{(i + 1) % 3}")
                                             for i in range(9)])
        store = open_at(2, [Author, Book2], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_table(TableMigration(
                Book2, new_columns=["pages"],
                column_transformer={"pages": lambda row: row["id"] * 10}))))
        assert store.repository(Book2).get(4) == Book2(4, 1, "k2", 40)
        assert store.repository(Book2).count() == 9
        assert self.differences(store) == []
        if "foreign_keys" in store.backend.capabilities:  # both keys are enforced again
            with pytest.raises(syncline.IntegrityError):
                store.repository(Book2).insert(Book2(20, 1, "nobody"))
            with pytest.raises(syncline.IntegrityError):
                store.repository(Book2).insert(Book2(21, 99, "k1"))

    def test_a_percent_sign_works_in_every_sql_entry_point(self, open_at: StoreFactory,
                                                             store_url: str) -> None:
        self.require_url(store_url, "sql")
        r1, r2 = EntityRegistry(), EntityRegistry()

        @r1.entity("rates")
        @attrs.define
        class Rate1:
            id: int
            label: str
            share: str

        @r2.entity("rates")
        @attrs.define
        class Rate2:
            id: int
            label: str
            share: int
            note: str = ""

        @r1.entity("rate_log")
        @attrs.define
        class RateLog:
            id: int
            what: str

        odd = View("odd_rates", "SELECT id, label || ' %' AS shown FROM rates WHERE id % 2 = 1")
        trigger = Trigger("log_rates", "rates", {
            "sqlite": "CREATE TRIGGER log_rates AFTER INSERT ON rates BEGIN "
                      "INSERT INTO rate_log (id, what) VALUES (NEW.id, NEW.label || '%'); END",
            "postgresql": [
                "CREATE FUNCTION log_rates_fn() RETURNS trigger AS $$ BEGIN "
                "INSERT INTO rate_log (id, what) VALUES (NEW.id, NEW.label || '%'); "
                "RETURN NEW; END $$ LANGUAGE plpgsql",
                "CREATE TRIGGER log_rates AFTER INSERT ON rates FOR EACH ROW "
                "EXECUTE FUNCTION log_rates_fn()"],
        })
        store = open_at(1, [Rate1, RateLog], views=[odd], triggers=[trigger])
        store.repository(Rate1).insert_many([Rate1(i, f"r{i}", f"{i * 10}%") for i in range(4)])
        assert execute(store, "SELECT shown FROM odd_rates ORDER BY id") == [
            ("r1 %",), ("r3 %",)]
        assert execute(store, "SELECT what FROM rate_log WHERE id = 2") == [("r2%",)]
        assert execute(store, "SELECT count(*) FROM rates WHERE share LIKE '%0%' AND id >= :low",
                       {"low": 2}) == [(2,)]
        with pytest.raises(MigrationError, match="named"):
            execute(store, "SELECT count(*) FROM rates WHERE id = ?", (1,))  # type: ignore[arg-type]

        def upgrade(m: Migrator, old: int, new: int) -> None:
            m.execute("UPDATE rates SET label = label || '%' WHERE id % 2 = 0")
            m.execute("UPDATE rates SET label = :label WHERE id = :id AND share LIKE '30%'",
                      {"label": "100% sure", "id": 3})
            m.alter_table(TableMigration(Rate2, new_columns=["note"], column_transformer={
                "share": "CAST(REPLACE(share, '%', '') AS INTEGER)",
                "note": "'was ' || share"}))

        store = open_at(2, [Rate2, RateLog], views=[odd], triggers=[trigger],
                        migration=MigrationStrategy(on_upgrade=upgrade))
        rates = sorted(store.repository(Rate2).all(), key=lambda r: r.id)
        assert rates == [Rate2(0, "r0%", 0, "was 0%"), Rate2(1, "r1", 10, "was 10%"),
                         Rate2(2, "r2%", 20, "was 20%"), Rate2(3, "100% sure", 30, "was 30%")]
        assert execute(store, "SELECT shown FROM odd_rates ORDER BY id") == [
            ("r1 %",), ("100% sure %",)]
        store.repository(Rate2).insert(Rate2(4, "r4", 40))
        assert execute(store, "SELECT what FROM rate_log WHERE id = 4") == [("r4%",)]
        assert self.differences(store) == []

    def test_a_percent_sign_in_alter_column_using(self, open_at: StoreFactory,
                                                  store_url: str) -> None:
        self.require_url(store_url, "sql")
        store = self._v1_todos(open_at)
        store = open_at(2, [TodoIntCategory], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_column(
                TodoIntCategory, "category",
                using="CAST(REPLACE(category || '%', '%', '') AS INTEGER) + 1")))
        assert store.repository(TodoIntCategory).find(F.id == 7)[0].category == 3

    def test_a_trigger_is_dropped_with_its_function_and_created_again(
            self, open_at: StoreFactory, store_url: str) -> None:
        self.require_url(store_url, "sql")

        def counting(step: int) -> Trigger:
            return Trigger("count_notes", "notes", {
                "sqlite": "CREATE TRIGGER count_notes AFTER INSERT ON notes BEGIN "
                          f"UPDATE note_count SET n = n + {step} WHERE id = 1; END",
                "postgresql": [
                    "CREATE FUNCTION count_notes_fn() RETURNS trigger AS $$ BEGIN "
                    f"UPDATE note_count SET n = n + {step} WHERE id = 1; RETURN NEW; END "
                    "$$ LANGUAGE plpgsql",
                    "CREATE TRIGGER count_notes AFTER INSERT ON notes FOR EACH ROW "
                    "EXECUTE FUNCTION count_notes_fn()"]})

        reg = EntityRegistry()

        @reg.entity("notes")
        @attrs.define
        class Note:
            id: int

        @reg.entity("note_count")
        @attrs.define
        class NoteCount:
            id: int
            n: int

        store = open_at(1, [Note, NoteCount], triggers=[counting(1)])
        store.repository(NoteCount).insert(NoteCount(1, 0))
        store.repository(Note).insert(Note(1))

        def upgrade(m: Migrator, old: int, new: int) -> None:  # the documented way
            m.drop(counting(1))
            m.create(counting(10))

        store = open_at(2, [Note, NoteCount], triggers=[counting(10)],
                        migration=MigrationStrategy(on_upgrade=upgrade))
        store.repository(Note).insert(Note(2))
        assert store.repository(NoteCount).find(F.id == 1)[0].n == 11

        def drop_table(m: Migrator, old: int, new: int) -> None:
            m.drop_table(Note)  # its trigger's function goes with it
            m.create_table(Note)
            m.create(counting(100))

        store = open_at(3, [Note, NoteCount], triggers=[counting(100)],
                        migration=MigrationStrategy(on_upgrade=drop_table))
        store.repository(Note).insert(Note(3))
        assert store.repository(NoteCount).find(F.id == 1)[0].n == 111
        assert self.differences(store) == []

    # two stores open on one location at once: each must notice the other's commits
    @requires("external_changes")
    def test_a_store_still_open_with_the_old_code_refuses_to_write_after_a_migration(
            self, open_at: StoreFactory, store_url: str) -> None:
        old = self._v1_todos(open_at)
        old.repository(TodoV1).insert(TodoV1(100, "before", "c", "1"))  # it writes at first
        new = syncline.open(store_url, entities=[TodoIntCategory], schema_version=2,
                            migration=MigrationStrategy(on_upgrade=lambda m, o, n: m.alter_table(
                                TableMigration(TodoIntCategory, column_transformer={
                                    "category": lambda row: int(row["category"])}))))
        try:
            with pytest.raises(syncline.StaleSchemaError,
                               match=r"migrated to schema version 2.*this code is at version 1"):
                old.repository(TodoV1).insert(TodoV1(101, "stale", "c", "not a number"))
            with pytest.raises(syncline.StaleSchemaError), old.transaction():
                old.repository(TodoV1).update(1, category="not a number")
            with pytest.raises(syncline.StaleSchemaError):  # and it stays refused
                old.repository(TodoV1).delete(2)
            repo = new.repository(TodoIntCategory)
            assert repo.count() == len(TODOS) + 1
            assert repo.find(F.id == 1)[0].category == 1
            assert repo.get(2) is not None
            repo.insert(TodoIntCategory(101, "new", "c", 5))  # the new code writes
            assert repo.find(F.id == 101)[0].category == 5
        finally:
            new.close()

    def test_a_failing_python_transformer_names_its_row_and_changes_nothing(
            self, open_at: StoreFactory) -> None:
        self._v1_todos(open_at)

        def category(row: Any) -> int:
            if row["id"] == 7:
                raise ValueError("no category for seven")
            return int(row["category"])

        with pytest.raises(MigrationError) as err:
            open_at(2, [TodoIntCategory], migration=MigrationStrategy(
                on_upgrade=lambda m, o, n: m.alter_table(TableMigration(
                    TodoIntCategory, column_transformer={"category": category}))))
        assert ("the transformer of todos.category failed on row 7: ValueError: no category "
                "for seven") in str(err.value)
        assert "still at version 1" in str(err.value)
        store = open_at(1, [TodoV1])
        assert sorted(store.repository(TodoV1).all(), key=lambda t: t.id) == TODOS

    # -- strategy -------------------------------------------------------------------------------

    def test_a_failing_migration_rolls_back_fully(self, open_at: StoreFactory) -> None:
        self._v1_todos(open_at)
        todo = _todos_renamed(EntityRegistry())

        def upgrade(m: Migrator, old: int, new: int) -> None:
            m.alter_table(TableMigration(todo, renamed={"body": "content"}))
            m.create_table(PersonV1)
            raise RuntimeError("boom half-way")

        with pytest.raises(MigrationError, match=r"boom half-way.*still at version 1"):
            open_at(2, [todo, PersonV1], migration=MigrationStrategy(on_upgrade=upgrade))
        store = open_at(1, [TodoV1])
        assert sorted(store.repository(TodoV1).all(), key=lambda t: t.id) == TODOS
        assert "people" not in store.backend.table_names()
        assert self.differences(store) == []

    def test_steps_run_in_order_from_any_version(self, open_at: StoreFactory) -> None:
        ran: list[int] = []
        by_version = {v: (lambda m, v=v: ran.append(v)) for v in range(2, 6)}
        open_at(1, [PersonV1]).repository(PersonV1).insert(PersonV1(1, "a", "b"))
        store = open_at(5, [PersonV1], migration=MigrationStrategy(on_upgrade=steps(by_version)))
        assert ran == [2, 3, 4, 5]
        assert store.backend.get_schema_version() == 5
        assert store.opening is not None and store.opening.version_before == 1
        ran.clear()
        open_at(5, [PersonV1], migration=MigrationStrategy(on_upgrade=steps(by_version)))
        assert ran == []

    def test_steps_refuse_a_gap(self, open_at: StoreFactory) -> None:
        open_at(1, [PersonV1])
        with pytest.raises(MigrationError, match=r"no migration step for version.*3"):
            open_at(4, [PersonV1], migration=MigrationStrategy(
                on_upgrade=steps({2: lambda m: None, 4: lambda m: None})))

    def test_jump_from_1_to_5_through_every_step(self, open_at: StoreFactory) -> None:
        store = self._v1_todos(open_at)
        reg = EntityRegistry()

        @reg.entity("todos", indexes=["category"])
        @attrs.define
        class Todo5:
            id: int
            title: str
            body: str | None
            category: int | None
            done: bool = False

        done: list[int] = []

        def step(v: int, work: Callable[[Migrator], object]) -> Callable[[Migrator], None]:
            def run(m: Migrator) -> None:
                work(m)
                done.append(v)
            return run

        by_version = {
            2: step(2, lambda m: m.add_column(Todo5, "done")),
            3: step(3, lambda m: m.alter_table(TableMigration(
                Todo5, renamed={"body": "content"},
                column_transformer={"category": lambda row: int(row["category"])}))),
            4: step(4, lambda m: m.create_index(Todo5)),
            5: step(5, lambda m: m.create_table(PersonV1)),
        }
        store = open_at(5, [Todo5, PersonV1],
                        migration=MigrationStrategy(on_upgrade=steps(by_version)))
        assert done == [2, 3, 4, 5]
        got = sorted(store.repository(Todo5).all(), key=lambda t: t.id)
        assert got == [Todo5(t.id, t.title, t.content, int(t.category)) for t in TODOS]
        assert self.differences(store) == []

    def test_two_stores_opening_at_once_migrate_once(self, open_at: StoreFactory,
                                                     store_url: str) -> None:
        # Stores of one URL that see each other's commits share one schema version.
        self.require_url(store_url, "external_changes")
        open_at(1, [PersonV1]).repository(PersonV1).insert(PersonV1(1, "a", "b"))
        open_at(1, [PersonV1]).close()  # closes the first one too: both openers start cold
        ran: list[int] = []
        gate = threading.Barrier(2)

        def upgrade(m: Migrator, old: int, new: int) -> None:
            ran.append(old)
            m.alter_table(TableMigration(PersonV2, new_columns=["full_name"],
                                         column_transformer={"full_name": lambda r: "x"}))

        strategy = MigrationStrategy(on_upgrade=upgrade)
        stores: list[Store] = []
        errors: list[BaseException] = []

        def opener() -> None:
            gate.wait()
            try:
                stores.append(syncline.open(store_url, entities=[PersonV2], schema_version=2,
                                            migration=strategy))
            except BaseException as exc:  # reported below
                errors.append(exc)

        threads = [threading.Thread(target=opener) for _ in range(2)]
        for t in threads:
            t.start()
        for t in threads:
            t.join(60)
        try:
            assert errors == []
            assert ran == [1]
            assert sorted(s.opening.had_upgrade for s in stores if s.opening) == [False, True]
            assert stores[0].repository(PersonV2).get(1) == PersonV2(1, "a", "b", "x")
        finally:
            for store in stores:
                store.close()

    def test_upgrade_without_a_strategy_is_refused(self, open_at: StoreFactory) -> None:
        open_at(1, [PersonV1])
        with pytest.raises(MigrationError, match="no upgrade is given"):
            open_at(2, [PersonV1])
        assert open_at(1, [PersonV1]).backend.get_schema_version() == 1

    def test_newer_store_refuses_to_open(self, open_at: StoreFactory) -> None:
        open_at(3, [PersonV1])
        with pytest.raises(MigrationError, match="newer than this code's version 2"):
            open_at(2, [PersonV1])

    def test_before_open_hears_what_happened(self, open_at: StoreFactory) -> None:
        seen: list[tuple[int | None, int, bool]] = []

        def before_open(store: Store, details: Any) -> None:
            seen.append((details.version_before, details.version_now, details.had_upgrade))

        strategy = MigrationStrategy(on_upgrade=lambda m, o, n: None, before_open=before_open)
        open_at(1, [PersonV1], migration=strategy)
        open_at(1, [PersonV1], migration=strategy)
        open_at(2, [PersonV1], migration=strategy)
        assert seen == [(None, 1, False), (1, 1, False), (1, 2, True)]

    def test_on_create_replaces_create_all(self, open_at: StoreFactory) -> None:
        created: list[int] = []

        def on_create(m: Migrator) -> None:
            m.create_all()
            m.store.repository(PersonV1).insert(PersonV1(1, "seed", "row"))
            created.append(1)

        store = open_at(1, [PersonV1], migration=MigrationStrategy(on_create=on_create))
        assert created == [1]
        assert store.repository(PersonV1).count() == 1

    # -- sync state and volume --------------------------------------------------------------------

    def test_queue_records_and_cursor_survive_and_payloads_take_the_new_shape(
            self, open_at: StoreFactory) -> None:
        r1, r2 = EntityRegistry(), EntityRegistry()

        @r1.entity("notes", syncs=True)
        @attrs.define
        class Note1:
            id: str
            text: str

        @r2.entity("notes", syncs=True)
        @attrs.define
        class Note2:
            id: str
            body: str
            stars: int = 0

        store = open_at(1, [Note1])
        repo = store.repository(Note1)
        repo.insert_many([Note1(f"n{i}", f"text {i}") for i in range(5)])
        repo.update("n1", text="edited")
        repo.delete("n4")
        store.outbox.set_meta("cursor", "epoch-1:42")
        store.enqueue_command("reindex", {"all": True})
        before = store.outbox.all_pending()
        assert len(before) == 8
        store = open_at(2, [Note2], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_table(TableMigration(
                Note2, renamed={"body": "text"}, new_columns=["stars"]))))
        after = store.outbox.all_pending()
        assert [e.id for e in after] == [e.id for e in before]
        assert store.outbox.get_meta("cursor") == "epoch-1:42"
        payloads = {e.record_id: e.payload for e in after if e.action == "update"}
        assert payloads["n1"] == {"id": "n1", "body": "edited", "stars": 0}
        assert [e.payload for e in after if e.action == "command"] == [{"all": True}]
        assert {r.id for r in store.repository(Note2).pending()} == {
            "n0", "n1", "n2", "n3"}

    def test_queued_payloads_are_rewritten_in_bounded_batches(
            self, open_at: StoreFactory, monkeypatch: pytest.MonkeyPatch) -> None:
        from syncline.core.sync import follow

        r1, r2 = EntityRegistry(), EntityRegistry()

        @r1.entity("flags", syncs=True)  # kinds a database may write as the wire form
        @attrs.define
        class Flag1:
            id: str
            name: str

        @r2.entity("flags", syncs=True)
        @attrs.define
        class Flag2:
            id: str
            label: str
            on: bool = True
            rank: int | None = None

        @r1.entity("readings", syncs=True)  # kinds syncline converts itself
        @attrs.define
        class Reading1:
            id: str
            value: float

        @r2.entity("readings", syncs=True)
        @attrs.define
        class Reading2:
            id: str
            value: float
            at: dt.datetime

        monkeypatch.setattr(follow, "REWRITE_BATCH", 3)
        store = open_at(1, [Flag1, Reading1])
        store.repository(Flag1).insert_many([Flag1(f"f{i}", f"flag 'é' {i}") for i in range(8)])
        store.repository(Reading1).insert_many([Reading1(f"r{i}", i / 3) for i in range(7)])
        store.outbox.entries.update_where(F.record_id == "f0", group_id="sent-once")
        before = {e.id: e for e in store.outbox.all_pending()}
        store = open_at(2, [Flag2, Reading2], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: (
                m.alter_table(TableMigration(Flag2, renamed={"label": "name"},
                                             new_columns=["on", "rank"], column_transformer={
                                                 "rank": lambda row: len(row["id"])})),
                m.alter_table(TableMigration(Reading2, new_columns=["at"], column_transformer={
                    "at": lambda row: dt.datetime(2026, 1, 2, 3, 4, 5, 6789, tzinfo=dt.UTC)})))))
        after = store.outbox.all_pending()
        assert [e.id for e in after] == list(before)
        rows = {**{f.id: f for f in store.repository(Flag2).all()},
                **{r.id: r for r in store.repository(Reading2).all()}}
        for entry in after:
            if entry.record_id == "f0":  # already sent once: its payload stays as sent
                assert entry.payload == before[entry.id].payload == {"id": "f0",
                                                                      "name": "flag 'é' 0"}
            else:
                assert entry.payload == store.wire.unstructure(rows[str(entry.record_id)])
        assert after[-1].payload == {"id": "r6", "value": 2.0,
                                     "at": "2026-01-02T03:04:05.006789+00:00"}
        assert next(e for e in after if e.record_id == "f5").payload == {
            "id": "f5", "label": "flag 'é' 5", "on": True, "rank": 2}

    def test_a_queued_record_that_no_longer_reads_stops_the_migration(
            self, open_at: StoreFactory, store_url: str) -> None:
        self.require_url(store_url, "sql")
        r1, r2 = EntityRegistry(), EntityRegistry()

        @r1.entity("marks", syncs=True)
        @attrs.define
        class Mark1:
            id: str
            score: str

        @r2.entity("marks", syncs=True)
        @attrs.define
        class Mark2:
            id: str
            score: int

        store = open_at(1, [Mark1])
        store.repository(Mark1).insert_many([Mark1("a", "1"), Mark1("b", "oops")])
        before = store.outbox.all_pending()
        with pytest.raises(MigrationError) as err:  # SQLite keeps 'oops' in the INTEGER column
            open_at(2, [Mark2], migration=MigrationStrategy(on_upgrade=lambda m, o, n: (
                m.alter_table(TableMigration(Mark2, column_transformer={
                    "score": "CASE WHEN score = 'oops' THEN score ELSE CAST(score AS INTEGER) "
                             "END"})) if m.ops.dialect == "sqlite" else m.alter_column(
                    Mark2, "score", using="CAST(score AS INTEGER)"))))
        assert "still at version 1" in str(err.value)
        if "no longer read" in str(err.value):
            assert "row 'b' of 'marks'" in str(err.value)
        store = open_at(1, [Mark1])
        assert store.outbox.all_pending() == before

    def test_a_hundred_thousand_rows(self, open_at: StoreFactory) -> None:
        store = open_at(1, [PersonV1])
        n = 100_000
        store.repository(PersonV1).insert_many(
            PersonV1(i, f"f{i}", f"l{i}") for i in range(n))
        store = open_at(2, [PersonV2], migration=MigrationStrategy(
            on_upgrade=lambda m, o, n: m.alter_table(TableMigration(
                PersonV2, new_columns=["full_name"], column_transformer={
                    "full_name": lambda row: row["first_name"] + " " + row["last_name"]}))))
        repo = store.repository(PersonV2)
        assert repo.count() == n
        people = repo.all()
        assert all(p.full_name == f"f{p.id} l{p.id}" for p in people)
        assert sorted(p.id for p in people) == list(range(n))
