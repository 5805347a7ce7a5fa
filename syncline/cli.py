"""The ``syncline`` command."""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any

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
