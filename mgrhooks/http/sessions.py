"""The HTTP API's session store: ``var/<mgr>.sessions.db``, SQLite. I/O.

It holds (our choice, one file so that a restart of ``serve`` finds everything again):

* ``sessions``: the sessions ``func=auth`` opened (kind ``session``: user, client address,
  last use) and the one-time keys ``session.newkey`` made (kind ``key``: user, creation
  time). A key is stored only as its SHA-256 digest: the file never holds one that works
  (a session key is 128 random bits, so a plain digest is enough);
* ``super_user``: the password hash of ``root``, the super user, set by ``mgrhooks passwd
  root`` (none: ``root`` cannot log in over HTTP);
* ``failures``: failed logins per client address and per user name
  (:mod:`mgrhooks.http.throttle`).

The file is created with mode 600 (its journal files get the same mode from SQLite);
every access is one transaction of :func:`mgrhooks.db.transaction`.
"""

from __future__ import annotations

import hashlib
import secrets
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from ..db import transaction
from ..root import Root
from .throttle import Count

if TYPE_CHECKING:
    import sqlite3

#: random bytes of a session key (shown as twice as many hex digits)
KEY_BYTES = 16
SESSION, KEY = "session", "key"
_SCHEMA = """
CREATE TABLE IF NOT EXISTS sessions (
    digest TEXT PRIMARY KEY,
    kind TEXT NOT NULL,
    user TEXT NOT NULL,
    address TEXT,
    used REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS super_user (
    name TEXT PRIMARY KEY,
    password TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS failures (
    subject TEXT PRIMARY KEY,
    failures INTEGER NOT NULL,
    last REAL NOT NULL
);
"""


class Session(NamedTuple):
    """One stored session: its user, the address it is bound to, its last use (epoch seconds)."""

    user: str
    address: str
    used: float


def digest(key: str) -> str:
    """The SHA-256 of ``key`` in hex: how a key is stored and looked up."""
    return hashlib.sha256(key.encode("utf-8", "surrogateescape")).hexdigest()


def store_file(root: Root) -> Path:
    """``var/<mgr>.sessions.db`` of ``root``."""
    return root.var_dir / f"{root.mgr}.sessions.db"


class Store:
    """The session store of one root (see the module docstring).

    :raises RootError: (every method) the database cannot be used
    """

    def __init__(self, path: Path) -> None:
        self.path = path

    def _transaction(self, write: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path, _SCHEMA, write)

    # --- sessions and keys -----------------------------------------------------------

    def open(self, user: str, address: str, now: float, idle: float) -> str:
        """A new session of ``user`` bound to ``address``: its key (32 hex digits).
        Sessions and keys idle for more than ``idle`` seconds are removed meanwhile."""
        key = secrets.token_hex(KEY_BYTES)
        with self._transaction() as conn:
            conn.execute("DELETE FROM sessions WHERE used < ?", (now - idle,))
            conn.execute(
                "INSERT INTO sessions (digest, kind, user, address, used) VALUES (?, ?, ?, ?, ?)",
                (digest(key), SESSION, user, address, now),
            )
        return key

    def session(self, key: str) -> Session | None:
        """The session of ``key`` (``None``: no such session; a one-time key is not one)."""
        with self._transaction(write=False) as conn:
            row = conn.execute(
                "SELECT user, address, used FROM sessions WHERE digest = ? AND kind = ?", (digest(key), SESSION)
            ).fetchone()
        return None if row is None else Session(row["user"], row["address"], row["used"])

    def touch(self, key: str, now: float) -> None:
        """Record a use of the session of ``key`` at ``now``."""
        with self._transaction() as conn:
            conn.execute("UPDATE sessions SET used = ? WHERE digest = ? AND kind = ?", (now, digest(key), SESSION))

    def end(self, key: str) -> bool:
        """End the session of ``key``. :returns: whether there was one"""
        with self._transaction() as conn:
            gone = conn.execute("DELETE FROM sessions WHERE digest = ? AND kind = ?", (digest(key), SESSION))
        return gone.rowcount > 0

    def end_user(self, user: str) -> int:
        """End every session and key of ``user`` (its password changed). :returns: how many"""
        with self._transaction() as conn:
            return conn.execute("DELETE FROM sessions WHERE user = ?", (user,)).rowcount

    def add_key(self, user: str, key: str, now: float) -> None:
        """Keep the one-time key ``key`` of ``user`` (replacing the same key made before)."""
        with self._transaction() as conn:
            conn.execute(
                "INSERT OR REPLACE INTO sessions (digest, kind, user, address, used) VALUES (?, ?, ?, NULL, ?)",
                (digest(key), KEY, user, now),
            )

    def take_key(self, key: str, now: float, idle: float) -> str | None:
        """The user of the one-time key ``key``, which is used up; ``None`` when there is
        no such key or it was made more than ``idle`` seconds before ``now``."""
        with self._transaction() as conn:
            row = conn.execute(
                "SELECT user, used FROM sessions WHERE digest = ? AND kind = ?", (digest(key), KEY)
            ).fetchone()
            if row is None:
                return None
            conn.execute("DELETE FROM sessions WHERE digest = ?", (digest(key),))
        return str(row["user"]) if now - row["used"] <= idle else None

    # --- the super user's password ---------------------------------------------------

    def super_user_password(self, name: str) -> str | None:
        """The password hash of the super user ``name`` (``None``: none set)."""
        with self._transaction(write=False) as conn:
            row = conn.execute("SELECT password FROM super_user WHERE name = ?", (name,)).fetchone()
        return None if row is None else str(row["password"])

    def set_super_user_password(self, name: str, hashed: str) -> None:
        """Set the password hash of the super user ``name`` (:func:`mgrhooks.core.hash_password`)."""
        with self._transaction() as conn:
            conn.execute("INSERT OR REPLACE INTO super_user (name, password) VALUES (?, ?)", (name, hashed))

    # --- failed logins -----------------------------------------------------------------

    def failures(self, subjects: tuple[str, ...]) -> dict[str, Count]:
        """The failure counts of ``subjects`` (``address:A``, ``user:U``) that have one."""
        with self._transaction(write=False) as conn:
            marks = ", ".join("?" * len(subjects))
            rows = conn.execute(f"SELECT * FROM failures WHERE subject IN ({marks})", subjects).fetchall()  # noqa: S608
        return {row["subject"]: Count(row["failures"], row["last"]) for row in rows}

    def fail(self, subjects: tuple[str, ...], now: float, window: float) -> dict[str, Count]:
        """Count one more failure at ``now`` for each of ``subjects`` (a count whose last
        failure is more than ``window`` seconds old starts again). :returns: the new counts"""
        counts = {}
        with self._transaction() as conn:
            for subject in subjects:
                row = conn.execute("SELECT failures, last FROM failures WHERE subject = ?", (subject,)).fetchone()
                failures = 1 if row is None or now - row["last"] > window else row["failures"] + 1
                conn.execute(
                    "INSERT OR REPLACE INTO failures (subject, failures, last) VALUES (?, ?, ?)",
                    (subject, failures, now),
                )
                counts[subject] = Count(failures, now)
        return counts

    def forget(self, subjects: tuple[str, ...]) -> None:
        """Forget the failures of ``subjects`` (a successful login)."""
        with self._transaction() as conn:
            conn.executemany("DELETE FROM failures WHERE subject = ?", [(subject,) for subject in subjects])
