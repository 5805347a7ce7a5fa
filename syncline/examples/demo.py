"""``syncline demo``: offline writes, a real server coming online, sync, a conflict, the
second device updating live, a summary.

Everything happens in a temporary folder (removed at the end) with the reference server on
127.0.0.1 on a free port; nothing needs configuring.
"""

from __future__ import annotations

import datetime as dt
import tempfile
import threading
import time
from functools import partial
from typing import Any

import attrs
from rich.console import Console
from rich.progress import BarColumn, MofNCompleteColumn, Progress, TextColumn
from rich.table import Table

import syncline
from syncline.core.plugins import register_plugin, unregister_plugin
from syncline.core.sync.engine import Backoff, SyncReport
from syncline.core.sync.outbox import EntryState
from syncline.examples.social import ENTITIES, Message, MessagesDao, Post, PostsDao
from syncline.server.app import ServerConfig
from syncline.server.live import LiveServer


def _queue_table(store: syncline.Store, title: str) -> Table:
    table = Table(title=title)
    for column in ("entity", "action", "record", "tries", "last error"):
        table.add_column(column)
    for e in store.outbox.all_pending():
        table.add_row(e.entity or f"command {e.command}", e.action, (e.record_id or "")[:12],
                      str(e.retry_count), (e.error or "")[:48])
    return table


def _sync_with_progress(console: Console, store: syncline.Store, label: str) -> SyncReport:
    total = store.outbox.pending_count()
    with Progress(TextColumn("{task.description}"), BarColumn(), MofNCompleteColumn(),
                  console=console, transient=False) as progress:
        task = progress.add_task(label, total=max(total, 1))
        watch = store.outbox.watch_pending_count().subscribe(
            lambda left: progress.update(task, completed=max(total, 1) - min(left, total)))
        report = store.sync()
        watch.unsubscribe()
        progress.update(task, completed=max(total, 1))
    return report


def _live(console: Console, phone: syncline.Store, laptop: syncline.Store) -> None:
    """The laptop's worker polls only every hour; the server's live stream tells it of each
    of the phone's pushes, and its watcher sees the post within milliseconds."""
    worker = laptop.start_sync_worker(interval=3600)
    deadline = time.monotonic() + 30
    while not worker.streaming and time.monotonic() < deadline:
        time.sleep(0.01)
    arrived = threading.Condition()
    seen: set[str] = set()

    def watched(posts: list[Post]) -> None:
        with arrived:
            seen.update(p.id for p in posts)
            arrived.notify_all()

    watch = laptop.repository(Post).watch().subscribe(watched)
    try:
        for text in ("Live one", "Live two", "Live three"):
            now = dt.datetime.now(dt.UTC)
            post = Post(syncline.new_id(), "alice", text, now, now)
            phone.repository(Post).insert(post)
            pushed = time.perf_counter()
            phone.sync()
            with arrived:
                shown = arrived.wait_for(partial(set.__contains__, seen, post.id), 30)
            took = (time.perf_counter() - pushed) * 1000
            console.print(f"phone posts {text!r} -> laptop's watcher "
                          + (f"[green]sees it {took:.0f} ms later[/green]" if shown else
                             "[red]did not see it[/red]")
                          + " (it polls hourly: the live stream told it)")
    finally:
        watch.unsubscribe()
        laptop.stop_sync_worker()


class LikesOnTheServer:
    """A server plugin: carries out the ``like_post`` command the phone queued."""

    @syncline.hookimpl
    def syncline_handle_command(self, server: Any, principal: str, name: str,
                                payload: dict[str, Any] | None) -> dict[str, Any] | None:
        if name != "like_post" or payload is None:
            return None
        post = server.store.repository(Post).get(payload["post_id"])
        if post is None:
            raise ValueError(f"no post {payload['post_id']!r}")
        liked = attrs.evolve(post, likes_count=post.likes_count + 1)
        server.write(liked, principal)
        return {"likes_count": liked.likes_count}


def run(console: Console) -> None:
    started = time.monotonic()
    register_plugin(LikesOnTheServer(), "demo-likes")
    with tempfile.TemporaryDirectory(prefix="syncline-demo-") as folder:
        config = ServerConfig(store=f"sqlite:///{folder}/server.db",
                              tokens={"phone-token": "alice", "laptop-token": "alice"})
        server = LiveServer(config, [Post, Message])  # not started yet: we are offline
        options = {"strategy": "last_write_wins", "backoff": Backoff(base=0.05, cap=0.2),
                   "batch_size": 4}
        phone = syncline.open(f"sqlite:///{folder}/phone.db", entities=ENTITIES,
                              transport=server.url, sync_options=options,
                              transport_options={"token": "phone-token", "timeout": 2})
        laptop = syncline.open("memory://", entities=ENTITIES, transport=server.url,
                               sync_options=options,
                               transport_options={"token": "laptop-token", "timeout": 5})
        try:
            console.rule("[bold]1. Offline: the phone writes with no server")
            now = dt.datetime.now(dt.UTC)
            posts = [Post(syncline.new_id(), "alice", text, now, now,
                          image_urls=["https://example.org/cat.png"] if i == 0 else None)
                     for i, text in enumerate(["Hello from the train", "No signal here",
                                               "Still offline, still writing"])]
            PostsDao(phone).upsert_posts(posts)
            MessagesDao(phone).upsert_messages(
                Message(syncline.new_id(), "c1", "alice", "bob", f"message {i}", now)
                for i in range(5))
            phone.enqueue_command("like_post", {"post_id": posts[0].id})
            report = phone.sync()
            console.print(f"sync while offline: [red]{report.failures[0][:90]}[/red]")
            console.print(_queue_table(phone, "the phone's queue, waiting"))

            console.rule("[bold]2. Online: the server starts and the phone syncs")
            server.start()
            console.print(f"reference server on {server.url} (SQLite in a temporary folder)")
            time.sleep(0.25)  # the failed attempts' backoff
            report = _sync_with_progress(console, phone, "pushing the phone's queue")
            console.print(f"phone: pushed {report.pushed} (posts, messages and a like_post "
                          f"command a server plugin carried out), failed "
                          f"{len(report.failures) + len(report.rejected)}")
            report = laptop.sync()
            console.print(f"laptop: pulled {report.pulled} changes")

            console.rule("[bold]3. A conflict: both devices edit the same post")
            target = posts[0].id
            laptop.repository(Post).update(target, content="Edited on the laptop")
            laptop.sync()
            time.sleep(0.01)
            phone.repository(Post).update(target, content="Edited on the phone, later")
            second = phone.sync()
            laptop.sync()
            conflict = second.conflicts[0]
            console.print(f"conflict on post {target[:8]}: local "
                          f"[cyan]{conflict.local.content!r}[/cyan] vs server "
                          f"[magenta]{conflict.server.content!r}[/magenta]; strategy "
                          f"last_write_wins keeps the later write")
            settled = laptop.repository(Post).get(target)
            assert settled is not None
            console.print(f"both devices now read: [green]{settled.content!r}[/green]")

            console.rule("[bold]4. Live: the laptop updates as the phone writes")
            _live(console, phone, laptop)

            console.rule("[bold]5. Summary")
            table = Table(title="after sync")
            for column in ("", "posts", "messages", "queued", "dead letters"):
                table.add_column(column)
            server_store = server.sync.server.store
            for name, store in (("phone", phone), ("laptop", laptop)):
                table.add_row(name, str(store.repository(Post).count()),
                              str(store.repository(Message).count()),
                              str(store.outbox.pending_count()),
                              str(store.outbox.entries.count(
                                  syncline.F.state == EntryState.DEAD)))
            table.add_row("server", str(server_store.repository(Post).count()),
                          str(server_store.repository(Message).count()), "-", "-")
            console.print(table)
            console.print(f"done in {time.monotonic() - started:.1f} s; the temporary folder "
                          f"is removed now")
        finally:
            phone.close()
            laptop.close()
            server.stop()
            unregister_plugin("demo-likes")
