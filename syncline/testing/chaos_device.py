"""The device program of the chaos kit: ``python -m syncline.testing.chaos_device``.

Modes:

- ``run``: open the store with the script, start the sync worker, make steps (one byte on
  stdout after each, the runner's progress signal) until killed.
- ``drain``: no writes; sync until the queue is empty (or the script's ``drain_timeout``),
  then write ``<name>.drain.json`` and ``<name>.snapshot.json``.
- ``observe``: a new device with an empty store (``<name>.db`` is removed first) syncs once
  and writes ``<name>.snapshot.json``: the server's state as a client sees it.
"""

from __future__ import annotations

import argparse
import json
import os
import sys
import time
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
    store = device.store = script.open(device)
    store.start_sync_worker(interval=script.sync_interval, debounce=script.sync_debounce)
    out = sys.stdout.buffer
    steps = 0
    while True:
        if script.max_steps is None or steps < script.max_steps:
            script.step(device, device.rng())
            steps += 1
            out.write(b".")
            out.flush()
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


def main(argv: Sequence[str] | None = None) -> None:
    parser = argparse.ArgumentParser(prog="python -m syncline.testing.chaos_device")
    parser.add_argument("--script", required=True, help="module:NAME or file.py:NAME")
    parser.add_argument("--name", required=True)
    parser.add_argument("--dir", required=True, type=Path)
    parser.add_argument("--server", required=True)
    parser.add_argument("--token", default=None)
    parser.add_argument("--seed", default="0")
    parser.add_argument("--mode", choices=["run", "drain", "observe"], default="run")
    args = parser.parse_args(argv)
    script = _script(args.script)
    device = Device(args.name, args.dir, args.server, token=args.token, seed=args.seed,
                    journal=args.mode == "run")
    if args.mode == "run":
        _run(script, device)
    elif args.mode == "drain":
        _drain(script, device)
    else:
        _observe(script, device)


if __name__ == "__main__":
    main()
