"""SQLite transactions for the files mgrhooks keeps in ``var/`` (the built-in core's
users, the event spool). I/O.

Every connection uses WAL (readers never wait for a writer) and waits up to a minute
for a lock, so concurrent calls queue instead of failing with "database is locked".
"""

from __future__ import annotations

from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # loaded by the first transaction, not at start-up
    import sqlite3

#: seconds a connection waits for another's lock
LOCK_TIMEOUT = 60


@contextmanager
def transaction(path: Path, schema: str, write: bool = True) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` (created with ``schema`` if new) inside a transaction:
    committed when the block ends, rolled back when it raises.

    :param write: take the write lock at once (``BEGIN IMMEDIATE``), so that a
        read-check-write cannot race another process; ``False`` for reads
    """
    import sqlite3

    path.parent.mkdir(parents=True, exist_ok=True)
    conn = sqlite3.connect(path, timeout=LOCK_TIMEOUT, isolation_level=None)
    conn.row_factory = sqlite3.Row  # rows by column name, and still sequences
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        conn.executescript(schema)
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        conn.close()
