"""The ``syncline`` command.

Exit codes: 0 success; 1 ``syncline sync`` finished but something failed or was rejected, or
``syncline schema verify`` found differences;
2 an error (bad arguments, configuration, unreachable storage...), reported on one line
(``--debug`` shows the traceback).
"""

from __future__ import annotations

import json
import sys
import tempfile
from typing import Any

import click

from syncline.cli_schema import register as register_schema_commands
from syncline.cli_support import get_console as get_console
from syncline.cli_support import load_entities as load_entities
from syncline.core.model.errors import SynclineError


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
    from rich.table import Table

    table = Table(title="syncline plugins")
    for column in ("plugin", "distribution", "version", "schemes", "hooks"):
        table.add_column(column)
    for row in rows:
        served = ", ".join(f"{s}://" for s in row["backends"] + row["transports"])
        table.add_row(row["name"], row["distribution"] or "-", row["version"] or "-",
                      served or "-", ", ".join(row["hooks"]))
    get_console().print(table)


@main.command()
@click.option("--store", "store_url", default="memory://", show_default=True,
              help="The server's store URL (PostgreSQL in production).")
@click.option("--entities", "entities_spec", default=None,
              help="The app's entities: 'package.module' or 'package.module:LIST'.")
@click.option("--schema", "schema_spec", default=None,
              help="Or the app's syncline.Schema ('package.module:NAME'): the store is created "
                   "or migrated to its version on start.")
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
@click.option("--tombstone-retention", default=30.0, show_default=True, type=float,
              metavar="DAYS", help="Days a deletion stays in the change log (0: forever); a "
                                   "client whose cursor is older re-pulls from the start.")
@click.option("--mutation-retention", default=30.0, show_default=True, type=float,
              metavar="DAYS", help="Days a mutation's result is kept to answer retries as "
                                   "duplicates (0: forever); older replays are answered from "
                                   "the record (a conflict), never applied twice.")
@click.option("--jwt-leeway", default=0.0, show_default=True, type=float, metavar="SECONDS",
              help="How far a JWT's exp/nbf/iat may be off (clock skew).")
@click.option("--cors-origin", "cors_origins", multiple=True, metavar="ORIGIN",
              help="An origin browsers may call the server from (repeatable; '*': any).")
@click.option("--header-timeout", default=10.0, show_default=True, type=float,
              metavar="SECONDS", help="For a request's head to arrive (else 408, closed).")
@click.option("--body-timeout", default=30.0, show_default=True, type=float,
              metavar="SECONDS", help="For the next piece of a request's body (else 408).")
@click.option("--keep-alive-timeout", default=5.0, show_default=True, type=float,
              metavar="SECONDS", help="Before an idle connection is closed.")
@click.option("--max-live-clients", default=1000, show_default=True, type=click.IntRange(0),
              help="Live change streams (GET /v1/changes/live) one process holds; more: 503.")
@click.option("--live-heartbeat", default=15.0, show_default=True,
              type=click.FloatRange(0.1, 3600), metavar="SECONDS",
              help="Between two heartbeats on a live stream.")
@click.option("--log-level", default="info", show_default=True,
              type=click.Choice(["debug", "info", "warning", "error"]),
              help="Of the server's logs (syncline.server.*); debug shows every push and pull.")
def serve(store_url: str, entities_spec: str | None, schema_spec: str | None, host: str,
          port: int, tokens: tuple[str, ...],
          jwt_secret: str | None, jwt_audience: str | None, allow_anonymous: bool,
          rate_limit: int, assign_ids: bool, shared: tuple[str, ...],
          tombstone_retention: float, mutation_retention: float, jwt_leeway: float,
          cors_origins: tuple[str, ...], header_timeout: float, body_timeout: float,
          keep_alive_timeout: float, max_live_clients: int, live_heartbeat: float,
          log_level: str) -> None:
    """Run the reference sync server (uvicorn)."""
    import uvicorn

    from syncline.core.model.errors import ConfigurationError
    from syncline.server.app import ServerConfig, create_app, log_config
    from syncline.server.http11 import uvicorn_config

    token_map = {}
    for item in tokens:
        token, sep, principal = item.partition("=")
        if not sep or not token or not principal:
            raise ConfigurationError(f"--token {item!r}: write TOKEN=PRINCIPAL")
        token_map[token] = principal
    if (entities_spec is None) == (schema_spec is None):
        raise ConfigurationError("give the app's entities with --entities or its schema with "
                                 "--schema (one of them)")
    from syncline.cli_schema import load_schema

    schema = load_schema(schema_spec) if schema_spec else None
    config = ServerConfig(store=store_url, tokens=token_map, jwt_key=jwt_secret,
                          jwt_audience=jwt_audience, allow_anonymous=allow_anonymous,
                          rate_limit=rate_limit, assign_ids=assign_ids, shared=list(shared),
                          schema=schema, tombstone_retention_days=tombstone_retention,
                          mutation_retention_days=mutation_retention, jwt_leeway=jwt_leeway,
                          cors_origins=list(cors_origins), header_timeout=header_timeout,
                          body_timeout=body_timeout, keep_alive_timeout=keep_alive_timeout,
                          max_live_clients=max_live_clients, live_heartbeat=live_heartbeat)
    config.timeouts().check()
    app = create_app(config, load_entities(entities_spec) if entities_spec else [])
    uvicorn.Server(uvicorn_config(app, host, port, config.timeouts(), log_level="info",
                                  log_config=log_config(log_level))).run()


@main.command()
@click.argument("url")
def init(url: str) -> None:
    """Create the storage URL names (a PostgreSQL database, a SQLite file) if it is missing."""
    from syncline.core.plugins import plugin_manager
    from syncline.core.store import scheme_of

    backend_cls = plugin_manager().backend_class(scheme_of(url))
    click.echo(backend_cls.init_storage(url))


def _open(store_url: str | None, entities_spec: str | None, transport: str | None = None,
          token: str | None = None) -> Any:
    import syncline
    from syncline.cli_schema import stored_version

    entities = load_entities(entities_spec) if entities_spec else []
    options = {"token": token} if token else None
    # At the version it is at: looking at the queue or syncing never migrates a store.
    _, version = stored_version(store_url)
    return syncline.open(store_url, entities=entities, transport=transport,
                         transport_options=options, schema_version=version)


STORE_HELP = "Store URL (default: SYNCLINE_STORE_URL, then syncline.toml)."


@main.command()
@click.option("--store", "store_url", default=None, help=STORE_HELP)
@click.option("--json", "as_json", is_flag=True, help="Print JSON instead of tables.")
def status(store_url: str | None, as_json: bool) -> None:
    """The sync queue by state and entity, failed and dead-lettered items with errors, and
    quarantined pulled records."""
    from rich.table import Table

    from syncline.core.model.query import F
    from syncline.core.sync.outbox import EntryState, SyncStatus

    with _open(store_url, None) as store:
        entries = store.outbox.entries.all()
        counts: dict[tuple[str, str], int] = {}
        for e in entries:
            key = (e.entity or f"command {e.command}", e.state.value)
            counts[key] = counts.get(key, 0) + 1
        dead = [e for e in entries if e.state is EntryState.DEAD]
        failed = store.outbox.states.find(F.status == SyncStatus.FAILED)
        cursor = store.outbox.get_meta("cursor")
        quarantined = store.quarantined()
        if as_json:
            click.echo(json.dumps({
                "queue": [{"entity": k[0], "state": k[1], "count": v}
                          for k, v in sorted(counts.items())],
                "dead_letters": [{"id": e.id, "entity": e.entity, "record_id": e.record_id,
                                  "action": e.action, "error": e.error} for e in dead],
                "failed_records": [{"entity": s.entity, "record_id": s.record_id,
                                    "error": s.error} for s in failed],
                "quarantined": [{"entity": q.entity, "record_id": q.record_id,
                                 "version": q.version, "op": q.op, "error": q.error,
                                 "at": q.at.isoformat()} for q in quarantined],
                "pulled": cursor is not None}, indent=2))
            return
        table = Table(title=f"sync queue of {store.backend.url}")
        for column in ("entity", "state", "entries"):
            table.add_column(column)
        for (entity, state), n in sorted(counts.items()):
            table.add_row(entity, state, str(n))
        get_console().print(table if counts else "the sync queue is empty")
        if dead or failed:
            problems = Table(title="failed and dead-lettered")
            for column in ("entity", "record", "action", "error"):
                problems.add_column(column)
            for e in dead:
                problems.add_row(e.entity or f"command {e.command}", e.record_id or "",
                                 e.action, e.error or "")
            for s in failed:
                problems.add_row(s.entity, s.record_id, "", s.error or "")
            get_console().print(problems)
        if quarantined:
            held = Table(title="quarantined: pulled changes this store cannot hold")
            for column in ("entity", "record", "version", "error"):
                held.add_column(column)
            for q in quarantined:
                held.add_row(q.entity, q.record_id, str(q.version), q.error)
            get_console().print(held)


@main.command()
@click.option("--store", "store_url", default=None, help=STORE_HELP)
@click.option("--entities", "entities_spec", required=True,
              help="The app's entities: 'package.module' or 'package.module:LIST'.")
@click.option("--transport", default=None,
              help="Server URL (default: SYNCLINE_SYNC_TRANSPORT, then syncline.toml).")
@click.option("--token", default=None, envvar="SYNCLINE_SYNC_TOKEN", help="Bearer token.")
def sync(store_url: str | None, entities_spec: str, transport: str | None,
         token: str | None) -> None:
    """Push the queue and pull the server's changes; exit code 1 when something failed."""
    from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn

    with _open(store_url, entities_spec, transport, token) as store:
        store.sync_engine  # noqa: B018 - resolve the transport before drawing anything
        total = max(store.outbox.pending_count(), 1)
        with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                      console=get_console()) as progress:
            task = progress.add_task("syncing", total=total)
            watch = store.outbox.watch_pending_count().subscribe(
                lambda left: progress.update(task, completed=total - min(left, total)))
            report = store.sync()
            watch.unsubscribe()
            progress.update(task, completed=total)
        get_console().print(f"pushed {report.pushed}, pulled {report.pulled}, conflicts "
                      f"{len(report.conflicts)}, rejected {len(report.rejected)}, failures "
                      f"{len(report.failures)}")
        for line in report.rejected + report.failures:
            get_console().print(f"  [red]{line}[/red]")
        if not report.ok:
            sys.exit(1)


@main.command()
def demo() -> None:
    """Offline writes, a server coming online, sync, a conflict: all in a temporary folder."""
    from syncline.examples.demo import run

    run(get_console())


@main.command()
@click.option("--store", "store_url", default=None,
              help="A store URL (default: a SQLite file in a temporary folder).")
def quickstart(store_url: str | None) -> None:
    """Write and query a few posts in a local store (the README's quickstart)."""
    from syncline.examples.quickstart import run

    if store_url is not None:
        run(store_url, get_console())
        return
    with tempfile.TemporaryDirectory(prefix="syncline-quickstart-") as folder:
        run(f"sqlite:///{folder}/demo.db", get_console())


register_schema_commands(main)

if __name__ == "__main__":  # pragma: no cover
    main()
