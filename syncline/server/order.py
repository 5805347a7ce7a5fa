"""The order of the server's change log, and what a pull may read of it.

Every change-log entry has a **position** ``(txid, seq)``: ``seq`` is a number unique in the
epoch (the record's version), ``txid`` the writing transaction's id where the database hands
one out, else 0. Pulls read entries in position order and resume after the last position
returned. Two ways keep that free of skips:

* :class:`CounterOrder` (SQLite, memory, any backend): one counter row, incremented first in
  every writing transaction and locked until it commits, so writers commit in ``seq`` order
  (``txid`` is 0). A store with a single writer loses nothing by it.
* :class:`PostgresOrder`: no shared row. A writer locks only the records and mutation ids it
  touches (transaction-scoped advisory locks), then takes ``seq`` numbers from a PostgreSQL
  sequence and its ``txid`` from ``pg_current_xact_id()``. Writers of different records commit
  concurrently and in any order; a pull reads only entries of transactions older than every
  transaction still running (``txid < pg_snapshot_xmin(pg_current_snapshot())``, the
  **watermark**). Every transaction below the watermark has ended, and every transaction that
  has not yet ended gets or has a txid at or above it, so an entry a pull has not seen always
  lands at a position beyond the reader's cursor. docs/protocol.md gives the argument.
"""

from __future__ import annotations

import hashlib
from collections.abc import Iterable, Sequence
from contextlib import AbstractContextManager, nullcontext
from typing import TYPE_CHECKING, Any

from syncline.core.model.schema import TableSpec, spec_of
from syncline.server.tables import ChangeEntry, ServerMeta

if TYPE_CHECKING:
    from syncline.core.store import Store

#: the PostgreSQL sequence of a server store's change numbers (in the store's schema)
SEQUENCE = "_syncline_change_seq"
#: the index pulls read the log through on PostgreSQL
POSITION_INDEX = "ix__syncline_changes_owner_txid_seq"

Position = tuple[int, int]
#: what a claim gives: the transaction's txid, its numbers, the rows of each read
Claim = tuple[int, list[int], list[list[tuple[Any, ...]]]]


class LogOrder:
    """How a server store numbers its changes and bounds what pulls may read."""

    #: entries carry a transaction id and pulls stop at a watermark
    watermarked = False

    def __init__(self, store: Store) -> None:
        self.store = store

    def lock(self, keys: Iterable[str]) -> None:
        """Serialize writers of these record keys and mutation keys (from here to commit)."""

    def take(self, n: int) -> tuple[int, list[int]]:
        """This transaction's txid and ``n`` new sequence numbers, in increasing order."""
        raise NotImplementedError

    def claim(self, keys: Iterable[str], n: int,
              reads: Sequence[tuple[TableSpec, Sequence[Any]]] = ()) -> Claim:
        """:meth:`lock` then :meth:`take`: the numbers are taken once the locks are held, so
        a record's versions grow in the order its writers commit. Then the rows of each
        ``(table, keys)`` of ``reads`` (as ``get_many_values``), read after the locks."""
        self.lock(keys)
        txid, seqs = self.take(n)
        backend = self.store.backend
        return txid, seqs, [backend.get_many_values(t, k) for t, k in reads]

    def together(self) -> AbstractContextManager[None]:
        """The writes of the block sent together (where the store can: one round trip on
        PostgreSQL); their errors may come out at the end of the block."""
        return nullcontext()

    def held_back(self, owners: list[str], below: int) -> bool:
        """Whether committed entries of ``owners`` wait at or above the watermark ``below``;
        never without a watermark."""
        return False

    def committed(self) -> Position:
        """A position no entry and no cursor this server issued in this epoch is beyond (in
        txid and in seq): a cursor beyond it was not issued here."""
        raise NotImplementedError

    def watermark(self) -> int | None:
        """Entries with a txid at or above this are not read yet (None: no bound)."""
        return None

    def snapshot_bound(self) -> Position:
        """The position every entry committed so far is below: tombstones below it are left
        out of a pull from the start (the records they deleted are not in the snapshot)."""
        raise NotImplementedError


class CounterOrder(LogOrder):
    """One counter row, held by each writer from its first statement to its commit."""

    def take(self, n: int) -> tuple[int, list[int]]:
        meta = self.store.repository(ServerMeta)
        last = self.store.writer.increment(meta.table, "seq", "value", by=n)
        return 0, list(range(last - n + 1, last + 1))

    def committed(self) -> Position:
        row = self.store.repository(ServerMeta).get("seq")
        return (0, 0 if row is None else row.value)

    def snapshot_bound(self) -> Position:
        return (0, self.committed()[1] + 1)


def lock_key(schema: str | None, key: str) -> int:
    """A 64-bit advisory lock key for a record or mutation key of a server store."""
    digest = hashlib.blake2b(f"syncline-server:{schema or ''}:{key}".encode(
        "utf-8", "surrogatepass"), digest_size=8).digest()
    return int.from_bytes(digest, "big", signed=True)


class PostgresOrder(LogOrder):
    """Per-record advisory locks, a sequence, and the transaction-id watermark."""

    watermarked = True

    def __init__(self, store: Store) -> None:
        super().__init__(store)
        self.backend: Any = store.backend

    def _conn(self) -> AbstractContextManager[Any]:
        # The open transaction's connection (or a pooled one), by the PostgreSQL backend's
        # stated way for statements its generic API lacks.
        conn: AbstractContextManager[Any] = self.backend.connection()
        return conn

    def lock(self, keys: Iterable[str]) -> None:
        ids = sorted({lock_key(self.backend.schema, k) for k in keys})
        if not ids:
            return
        with self._conn() as conn:
            # One order for every writer (sorted ids, taken in array order): no deadlocks.
            conn.execute("SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) "
                         "WITH ORDINALITY AS t(k, i)", (ids,), prepare=True)

    def take(self, n: int) -> tuple[int, list[int]]:
        with self._conn() as conn:
            row = conn.execute(
                "SELECT pg_current_xact_id()::text::bigint, "
                f"ARRAY(SELECT nextval('{SEQUENCE}') FROM generate_series(1, %s))", (n,),
                prepare=True).fetchone()
        assert row is not None
        return int(row[0]), sorted(int(s) for s in row[1])

    def claim(self, keys: Iterable[str], n: int,
              reads: Sequence[tuple[TableSpec, Sequence[Any]]] = ()) -> Claim:
        # One round trip. The locks are an uncorrelated subquery in the numbers' WHERE: a
        # one-time filter, run to completion before the first number is drawn; the txid
        # comes after them in the target list (as with lock() then take(): a writer waiting
        # for a lock holds no txid, so it does not hold the watermark back). The reads are
        # pipelined behind it: separate statements, each with a snapshot taken after the
        # claim returned, so they see what the locks' previous holders committed.
        ids = sorted({lock_key(self.backend.schema, k) for k in keys})
        row, rows = self.backend.get_many_after((
            f"SELECT ARRAY(SELECT nextval('{SEQUENCE}') FROM generate_series(1, %s) "
            "WHERE (SELECT count(pg_advisory_xact_lock(k)) FROM unnest(%s::bigint[]) "
            "WITH ORDINALITY AS t(k, i)) >= 0), pg_current_xact_id()::text::bigint",
            (n, ids)), reads)
        assert row is not None
        return int(row[1]), sorted(int(s) for s in row[0]), rows

    def together(self) -> AbstractContextManager[None]:
        pipeline: AbstractContextManager[None] = self.backend.pipeline()
        return pipeline

    def committed(self) -> Position:
        with self._conn() as conn:
            row = conn.execute(
                f"SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint, last_value "
                f"FROM {SEQUENCE}").fetchone()
        assert row is not None
        return int(row[0]), int(row[1])

    def watermark(self) -> int:
        with self._conn() as conn:
            row = conn.execute("SELECT pg_snapshot_xmin(pg_current_snapshot())::text::bigint",
                               prepare=True).fetchone()
        assert row is not None
        return int(row[0])

    def snapshot_bound(self) -> Position:
        return (self.watermark(), 0)

    def held_back(self, owners: list[str], below: int) -> bool:
        """Whether committed entries of ``owners`` wait at or above the watermark ``below``
        (a pull stopping there has not returned every change committed before it)."""
        with self._conn() as conn:
            row = conn.execute(
                "SELECT EXISTS (SELECT 1 FROM _syncline_changes "
                "WHERE owner = ANY(%s) AND txid >= %s)", (owners, below),
                prepare=True).fetchone()
        assert row is not None
        return bool(row[0])

    def read(self, owners: list[str], entities: list[str] | None, after: Position,
             below: int, skip_tombstones_below: Position | None, limit: int) -> list[Any]:
        """Entries of ``owners`` after ``after`` of transactions below ``below``, in position
        order: one ordered index range per owner, merged (a plain ``owner IN`` would sort)."""
        table = "_syncline_changes"
        columns = ", ".join(f'"{c}"' for c in self._columns())
        parts, params = [], []
        for owner in owners:
            where = ["owner = %s", "(txid, seq) > (%s, %s)", "txid < %s"]
            args: list[Any] = [owner, after[0], after[1], below]
            if entities is not None:
                where.append("entity = ANY(%s)")
                args.append(entities)
            if skip_tombstones_below is not None:
                where.append("NOT (op = 'delete' AND (txid, seq) < (%s, %s))")
                args += list(skip_tombstones_below)
            parts.append(f"(SELECT {columns} FROM {table} WHERE {' AND '.join(where)} "
                         f"ORDER BY txid, seq LIMIT %s)")
            params += [*args, limit]
        sql = " UNION ALL ".join(parts) + " ORDER BY txid, seq LIMIT %s"
        with self._conn() as conn:
            return list(conn.execute(sql, (*params, limit)).fetchall())

    def _columns(self) -> list[str]:
        return list(spec_of(ChangeEntry).table.column_names)


def log_order(store: Store) -> LogOrder:
    """The log order for ``store``: the watermark on PostgreSQL, the counter elsewhere."""
    if store.backend.migration_ops().dialect == "postgresql":
        return PostgresOrder(store)
    return CounterOrder(store)
