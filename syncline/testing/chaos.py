"""The chaos kit: run an app's own code on several device processes against a real server over
a bad network, kill the devices at random, then prove that every committed write reached the
server and every device exactly once, in order, and that nothing is stuck.

Four parts, usable alone or together (docs/testing.md, "Chaos testing your app"):

- :class:`ChaosProxy`: a TCP proxy on 127.0.0.1 that delays, cuts (FIN) and resets (RST)
  connections in the middle of a request or of an answer, and drops requests or answers
  (silence until the client gives up), on a schedule or at random from a seed; it counts what
  it did.
- :class:`ServerProcess`: ``syncline serve`` in a subprocess, with the app's server plugins
  (command handlers) registered first.
- :class:`ChaosRunner`: starts device processes running a :class:`DeviceScript` (the app's code:
  open a store, make writes), SIGKILLs them at random points and restarts them, then drains.
  Each device journals every write it committed (:meth:`Device.write`): an intent line before
  the commit, an fsync'd acknowledgement after it returns.
- :func:`verify`: reads the journals and the snapshots (server, every device) and reports what
  was lost, doubled, out of order, stuck or unexplained.
"""

from __future__ import annotations

import contextlib
import enum
import importlib
import importlib.util
import json
import os
import random
import select
import selectors
import signal
import socket
import struct
import subprocess
import sys
import threading
import time
import urllib.request
from collections import Counter
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import attrs

from syncline.testing.processes import free_port, stop_process

if TYPE_CHECKING:
    from syncline.core.store import Store

__all__ = [
    "Add", "ChaosProxy", "ChaosReport", "ChaosRunner", "Delete", "Device", "DeviceScript",
    "Fault", "Finding", "HistoryEntry", "JournalWrite", "Put", "Rates", "ServerProcess",
    "Snapshot", "load_object", "read_journal", "read_sqlite_history", "verify",
]


def load_object(spec: str) -> Any:
    """``package.module:NAME`` or ``path/to/file.py:NAME`` (a dotted NAME walks attributes)."""
    target, sep, name = spec.rpartition(":")
    if not sep or not target or not name:
        raise ValueError(f"{spec!r}: write module:NAME or path/to/file.py:NAME")
    if target.endswith(".py"):
        path = Path(target).resolve()
        module_name = f"_syncline_chaos_{path.stem}_{abs(hash(str(path))):x}"
        module = sys.modules.get(module_name)
        if module is None:
            loader_spec = importlib.util.spec_from_file_location(module_name, path)
            if loader_spec is None or loader_spec.loader is None:
                raise ImportError(f"cannot load {path}")
            module = importlib.util.module_from_spec(loader_spec)
            sys.modules[module_name] = module
            loader_spec.loader.exec_module(module)
    else:
        module = importlib.import_module(target)
    obj: Any = module
    for part in name.split("."):
        obj = getattr(obj, part)
    return obj


# == the proxy ==================================================================================


class Fault(enum.Enum):
    """What the proxy does to one exchange (a request and its answer on a connection)."""

    PASS = "pass"
    #: the request and the answer each wait a random time (up to ``Rates.max_delay``)
    DELAY = "delay"
    #: part of the request reaches the server, then both sides are closed (FIN)
    CUT_REQUEST = "cut_request"
    #: part of the request reaches the server, then the client gets a reset (RST)
    RESET_REQUEST = "reset_request"
    #: the whole request reaches the server (it acts on it), part of the answer reaches the
    #: client, then both sides are closed (FIN)
    CUT_RESPONSE = "cut_response"
    #: as CUT_RESPONSE, with a reset
    RESET_RESPONSE = "reset_response"
    #: the request is swallowed: silence until the client gives up (or ``Rates.hold``)
    DROP_REQUEST = "drop_request"
    #: the server answers, the answer is swallowed: silence until the client gives up
    DROP_RESPONSE = "drop_response"


#: each direction's (cut, reset, drop) faults
_REQUEST_FAULTS = (Fault.CUT_REQUEST, Fault.RESET_REQUEST, Fault.DROP_REQUEST)
_RESPONSE_FAULTS = (Fault.CUT_RESPONSE, Fault.RESET_RESPONSE, Fault.DROP_RESPONSE)


@attrs.define
class Rates:
    """The probability of each fault per exchange (the rest pass), and their sizes."""

    delay: float = 0.0
    cut_request: float = 0.0
    reset_request: float = 0.0
    cut_response: float = 0.0
    reset_response: float = 0.0
    drop_request: float = 0.0
    drop_response: float = 0.0
    #: a delay is drawn between these, seconds
    min_delay: float = 0.0
    max_delay: float = 0.2
    #: a dropped exchange keeps its connection silent this long at most, seconds
    hold: float = 10.0

    @classmethod
    def calm(cls) -> Rates:
        return cls()

    @classmethod
    def stormy(cls, level: float = 1.0) -> Rates:
        """Every fault, about a third of the exchanges hit at ``level`` 1.0."""
        return cls(delay=0.15 * level, cut_request=0.04 * level, reset_request=0.04 * level,
                   cut_response=0.05 * level, reset_response=0.05 * level,
                   drop_request=0.005 * level, drop_response=0.005 * level)

    def pick(self, roll: float) -> Fault:
        for fault in Fault:
            if fault is Fault.PASS:
                continue
            p = float(getattr(self, fault.value))
            if roll < p:
                return fault
            roll -= p
        return Fault.PASS


@attrs.frozen
class ProxyEvent:
    at: float  # monotonic
    connection: int
    exchange: int
    fault: Fault
    detail: str = ""


def _reset(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))
    with contextlib.suppress(OSError):
        sock.close()


def _close(sock: socket.socket) -> None:
    with contextlib.suppress(OSError):
        sock.shutdown(socket.SHUT_RDWR)
    with contextlib.suppress(OSError):
        sock.close()


class ChaosProxy:
    """A TCP proxy from 127.0.0.1 (a free port) to ``target`` that misbehaves on purpose.

    ``with ChaosProxy(server.url, seed=7, rates=Rates.stormy()) as proxy:`` then point
    clients at ``proxy.url``. Every exchange (the bytes a client sends until the server starts
    answering, and the answer) gets the next fault of :meth:`schedule` if any, else one drawn
    from ``rates`` with the seeded generator. ``offline = True`` resets every connection and
    refuses new ones until set back. ``stats`` counts connections, exchanges and faults.
    The proxy does not parse HTTP; it works for any request/answer protocol over TCP.
    """

    def __init__(self, target: str | tuple[str, int], *, seed: int | str = 0,
                 rates: Rates | None = None, schedule: Sequence[Fault] = (),
                 port: int = 0) -> None:
        if isinstance(target, str):
            hostport = target.split("://", 1)[-1].split("/", 1)[0]
            host, _, port_text = hostport.rpartition(":")
            self.target = (host or "127.0.0.1", int(port_text))
        else:
            self.target = target
        self.rates = rates or Rates()
        self._schedule: list[Fault] = list(schedule)
        self._rng = random.Random(seed)
        self._lock = threading.Lock()
        self._counts: Counter[str] = Counter()
        self.events: list[ProxyEvent] = []
        self._offline = False
        self._stopping = threading.Event()
        self._sockets: set[socket.socket] = set()
        self._threads: list[threading.Thread] = []
        self._connections = 0
        self._listener = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self._listener.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        self._listener.bind(("127.0.0.1", port))
        self._listener.listen(128)
        self._listener.settimeout(0.1)
        self.port: int = self._listener.getsockname()[1]
        self.url = f"http://127.0.0.1:{self.port}/"
        self._acceptor: threading.Thread | None = None

    # -- control -------------------------------------------------------------------------------

    def start(self) -> ChaosProxy:
        if self._acceptor is None:
            self._acceptor = threading.Thread(target=self._accept, name="chaos-proxy",
                                              daemon=True)
            self._acceptor.start()
        return self

    def stop(self) -> None:
        self._stopping.set()
        if self._acceptor is not None:
            self._acceptor.join(5)
            self._acceptor = None
        with contextlib.suppress(OSError):
            self._listener.close()
        with self._lock:
            sockets = list(self._sockets)
        for sock in sockets:
            _close(sock)
        for thread in list(self._threads):
            thread.join(5)

    def __enter__(self) -> ChaosProxy:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def schedule(self, *faults: Fault) -> None:
        """The next exchanges get these faults, in order (then ``rates`` again)."""
        with self._lock:
            self._schedule.extend(faults)

    def calm(self) -> None:
        """No more faults: clear the schedule, zero the rates, go online."""
        with self._lock:
            self._schedule.clear()
            self.rates = Rates()
            self._offline = False

    @property
    def offline(self) -> bool:
        return self._offline

    @offline.setter
    def offline(self, value: bool) -> None:
        with self._lock:
            self._offline = value
            sockets = list(self._sockets) if value else []
            if value:
                self._counts["offline_periods"] += 1
        for sock in sockets:
            _reset(sock)

    def serving(self) -> int:
        """How many connections the proxy is serving now (their faults all recorded once 0)."""
        with self._lock:
            return sum(t.is_alive() for t in self._threads)

    @property
    def stats(self) -> dict[str, int]:
        """Counts: ``connections``, ``exchanges``, one per fault value applied, ``refused``
        (offline), ``upstream_refused`` (the server was down)."""
        with self._lock:
            return dict(self._counts)

    # -- internals -----------------------------------------------------------------------------

    def _count(self, key: str, n: int = 1) -> None:
        with self._lock:
            self._counts[key] += n

    def _event(self, conn: int, exchange: int, fault: Fault, detail: str = "") -> None:
        with self._lock:
            self._counts[fault.value] += 1
            if len(self.events) < 100_000:
                self.events.append(ProxyEvent(time.monotonic(), conn, exchange, fault, detail))

    def _next_fault(self) -> Fault:
        with self._lock:
            self._counts["exchanges"] += 1
            if self._schedule:
                return self._schedule.pop(0)
            return self.rates.pick(self._rng.random())

    def _delay(self) -> None:
        with self._lock:
            seconds = self._rng.uniform(self.rates.min_delay, self.rates.max_delay)
        time.sleep(seconds)

    def _cut_at(self, size: int) -> int:
        with self._lock:
            return self._rng.randrange(size) if size > 0 else 0

    def _accept(self) -> None:
        while not self._stopping.is_set():
            try:
                client, _ = self._listener.accept()
            except TimeoutError:
                continue
            except OSError:
                return
            client.settimeout(None)
            if self._offline:
                self._count("refused")
                _reset(client)
                continue
            with self._lock:
                self._connections += 1
                self._counts["connections"] += 1
                conn = self._connections
            thread = threading.Thread(target=self._serve, args=(client, conn),
                                      name=f"chaos-proxy-{conn}", daemon=True)
            self._threads = [t for t in self._threads if t.is_alive()]
            self._threads.append(thread)
            thread.start()

    def _track(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets.update(sockets)

    def _untrack(self, *sockets: socket.socket) -> None:
        with self._lock:
            self._sockets.difference_update(sockets)

    def _serve(self, client: socket.socket, conn: int) -> None:
        self._track(client)
        try:
            upstream = socket.create_connection(self.target, timeout=10)
        except OSError:
            self._count("upstream_refused")
            _reset(client)
            self._untrack(client)
            return
        upstream.settimeout(None)
        self._track(upstream)
        try:
            self._pump(client, upstream, conn)
        except OSError:
            pass
        finally:
            _close(client)
            _close(upstream)
            self._untrack(client, upstream)

    def _hold(self, client: socket.socket) -> None:
        """Silence: read and discard until the client closes, the hold ends or we stop."""
        deadline = time.monotonic() + self.rates.hold
        while not self._stopping.is_set() and time.monotonic() < deadline:
            ready, _, _ = select.select([client], [], [], 0.1)
            if ready and not client.recv(65536):
                return

    def _ends(self, conn: int, exchange: int, fault: Fault, data: bytes, to: socket.socket,
              client: socket.socket, upstream: socket.socket,
              faults: tuple[Fault, Fault, Fault]) -> bool:
        """Play ``fault`` if it is one of this direction's ``(cut, reset, drop)`` on ``data``
        bound for ``to``; True when that ends the connection."""
        cut, reset, drop = faults
        if fault in (cut, reset):
            n = self._cut_at(len(data))
            to.sendall(data[:n])
            self._event(conn, exchange, fault, f"after {n} bytes")
            if fault is reset:
                _reset(client)
            return True
        if fault is drop:
            self._event(conn, exchange, fault)
            _close(upstream)
            self._hold(client)
            return True
        return False

    def _pump(self, client: socket.socket, upstream: socket.socket, conn: int) -> None:
        sel = selectors.DefaultSelector()
        sel.register(client, selectors.EVENT_READ, "client")
        sel.register(upstream, selectors.EVENT_READ, "upstream")
        phase = "idle"
        fault = Fault.PASS
        exchange = 0
        try:
            while not self._stopping.is_set():
                if self._offline:
                    self._count("reset_offline")
                    _reset(client)
                    return
                for key, _ in sel.select(timeout=0.1):
                    sock: socket.socket = key.fileobj  # type: ignore[assignment]
                    try:
                        data = sock.recv(65536)
                    except OSError:
                        data = b""
                    if not data:  # one side closed: close the other
                        return
                    if key.data == "client":
                        if phase != "request":
                            phase = "request"
                            exchange += 1
                            fault = self._next_fault()
                            if fault is Fault.DELAY:
                                self._delay()
                            if self._ends(conn, exchange, fault, data, upstream, client,
                                          upstream, _REQUEST_FAULTS):
                                return
                        upstream.sendall(data)
                    else:
                        if phase != "response":
                            phase = "response"
                            if fault is Fault.DELAY:
                                self._delay()
                                self._event(conn, exchange, fault)
                            if self._ends(conn, exchange, fault, data, client, client,
                                          upstream, _RESPONSE_FAULTS):
                                return
                            if fault is Fault.PASS:
                                self._count("pass")
                        client.sendall(data)
        finally:
            sel.close()


# == the server =================================================================================


def _serve_main(argv: Sequence[str]) -> None:
    """``python -m syncline.testing.chaos serve [--plugin SPEC]... -- <syncline serve args>``."""
    args = list(argv)
    plugins: list[str] = []
    while args and args[0] == "--plugin":
        plugins.append(args[1])
        args = args[2:]
    if args and args[0] == "--":
        args = args[1:]
    from syncline.core.plugins import register_plugin

    for spec in plugins:
        plugin = load_object(spec)
        register_plugin(plugin() if isinstance(plugin, type) else plugin, spec)
    from syncline.cli import main

    main.main(args=["serve", *args], prog_name="syncline")


class ServerProcess:
    """``syncline serve`` in a subprocess on 127.0.0.1 and a free port, with ``plugins``
    (``module:NAME`` or ``file.py:NAME``: an object or a class with hook implementations, such
    as ``syncline_handle_command``) registered first.

    ``tokens`` maps tokens to principals (default ``{"chaos-token": "chaos"}``); ``args`` are
    more ``syncline serve`` options (``["--shared", "posts"]``). Its output goes to ``log``.
    A context manager: stopped (terminated, then killed) at the end.
    """

    def __init__(self, store: str, *, entities: str | None = None, schema: str | None = None,
                 plugins: Sequence[str] = (), tokens: Mapping[str, str] | None = None,
                 args: Sequence[str] = (), port: int | None = None, log: Path | None = None,
                 env: Mapping[str, str] | None = None) -> None:
        self.store = store
        #: a port the server chose itself can be chosen again when another process took it
        self._own_port = port is None
        self.port = port or free_port()
        self.url = f"http://127.0.0.1:{self.port}/"
        self.tokens = dict(tokens or {"chaos-token": "chaos"})
        self.log = log
        self.env = dict(env) if env is not None else None
        command = [sys.executable, "-m", "syncline.testing.chaos", "serve"]
        for spec in plugins:
            command += ["--plugin", spec]
        command += ["--", "--store", store, "--host", "127.0.0.1", "--port", str(self.port)]
        if entities:
            command += ["--entities", entities]
        if schema:
            command += ["--schema", schema]
        for token, principal in self.tokens.items():
            command += ["--token", f"{token}={principal}"]
        self.command = [*command, *args]
        self.process: subprocess.Popen[bytes] | None = None

    def healthy(self) -> bool:
        try:
            with urllib.request.urlopen(self.url + "v1/health", timeout=2) as answer:
                return bool(answer.status == 200)
        except OSError:
            return False

    def start(self, timeout: float = 60.0, attempts: int = 5) -> ServerProcess:
        out: Any = subprocess.DEVNULL
        if self.log is not None:
            out = self.log.open("ab")
        try:
            self.process = subprocess.Popen(self.command, stdout=out, stderr=subprocess.STDOUT,
                                            stdin=subprocess.DEVNULL, env=self.env)
        finally:
            if self.log is not None:
                out.close()
        deadline = time.monotonic() + timeout
        while not self.healthy():
            if self.process.poll() is not None and self._own_port and attempts > 1:
                # Most likely the free port was taken before the server bound it.
                self._move_to(free_port())
                return self.start(timeout, attempts - 1)
            if self.process.poll() is not None or time.monotonic() > deadline:
                self.stop()
                raise RuntimeError(f"syncline serve did not start: {self.command}\n"
                                   f"{self.log_tail()}")
            time.sleep(0.1)
        return self

    def _move_to(self, port: int) -> None:
        at = self.command.index("--port") + 1
        self.command[at] = str(port)
        self.port, self.url = port, f"http://127.0.0.1:{port}/"

    def log_tail(self, chars: int = 4000) -> str:
        if self.log is None or not self.log.exists():
            return "(no log)"
        return self.log.read_text(errors="replace")[-chars:]

    def stop(self) -> None:
        process, self.process = self.process, None
        stop_process(process)

    def restart(self, timeout: float = 60.0) -> None:
        self.stop()
        self.start(timeout)

    def __enter__(self) -> ServerProcess:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.stop()


# == devices and their journals ===============================================================


@attrs.frozen
class Put:
    """After this write the record holds ``fields`` (a subset of its fields, in wire form:
    the JSON the server would store; give each write a unique value so it can be told apart)."""

    entity: str
    record_id: str
    fields: Mapping[str, Any]

    def to_json(self) -> dict[str, Any]:
        return {"op": "put", "entity": self.entity, "id": self.record_id,
                "fields": dict(self.fields)}


@attrs.frozen
class Delete:
    """After this write the record is gone."""

    entity: str
    record_id: str

    def to_json(self) -> dict[str, Any]:
        return {"op": "delete", "entity": self.entity, "id": self.record_id}


@attrs.frozen
class Add:
    """An append-style effect: this write (a command, typically) adds ``by`` to the integer
    ``field`` of a record, on the server, exactly once. The verifier checks that the field
    equals the sum of the committed additions, so a doubled or lost one shows as a difference.
    """

    entity: str
    record_id: str
    field: str
    by: int = 1

    def to_json(self) -> dict[str, Any]:
        return {"op": "add", "entity": self.entity, "id": self.record_id, "field": self.field,
                "by": self.by}


Effect = Put | Delete | Add


def _effect_from_json(raw: Mapping[str, Any]) -> Effect:
    if raw["op"] == "put":
        return Put(raw["entity"], raw["id"], raw["fields"])
    if raw["op"] == "delete":
        return Delete(raw["entity"], raw["id"])
    return Add(raw["entity"], raw["id"], raw["field"], raw.get("by", 1))


@attrs.frozen
class JournalWrite:
    """One write a device made: ``committed`` when its commit returned (acknowledged);
    in doubt (``committed`` False, ``aborted`` False) when the device was killed between the
    intent and the acknowledgement, so it may or may not have committed."""

    device: str
    seq: int
    effects: tuple[Effect, ...]
    committed: bool = True
    aborted: bool = False

    @property
    def in_doubt(self) -> bool:
        return not self.committed and not self.aborted


def _repair_journal(path: Path) -> None:
    """Drop a line a kill cut in half, so that the next process appends after whole lines."""
    if not path.exists():
        return
    data = path.read_bytes()
    end = data.rfind(b"\n") + 1
    if end < len(data):
        os.truncate(path, end)


def read_journal(path: Path, device: str | None = None) -> list[JournalWrite]:
    """The writes a device's journal records, in order (a cut last line is ignored)."""
    name = device or path.name.split(".")[0]
    writes: dict[int, JournalWrite] = {}
    if not path.exists():
        return []
    for raw in path.read_bytes().split(b"\n"):
        if not raw.strip():
            continue
        try:
            line = json.loads(raw)
        except ValueError:
            continue  # a line cut by a kill
        kind = line.get("t")
        if kind == "intent":
            writes[line["seq"]] = JournalWrite(
                name, line["seq"], tuple(_effect_from_json(e) for e in line["effects"]),
                committed=False)
        elif kind in ("ack", "abort") and line["seq"] in writes:
            writes[line["seq"]] = attrs.evolve(writes[line["seq"]], committed=kind == "ack",
                                               aborted=kind == "abort")
    return [writes[seq] for seq in sorted(writes)]


class Device:
    """What a :class:`DeviceScript` gets in a device process: the device's ``name``, its
    ``store_url`` (a SQLite file of its own), the ``server_url`` to sync with, the ``token``,
    ``seed``, and, once :meth:`DeviceScript.open` returned, ``store``."""

    def __init__(self, name: str, workdir: Path, server_url: str, *, token: str | None = None,
                 seed: int | str = 0, journal: bool = True) -> None:
        self.name = name
        self.workdir = workdir
        self.server_url = server_url
        self.token = token
        self.seed = seed
        self.store_url = f"sqlite:///{workdir / f'{name}.db'}"
        self.journal_path = workdir / f"{name}.journal"
        self._store: Store | None = None
        self._fd: int | None = None
        self.seq = 0
        if journal:
            _repair_journal(self.journal_path)
            known = read_journal(self.journal_path, name)
            self.seq = known[-1].seq if known else 0
            self._fd = os.open(self.journal_path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
            self._line({"t": "start", "pid": os.getpid()})

    @property
    def store(self) -> Store:
        if self._store is None:
            raise RuntimeError("the device's store is not open yet")
        return self._store

    @store.setter
    def store(self, store: Store) -> None:
        self._store = store

    def _line(self, line: Mapping[str, Any], sync: bool = False) -> None:
        if self._fd is None:
            raise RuntimeError("this device keeps no journal (drain and snapshot runs)")
        line = {**line, "at": round(time.time(), 3)}
        os.write(self._fd, (json.dumps(line, separators=(",", ":")) + "\n").encode())
        if sync:
            os.fsync(self._fd)

    def rng(self) -> random.Random:
        """A generator for the next step, seeded by the seed, the device and the next write's
        sequence number: a restarted device carries on with fresh choices."""
        return random.Random(f"{self.seed}/{self.name}/{self.seq + 1}")

    @contextlib.contextmanager
    def write(self, *effects: Effect) -> Iterator[int]:
        """Journal one local commit: ``with device.write(Put(...)): dao.upsert(...)``.

        The block must commit exactly once (one repository write, or one transaction). Its
        intent is journaled before, its acknowledgement (fsync'd) after the commit returned;
        if the block raises, it is journaled as aborted and the exception propagates.
        Yields the write's sequence number (per device, from 1, across restarts).
        """
        self.seq += 1
        seq = self.seq
        self._line({"t": "intent", "seq": seq, "effects": [e.to_json() for e in effects]})
        try:
            yield seq
        except BaseException as exc:
            self._line({"t": "abort", "seq": seq, "error": f"{type(exc).__name__}: {exc}"},
                       sync=True)
            raise
        self._line({"t": "ack", "seq": seq}, sync=True)

    def close(self) -> None:
        if self._fd is not None:
            os.close(self._fd)
            self._fd = None


class DeviceScript:
    """The app's code on one device. Subclass it in a module the device processes can import
    (``module:NAME`` or ``path/to/file.py:NAME``) and override :meth:`open` and :meth:`step`.

    The device process opens the store (:meth:`open`), starts the store's sync worker
    (``sync_interval``, ``sync_debounce``) and calls :meth:`step` again and again, ``pace``
    seconds apart, until it is killed (or ``max_steps`` were made; it then keeps syncing).
    """

    pace: float = 0.02
    sync_interval: float = 0.5
    sync_debounce: float = 0.02
    max_steps: int | None = None
    #: how long a drain may take before the device gives up and reports what is stuck
    drain_timeout: float = 60.0

    def open(self, device: Device) -> Store:
        """Open ``device.store_url`` with the app's entities, syncing with ``device.server_url``
        (HTTP transport: give it a short ``timeout`` so that dropped answers cost little)."""
        raise NotImplementedError

    def step(self, device: Device, rng: random.Random) -> None:
        """Make one or a few writes, each inside ``with device.write(effects...):``."""
        raise NotImplementedError


# == snapshots ==================================================================================


@attrs.define
class Snapshot:
    """What one store holds: records by entity and id (wire form), the queue, dead letters and
    records in ``failed`` or ``conflict``."""

    records: dict[str, dict[str, dict[str, Any]]] = attrs.Factory(dict)
    pending: int = 0
    dead: list[str] = attrs.Factory(list)
    failed: list[str] = attrs.Factory(list)
    drained: bool = True
    note: str = ""

    def to_json(self) -> dict[str, Any]:
        return attrs.asdict(self)

    @classmethod
    def from_json(cls, raw: Mapping[str, Any]) -> Snapshot:
        return cls(**raw)

    @classmethod
    def of(cls, store: Store, **extra: Any) -> Snapshot:
        """Read a store (every syncing entity)."""
        from syncline.core.model.query import F
        from syncline.core.model.schema import spec_of
        from syncline.core.sync.outbox import SyncStatus

        records: dict[str, dict[str, dict[str, Any]]] = {}
        for cls_ in store.entities:
            spec = spec_of(cls_)
            if not spec.syncs:
                continue
            table = records.setdefault(spec.table.name, {})
            repository: Any = store.repository(cls_)
            for obj in repository.all():
                row = store.wire.unstructure(obj)
                table[str(row[spec.primary_key])] = row
        dead = [f"{e.action} {e.command or e.entity} {e.record_id or ''} {e.payload}: {e.error}"
                for e in store.outbox.dead_letters()]
        failed = [f"{s.entity} {s.record_id} {s.status.value}: {s.error}"
                  for s in store.outbox.states.find(
                      F.status.in_([SyncStatus.FAILED, SyncStatus.CONFLICT]))]
        return cls(records, store.outbox.pending_count(), dead, failed, **extra)


@attrs.frozen
class HistoryEntry:
    """One entry of the server's change log (for the order and exactly-once checks)."""

    seq: int
    entity: str
    record_id: str
    op: str  # upsert, delete
    payload: dict[str, Any] | None
    mutation_id: str | None


def read_sqlite_history(path: Path | str) -> list[HistoryEntry]:
    """The change log of a reference server over a SQLite file, in sequence order."""
    import sqlite3

    connection = sqlite3.connect(f"file:{path}?mode=ro", uri=True)
    try:
        rows = connection.execute(
            "SELECT seq, entity, record_id, op, payload, mutation_id FROM _syncline_changes "
            "ORDER BY seq").fetchall()
    finally:
        connection.close()
    return [HistoryEntry(seq, entity, record_id, op,
                         json.loads(payload) if isinstance(payload, str) else payload,
                         mutation_id)
            for seq, entity, record_id, op, payload, mutation_id in rows]


# == the verifier ===============================================================================


@attrs.frozen
class Finding:
    kind: str  # lost, doubled, out_of_order, stuck, unexplained
    where: str  # "server", "device d1", "history"
    what: str  # entity/record_id[.field] or the queue
    detail: str

    def __str__(self) -> str:
        return f"{self.kind} on {self.where}: {self.what}: {self.detail}"


@attrs.define
class ChaosReport:
    """What :func:`verify` found. ``ok`` when nothing was lost, doubled, out of order, stuck or
    unexplained."""

    committed: int = 0
    in_doubt: int = 0
    aborted: int = 0
    findings: list[Finding] = attrs.Factory(list)
    stats: dict[str, Any] = attrs.Factory(dict)

    def of_kind(self, kind: str) -> list[Finding]:
        return [f for f in self.findings if f.kind == kind]

    @property
    def lost(self) -> list[Finding]:
        return self.of_kind("lost")

    @property
    def doubled(self) -> list[Finding]:
        return self.of_kind("doubled")

    @property
    def out_of_order(self) -> list[Finding]:
        return self.of_kind("out_of_order")

    @property
    def stuck(self) -> list[Finding]:
        return self.of_kind("stuck")

    @property
    def unexplained(self) -> list[Finding]:
        return self.of_kind("unexplained")

    @property
    def ok(self) -> bool:
        return not self.findings

    def counts(self) -> dict[str, int]:
        kinds = ("lost", "doubled", "out_of_order", "stuck", "unexplained")
        return {kind: len(self.of_kind(kind)) for kind in kinds}

    def summary(self, limit: int = 40) -> str:
        head = (f"{self.committed} committed writes ({self.in_doubt} in doubt, "
                f"{self.aborted} aborted): " + ", ".join(
                    f"{n} {kind}" for kind, n in self.counts().items()))
        lines = [head, *(f"  {f}" for f in self.findings[:limit])]
        if len(self.findings) > limit:
            lines.append(f"  ... and {len(self.findings) - limit} more")
        if self.stats:
            lines.append(f"  stats: {self.stats}")
        return "\n".join(lines)


def _matches(row: Mapping[str, Any] | None, fields: Mapping[str, Any]) -> bool:
    return row is not None and all(row.get(k) == v for k, v in fields.items())


@attrs.define
class _RecordPlan:
    """The writes of one record, in commit order per device."""

    writes: list[tuple[JournalWrite, Put | Delete]] = attrs.Factory(list)
    adds: dict[str, list[tuple[JournalWrite, Add]]] = attrs.Factory(dict)


def verify(journals: Mapping[str, Sequence[JournalWrite]], server: Snapshot,
           devices: Mapping[str, Snapshot], history: Sequence[HistoryEntry] | None = None,
           *, ignore: Sequence[str] = ()) -> ChaosReport:
    """Check every committed write against the server and every device after a drain.

    - Record writes (:class:`Put`, :class:`Delete`): each record must hold its last committed
      write (or the in-doubt write after it, if the device died between commit and journal),
      on the server and on every device; a record that holds an earlier write lost the later
      ones. Give each record one writing device: with several, any device's last write is
      accepted.
    - Additions (:class:`Add`): the field must equal the sum of the committed additions (plus
      any in-doubt ones); more is *doubled*, less is *lost*.
    - Stuck: a snapshot with queued entries, dead letters, failed or conflicting records, or a
      device that did not finish its drain.
    - Unexplained: a record on the server or a device that no write explains (entities in
      ``ignore`` are not checked for this).
    - ``history`` (the server's change log, :func:`read_sqlite_history`): a mutation id applied
      twice is *doubled*; a record whose logged values go back to an earlier write of the same
      device is *out of order*.
    """
    report = ChaosReport()
    plans: dict[tuple[str, str], _RecordPlan] = {}
    for writes in journals.values():
        for write in writes:
            if write.aborted:
                report.aborted += 1
                continue
            if write.in_doubt:
                report.in_doubt += 1
            else:
                report.committed += 1
            for effect in write.effects:
                plan = plans.setdefault((effect.entity, effect.record_id), _RecordPlan())
                if isinstance(effect, Add):
                    plan.adds.setdefault(effect.field, []).append((write, effect))
                else:
                    plan.writes.append((write, effect))

    sides = [("server", server), *((f"device {name}", snap) for name, snap in devices.items())]
    for where, snap in sides:
        if snap.pending:
            report.findings.append(Finding("stuck", where, "queue",
                                           f"{snap.pending} entries still queued"))
        for dead in snap.dead:
            report.findings.append(Finding("stuck", where, "dead letter", dead))
        for failed in snap.failed:
            report.findings.append(Finding("stuck", where, "record state", failed))
        if not snap.drained:
            report.findings.append(Finding("stuck", where, "drain",
                                           snap.note or "did not finish its drain"))
        for (entity, record_id), plan in plans.items():
            row = snap.records.get(entity, {}).get(record_id)
            _check_record(report, where, entity, record_id, plan, row)
        for entity, rows in snap.records.items():
            if entity in ignore:
                continue
            for record_id in rows:
                if (entity, record_id) not in plans:
                    report.findings.append(Finding(
                        "unexplained", where, f"{entity}/{record_id}",
                        f"no journaled write made it: {rows[record_id]}"))
    if history is not None:
        _check_history(report, plans, history)
    return report


def _check_record(report: ChaosReport, where: str, entity: str, record_id: str,
                  plan: _RecordPlan, row: Mapping[str, Any] | None) -> None:
    what = f"{entity}/{record_id}"
    if plan.writes:
        # What each device wrote last, and what it may also have written (in doubt).
        finals: list[Put | Delete] = []
        by_device: dict[str, list[tuple[JournalWrite, Put | Delete]]] = {}
        for write, effect in plan.writes:
            by_device.setdefault(write.device, []).append((write, effect))
        describe = []
        for device, writes in by_device.items():
            committed = [(w, e) for w, e in writes if w.committed]
            if committed:
                finals.append(committed[-1][1])
                last_seq = committed[-1][0].seq
            else:  # only writes in doubt: the record may never have been written
                finals.append(Delete(entity, record_id))
                last_seq = -1
            finals += [e for w, e in writes if w.in_doubt and w.seq > last_seq]
            describe.append(f"{device} wrote " + ", ".join(
                f"#{w.seq}{'?' if w.in_doubt else ''} "
                f"{'delete' if isinstance(e, Delete) else dict(e.fields)}" for w, e in writes))
        if not any(_holds(row, e) for e in finals):
            held = next((f"#{w.seq} of {w.device}" for w, e in reversed(plan.writes)
                         if _holds(row, e)), None)
            state = "missing" if row is None else (
                f"holds the earlier write {held}" if held else f"holds {row}")
            report.findings.append(Finding("lost", where, what, f"{state}; "
                                           + "; ".join(describe)))
    elif row is None and plan.adds:
        report.findings.append(Finding(
            "lost", where, what, "missing; only additions to it were journaled"))
    if row is None:
        return
    for field, adds in plan.adds.items():
        low = sum(a.by for w, a in adds if w.committed)
        high = low + sum(a.by for w, a in adds if w.in_doubt)
        value = row.get(field)
        if not isinstance(value, int):
            report.findings.append(Finding("lost", where, f"{what}.{field}",
                                           f"holds {value!r}, not an integer"))
        elif value < low:
            report.findings.append(Finding(
                "lost", where, f"{what}.{field}",
                f"{low - value} of {len(adds)} committed additions missing "
                f"(holds {value}, expected {low}"
                + (f" to {high})" if high != low else ")")))
        elif value > high:
            report.findings.append(Finding(
                "doubled", where, f"{what}.{field}",
                f"{value - high} more than the committed additions "
                f"(holds {value}, expected {low}" + (f" to {high})" if high != low else ")")))


def _holds(row: Mapping[str, Any] | None, effect: Put | Delete) -> bool:
    if isinstance(effect, Delete):
        return row is None
    return _matches(row, effect.fields)


def _check_history(report: ChaosReport, plans: Mapping[tuple[str, str], _RecordPlan],
                   history: Sequence[HistoryEntry]) -> None:
    seen: Counter[str] = Counter()
    for entry in history:
        if entry.mutation_id is not None:
            seen[entry.mutation_id] += 1
    for mutation_id, n in seen.items():
        if n > 1:
            entries = [e for e in history if e.mutation_id == mutation_id]
            report.findings.append(Finding(
                "doubled", "history", f"mutation {mutation_id}",
                f"applied {n} times: " + ", ".join(
                    f"seq {e.seq} {e.op} {e.entity}/{e.record_id}" for e in entries)))
    by_record: dict[tuple[str, str], list[HistoryEntry]] = {}
    for entry in history:
        by_record.setdefault((entry.entity, entry.record_id), []).append(entry)
    for key, entries in by_record.items():
        plan = plans.get(key)
        if plan is None or not plan.writes:
            continue
        # Per device, the logged values must follow its writes forwards, never back.
        for device in {w.device for w, _ in plan.writes}:
            writes = [(w, e) for w, e in plan.writes if w.device == device]
            position = -1
            trail = []
            for entry in entries:
                row = entry.payload if entry.op == "upsert" else None
                matching = [i for i, (_, e) in enumerate(writes) if _holds(row, e)]
                if not matching:
                    continue
                # The latest write at or after where we are, else an earlier one: going back.
                forward = [i for i in matching if i >= position]
                index = forward[0] if forward else matching[-1]
                trail.append(f"seq {entry.seq} {entry.op}=#{writes[index][0].seq}")
                if index < position:
                    report.findings.append(Finding(
                        "out_of_order", "history", f"{key[0]}/{key[1]}",
                        f"the server applied #{writes[index][0].seq} of {device} after "
                        f"#{writes[position][0].seq}: " + ", ".join(trail)))
                    break
                position = index


# == the runner =================================================================================


@attrs.define
class _Running:
    name: str
    pid: int
    started: float
    steps_at_start: int


@attrs.define
class RunStats:
    kills: int = 0
    restarts: int = 0
    steps: int = 0
    #: seconds spent in run(), drain() and server_snapshot()
    elapsed: float = 0.0
    drain_elapsed: float = 0.0
    observe_elapsed: float = 0.0
    #: where each kill landed, by what the device journaled last: ``write`` (between an
    #: intent and its acknowledgement), ``between`` (after an acknowledgement: sleeping,
    #: syncing in the worker), ``start`` (opening the store, before any write)
    landed: Counter[str] = attrs.Factory(Counter)


class ChaosRunner:
    """Run ``devices`` device processes of ``script`` (a :class:`DeviceScript` given as
    ``module:NAME`` or ``path/to/file.py:NAME``) in ``workdir``, each with a SQLite store of
    its own, syncing with ``server_url`` (the proxy's URL): kill and restart them at random
    (:meth:`run`), then :meth:`drain`, take the server's state (:meth:`server_snapshot`) and
    :meth:`verify`.

    Devices are forked from one *zygote* process that imported the script once (a restart
    costs milliseconds, not an interpreter start); the zygote and every device run in a
    process group of their own, killed as a whole by :meth:`close` (a context manager).
    Unix only.
    """

    def __init__(self, script: str, workdir: Path, server_url: str, *, devices: int = 3,
                 token: str | None = None, seed: int | str = 0,
                 env: Mapping[str, str] | None = None) -> None:
        self.script = script
        self.workdir = Path(workdir)
        self.workdir.mkdir(parents=True, exist_ok=True)
        self.server_url = server_url
        self.names = [f"d{i + 1}" for i in range(devices)]
        self.token = token
        self.seed = seed
        self.env = {**os.environ, **(env or {})}
        self._rng = random.Random(f"runner/{seed}")
        self._running: dict[str, _Running] = {}
        self._zygote: subprocess.Popen[bytes] | None = None
        self._answers = b""
        self.stats = RunStats()

    # -- the zygote ----------------------------------------------------------------------------

    def start(self, timeout: float = 120.0) -> ChaosRunner:
        """Start the zygote (it imports the script) and wait until it is ready."""
        if self._zygote is not None:
            return self
        command = [sys.executable, "-m", "syncline.testing.chaos_device", "--zygote",
                   "--script", self.script, "--dir", str(self.workdir), "--seed", str(self.seed)]
        if self.token:
            command += ["--token", self.token]
        with (self.workdir / "zygote.log").open("ab") as log:
            self._zygote = subprocess.Popen(command, stdin=subprocess.PIPE,
                                            stdout=subprocess.PIPE, stderr=log, env=self.env,
                                            start_new_session=True)
        self._expect("ready", timeout)
        return self

    def _expect(self, prefix: str, timeout: float = 60.0) -> list[str]:
        zygote = self._zygote
        assert zygote is not None and zygote.stdout is not None
        deadline = time.monotonic() + timeout
        while b"\n" not in self._answers:
            left = deadline - time.monotonic()
            ready, _, _ = select.select([zygote.stdout], [], [], max(0.0, left))
            data = os.read(zygote.stdout.fileno(), 4096) if ready else b""
            if not data:
                why = "exited" if ready else f"did not answer in {timeout} s"
                log = self.workdir / "zygote.log"
                raise RuntimeError(f"the device zygote {why}:\n"
                                   + (log.read_text(errors="replace")[-4000:]
                                      if log.exists() else ""))
            self._answers += data
        line, self._answers = self._answers.split(b"\n", 1)
        words = line.decode().split()
        if not words or words[0] != prefix:
            raise RuntimeError(f"the device zygote answered {line!r}, expected {prefix!r}")
        return words[1:]

    def _command(self, text: str) -> None:
        zygote = self._zygote
        assert zygote is not None and zygote.stdin is not None
        zygote.stdin.write((text + "\n").encode())
        zygote.stdin.flush()

    def _spawn(self, name: str, mode: str = "run", server_url: str | None = None) -> int:
        self.start()
        self._command(f"spawn {name} {mode} {server_url or self.server_url}")
        return int(self._expect("pid")[0])

    def _reap(self, pid: int, kill: bool, timeout: float = 60.0) -> int:
        self._command(f"{'kill' if kill else 'wait'} {pid}")
        return int(self._expect("dead", timeout)[1])

    def close(self) -> None:
        """Kill the zygote and every device it forked (its whole process group)."""
        zygote, self._zygote = self._zygote, None
        self._running.clear()
        if zygote is None:
            return
        with contextlib.suppress(ProcessLookupError, PermissionError):
            os.killpg(zygote.pid, signal.SIGKILL)
        zygote.wait(30)
        for pipe in (zygote.stdin, zygote.stdout):
            if pipe is not None:
                with contextlib.suppress(OSError):
                    pipe.close()

    def __enter__(self) -> ChaosRunner:
        return self.start()

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- the chaos run -------------------------------------------------------------------------

    def log_path(self, name: str) -> Path:
        return self.workdir / f"{name}.log"

    def log_tail(self, name: str, chars: int = 4000) -> str:
        path = self.log_path(name)
        return path.read_text(errors="replace")[-chars:] if path.exists() else "(no log)"

    def _steps(self, name: str) -> int:
        try:
            return (self.workdir / f"{name}.progress").stat().st_size
        except FileNotFoundError:
            return 0

    def _start_device(self, name: str) -> None:
        steps = self._steps(name)
        self._running[name] = _Running(name, self._spawn(name), time.monotonic(), steps)

    def _kill(self, name: str) -> None:
        running = self._running.pop(name)
        status = self._reap(running.pid, kill=True)
        if not (os.WIFSIGNALED(status) and os.WTERMSIG(status) == signal.SIGKILL):
            raise RuntimeError(f"device {name} had exited by itself (status {status}):\n"
                               f"{self.log_tail(name)}")

    def run(self, *, kills: int | None = None, duration: float | None = None,
            steps: tuple[int, int] = (1, 8), extra: float = 0.03,
            step_timeout: float = 60.0) -> RunStats:
        """Kill a random device a random 1-8 ``steps`` after it started, plus up to ``extra``
        seconds (so kills land in writes, in syncs and in between, however slow the machine
        is), restart it; until ``kills`` kills were made or ``duration`` seconds passed."""
        if kills is None and duration is None:
            raise ValueError("give kills= or duration=")
        self.start()
        began = time.monotonic()
        for name in self.names:
            if name not in self._running:
                self._start_device(name)
        targets = {n: self._rng.randint(*steps) for n in self.names}
        progress = {n: self._steps(n) for n in self.names}
        last_progress = time.monotonic()
        while True:
            if kills is not None and self.stats.kills >= kills:
                break
            if duration is not None and time.monotonic() - began >= duration:
                break
            now = {n: self._steps(n) for n in self.names}
            if now != progress:
                progress, last_progress = now, time.monotonic()
            elif time.monotonic() - last_progress > step_timeout:
                raise TimeoutError(f"no device made a step in {step_timeout} s:\n" + "\n".join(
                    f"--- {n}:\n{self.log_tail(n, 1500)}" for n in self.names))
            due = [n for n, r in self._running.items()
                   if now[n] - r.steps_at_start >= targets[n]]
            if not due:
                time.sleep(0.005)
                continue
            name = self._rng.choice(due)
            time.sleep(self._rng.uniform(0, extra))
            self._kill(name)
            self.stats.kills += 1
            self.stats.landed[self._landed(name)] += 1
            self._start_device(name)
            self.stats.restarts += 1
            targets[name] = self._rng.randint(*steps)
        self.stats.steps = sum(self._steps(n) for n in self.names)
        self.stats.elapsed += time.monotonic() - began
        return self.stats

    def _landed(self, name: str) -> str:
        path = self.workdir / f"{name}.journal"
        if not path.exists():
            return "start"
        with path.open("rb") as f:
            f.seek(max(0, path.stat().st_size - 400))
            tail = f.read().rstrip(b"\n").rsplit(b"\n", 1)[-1]
        try:
            kind = json.loads(tail).get("t")
        except ValueError:
            return "write"  # cut mid-line
        return {"intent": "write", "start": "start"}.get(kind, "between")

    def stop(self) -> None:
        """SIGKILL every device process still running (the zygote stays)."""
        for name in list(self._running):
            self._kill(name)

    # -- drain, snapshots, verification ------------------------------------------------------

    def _run_all(self, mode: str, server_url: str, timeout: float,
                 names: Sequence[str] | None = None) -> None:
        pids = {n: self._spawn(n, mode, server_url) for n in (names or self.names)}
        deadline = time.monotonic() + timeout
        for name, pid in pids.items():
            status = self._reap(pid, kill=False, timeout=max(1.0, deadline - time.monotonic()))
            if status != 0:
                raise RuntimeError(f"device {name} ({mode}) failed (status {status}):\n"
                                   f"{self.log_tail(name)}")

    def drain(self, server_url: str | None = None, *, timeout: float = 120.0,
              rounds: int = 3) -> dict[str, Snapshot]:
        """Kill the running devices, then run every device again in drain mode, with no new
        writes: it syncs until its queue is empty (or the script's ``drain_timeout``). Then
        again, so every device pulls what the others pushed last, until a round pushes
        nothing (at most ``rounds``). Returns each device's snapshot."""
        self.stop()
        began = time.monotonic()
        url = server_url or self.server_url
        snapshots: dict[str, Snapshot] = {}
        for _ in range(rounds):
            self._run_all("drain", url, timeout)
            snapshots = self.snapshots()
            if not any(self._pushed_in_last_drain(n) for n in self.names):
                break
        self.stats.drain_elapsed += time.monotonic() - began
        return snapshots

    def _pushed_in_last_drain(self, name: str) -> bool:
        path = self.workdir / f"{name}.drain.json"
        return bool(json.loads(path.read_text()).get("pushed", 0)) if path.exists() else True

    def snapshots(self) -> dict[str, Snapshot]:
        """Each device's snapshot, as its last drain wrote it."""
        return {name: Snapshot.from_json(json.loads(
            (self.workdir / f"{name}.snapshot.json").read_text())) for name in self.names}

    def server_snapshot(self, server_url: str, *, timeout: float = 120.0) -> Snapshot:
        """A new device (an empty store) syncs from ``server_url`` and reports what it got:
        the server's state as any client sees it."""
        began = time.monotonic()
        self._run_all("observe", server_url, timeout, names=["observer"])
        self.stats.observe_elapsed += time.monotonic() - began
        return Snapshot.from_json(json.loads(
            (self.workdir / "observer.snapshot.json").read_text()))

    def journals(self) -> dict[str, list[JournalWrite]]:
        return {name: read_journal(self.workdir / f"{name}.journal", name)
                for name in self.names}

    def verify(self, server: Snapshot, devices: Mapping[str, Snapshot] | None = None,
               history: Sequence[HistoryEntry] | None = None,
               ignore: Sequence[str] = ()) -> ChaosReport:
        """:func:`verify` over this run's journals (and snapshots, by default)."""
        report = verify(self.journals(), server, devices or self.snapshots(), history,
                        ignore=ignore)
        report.stats = {"kills": self.stats.kills, "steps": self.stats.steps,
                        "landed": dict(self.stats.landed)}
        return report


if __name__ == "__main__":  # pragma: no cover - the server launcher of ServerProcess
    if sys.argv[1:2] == ["serve"]:
        _serve_main(sys.argv[2:])
    else:
        raise SystemExit("usage: python -m syncline.testing.chaos serve [--plugin SPEC]... -- "
                         "<syncline serve options>")
