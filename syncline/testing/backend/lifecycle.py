"""The whole store: clearing, reopening, other processes, versions, unreachable stores."""

from __future__ import annotations

import decimal
import os
import subprocess
import sys
from pathlib import Path
from urllib.parse import urlsplit

import pytest

import syncline
from syncline.core.store import Store
from syncline.testing.backend.base import StoreSuite, make_everything, make_post
from syncline.testing.entities import ENTITIES, Counter, Everything, Post
from syncline.testing.processes import free_port
from syncline.testing.requirements import requires
from syncline.testing.stores import StoreFactory


def in_another_process(url: str, action: str) -> None:
    """Run :func:`other_process` in a new Python process (the backend's plugin must be
    installed: the new process finds it by its entry point, as any application would)."""
    code = ("import sys\nfrom syncline.testing.backend.lifecycle import other_process\n"
            "sys.exit(other_process(sys.argv[1], sys.argv[2]))")
    out = subprocess.run([sys.executable, "-c", code, url, action], capture_output=True,
                         text=True, timeout=600, env=dict(os.environ), check=False)
    assert out.returncode == 0, (
        f"the other process ({action}) failed with exit code {out.returncode}:\n"
        f"{out.stdout[-3000:]}{out.stderr[-3000:]}")


def other_process(url: str, action: str) -> int:
    """The other process's side: read p001 and Everything 1, then write p002."""
    assert action == "check p001, write p002", action
    with syncline.open(url, entities=ENTITIES) as store:
        got = store.repository(Post).get("p001")
        if got != make_post(1):
            print(f"this process read p001 as {got!r}; expected {make_post(1)!r}")
            return 3
        every = store.repository(Everything).get(1)
        if every != make_everything(1):
            print(f"this process read Everything 1 as {every!r}")
            return 4
        store.repository(Post).upsert(make_post(2))
    return 0


class LifecycleSuite(StoreSuite):
    """Clearing, closing, reopening and the schema version."""

    def test_clear_all_empties_every_table(self, store: Store, filled: list[Post]) -> None:
        store.repository(Counter).insert(Counter("c"))
        store.clear_all()
        assert store.repository(Post).count() == 0
        assert store.repository(Counter).count() == 0

    @requires("persistent")
    def test_data_survives_reopening(self, open_store: StoreFactory) -> None:
        first = open_store()
        first.repository(Post).upsert(make_post(1))
        first.close()
        second = open_store()
        assert second.repository(Post).get("p001") == make_post(1)

    @requires("persistent")
    def test_a_newer_store_refuses_to_open(self, open_store: StoreFactory) -> None:
        first = open_store(schema_version=3)
        first.close()
        with pytest.raises(syncline.MigrationError, match="newer"):
            open_store(schema_version=2)

    def test_closed_store_refuses_work(self, store: Store,
                                       posts: syncline.Repository[Post]) -> None:
        store.close()
        with pytest.raises(syncline.SynclineError):
            posts.insert(make_post(1))

    def test_entity_not_in_store_is_an_error(self, open_store: StoreFactory) -> None:
        store = open_store(entities=[Counter])
        with pytest.raises(syncline.EntityDefinitionError, match="not part of this store"):
            store.repository(Post)


class ProcessSuite(StoreSuite):
    """What one process wrote, another reads."""

    @requires("persistent")
    def test_data_survives_another_process(self, store_url: str,
                                           open_store: StoreFactory) -> None:
        """``persistent`` means on disk (or on a server), not in this process: what one
        process wrote and closed, a new process reads back, and the other way round."""
        first = open_store()
        first.repository(Post).upsert(make_post(1))
        first.repository(Everything).upsert(make_everything(1))
        first.close()
        in_another_process(store_url, "check p001, write p002")
        second = open_store()
        assert second.repository(Post).get("p002") == make_post(2)
        assert second.repository(Post).get("p001") == make_post(1)

    @requires("multi_process")
    def test_another_process_works_on_the_open_store(self, store_url: str,
                                                     store: Store) -> None:
        """``multi_process``: another process opens the store while this one has it open,
        reads what this one committed, and this one reads what it wrote."""
        store.repository(Post).upsert(make_post(1))
        store.repository(Everything).upsert(make_everything(1))
        in_another_process(store_url, "check p001, write p002")
        assert store.repository(Post).get("p002") == make_post(2)


class ErrorClassSuite(StoreSuite):
    """Errors are classified: unreachable stores, duplicates, oversize values."""

    @pytest.fixture
    def unreachable_url(self, store_url: str, tmp_path: Path) -> str:
        """A URL of this backend that cannot be reached. Derived from ``store_url``: a file
        path goes under a "folder" that is a file (no permission bits involved, so root gets
        the same answer); a host goes to a closed port on 127.0.0.1. Override it when that
        does not fit your backend."""
        scheme, _, rest = store_url.partition("://")
        base, sep, query = rest.partition("?")
        tail = sep + query
        if base.startswith("/"):  # scheme:///path
            blocker = tmp_path / "a-file-not-a-folder"
            blocker.write_text("not a folder")
            return f"{scheme}:///{blocker}/missing/{Path(base[1:]).name or 'store'}{tail}"
        parts = urlsplit(store_url.partition("?")[0])
        if parts.hostname:
            port = free_port()
            user = parts.netloc.rpartition("@")[0]
            netloc = (user + "@" if user else "") + f"127.0.0.1:{port}"
            return f"{scheme}://{netloc}{parts.path}{tail}"
        pytest.skip(f"cannot derive an unreachable URL from {store_url!r}; override the "
                    f"unreachable_url fixture")

    @requires("persistent")
    def test_an_unreachable_store_is_backend_unavailable(self, unreachable_url: str,
                                                          tmp_path: Path) -> None:
        before = sorted(p.name for p in tmp_path.iterdir())
        with pytest.raises(syncline.BackendUnavailableError):
            syncline.open(unreachable_url, entities=ENTITIES)
        assert sorted(p.name for p in tmp_path.iterdir()) == before  # nothing created

    def test_errors_are_classified(self, store: Store,
                                   posts: syncline.Repository[Post]) -> None:
        """Duplicate keys are IntegrityError, values beyond the limits SerializationError,
        and nothing is written either way."""
        posts.insert(make_post(1, local_id="same"))
        with pytest.raises(syncline.IntegrityError):
            posts.insert(make_post(1))
        with pytest.raises(syncline.IntegrityError):
            posts.insert_many([make_post(2), make_post(1)])
        with pytest.raises(syncline.IntegrityError):
            posts.upsert(make_post(3, local_id="same"))
        for oversize in (make_post(4, id="p" * 10_000), make_post(4, local_id="l" * 10_000),
                         make_post(4, likes_count=2**64), make_post(4, content="\x00")):
            with pytest.raises(syncline.SerializationError):
                posts.upsert(oversize)
        with pytest.raises(syncline.SerializationError):
            store.repository(Everything).upsert(make_everything(
                1, amount=decimal.Decimal("1E+200000")))
        assert [p.id for p in posts.all()] == ["p001"]
        assert store.repository(Everything).count() == 0
