"""``syncline migrate`` and ``syncline schema dump|verify``: the CLI side of migrations."""

from __future__ import annotations

import importlib
import sys
from typing import Any

import click

from syncline.core.model.errors import ConfigurationError
from syncline.core.storage.opening import Schema

SCHEMA_HELP = ("The app's schema: 'package.module:NAME' naming a syncline.Schema (or a list of "
               "entities, with --version), or 'package.module' holding one called 'schema'.")
STORE_HELP = "Store URL (default: SYNCLINE_STORE_URL, then syncline.toml)."


def load_schema(spec: str, version: int | None = None) -> Schema:
    """The :class:`syncline.Schema` a ``module:attr`` names (a list of entities: version 1,
    or ``version``)."""
    from syncline.cli_support import load_entities

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import schema module {module_name!r}: {exc}") from exc
    found = getattr(module, attr or "schema", None)
    if isinstance(found, Schema):
        if version is not None and version != found.version:
            raise ConfigurationError(
                f"{spec} is version {found.version}; --version {version} does not match it")
        return found
    if attr and found is None:
        raise ConfigurationError(f"module {module_name!r} has no attribute {attr!r}")
    if attr and not isinstance(found, list | tuple):
        raise ConfigurationError(
            f"{spec} is neither a syncline.Schema nor a list of entity classes")
    return Schema(version or 1, load_entities(spec))


def stored_version(store_url: str | None) -> tuple[str, int | None]:
    """The store's URL as configured, and the schema version stored in it (None: new)."""
    from syncline.core.plugins import plugin_manager
    from syncline.core.storage.config import default_store_url, load_config
    from syncline.core.store import scheme_of

    config = load_config({"store": {"url": store_url}} if store_url else None)
    url = config.store.url or default_store_url(config.store.app_name)
    backend = plugin_manager().backend_class(scheme_of(url))(url, config.store.options)
    backend.open()
    try:
        return url, backend.get_schema_version()
    finally:
        backend.close()


SERVER_HELP = "The store is a sync server's (syncline serve): its own tables come along."


def _extra(server: bool) -> list[type]:
    if not server:
        return []
    from syncline.server.tables import SERVER_ENTITIES

    return list(SERVER_ENTITIES)


@click.command()
@click.option("--store", "store_url", default=None, help=STORE_HELP)
@click.option("--schema", "schema_spec", required=True, help=SCHEMA_HELP)
@click.option("--server", is_flag=True, help=SERVER_HELP)
def migrate(store_url: str | None, schema_spec: str, server: bool) -> None:
    """Create or upgrade a store to the schema's version, showing each step."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    import syncline
    from syncline.cli_support import get_console

    console = get_console()

    schema = load_schema(schema_spec)
    bars: list[Progress] = []  # drawn once a migration reports: opening alone draws nothing

    def report(done: int, total: int, message: str) -> None:
        if not bars:
            bars.append(Progress(TextColumn("{task.description}"), BarColumn(),
                                 MofNCompleteColumn(), console=console, transient=True))
            bars[0].start()
            bars[0].add_task("migrating", total=total)
        bars[0].update(bars[0].task_ids[0], description=message, completed=done, total=total)

    from syncline.server.store import open_server_store

    # a server's store: its own tables come along and follow the migration
    opener: Any = open_server_store if server else syncline.open
    try:
        with opener(store_url, schema=schema, migration_progress=report) as store:
            details = store.opening
    finally:
        for bar in bars:
            bar.stop()
    assert details is not None
    if details.was_created:
        console.print(f"created {store.backend.url} at schema version {details.version_now}")
    elif details.had_upgrade:
        console.print(f"migrated {store.backend.url} from version {details.version_before} "
                      f"to {details.version_now}")
    else:
        console.print(f"{store.backend.url} is already at version {details.version_now}")


@click.group()
def schema() -> None:
    """Dump the declared schema of a version; verify a store against the declared schema."""


@schema.command()
@click.option("--schema", "schema_spec", required=True, help=SCHEMA_HELP)
@click.option("--version", type=int, default=None,
              help="The version to record (with a list of entities; default 1).")
@click.argument("folder", type=click.Path(file_okay=False))
def dump(schema_spec: str, version: int | None, folder: str) -> None:
    """Write the schema as syncline_schema_v<N>.json into FOLDER (for migration tests)."""
    from syncline.cli_support import get_console
    from syncline.core.storage import schema_dump

    console = get_console()

    app = load_schema(schema_spec, version)
    path = schema_dump.write(folder, schema_dump.dump(app.version, app.entities, app.views,
                                                      app.triggers))
    console.print(f"wrote {path}")


@schema.command()
@click.option("--store", "store_url", default=None, help=STORE_HELP)
@click.option("--schema", "schema_spec", required=True, help=SCHEMA_HELP)
@click.option("--server", is_flag=True, help=SERVER_HELP)
def verify(store_url: str | None, schema_spec: str, server: bool) -> None:
    """Compare a store with the declared schema without changing it; exit code 1 when they
    differ."""
    from syncline.cli_support import get_console
    from syncline.core.plugins import plugin_manager
    from syncline.core.storage.schema_dump import differences
    from syncline.core.store import Store, scheme_of

    console = get_console()

    app = load_schema(schema_spec)
    url, version = stored_version(store_url)
    backend = plugin_manager().backend_class(scheme_of(url))(url)
    store = Store(backend, [*app.entities, *_extra(server)], views=app.views,
                  triggers=app.triggers,
                  schema_version=app.version)
    backend.open()
    try:
        problems = differences(store)
    finally:
        backend.close()
    if version != app.version:
        problems.insert(0, f"the store is at schema version {version}, the schema declares "
                           f"{app.version}")
    if not problems:
        console.print(f"{url} matches the declared schema (version {app.version})")
        return
    console.print(f"{url} differs from the declared schema (version {app.version}):")
    for line in problems:
        console.print(f"  - {line}", markup=False)
    sys.exit(1)


def register(group: Any) -> None:
    group.add_command(migrate)
    group.add_command(schema)
