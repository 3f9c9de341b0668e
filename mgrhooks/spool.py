"""The durable queue of event records, ``var/<mgr>.spool.db`` (SQLite). I/O.

A record and one delivery row per notifier are written in one transaction when the call
has committed; a delivery is *pending* until a driver confirms it (*delivered*), or its
attempts run out (*dead*: the dead-letter list). A worker *claims* a due delivery with a
lease before trying it, so two workers do not send it at once; a worker killed mid-try
leaves the lease to expire and the delivery is tried again: at least once.
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .db import exists, transaction

if TYPE_CHECKING:  # loaded when a record is spooled, not at start-up
    import sqlite3

_SCHEMA = """
CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY, event TEXT NOT NULL, created REAL NOT NULL, body TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS deliveries (
    record TEXT NOT NULL REFERENCES records(id),
    notifier TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    lease REAL NOT NULL DEFAULT 0,
    error TEXT NOT NULL DEFAULT '',
    PRIMARY KEY (record, notifier)
);
"""


class Delivery(NamedTuple):
    """One record for one notifier: ``state`` is ``pending``, ``delivered``, ``dead`` or
    ``dropped``; ``attempts`` made so far; ``due`` when it may be tried next, in epoch
    seconds; ``error`` the last attempt's reason (empty before the first); ``event`` the
    function (``user.add``) and ``body`` the record as JSON text
    (:func:`mgrhooks.notify.record`)."""

    record: str
    notifier: str
    state: str
    attempts: int
    due: float
    error: str
    event: str
    body: str


class Queued(NamedTuple):
    """A delivery not done yet, as ``mgrhooks queue list`` shows it: ``state`` is
    ``pending`` or ``dead``; ``attempts`` made so far; ``error`` the last attempt's
    reason (empty before the first)."""

    record: str
    notifier: str
    state: str
    attempts: int
    event: str
    error: str


class Spool:
    """The queue in ``path`` (created on first use). Every method that touches it raises
    :class:`~mgrhooks.errors.RootError` when the database cannot be used
    (:func:`mgrhooks.db.transaction`)."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def _transaction(self) -> AbstractContextManager[sqlite3.Connection]:
        return transaction(self.path, _SCHEMA)

    def add(self, record_id: str, event: str, body: str, notifiers: Sequence[str], now: float) -> None:
        """Spool a record for ``notifiers``, all or nothing: one pending delivery per
        notifier, due at once.

        :param record_id: the record's unique id (hex; the record's ``id`` field)
        :param event: the function the record is about (``user.add``)
        :param body: the record as JSON text, delivered as it is
        :param notifiers: names of ``[notify.NAME]`` sections that want the record
        :param now: the time of the change, in epoch seconds (:func:`time.time`)
        """
        with self._transaction() as conn:
            conn.execute("INSERT INTO records VALUES (?, ?, ?, ?)", (record_id, event, now, body))
            conn.executemany(
                "INSERT INTO deliveries (record, notifier, due) VALUES (?, ?, ?)",
                [(record_id, name, now) for name in notifiers],
            )

    def claim(self, now: float, lease: float, only: str | None = None, limit: int = 100) -> list[Delivery]:
        """Pending deliveries that are due and not leased, oldest due first, leased now for
        ``lease`` seconds (another worker skips them meanwhile).

        :param now: the time, in epoch seconds
        :param only: just the deliveries of this record (inline delivery after a call)
        :param limit: at most this many
        """
        where = "d.state = 'pending' AND d.due <= ? AND d.lease <= ?" + (" AND d.record = ?" if only else "")
        args: tuple[object, ...] = (now, now, only) if only else (now, now)
        with self._transaction() as conn:
            rows = conn.execute(f"{_SELECT} WHERE {where} ORDER BY d.due LIMIT {int(limit)}", args).fetchall()
            conn.executemany(
                "UPDATE deliveries SET lease = ? WHERE record = ? AND notifier = ?",
                [(now + lease, row[0], row[1]) for row in rows],
            )
        return [Delivery(*row) for row in rows]

    def delivered(self, delivery: Delivery) -> None:
        """Count a successful attempt: the delivery is done, its lease released."""
        self._attempted(delivery, "delivered", delivery.due, "")

    def failed(self, delivery: Delivery, error: str, due: float, dead: bool) -> None:
        """Count a failed attempt, its lease released: tried again at ``due`` (epoch
        seconds), or, with ``dead``, moved to the dead letters; ``error`` is kept (its first
        500 characters)."""
        self._attempted(delivery, "dead" if dead else "pending", due, error[:500])

    def _attempted(self, delivery: Delivery, state: str, due: float, error: str) -> None:
        with self._transaction() as conn:
            conn.execute(
                "UPDATE deliveries SET state = ?, attempts = attempts + 1, due = ?, lease = 0, error = ?"
                " WHERE record = ? AND notifier = ?",
                (state, due, error, delivery.record, delivery.notifier),
            )

    def queued(self, dead_only: bool = False) -> list[Queued]:
        """The deliveries not done (pending and dead, or only the dead), oldest first.

        :raises RootError: the database cannot be used
        """
        states = ("dead",) if dead_only else ("pending", "dead")
        return [Queued(d.record, d.notifier, d.state, d.attempts, d.event, d.error) for d in self.list(states)]

    def list(self, states: Sequence[str] = ("pending", "dead")) -> list[Delivery]:
        """Deliveries in ``states``, oldest due first (none when the spool was never
        written: the database is not created for a look)."""
        if not exists(self.path):
            return []
        marks = ", ".join("?" for _ in states)
        with self._transaction() as conn:
            rows = conn.execute(f"{_SELECT} WHERE d.state IN ({marks}) ORDER BY d.due, d.record", tuple(states))
            return [Delivery(*row) for row in rows.fetchall()]

    def retry(self, records: Sequence[str], now: float | None = None) -> int:
        """Dead deliveries of ``records`` (every dead one when empty) back to pending, due
        at ``now`` (epoch seconds; the current time by default), with their attempts
        counted anew. :returns: how many."""
        return self._update_dead("state = 'pending', attempts = 0, due = ?, lease = 0", records, (now or time.time(),))

    def drop(self, records: Sequence[str]) -> int:
        """Forget dead deliveries of ``records`` (every dead one when empty). :returns: how many."""
        return self._update_dead("state = 'dropped'", records, ())

    def _update_dead(self, assignments: str, records: Sequence[str], values: tuple[object, ...]) -> int:
        where = "state = 'dead'" + (f" AND record IN ({', '.join('?' for _ in records)})" if records else "")
        with self._transaction() as conn:
            return conn.execute(f"UPDATE deliveries SET {assignments} WHERE {where}", (*values, *records)).rowcount


_SELECT = (
    "SELECT d.record, d.notifier, d.state, d.attempts, d.due, d.error, r.event, r.body"
    " FROM deliveries d JOIN records r ON r.id = d.record"
)
