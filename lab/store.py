"""SQLite on disk, one database per component, safe from many threads.

One connection per database, guarded by a lock: SQLite serialises writers anyway, and a single connection keeps
the write-ahead log small. ``transaction()`` commits or rolls back as a whole, so a crash mid-way loses nothing
that was committed and half-writes nothing.

A database (and its -wal and -shm files, which SQLite creates with the database's mode) is readable by its owner
only, in a directory only its owner can enter: the databases hold password and token hashes, push secrets and the
devices' sealed data with their keys.
"""
from __future__ import annotations

import os
import sqlite3
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path


class Store:
    def __init__(self, path: Path, schema: str):
        self.path = Path(path)
        owner_only_dir(self.path.parent)
        os.close(os.open(self.path, os.O_RDWR | os.O_CREAT, 0o600))
        for existing in (self.path, *(self.path.with_name(self.path.name + s) for s in ("-wal", "-shm"))):
            if existing.exists():  # a database written before it was owner-only
                os.chmod(existing, 0o600)
        self._lock = threading.RLock()
        self._conn = sqlite3.connect(self.path, check_same_thread=False, isolation_level=None, timeout=10)
        self._conn.row_factory = sqlite3.Row
        self._conn.execute("PRAGMA journal_mode=WAL")
        self._conn.execute("PRAGMA synchronous=NORMAL")
        self._conn.execute("PRAGMA foreign_keys=ON")
        with self.transaction() as db:
            for statement in filter(str.strip, schema.split(";")):
                db.execute(statement)

    @contextmanager
    def transaction(self) -> Iterator[sqlite3.Connection]:
        """One atomic write. Opened inside another transaction of this thread, it joins it: both commit (or roll
        back) as one, so a rule made of smaller ones is atomic as a whole."""
        with self._lock:
            if self._conn.in_transaction:  # the lock is ours, so the open transaction is too
                yield self._conn
                return
            self._conn.execute("BEGIN IMMEDIATE")
            try:
                yield self._conn
            except BaseException:
                self._conn.execute("ROLLBACK")
                raise
            self._conn.execute("COMMIT")

    def query(self, sql: str, params=()) -> list[sqlite3.Row]:
        with self._lock:
            return self._conn.execute(sql, params).fetchall()

    def one(self, sql: str, params=()) -> sqlite3.Row | None:
        with self._lock:
            return self._conn.execute(sql, params).fetchone()

    def value(self, sql: str, params=()):
        """The first column of a query that yields exactly one row (an aggregate, a row that always exists)."""
        row = self.one(sql, params)
        assert row is not None, f"no row for {sql}"
        return row[0]

    def close(self) -> None:
        with self._lock:
            self._conn.close()


def owner_only_dir(path: Path) -> None:
    """Create ``path`` (and its parents) if needed; ``path`` itself ends up 0700 whatever the umask."""
    path = Path(path)
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    if path.stat().st_mode & 0o077:
        os.chmod(path, 0o700)
