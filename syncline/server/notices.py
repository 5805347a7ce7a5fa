"""Live change notifications: the server tells connected clients when to pull.

A push notes the (owner, entity) pairs it logged and the highest change number; after it
commits, every live client whose principal owns one of them (or that shares the entity) is
told that number. The client pulls: the pull contract (never skip, never repeat) stays the one
source of truth, a notice only says "now". Notices are coalesced per client (the newest
number wins), so a burst of changes costs a slow client one pull, never a queue.

:class:`Notifier` fans out within one process (SQLite and memory server stores: one process).
:class:`PostgresNotifier` sends a ``NOTIFY`` in the push's transaction (it is delivered only
if the push commits) and keeps one ``LISTEN`` connection per server process, fanning out to
that process's clients: every process's clients hear every process's pushes.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
import threading
from collections.abc import Iterable, Iterator
from typing import Any

log = logging.getLogger("syncline.server.notices")

#: the owner of shared entities' records (as syncline.server.engine.SHARED)
SHARED = "*"
#: the PostgreSQL channel (suffixed with the store's schema)
CHANNEL = "syncline_changes"
#: NOTIFY payloads must stay below 8000 bytes: past this many pairs a notice names only the
#: entities (every principal of them then pulls; a spurious pull costs an empty page)
MAX_PAIRS = 50

Key = tuple[str, str]  # (owner, entity)
Origin = tuple[str, str]  # (principal, client id) of the push that caused a transaction


class Subscription:
    """One live client: the newest change number it was told of, and an event to wait on
    (an asyncio one: the server's streams run on its event loop)."""

    def __init__(self, principal: str, entities: frozenset[str],
                 loop: asyncio.AbstractEventLoop | None = None,
                 client: str | None = None) -> None:
        self.principal = principal
        self.entities = entities
        #: the client's id (``Syncline-Client``): its own pushes are not told back to it
        self.client = client
        self.loop = loop
        self.event = asyncio.Event()
        self.seq = 0  # the newest number not yet sent
        self.ended = False  # the server ends this stream (the client reconnects)

    def caused(self, origin: Origin | None) -> bool:
        """Whether its own push caused the change (it pulls after pushing: no notice)."""
        return self.client is not None and origin == (self.principal, self.client)

    def concerns(self, keys: Iterable[Key]) -> bool:
        return any(entity in self.entities and owner in (self.principal, SHARED, "")
                   for owner, entity in keys)

    def tell(self, seq: int) -> None:
        """From any thread."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._tell, seq)

    def _tell(self, seq: int) -> None:  # on the loop's thread
        self.seq = max(self.seq, seq)
        self.event.set()

    def end(self) -> None:
        """From any thread: end the stream (its client reconnects)."""
        assert self.loop is not None
        self.loop.call_soon_threadsafe(self._end)

    def _end(self) -> None:
        self.ended = True
        self.event.set()

    def take(self) -> int:
        """The newest number since the last take (0: none)."""
        seq, self.seq = self.seq, 0
        self.event.clear()
        return seq


class BlockingSubscription(Subscription):
    """A live client in a thread (the in-process mock transport's)."""

    def __init__(self, principal: str, entities: frozenset[str],
                 client: str | None = None) -> None:
        super().__init__(principal, entities, client=client)
        self.cond = threading.Condition()
        self.pending = False

    def tell(self, seq: int) -> None:
        with self.cond:
            self.seq = max(self.seq, seq)
            self.pending = True
            self.cond.notify_all()

    def wait(self, timeout: float) -> int | None:
        """The newest number told since the last wait, or None after ``timeout`` seconds."""
        with self.cond:
            if not self.cond.wait_for(lambda: self.pending, timeout):
                return None
            seq, self.seq, self.pending = self.seq, 0, False
            return seq

    def end(self) -> None:
        with self.cond:
            self.ended = self.pending = True
            self.cond.notify_all()


class Notifier:
    """In-process fan-out to live clients; ``max_clients`` bounds how many may listen."""

    def __init__(self, max_clients: int = 1000) -> None:
        self.max_clients = max_clients
        self._subs: set[Subscription] = set()
        self._lock = threading.Lock()
        self._local = threading.local()

    # -- the server's side: note changes in a transaction, publish after it commits ----------

    @contextlib.contextmanager
    def origin(self, principal: str, client: str | None) -> Iterator[None]:
        """The transactions in this block are the push of ``client`` (a client id) for
        ``principal``: their notices leave out that client's own stream. Only that push's
        changes are in them, and its client pulls right after pushing."""
        self._local.origin = (principal, client) if client else None
        try:
            yield
        finally:
            self._local.origin = None

    def begin(self) -> None:
        """A writing transaction (attempt) starts: forget what an earlier attempt noted."""
        self._local.keys = set()
        self._local.seq = 0

    def note(self, owner: str, entity: str, seq: int) -> None:
        keys: set[Key] | None = getattr(self._local, "keys", None)
        if keys is None:
            self.begin()
            keys = self._local.keys
        keys.add((owner, entity))
        self._local.seq = max(self._local.seq, seq)

    def before_commit(self, store: Any) -> None:
        """Inside the transaction, after its writes (PostgreSQL sends its NOTIFY here)."""

    def committed(self) -> None:
        """After the transaction committed: tell this process's clients."""
        keys, seq = self._pending()
        if keys:
            self.publish(keys, seq, getattr(self._local, "origin", None))

    def _pending(self) -> tuple[set[Key], int]:
        keys: set[Key] = getattr(self._local, "keys", None) or set()
        seq: int = getattr(self._local, "seq", 0)
        self._local.keys, self._local.seq = set(), 0
        return keys, seq

    # -- the clients' side -----------------------------------------------------------------------

    def publish(self, keys: Iterable[Key], seq: int, origin: Origin | None = None) -> None:
        """Tell every client concerned by ``keys`` that changes up to ``seq`` are pullable
        (but the client whose push, ``origin``, made them)."""
        keys = list(keys)
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            if sub.concerns(keys) and not sub.caused(origin):
                try:
                    sub.tell(seq)
                except RuntimeError:  # its loop is closed: the client is gone
                    self.unsubscribe(sub)

    def subscribe(self, principal: str, entities: Iterable[str],
                  client: str | None = None) -> Subscription | None:
        """A new live client on the running event loop (None: ``max_clients`` listen)."""
        return self.add(Subscription(principal, frozenset(entities),
                                     asyncio.get_running_loop(), client))

    def add(self, sub: Subscription) -> Subscription | None:
        with self._lock:
            if len(self._subs) >= self.max_clients:
                return None
            self._subs.add(sub)
        return sub

    def drop(self) -> None:
        """End every live stream of this process (clients reconnect and catch up)."""
        with self._lock:
            subs = list(self._subs)
        for sub in subs:
            try:
                sub.end()
            except RuntimeError:
                self.unsubscribe(sub)

    def unsubscribe(self, sub: Subscription) -> None:
        with self._lock:
            self._subs.discard(sub)

    @property
    def clients(self) -> int:
        return len(self._subs)

    def start(self) -> None:
        """Start listening for other processes' changes (nothing to do in one process)."""

    def close(self) -> None:
        with self._lock:
            self._subs.clear()


class PostgresNotifier(Notifier):
    """NOTIFY in the push's transaction; one LISTEN connection per process fans out."""

    def __init__(self, dsn: str, schema: str | None, max_clients: int = 1000) -> None:
        super().__init__(max_clients)
        self.dsn = dsn
        self.channel = f"{CHANNEL}_{schema}" if schema else CHANNEL
        self._stop = threading.Event()
        self._thread: threading.Thread | None = None
        self._conn: Any = None
        self.listening = threading.Event()

    def before_commit(self, store: Any) -> None:
        keys = getattr(self._local, "keys", None)
        if not keys:
            return
        pairs = sorted(keys)
        if len(pairs) > MAX_PAIRS:
            pairs = sorted({("", entity) for _, entity in pairs})
        notice: dict[str, Any] = {"seq": self._local.seq, "keys": pairs}
        origin = getattr(self._local, "origin", None)
        if origin is not None:
            notice["from"] = list(origin)
        payload = json.dumps(notice, separators=(",", ":"))
        with store.backend.connection() as conn:
            conn.execute("SELECT pg_notify(%s, %s)", (self.channel, payload))

    def committed(self) -> None:
        self._pending()  # the listener delivers it, to this process's clients too

    def start(self) -> None:
        self._stop.clear()
        self._thread = threading.Thread(target=self._listen, name="syncline-live-listen",
                                        daemon=True)
        self._thread.start()

    def _listen(self) -> None:
        import psycopg

        delay = 0.5
        while not self._stop.is_set():
            try:
                with psycopg.connect(self.dsn, autocommit=True) as conn:
                    self._conn = conn
                    conn.execute(f'LISTEN "{self.channel}"')
                    self.listening.set()
                    delay = 0.5
                    # Missed while (re)connecting: tell everyone to pull once.
                    self.publish([("", e) for e in self._all_entities()], 0)
                    while not self._stop.is_set():
                        for notice in conn.notifies(timeout=1.0):
                            self._deliver(notice.payload)
            except Exception as exc:
                self.listening.clear()
                if self._stop.is_set():
                    break
                log.warning("live notifications: the LISTEN connection failed (%s); "
                            "reconnecting in %.1f s", exc, delay)
                self._stop.wait(delay)
                delay = min(delay * 2, 10.0)
        self.listening.clear()

    def _all_entities(self) -> set[str]:
        with self._lock:
            return {e for sub in self._subs for e in sub.entities}

    def _deliver(self, payload: str) -> None:
        try:
            notice = json.loads(payload)
            keys = [(str(o), str(e)) for o, e in notice["keys"]]
            seq = int(notice["seq"])
            sent = notice.get("from")
            origin = (str(sent[0]), str(sent[1])) if sent else None
        except (ValueError, KeyError, TypeError, IndexError):
            log.warning("live notifications: ignoring a malformed notice %r", payload[:100])
            return
        self.publish(keys, seq, origin)

    def close(self) -> None:
        self._stop.set()
        if self._thread is not None:
            self._thread.join(5.0)
            self._thread = None
        super().close()


def notifier_for(store: Any, max_clients: int) -> Notifier:
    """The notifier a server store needs: LISTEN/NOTIFY on PostgreSQL, else in-process."""
    backend = store.backend
    if type(backend).__name__.lower().startswith("postgres"):
        url = backend.sa_url.set(drivername="postgresql")
        dsn = url.render_as_string(hide_password=False)
        return PostgresNotifier(dsn, backend.schema, max_clients)
    return Notifier(max_clients)
