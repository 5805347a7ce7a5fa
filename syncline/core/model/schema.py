"""Entity declaration: attrs classes marked as syncline tables.

``@syncline.entity("posts", indexes=[("user_id", "created_at")])`` on top of ``@attrs.define``
turns a class into an entity. The declaration is checked at once: a field type syncline cannot
store, a missing primary key or a table claimed twice raises :class:`EntityDefinitionError`
naming the class and the field.
"""

from __future__ import annotations

import datetime as dt
import decimal
import enum
import sys
import types
import typing
import uuid
from collections.abc import Callable, Iterable, Mapping, Sequence
from typing import Any, Literal, TypeAlias, TypeVar

import attrs

from syncline.core.model.checks import CheckSpec, field_checks
from syncline.core.model.errors import EntityDefinitionError, NotFoundError

Kind: TypeAlias = Literal[
    "text", "integer", "float", "boolean", "bytes", "datetime", "date", "uuid", "decimal", "json"
]
KINDS: tuple[str, ...] = typing.get_args(Kind)
ORDERABLE_KINDS = frozenset(KINDS) - {"json"}

# Order matters: bool before int, datetime before date (subclasses).
_BUILTIN_KINDS: tuple[tuple[type, Kind], ...] = (
    (bool, "boolean"),
    (int, "integer"),
    (float, "float"),
    (str, "text"),
    (bytes, "bytes"),
    (dt.datetime, "datetime"),
    (dt.date, "date"),
    (uuid.UUID, "uuid"),
    (decimal.Decimal, "decimal"),
)

T = TypeVar("T")


@attrs.frozen(cache_hash=True)
class ColumnSpec:
    """One stored column, as a backend sees it."""

    name: str
    kind: Kind
    nullable: bool = False
    primary_key: bool = False
    #: the database default: a str, int, float or bool taken from the field's plain default
    default: Any = None


@attrs.frozen(cache_hash=True)
class ForeignKeySpec:
    """``column`` references ``ref_table.ref_column``; ``on_delete`` is an SQL action."""

    column: str
    ref_table: str
    ref_column: str
    on_delete: str | None = None


@attrs.frozen(cache_hash=True)
class IndexSpec:
    name: str
    columns: tuple[str, ...]
    unique: bool = False


@attrs.frozen(cache_hash=True)
class TableSpec:
    """A table as the untyped backend contract sees it: names and storage kinds only."""

    name: str
    columns: tuple[ColumnSpec, ...]
    primary_key: str
    indexes: tuple[IndexSpec, ...] = ()
    foreign_keys: tuple[ForeignKeySpec, ...] = ()
    #: CHECK constraints and length bounds declared with syncline.field()
    checks: tuple[CheckSpec, ...] = ()
    column_names: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False, hash=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "column_names", tuple(c.name for c in self.columns))

    def column(self, name: str) -> ColumnSpec:
        for col in self.columns:
            if col.name == name:
                return col
        raise NotFoundError(
            f"table {self.name!r} has no column {name!r}; columns: {', '.join(self.column_names)}"
        )


@attrs.frozen
class FieldSpec:
    """One entity field: its Python type and how it is stored."""

    name: str
    alias: str  # the attrs __init__ argument name
    python_type: Any  # the type without Optional
    kind: Kind
    nullable: bool
    enum_type: type[enum.Enum] | None = None
    custom: bool = False  # a plugin-registered type
    local: bool = False  # stored here, never synced (syncline.field(local=True))
    #: the stored column's name: the field's own unless declared (syncline.field(column=...))
    column: str = ""

    def __attrs_post_init__(self) -> None:
        if not self.column:
            object.__setattr__(self, "column", self.name)


@attrs.frozen
class EntitySpec:
    cls: type
    table: TableSpec
    fields: tuple[FieldSpec, ...]
    primary_key: str
    syncs: bool
    #: the fields stored on this device only: never pushed, kept through pulls
    local_fields: tuple[str, ...] = attrs.field(init=False, eq=False, repr=False)
    #: field name -> column name, for the fields stored under another name (usually empty)
    columns: dict[str, str] = attrs.field(init=False, eq=False, repr=False)

    def __attrs_post_init__(self) -> None:
        object.__setattr__(self, "local_fields", tuple(f.name for f in self.fields if f.local))
        object.__setattr__(self, "columns",
                           {f.name: f.column for f in self.fields if f.column != f.name})

    def column_of(self, field: str) -> str:
        """The column storing ``field`` (its own name unless declared otherwise)."""
        return self.columns.get(field, field)

    def field_of_column(self, column: str) -> str:
        """The field stored in ``column``."""
        for f in self.fields:
            if f.column == column:
                return f.name
        return column

    def field(self, name: str) -> FieldSpec:
        for f in self.fields:
            if f.name == name:
                return f
        raise NotFoundError(
            f"{self.cls.__name__} has no field {name!r}; fields: "
            f"{', '.join(f.name for f in self.fields)}"
        )


@attrs.frozen
class CustomType:
    """A plugin-registered field type stored as one of the built-in kinds."""

    python_type: type
    kind: Kind
    to_storage: Callable[[Any], Any]
    from_storage: Callable[[Any], Any]


class TypeRegistry:
    """Extra field types; plugins fill it through ``syncline_register_types``."""

    def __init__(self) -> None:
        self._types: dict[type, CustomType] = {}

    def register(
        self,
        python_type: type,
        kind: Kind,
        to_storage: Callable[[Any], Any],
        from_storage: Callable[[Any], Any],
    ) -> None:
        """Store ``python_type`` as ``kind``, converting with the two functions."""
        if kind not in KINDS:
            raise EntityDefinitionError(
                f"cannot register {python_type!r} as kind {kind!r}; kinds: {', '.join(KINDS)}"
            )
        self._types[python_type] = CustomType(python_type, kind, to_storage, from_storage)

    def get(self, python_type: Any) -> CustomType | None:
        return self._types.get(python_type) if isinstance(python_type, type) else None

    def __iter__(self) -> typing.Iterator[CustomType]:
        return iter(self._types.values())


_custom_type_source: Callable[[], TypeRegistry] | None = None


def use_custom_types(source: Callable[[], TypeRegistry]) -> None:
    """Where entity declarations find the types plugins registered: the plugin manager calls
    this when it is imported (the model knows no plugin manager)."""
    global _custom_type_source
    _custom_type_source = source


def _custom_types() -> TypeRegistry:
    return TypeRegistry() if _custom_type_source is None else _custom_type_source()


def _split_optional(tp: Any) -> tuple[Any, bool]:
    origin = typing.get_origin(tp)
    if origin is typing.Union or origin is types.UnionType:
        args = [a for a in typing.get_args(tp) if a is not type(None)]
        nullable = len(args) != len(typing.get_args(tp))
        if len(args) == 1:
            return args[0], nullable
        return typing.Union[tuple(args)], nullable  # noqa: UP007 - rebuilt for the error message
    return tp, False


def is_json(tp: Any) -> bool:
    """Whether ``tp`` is stored as JSON (``list``, ``dict``, ``list[...]``, ``dict[...]``): the
    predicate for a backend converter's JSON hooks (``register_..._hook_factory(is_json, ...)``)."""
    if tp in (list, dict):
        return True
    return typing.get_origin(tp) in (list, dict)


_is_json = is_json  # its old, private name (backends imported it); kept for one release


def classify(owner: str, name: str, annotation: Any) -> FieldSpec:
    """Work out how a field of type ``annotation`` is stored, or fail naming it."""
    tp, nullable = _split_optional(annotation)
    where = f"{owner}.{name}"
    if isinstance(tp, type) and issubclass(tp, enum.Enum):
        values = [m.value for m in tp]
        if values and all(isinstance(v, int) and not isinstance(v, bool) for v in values):
            return FieldSpec(name, name, tp, "integer", nullable, enum_type=tp)
        if values and all(isinstance(v, str) for v in values):
            return FieldSpec(name, name, tp, "text", nullable, enum_type=tp)
        raise EntityDefinitionError(
            f"{where}: enum {tp.__name__} must have all-int or all-str values to be stored"
        )
    for base, kind in _BUILTIN_KINDS:
        if tp is base:
            return FieldSpec(name, name, tp, kind, nullable)
    if is_json(tp):
        return FieldSpec(name, name, tp, "json", nullable)
    custom = _custom_types().get(tp)
    if custom is not None:
        return FieldSpec(name, name, tp, custom.kind, nullable, custom=True)
    supported = "str, int, float, bool, bytes, datetime, date, UUID, Decimal, Enum, list, dict"
    raise EntityDefinitionError(
        f"{where}: type {annotation!r} cannot be stored; supported: {supported} "
        f"(and X | None), or a type registered by a plugin through syncline_register_types"
    )


class EntityRegistry:
    """Which class owns which table name. The module-level :data:`registry` is the default."""

    def __init__(self) -> None:
        self._tables: dict[str, type] = {}

    def claim(self, table: str, cls: type) -> None:
        owner = self._tables.get(table)
        if owner is not None and _qualname(owner) != _qualname(cls):
            raise EntityDefinitionError(
                f"{_qualname(cls)}: table {table!r} is already declared by {_qualname(owner)}; "
                f"give one of them another table name"
            )
        self._tables[table] = cls

    def entity(self, table: str | None = None, **kwargs: Any) -> Callable[[type[T]], type[T]]:
        return entity(table, registry=self, **kwargs)

    def entities(self) -> list[type]:
        return list(self._tables.values())


def internal_entity(registry: EntityRegistry, table: str,
                    **kwargs: Any) -> Callable[[type[T]], type[T]]:
    """Declare one of syncline's own tables (the sync queue's, a sync server's...).

    ``table`` must start with ``_syncline``, a prefix application entities cannot use. Such a
    table never syncs, its text keys are not held to the id size limit (they are built from
    limited ids), and it is declared in ``registry``, one per owner, never the application's.
    The other arguments are those of :func:`entity`.
    """
    if not table.startswith("_syncline"):
        raise EntityDefinitionError(
            f"internal table name {table!r} must start with '_syncline'; application tables "
            f"are declared with @syncline.entity")
    if kwargs.get("syncs"):
        raise EntityDefinitionError(f"internal table {table!r} cannot sync; drop syncs=True")

    def decorate(cls: type[T]) -> type[T]:
        cls.__syncline_internal__ = True  # type: ignore[attr-defined]
        return entity(table, registry=registry, **kwargs)(cls)

    return decorate


def is_internal(cls: type) -> bool:
    """Whether ``cls`` was declared with :func:`internal_entity`."""
    return bool(getattr(cls, "__syncline_internal__", False))


def _qualname(cls: type) -> str:
    return f"{cls.__module__}.{cls.__qualname__}"


registry = EntityRegistry()

IndexArg: TypeAlias = str | Sequence[str]


def entity(
    table: str | None = None,
    *,
    primary_key: str = "id",
    indexes: Iterable[IndexArg] = (),
    unique: Iterable[IndexArg] = (),
    syncs: bool = False,
    foreign_keys: Mapping[str, str | ForeignKey] | None = None,
    registry: EntityRegistry | None = None,
) -> Callable[[type[T]], type[T]]:
    """Mark an attrs class as a syncline entity stored in ``table``.

    ``indexes`` and ``unique`` take field names or tuples of names (composite). ``syncs`` marks an
    entity whose changes go through the sync queue. The table name defaults to the class name in
    lower case. ``foreign_keys`` maps a field to the column it references, ``"posts.id"`` or
    ``ForeignKey("posts.id", on_delete="cascade")``; backends with the ``foreign_keys``
    capability enforce them.
    """

    def decorate(cls: type[T]) -> type[T]:
        # Names local to the function declaring the class resolve too (string annotations).
        localns = dict(sys._getframe(1).f_locals)
        spec = build_spec(cls, table, primary_key, indexes, unique, syncs, localns,
                          foreign_keys or {})
        (registry if registry is not None else globals()["registry"]).claim(spec.table.name, cls)
        cls.__syncline_entity__ = spec  # type: ignore[attr-defined]
        return cls

    return decorate


def build_spec(
    cls: type,
    table: str | None,
    primary_key: str,
    indexes: Iterable[IndexArg],
    unique: Iterable[IndexArg],
    syncs: bool,
    localns: dict[str, Any] | None = None,
    foreign_keys: Mapping[str, str | ForeignKey] | None = None,
) -> EntitySpec:
    owner = cls.__name__ if isinstance(cls, type) else repr(cls)
    if not attrs.has(cls):
        raise EntityDefinitionError(
            f"{owner} is not an attrs class; put @attrs.define below @syncline.entity"
        )
    name = table or cls.__name__.lower()
    if not name.isidentifier() or (name.startswith("_syncline") and not is_internal(cls)):
        raise EntityDefinitionError(
            f"{owner}: table name {name!r} must be an identifier not starting with '_syncline'"
        )
    try:
        attrs.resolve_types(cls, localns=localns)
    except NameError as exc:
        raise EntityDefinitionError(f"{owner}: cannot resolve a field's type: {exc}") from exc
    fields: list[FieldSpec] = []
    for a in attrs.fields(cls):
        if not a.init:
            raise EntityDefinitionError(
                f"{owner}.{a.name}: fields with init=False cannot be stored; remove init=False"
            )
        if a.type is None:
            raise EntityDefinitionError(f"{owner}.{a.name}: the field needs a type annotation")
        options = a.metadata.get(METADATA_KEY) or {}
        local = bool(options.get("local"))
        column = _column_name(owner, a.name, options.get("column"), a.name == primary_key)
        fields.append(attrs.evolve(classify(owner, a.name, a.type), alias=a.alias or a.name,
                                   local=local, column=column))
        if local and (not syncs or a.name == primary_key or a.default is attrs.NOTHING):
            raise EntityDefinitionError(
                f"{owner}.{a.name}: local=True marks a field of a syncing entity "
                f"(syncs=True) that is not its primary key and has a default (a pulled new "
                f"record gets it), e.g. syncline.field(local=True, default=None)")
    names = [f.name for f in fields]
    stored = [f.column for f in fields]
    clash = sorted({c for c in stored if stored.count(c) > 1})
    if clash:
        raise EntityDefinitionError(
            f"{owner}: two fields are stored in column {clash[0]!r}; give each its own "
            f"column name (syncline.field(column=...))")
    if primary_key not in names:
        raise EntityDefinitionError(
            f"{owner}: primary key field {primary_key!r} does not exist; fields: "
            f"{', '.join(names)} (pass primary_key=... to @syncline.entity)"
        )
    pk = next(f for f in fields if f.name == primary_key)
    if syncs and (pk.python_type is not str or pk.enum_type is not None):
        raise EntityDefinitionError(
            f"{owner}.{primary_key}: a syncing entity needs a str primary key (syncline gives "
            f"new records a UUID string with syncline.new_id()), not {pk.python_type!r}"
        )
    if pk.nullable or pk.kind in ("json", "float"):
        raise EntityDefinitionError(
            f"{owner}.{primary_key}: a primary key must be a non-optional str, int, UUID or "
            f"similar scalar, not {pk.python_type!r}{' | None' if pk.nullable else ''}"
        )
    column_of = {f.name: f.column for f in fields}
    index_specs = [_index(owner, name, column_of, cols, False) for cols in indexes]
    index_specs += [_index(owner, name, column_of, cols, True) for cols in unique]
    defaults = {a.name: a.default for a in attrs.fields(cls)}
    columns = tuple(
        ColumnSpec(f.column, f.kind, f.nullable, f.name == primary_key,
                   _plain_default(defaults[f.name], f.kind))
        for f in fields
    )
    fks = tuple(_foreign_key(owner, column_of, col, target)
                for col, target in (foreign_keys or {}).items())
    checks = tuple(c for a, f in zip(attrs.fields(cls), fields, strict=True)
                   for c in _declared_checks(owner, name, a, f))
    spec = TableSpec(name, columns, primary_key, tuple(index_specs), fks, checks)
    return EntitySpec(cls, spec, tuple(fields), primary_key, syncs)


#: the key of syncline's options in an attrs field's metadata
METADATA_KEY = "syncline"


def field(*, column: str | None = None, check: Any = None, min_length: int | None = None,
          max_length: int | None = None, local: bool = False, **kwargs: Any) -> Any:
    """An attrs field with syncline options: ``title: str = syncline.field(max_length=80)``.

    ``column`` stores the field in a column of another name (Drift's ``.named()``): rename a
    field in Python and keep ``column="its_old_name"``, and no migration is needed. Queries,
    indexes, unique keys, foreign keys and checks name the field; the table, migrations
    (``TableMigration``'s column names, SQL) and schema dumps the column; the wire format the
    field. Not for the primary key.

    ``local=True`` (syncing entities): the field is stored on this device only: never pushed,
    not in the wire format, kept when a pull changes the record, its default on a pulled new
    record; queries use it like any field.

    ``check`` is a comparison of the field with a value (``F.price >= 0``; several joined with
    ``&``); ``min_length``/``max_length`` bound a str field's length in characters. Each becomes
    a named CHECK constraint of the table, and every backend refuses a value breaking one with an
    :class:`IntegrityError`. The other arguments are :func:`attrs.field`'s.
    """
    options = {"column": column, "check": check, "min_length": min_length,
               "max_length": max_length, "local": local or None}
    metadata = dict(kwargs.pop("metadata", None) or {})
    metadata[METADATA_KEY] = {k: v for k, v in options.items() if v is not None}
    return attrs.field(metadata=metadata, **kwargs)


def _declared_checks(owner: str, table: str, a: attrs.Attribute[Any],
                     f: FieldSpec) -> list[CheckSpec]:
    options = dict(a.metadata.get(METADATA_KEY) or {})
    options.pop("local", None)
    options.pop("column", None)
    unknown = set(options) - {"check", "min_length", "max_length"}
    if unknown:
        raise EntityDefinitionError(
            f"{owner}.{a.name}: unknown syncline field options {sorted(unknown)}; "
            f"use column, check, min_length, max_length or local")
    if not options:
        return []
    if f.custom:
        raise EntityDefinitionError(
            f"{owner}.{a.name}: checks and length bounds apply to built-in field types, not "
            f"the plugin type {f.python_type!r}")
    return field_checks(owner, table, f.name, f.kind, enum=f.enum_type is not None,
                        column=f.column, **options)


def _column_name(owner: str, field: str, column: Any, primary_key: bool) -> str:
    if column is None:
        return field
    if not isinstance(column, str) or not column.isidentifier() or column.startswith(
            "_syncline"):
        raise EntityDefinitionError(
            f"{owner}.{field}: column={column!r} must be an identifier not starting with "
            f"'_syncline'")
    if primary_key and column != field:
        raise EntityDefinitionError(
            f"{owner}.{field}: the primary key is stored under its field name; drop "
            f"column={column!r} (or name the field {column!r})")
    return column


@attrs.frozen
class ForeignKey:
    """A reference to another table's column: ``ForeignKey("posts.id", on_delete="cascade")``."""

    target: str
    on_delete: str | None = None


_ON_DELETE = ("cascade", "set null", "set default", "restrict", "no action")


def _foreign_key(owner: str, column_of: Mapping[str, str], column: str,
                 target: str | ForeignKey) -> ForeignKeySpec:
    ref = target if isinstance(target, ForeignKey) else ForeignKey(target)
    table, dot, ref_column = ref.target.partition(".")
    if column not in column_of:
        raise EntityDefinitionError(
            f"{owner}: foreign key field {column!r} does not exist; fields: "
            f"{', '.join(column_of)}")
    if not dot or not table or not ref_column:
        raise EntityDefinitionError(
            f"{owner}.{column}: foreign key target {ref.target!r} must look like 'table.column'")
    on_delete = ref.on_delete.lower() if ref.on_delete else None
    if on_delete is not None and on_delete not in _ON_DELETE:
        raise EntityDefinitionError(
            f"{owner}.{column}: on_delete={ref.on_delete!r}; use one of {', '.join(_ON_DELETE)}")
    return ForeignKeySpec(column_of[column], table, ref_column, on_delete)


_LITERAL_KINDS: dict[str, tuple[type, ...]] = {
    "text": (str,), "integer": (int,), "float": (int, float), "boolean": (bool,)}


def _plain_default(value: Any, kind: str) -> Any:
    """A field default the database can hold as a literal of the column's kind, or None."""
    if value is attrs.NOTHING:  # NOTHING is an enum member itself: check it first
        return None
    if isinstance(value, enum.Enum):
        value = value.value
    return value if type(value) in _LITERAL_KINDS.get(kind, ()) else None


def _index(owner: str, table: str, column_of: Mapping[str, str], cols: IndexArg,
           unique: bool) -> IndexSpec:
    fields = (cols,) if isinstance(cols, str) else tuple(cols)
    if not fields:
        raise EntityDefinitionError(f"{owner}: an index needs at least one field")
    for col in fields:
        if col not in column_of:
            raise EntityDefinitionError(
                f"{owner}: index field {col!r} does not exist; fields: {', '.join(column_of)}"
            )
    columns = tuple(column_of[f] for f in fields)  # named by column: a field rename keeps it
    prefix = "uq" if unique else "ix"
    return IndexSpec(f"{prefix}_{table}_{'_'.join(columns)}", columns, unique)


def spec_of(cls: type) -> EntitySpec:
    """The :class:`EntitySpec` of an entity class, or a clear error if it is not one."""
    spec = getattr(cls, "__syncline_entity__", None)
    if not isinstance(spec, EntitySpec) or spec.cls is not cls:
        name = getattr(cls, "__name__", repr(cls))
        raise EntityDefinitionError(
            f"{name} is not a syncline entity; decorate it with @syncline.entity(...) "
            f"above @attrs.define"
        )
    return spec


SQLText: TypeAlias = str | Mapping[str, str]


def _for_dialect(owner: str, sql: SQLText, dialect: str) -> str:
    if isinstance(sql, str):
        return sql
    text = sql.get(dialect)
    if text is None:
        raise EntityDefinitionError(
            f"{owner} has no SQL for {dialect}; give it one under the key {dialect!r} "
            f"(it has: {', '.join(sql)})")
    return text


def _sql_text(value: SQLText) -> SQLText:
    return value if isinstance(value, str) else dict(value)


def _statements(value: Any) -> Any:
    if isinstance(value, str):
        return value
    return dict(value) if isinstance(value, Mapping) else tuple(value)


@attrs.frozen
class View:
    """A view declared beside the entities: ``View("open_posts", "SELECT ... FROM posts")``.

    ``sql`` is the SELECT (without ``CREATE VIEW``), or a mapping from dialect name
    (``"sqlite"``, ``"postgresql"``) to one.
    """

    name: str
    sql: SQLText = attrs.field(converter=_sql_text)

    def select(self, dialect: str) -> str:
        return _for_dialect(f"view {self.name!r}", self.sql, dialect)


@attrs.frozen
class Trigger:
    """A trigger on ``table``: ``sql`` holds the full ``CREATE TRIGGER`` statement(s) (on
    PostgreSQL, the function's ``CREATE FUNCTION`` too), or a mapping from dialect to them."""

    name: str
    table: str
    sql: str | Mapping[str, str | Sequence[str]] | Sequence[str] = attrs.field(
        converter=_statements)

    def statements(self, dialect: str) -> list[str]:
        sql: Any = self.sql
        if isinstance(sql, Mapping):
            if dialect not in sql:
                raise EntityDefinitionError(
                    f"trigger {self.name!r} has no SQL for {dialect}; give it one under the key "
                    f"{dialect!r} (it has: {', '.join(sql)})")
            sql = sql[dialect]
        return [sql] if isinstance(sql, str) else list(sql)


_KIND_TYPES: dict[str, Any] = {
    "text": str, "integer": int, "float": float, "boolean": bool, "bytes": bytes,
    "datetime": dt.datetime, "date": dt.date, "uuid": uuid.UUID, "decimal": decimal.Decimal,
    "json": dict[str, Any],
}


def entity_for_table(table: TableSpec, syncs: bool = False, name: str | None = None) -> type:
    """An attrs entity class storing exactly ``table`` (used to open stores at old versions).

    JSON columns become ``dict[str, Any]`` fields; enum columns plain ``str``/``int`` ones.
    """
    fields: dict[str, Any] = {}
    specs = []
    for col in table.columns:
        tp = _KIND_TYPES[col.kind]
        annotation = tp | None if col.nullable else tp
        default = col.default if col.default is not None else (
            None if col.nullable else attrs.NOTHING)
        fields[col.name] = attrs.field(type=annotation, default=default, kw_only=True)
        specs.append(FieldSpec(col.name, col.name, tp, col.kind, col.nullable))
    cls = attrs.make_class(name or f"{table.name}_table", fields)
    cls.__syncline_entity__ = EntitySpec(  # type: ignore[attr-defined]
        cls, table, tuple(specs), table.primary_key, syncs)
    return cls
