"""The PostgreSQL backend's I/O on an event loop: psycopg's async connections, awaited from
the backend's synchronous code through SQLAlchemy's greenlets.

``syncline.aio`` runs each store call in ``sqlalchemy.util.greenlet_spawn`` on the loop's
thread. There ``in_loop_greenlet()`` is true, the backend takes its connections from an async
engine (``postgresql+psycopg_async``) and wraps each psycopg ``AsyncConnection`` in a
:class:`LoopConnection`: the methods of psycopg's ``Connection`` that the backend uses, each
one awaiting its coroutine with ``await_only`` (the greenlet hands it to the loop, which
serves other tasks meanwhile). The backend's statements, transactions, savepoints and
retries stay one copy; only where the bytes wait differs.
"""

from __future__ import annotations

import asyncio
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from typing import Any, TypeVar

from syncline.core.spi.helpers import in_loop_greenlet

T = TypeVar("T")


def wait(awaitable: Any) -> Any:
    """Await ``awaitable`` from synchronous code running in a greenlet on the loop."""
    from sqlalchemy.util import await_only

    return await_only(awaitable)


def blocking(fn: Callable[[], T]) -> T:
    """Run ``fn()``, in a thread of the loop's default executor when on the loop (blocking
    work the backend has no async form of: the LISTEN connection, closing the other pool)."""
    if in_loop_greenlet():
        result: T = wait(asyncio.to_thread(fn))
        return result
    return fn()


#: list parameters longer than this are dumped in a thread (see _lightened)
_LONG = 1000


def _lightened(conn: Any, params: Any) -> Any:
    """``params`` with its long lists (``column = ANY(%s)`` of thousands of keys) turned
    into PostgreSQL array literals in a thread: psycopg dumps a list in Python, one element
    at a time, which would hold the loop. The SQL casts or compares them, so PostgreSQL reads
    the literal as the array it was."""
    if not isinstance(params, list | tuple) or not any(
            isinstance(v, list) and len(v) > _LONG for v in params):
        return params

    def dump() -> list[Any]:
        from psycopg.adapt import PyFormat, Transformer

        tx = Transformer.from_context(conn)
        return [bytes(tx.get_dumper(v, PyFormat.TEXT).dump(v) or b"").decode()
                if isinstance(v, list) and len(v) > _LONG else v for v in params]

    return blocking(dump)


class LoopCopy:
    """psycopg's ``Copy`` (``write_row``) over an ``AsyncCopy``."""

    def __init__(self, copy: Any) -> None:
        self._copy = copy

    def write_row(self, row: Sequence[Any]) -> None:
        wait(self._copy.write_row(row))


class LoopCursor:
    """psycopg's ``Cursor`` calls the backend makes, over an ``AsyncCursor``."""

    def __init__(self, cursor: Any) -> None:
        self._cursor = cursor

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> LoopCursor:
        params = _lightened(self._cursor.connection, params)
        wait(self._cursor.execute(query, params, **kwargs))
        return self

    def executemany(self, query: Any, params_seq: Any, **kwargs: Any) -> None:
        wait(self._cursor.executemany(query, params_seq, **kwargs))

    def fetchone(self) -> Any:
        return wait(self._cursor.fetchone())

    def fetchall(self) -> list[Any]:
        rows: list[Any] = wait(self._cursor.fetchall())
        return rows

    def nextset(self) -> bool | None:
        result: bool | None = self._cursor.nextset()
        return result

    @property
    def rowcount(self) -> int:
        return int(self._cursor.rowcount)

    @contextmanager
    def copy(self, statement: Any) -> Iterator[LoopCopy]:
        manager = self._cursor.copy(statement)
        copy = wait(manager.__aenter__())
        try:
            yield LoopCopy(copy)
        except BaseException as exc:
            if not wait(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            wait(manager.__aexit__(None, None, None))

    def close(self) -> None:
        wait(self._cursor.close())

    def __enter__(self) -> LoopCursor:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


class LoopConnection:
    """psycopg's ``Connection`` calls the backend makes, over an ``AsyncConnection``."""

    def __init__(self, conn: Any) -> None:
        self.async_connection = conn

    def execute(self, query: Any, params: Any = None, **kwargs: Any) -> LoopCursor:
        params = _lightened(self.async_connection, params)
        return LoopCursor(wait(self.async_connection.execute(query, params, **kwargs)))

    def cursor(self) -> LoopCursor:
        return LoopCursor(self.async_connection.cursor())

    @contextmanager
    def pipeline(self) -> Iterator[None]:
        """psycopg's pipeline mode (``AsyncConnection.pipeline``) for the block."""
        manager = self.async_connection.pipeline()
        wait(manager.__aenter__())
        try:
            yield
        except BaseException as exc:
            if not wait(manager.__aexit__(type(exc), exc, exc.__traceback__)):
                raise
        else:
            wait(manager.__aexit__(None, None, None))

    @property
    def info(self) -> Any:
        return self.async_connection.info

    @property
    def closed(self) -> bool:
        return bool(self.async_connection.closed)

    @property
    def broken(self) -> bool:
        return bool(self.async_connection.broken)


def sync_view(conn: Any) -> Any:
    """The driver connection as the backend uses it: psycopg's ``Connection`` as it is, an
    ``AsyncConnection`` wrapped in a :class:`LoopConnection`."""
    import psycopg

    return LoopConnection(conn) if isinstance(conn, psycopg.AsyncConnection) else conn


def raw_cursor(conn: Any) -> Any:
    """A psycopg ``RawCursor`` (PostgreSQL's ``$1`` placeholders, sent as they are) on the
    connection :func:`sync_view` gave."""
    import psycopg

    if isinstance(conn, LoopConnection):
        return LoopCursor(psycopg.AsyncRawCursor(conn.async_connection))
    return psycopg.RawCursor(conn)
