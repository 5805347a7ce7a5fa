"""A client process for the live kill tests: ``python -m syncline.testing.live_client``.

- ``queue URL STORE N``: open ``STORE`` (a file or database that outlives the process) with a
  live worker, wait until its stream is open, commit N items that its worker will not push
  (its debounce is an hour), print ``ready``, and wait to be killed.
- ``resume URL STORE ID...``: open ``STORE`` again with a live worker, wait until its queue is
  empty and it holds every ``ID``, print the ids and versions it holds as JSON, and close.
"""

from __future__ import annotations

import json
import sys
import time

import syncline
from syncline.testing.live_suite import DEADLINE, NEVER, wait_for
from syncline.testing.transport_suite import ENTITIES, Item


def _open(url: str, store: str) -> syncline.Store:
    return syncline.open(store, entities=ENTITIES, transport=url,
                         transport_options={"token": "alice-2"})


def queue(url: str, store_url: str, n: int) -> None:
    store = _open(url, store_url)
    worker = store.start_sync_worker(interval=NEVER, debounce=NEVER, fallback=NEVER)
    wait_for(lambda: worker.streaming and worker.rounds > 0, "the stream and a first round")
    wait_for(lambda: store.repository(Item).get("seen") is not None, "the pulled item")
    store.repository(Item).insert_many([Item(f"q{i}", "queued") for i in range(n)])
    assert store.outbox.pending_count() == n
    print("ready", flush=True)
    time.sleep(3600)


def resume(url: str, store_url: str, ids: list[str]) -> None:
    store = _open(url, store_url)
    worker = store.start_sync_worker(interval=NEVER, fallback=NEVER)
    repo = store.repository(Item)
    wait_for(lambda: worker.streaming and store.outbox.pending_count() == 0 and
             all(repo.get(i) is not None for i in ids), "the queue pushed and every id",
             DEADLINE * 2)
    print(json.dumps(sorted(i.id for i in repo.all())), flush=True)
    store.close()


if __name__ == "__main__":
    mode, url, store_url, *rest = sys.argv[1:]
    if mode == "queue":
        queue(url, store_url, int(rest[0]))
    else:
        resume(url, store_url, rest)
