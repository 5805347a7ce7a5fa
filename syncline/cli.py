"""The ``syncline`` command."""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any, cast

import click
from rich.console import Console
from rich.table import Table

from syncline.core.errors import SynclineError

console = Console()


class _Group(click.Group):
    """Built-in commands plus those plugins add through ``syncline_register_commands``."""

    def _plugin_commands(self) -> dict[str, click.Command]:
        from syncline.core.plugins import plugin_manager

        return {name: cmd for name, (cmd, _) in plugin_manager().commands.commands.items()
                if name not in self.commands}

    def list_commands(self, ctx: click.Context) -> list[str]:
        return sorted({*self.commands, *self._plugin_commands()})

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        return self.commands.get(cmd_name) or self._plugin_commands().get(cmd_name)

    def invoke(self, ctx: click.Context) -> Any:
        try:
            return super().invoke(ctx)
        except SynclineError as exc:
            if ctx.obj and ctx.obj.get("debug"):
                raise
            click.echo(f"error: {exc}", err=True)
            sys.exit(2)


@click.group(cls=_Group)
@click.option("--debug", is_flag=True, help="Show tracebacks instead of one-line errors.")
@click.version_option(package_name="syncline")
@click.pass_context
def main(ctx: click.Context, debug: bool) -> None:
    """syncline: offline-first data for Python."""
    ctx.obj = {"debug": debug}


@main.command()
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of a table.")
def plugins(as_json: bool) -> None:
    """List every plugin: where it comes from, its hooks and the URL schemes it serves."""
    from syncline.core.plugins import plugin_manager

    manager = plugin_manager()
    rows: list[dict[str, Any]] = []
    for info in sorted(manager.plugins.values(), key=lambda i: i.name):
        schemes = manager.schemes_of(info.name)
        rows.append({
            "name": info.name,
            "module": info.module,
            "distribution": info.distribution,
            "version": info.version,
            "hooks": list(info.hooks),
            "backends": schemes["backends"],
            "transports": schemes["transports"],
        })
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    table = Table(title="syncline plugins")
    for column in ("plugin", "distribution", "version", "schemes", "hooks"):
        table.add_column(column)
    for row in rows:
        served = ", ".join(f"{s}://" for s in row["backends"] + row["transports"])
        table.add_row(row["name"], row["distribution"] or "-", row["version"] or "-",
                      served or "-", ", ".join(row["hooks"]))
    console.print(table)


def load_entities(spec: str) -> list[type]:
    """``module`` (every syncing entity in it) or ``module:attr`` (a list of entities)."""
    import importlib

    from syncline.core.errors import ConfigurationError

    module_name, _, attr = spec.partition(":")
    try:
        module = importlib.import_module(module_name)
    except ImportError as exc:
        raise ConfigurationError(f"cannot import entities module {module_name!r}: {exc}") from exc
    if attr:
        found = getattr(module, attr, None)
        if not isinstance(found, list | tuple):
            raise ConfigurationError(f"{spec} is not a list of entity classes")
        return list(found)
    entities: list[type] = []
    for candidate in vars(module).values():
        declared: Any = getattr(candidate, "__syncline_entity__", None)
        if isinstance(candidate, type) and getattr(declared, "cls", None) is candidate \
                and declared.syncs:
            entities.append(cast(type, candidate))
    if not entities:
        raise ConfigurationError(f"module {module_name!r} declares no syncing entity")
    return entities


@main.command()
@click.option("--store", "store_url", default="memory://", show_default=True,
              help="The server's store URL (PostgreSQL in production).")
@click.option("--entities", "entities_spec", required=True,
              help="The app's entities: 'package.module' or 'package.module:LIST'.")
@click.option("--host", default="127.0.0.1", show_default=True)
@click.option("--port", default=8000, show_default=True, type=int)
@click.option("--token", "tokens", multiple=True, metavar="TOKEN=PRINCIPAL",
              help="A bearer token and the principal it stands for (repeatable).")
@click.option("--jwt-secret", default=None, envvar="SYNCLINE_JWT_SECRET",
              help="Accept HS256 JWTs signed with this secret (principal = 'sub').")
@click.option("--jwt-audience", default=None, help="The 'aud' JWTs must carry.")
@click.option("--allow-anonymous", is_flag=True, help="Serve requests without credentials.")
@click.option("--rate-limit", default=0, type=int, help="Requests per principal per minute.")
@click.option("--assign-ids", is_flag=True, help="Give created records server ids.")
@click.option("--shared", "shared", multiple=True, metavar="ENTITY",
              help="An entity every principal shares (repeatable); others are private.")
def serve(store_url: str, entities_spec: str, host: str, port: int, tokens: tuple[str, ...],
          jwt_secret: str | None, jwt_audience: str | None, allow_anonymous: bool,
          rate_limit: int, assign_ids: bool, shared: tuple[str, ...]) -> None:
    """Run the reference sync server (uvicorn)."""
    import uvicorn

    from syncline.core.errors import ConfigurationError
    from syncline.server.app import ServerConfig, create_app

    token_map = {}
    for item in tokens:
        token, sep, principal = item.partition("=")
        if not sep or not token or not principal:
            raise ConfigurationError(f"--token {item!r}: write TOKEN=PRINCIPAL")
        token_map[token] = principal
    config = ServerConfig(store=store_url, tokens=token_map, jwt_key=jwt_secret,
                          jwt_audience=jwt_audience, allow_anonymous=allow_anonymous,
                          rate_limit=rate_limit, assign_ids=assign_ids, shared=list(shared))
    app = create_app(config, load_entities(entities_spec))
    uvicorn.run(app, host=host, port=port, log_level="info")


@main.command()
@click.argument("url")
def init(url: str) -> None:
    """Create the storage URL names (a PostgreSQL database, a SQLite file) if it is missing."""
    from syncline.core.plugins import plugin_manager
    from syncline.core.store import scheme_of

    backend_cls = plugin_manager().backend_class(scheme_of(url))
    click.echo(backend_cls.init_storage(url))


@main.command()
@click.option("--store", "store_url", default=None,
              help="Store URL (default: a SQLite file in a temporary folder).")
def demo(store_url: str | None) -> None:
    """Write and query a few posts in a local store, then show them."""
    from syncline.examples.quickstart import run

    if store_url is not None:
        run(store_url, console)
        return
    with tempfile.TemporaryDirectory(prefix="syncline-demo-") as folder:
        run(f"sqlite:///{folder}/demo.db", console)


if __name__ == "__main__":  # pragma: no cover
    main()
