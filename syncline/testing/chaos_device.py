"""The device program of the chaos kit: ``python -m syncline.testing.chaos_device``.

:class:`~syncline.testing.chaos.ChaosRunner` runs it as a *zygote*: one process imports the
script and syncline once, then forks each device (and each restart) on request, so that a
restart costs milliseconds rather than an interpreter start, however busy the machine is.
The zygote holds no store and runs no thread when it forks. Unix only (``os.fork``).

Modes:

- ``run``: open the store with the script, start the sync worker, make steps (one byte
  appended to ``<name>.progress`` after each, the runner's progress signal) until killed.
- ``drain``: no writes; sync until the queue is empty (or the script's ``drain_timeout``),
  then write ``<name>.drain.json`` and ``<name>.snapshot.json``.
- ``observe``: a new device with an empty store (``<name>.db`` is removed first) syncs once
  and writes ``<name>.snapshot.json``: the server's state as a client sees it.
"""

from __future__ import annotations

import argparse
import contextlib
import json
import os
import random
import shutil
import signal
import sys
import threading
import time
import traceback
from collections.abc import Sequence
from pathlib import Path

from syncline.testing.chaos import Device, DeviceScript, Snapshot, load_object


def _script(spec: str) -> DeviceScript:
    obj = load_object(spec)
    script = obj() if isinstance(obj, type) else obj
    if not isinstance(script, DeviceScript):
        raise TypeError(f"{spec} is not a syncline.testing.chaos.DeviceScript")
    return script


def _run(script: DeviceScript, device: Device) -> None:
    progress = os.open(device.workdir / f"{device.name}.progress",
                       os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
    store = device.store = script.open(device)
    store.start_sync_worker(interval=script.sync_interval, debounce=script.sync_debounce)
    steps = 0
    while True:
        if script.max_steps is None or steps < script.max_steps:
            script.step(device, device.rng())
            steps += 1
            os.write(progress, b".")  # the runner counts steps by this file's size
        time.sleep(script.pace)


def _drain(script: DeviceScript, device: Device) -> None:
    store = device.store = script.open(device)
    deadline = time.monotonic() + script.drain_timeout
    pushed = 0
    failures: list[str] = []
    drained = False
    while True:
        report = store.sync()
        pushed += report.pushed
        failures = [*report.failures, *report.rejected]
        if store.outbox.pending_count() == 0 and not report.failures:
            drained = True
            break
        if time.monotonic() > deadline:
            break
        time.sleep(0.1)  # a failed push waits out its backoff
    note = "" if drained else f"gave up after {script.drain_timeout} s: {failures[-3:]}"
    snapshot = Snapshot.of(store, drained=drained, note=note)
    store.close()
    (device.workdir / f"{device.name}.drain.json").write_text(json.dumps(
        {"pushed": pushed, "drained": drained, "failures": failures}))
    (device.workdir / f"{device.name}.snapshot.json").write_text(json.dumps(snapshot.to_json()))


def _observe(script: DeviceScript, device: Device) -> None:
    for suffix in ("", "-wal", "-shm"):
        path = device.workdir / f"{device.name}.db{suffix}"
        if path.exists():
            os.remove(path)
    store = device.store = script.open(device)
    deadline = time.monotonic() + script.drain_timeout
    while True:
        report = store.sync()
        if report.ok or time.monotonic() > deadline:
            break
        time.sleep(0.1)
    note = "" if report.ok else f"could not pull: {report.failures[-3:]}"
    snapshot = Snapshot.of(store, drained=report.ok, note=note)
    store.close()
    (device.workdir / f"{device.name}.snapshot.json").write_text(json.dumps(snapshot.to_json()))


def run_device(script: DeviceScript, name: str, workdir: Path, server_url: str, mode: str,
               *, token: str | None = None, seed: str = "0") -> None:
    device = Device(name, workdir, server_url, token=token, seed=seed, journal=mode == "run")
    if mode == "run":
        _run(script, device)
    elif mode == "drain":
        _drain(script, device)
    else:
        _observe(script, device)


def _child(script: DeviceScript, name: str, workdir: Path, server_url: str, mode: str,
           token: str | None, seed: str) -> None:
    """In a forked child: own log as stdout/stderr, no stdin, fresh randomness; never return."""
    code = 0
    try:
        random.seed()
        log = os.open(workdir / f"{name}.log", os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o644)
        null = os.open(os.devnull, os.O_RDONLY)
        os.dup2(null, 0)
        os.dup2(log, 1)
        os.dup2(log, 2)
        os.close(null)
        os.close(log)
        sys.stdout = open(1, "w", buffering=1, closefd=False)  # noqa: SIM115
        sys.stderr = open(2, "w", buffering=1, closefd=False)  # noqa: SIM115
        run_device(script, name, workdir, server_url, mode, token=token, seed=seed)
    except SystemExit as exc:
        code = exc.code if isinstance(exc.code, int) else 1
    except BaseException:
        traceback.print_exc()
        code = 1
    finally:
        with contextlib.suppress(Exception):
            sys.stdout.flush()
            sys.stderr.flush()
        os._exit(code)


def zygote(script_spec: str, workdir: Path, token: str | None, seed: str) -> None:
    """Import the script and everything it needs once, then fork devices on request.

    Commands on stdin, one per line; answers on stdout:
    ``spawn NAME MODE URL`` -> ``pid PID``; ``kill PID`` (SIGKILL, reaped) -> ``dead PID
    STATUS``; ``wait PID`` -> ``dead PID STATUS``. End of input: every child is killed.
    """
    script = _script(script_spec)
    from syncline.core.plugins import plugin_manager

    plugin_manager()  # entry points loaded once, before any fork
    import syncline.plugins.http  # noqa: F401 - the transport's imports, once

    # Open and close a throwaway store once: what opening imports lazily (migration tools,
    # the backend's modules) is then imported here, not in every device after a restart.
    warmup = workdir / ".warmup"
    warmup.mkdir(exist_ok=True)
    probe = Device("warmup", warmup, "http://127.0.0.1:9/", token=token, seed=seed,
                   journal=False)
    store = script.open(probe)
    with contextlib.suppress(Exception):
        store.sync_engine  # noqa: B018 - the transport's lazy imports too
    store.close()
    shutil.rmtree(warmup, ignore_errors=True)
    if threading.active_count() != 1:  # forking with threads could copy a held lock
        print(f"warning: the zygote runs threads {threading.enumerate()}", file=sys.stderr)

    children: set[int] = set()

    def answer(text: str) -> None:
        os.write(1, (text + "\n").encode())

    answer("ready")
    try:
        for raw in sys.stdin.buffer:
            words = raw.decode().split()
            if not words:
                continue
            if words[0] == "spawn":
                name, mode, url = words[1:4]
                pid = os.fork()
                if pid == 0:
                    _child(script, name, workdir, url, mode, token, seed)
                children.add(pid)
                answer(f"pid {pid}")
            elif words[0] in ("kill", "wait"):
                pid = int(words[1])
                if words[0] == "kill":
                    with contextlib.suppress(ProcessLookupError):
                        os.kill(pid, signal.SIGKILL)
                try:
                    _, status = os.waitpid(pid, 0)
                except ChildProcessError:
                    status = -1
                children.discard(pid)
                answer(f"dead {pid} {status}")
    finally:
        for pid in children:
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, signal.SIGKILL)
            with contextlib.suppress(ChildProcessError):
                os.waitpid(pid, 0)


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m syncline.testing.chaos_device")
    parser.add_argument("--script", required=True, help="module:NAME or file.py:NAME")
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--token", default=None)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--zygote", action="store_true",
                        help="fork devices on request (what ChaosRunner runs)")
    parser.add_argument("--name", help="run one device in this process")
    parser.add_argument("--server")
    parser.add_argument("--mode", choices=["run", "drain", "observe"], default="run")
    args = parser.parse_args(argv)
    if args.zygote:
        zygote(args.script, args.dir, args.token, args.seed)
    elif args.name and args.server:
        run_device(_script(args.script), args.name, args.dir, args.server, args.mode,
                   token=args.token, seed=args.seed)
    else:
        parser.error("give --zygote, or --name and --server")


if __name__ == "__main__":
    main()
