"""SQLite transactions for the files mgrhooks keeps in ``var/`` (the built-in core's
users, the event spool). I/O.

Every connection uses WAL (readers never wait for a writer) and waits up to a minute
for a lock, so concurrent calls queue instead of failing with "database is locked".
"""

from __future__ import annotations

import os
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path
from typing import TYPE_CHECKING

from .errors import RootError

if TYPE_CHECKING:  # loaded by the first transaction, not at start-up
    import sqlite3

#: seconds a connection waits for another's lock
LOCK_TIMEOUT = 60

#: the mode a database file is made with: they hold password hashes, session digests and
#: event records (our choice, as ``var/<mgr>.log``; SQLite would use the umask, and its
#: ``-wal`` and ``-shm`` files take the database file's mode)
MODE = 0o600


#: SQLite's primary result codes that come from the file or the machine, not from our SQL
_ENVIRONMENTAL = (
    "SQLITE_PERM",
    "SQLITE_BUSY",
    "SQLITE_LOCKED",
    "SQLITE_NOMEM",
    "SQLITE_READONLY",
    "SQLITE_IOERR",
    "SQLITE_CORRUPT",
    "SQLITE_FULL",
    "SQLITE_CANTOPEN",
    "SQLITE_PROTOCOL",
    "SQLITE_NOLFS",
    "SQLITE_NOTADB",
)


def exists(path: Path) -> bool:
    """Whether the database file ``path`` exists (``False``: nothing was ever written).
    :raises RootError: it cannot be looked at (no permission on ``var/``, ``var`` a file)"""
    try:
        path.stat()
    except FileNotFoundError:
        return False
    except OSError as exc:
        raise _unusable(path, str(exc.strerror)) from None
    return True


def _unusable(path: Path, reason: str) -> RootError:
    return RootError(f"cannot use the database {path}: {reason}")


def hold(path: Path) -> sqlite3.Connection:
    """A connection to the existing database ``path``, opened now for a :func:`transaction`
    later (its ``held``), to be closed by the caller. While it is open, closing another
    connection to the file does not checkpoint the WAL (SQLite's last connection does): the
    checkpoint, and its syncs, happen once, when this one closes.

    :raises sqlite3.Error: it cannot be opened (the caller goes without)
    """
    import sqlite3

    conn = sqlite3.connect(path, timeout=LOCK_TIMEOUT, isolation_level=None)
    try:
        conn.row_factory = sqlite3.Row
        conn.execute("SELECT count(*) FROM sqlite_master").fetchone()  # maps the WAL index
    except BaseException:
        conn.close()
        raise
    return conn


@contextmanager
def transaction(
    path: Path, schema: str, write: bool = True, durable: bool = True, held: sqlite3.Connection | None = None
) -> Iterator[sqlite3.Connection]:
    """A connection to ``path`` (created with ``schema`` if new) inside a transaction:
    committed when the block ends, rolled back when it raises. A missing file is made
    with :data:`MODE` first.

    :param write: take the write lock at once (``BEGIN IMMEDIATE``), so that a
        read-check-write cannot race another process; ``False`` for reads (the connection
        is made read-only: ``PRAGMA query_only``)
    :raises RootError: the database cannot be used: its directory cannot be made, the file
        cannot be opened, is not a database or is corrupt, the disk is full, read-only or
        failing, or the lock was not had within :data:`LOCK_TIMEOUT` seconds. The message
        names the file and SQLite's reason; nothing of the block is committed. (Our
        choice: a root that cannot be used, exit status 3; an error in our own SQL,
        ``SQLITE_ERROR``, is left to surface as the bug it is.)
    :param durable: the commit is on disk when the block ends (SQLite's ``synchronous =
        FULL``, the default); ``False``: it is not synced (``NORMAL``: in WAL mode a commit
        still never half applies, but a machine crash may undo it, until a later durable
        commit to the file syncs it too). Only for writes whose loss the caller recovers
        from (an outbox's completion: its intent is durable).
    :param held: the connection to use (:func:`hold`), left open; default: a new one,
        closed when the block ends
    """
    import sqlite3

    try:
        path.parent.mkdir(parents=True, exist_ok=True)
    except OSError as exc:
        raise _unusable(path, f"cannot make {path.parent}: {exc.strerror}") from None
    if not exists(path):
        try:
            os.close(os.open(path, os.O_WRONLY | os.O_CREAT | os.O_NOFOLLOW | os.O_CLOEXEC, MODE))
        except OSError as exc:
            raise _unusable(path, f"cannot make it: {exc.strerror}") from None
    try:
        yield from _transaction(path, schema, write, durable, held)
    except sqlite3.Error as exc:
        codes = {getattr(sqlite3, name) for name in _ENVIRONMENTAL}
        if getattr(exc, "sqlite_errorcode", 0) & 0xFF not in codes:
            raise
        raise _unusable(path, str(exc)) from exc


def _transaction(
    path: Path, schema: str, write: bool, durable: bool = True, held: sqlite3.Connection | None = None
) -> Iterator[sqlite3.Connection]:
    import sqlite3

    conn = held if held is not None else sqlite3.connect(path, timeout=LOCK_TIMEOUT, isolation_level=None)
    conn.row_factory = sqlite3.Row  # rows by column name, and still sequences
    try:
        conn.execute("PRAGMA journal_mode=WAL")
        if not durable:
            conn.execute("PRAGMA synchronous=NORMAL")
        if schema:
            conn.executescript(schema)
        if not write:  # a read that tried to write would fail, not take the write lock late
            conn.execute("PRAGMA query_only = ON")
        conn.execute("BEGIN IMMEDIATE" if write else "BEGIN")
        try:
            yield conn
        except BaseException:
            conn.execute("ROLLBACK")
            raise
        conn.execute("COMMIT")
    finally:
        if held is None:
            conn.close()
