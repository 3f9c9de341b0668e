"""The outbox and durable queue of event records, in the root's database ``var/<mgr>.db``
(SQLite; the built-in core's own file). I/O.

A record is first an *intent*: written inside the transaction that makes the change (the
built-in core's action; :func:`intend`), with the object(s) it changes, each numbered by a
per-object sequence, and the notifiers that want it. When the call ends, the intent is
*completed* (:meth:`Spool.complete`): its body replaced by the final record and one
delivery row per notifier added, in one transaction. An intent whose process died is
*recovered* by a later call or worker pass (:meth:`Spool.recover`): its body (written to
say ``"recovered": true``) is kept and its deliveries added. Either way the record keeps
the id it got in the change's transaction: one record per committed change.

A delivery is *pending* until a driver confirms it (*delivered*), or its attempts run out
(*dead*: the dead-letter list; *dropped* when forgotten); a delivery of a notifier relayed
to a broker (``[relay]``, :mod:`mgrhooks.relay`) is *relayed* once the broker confirmed it
(its attempts and dead letters are then the broker's workers'). A worker *claims* due
deliveries, each with a lease of its own, naming itself their *holder*; only the holder
may settle it (:meth:`Spool.settle`): a worker whose lease ran out and was claimed again
cannot overwrite the new holder's outcome. A worker killed mid-try leaves the lease to
expire and the delivery is tried again: at least once. Delivered and dropped deliveries
are purged after a while (:meth:`Spool.purge`).
"""

from __future__ import annotations

import os
import time
from collections.abc import Iterable, Iterator, Sequence
from contextlib import AbstractContextManager, contextmanager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .db import exists, transaction

if TYPE_CHECKING:  # loaded when a record is spooled, not at start-up
    import sqlite3

_TABLES = (
    """CREATE TABLE IF NOT EXISTS records (
    id TEXT PRIMARY KEY, event TEXT NOT NULL, created REAL NOT NULL, body TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'ready', owner TEXT NOT NULL DEFAULT '', notifiers TEXT NOT NULL DEFAULT ''
)""",
    "CREATE INDEX IF NOT EXISTS records_intents ON records (owner) WHERE state = 'intent'",
    """CREATE TABLE IF NOT EXISTS deliveries (
    record TEXT NOT NULL REFERENCES records(id),
    notifier TEXT NOT NULL,
    state TEXT NOT NULL DEFAULT 'pending',
    attempts INTEGER NOT NULL DEFAULT 0,
    due REAL NOT NULL,
    lease REAL NOT NULL DEFAULT 0,
    holder TEXT NOT NULL DEFAULT '',
    error TEXT NOT NULL DEFAULT '',
    done REAL NOT NULL DEFAULT 0,
    PRIMARY KEY (record, notifier)
)""",
    "CREATE INDEX IF NOT EXISTS deliveries_due ON deliveries (due) WHERE state = 'pending'",
    "CREATE INDEX IF NOT EXISTS deliveries_done ON deliveries (done) WHERE state IN ('delivered', 'dropped')",
    "CREATE INDEX IF NOT EXISTS deliveries_relayed ON deliveries (done) WHERE state = 'relayed'",
    "CREATE TABLE IF NOT EXISTS sequences (object TEXT PRIMARY KEY, seq INTEGER NOT NULL) WITHOUT ROWID",
)
_SCHEMA = ";\n".join(_TABLES) + ";"


class Delivery(NamedTuple):
    """One record for one notifier: ``state`` is ``pending``, ``delivered``, ``dead`` or
    ``dropped`` (or ``relayed``); ``attempts`` made so far; ``due`` when it may be tried next, in epoch
    seconds; ``error`` the last attempt's reason (empty before the first); ``event`` the
    function (``user.add``) and ``body`` the record as JSON text
    (:func:`mgrhooks.notify.record`); ``holder`` the claim that leased it (empty when not
    claimed)."""

    record: str
    notifier: str
    state: str
    attempts: int
    due: float
    error: str
    event: str
    body: str
    holder: str = ""


class Outcome(NamedTuple):
    """An attempt's outcome, to be recorded by :meth:`Spool.settle`: ``state`` is
    ``delivered``, ``pending`` (tried again at ``due``, epoch seconds) or ``dead``;
    ``error`` the attempt's failure (empty for a delivery; its first 500 characters are
    kept)."""

    delivery: Delivery
    state: str
    due: float
    error: str = ""


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


class Intent(NamedTuple):
    """A record left as an intent: its id and the process that wrote it
    (:func:`mgrhooks.owner.me`)."""

    record: str
    owner: str


class Completed(NamedTuple):
    """What completing an intent found: whether it was still an intent (``False``: a
    recovery pass completed it first, or it never committed), and the intents left."""

    completed: bool
    intents: tuple[Intent, ...]


def sequence(conn: sqlite3.Connection, objects: Sequence[str]) -> list[int]:
    """The next sequence number of each of ``objects`` (``user:alice``; 1 for the first
    change), counted in ``conn``'s transaction: numbers of one object follow the order in
    which the transactions commit."""
    _tables(conn)
    numbers = []
    for key in objects:
        row = conn.execute(
            "INSERT INTO sequences VALUES (?, 1) ON CONFLICT (object) DO UPDATE SET seq = seq + 1 RETURNING seq",
            (key,),
        ).fetchone()
        numbers.append(int(row[0]))
    return numbers


def intend(
    conn: sqlite3.Connection, record_id: str, event: str, body: str, notifiers: Sequence[str], owner: str, now: float
) -> None:
    """Write a record's intent in ``conn``'s transaction (the change's own).

    :param body: the record as JSON text, as a recovery delivers it
    :param notifiers: names of the ``[notify.NAME]`` sections that want it
    :param owner: the process completing it (:func:`mgrhooks.owner.me`)
    :param now: the time of the change, in epoch seconds
    """
    _tables(conn)
    conn.execute(
        "INSERT INTO records (id, event, created, body, state, owner, notifiers) VALUES (?, ?, ?, ?, 'intent', ?, ?)",
        (record_id, event, now, body, owner, " ".join(notifiers)),
    )


def _tables(conn: sqlite3.Connection) -> None:
    """The spool's tables in ``conn``'s database, made inside its open transaction
    (``executescript`` would commit it) unless there (one look-up, not a statement per
    table)."""
    made = conn.execute("SELECT count(*) FROM sqlite_master WHERE name IN ('records', 'deliveries', 'sequences')")
    if made.fetchone()[0] == 3:
        return
    for statement in _TABLES:
        conn.execute(statement)


def holder() -> str:
    """A new claim's name: random, so that no two claims, even of one worker, share it."""
    return os.urandom(8).hex()


class Spool:
    """The queue in ``path`` (created on first use). Every method that touches it raises
    :class:`~mgrhooks.errors.RootError` when the database cannot be used
    (:func:`mgrhooks.db.transaction`).

    :param held: a connection to ``path`` its transactions use, left open (:meth:`kept`);
        default: a connection per transaction
    """

    def __init__(self, path: Path, held: sqlite3.Connection | None = None) -> None:
        self.path = path
        self.held = held

    def transaction(self, write: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        """A transaction on the spool's database, its tables made if new."""
        return transaction(self.path, _SCHEMA, write, held=self.held)

    @contextmanager
    def kept(self) -> Iterator[Spool]:
        """This spool on one connection, kept open for a series of transactions (a worker's
        pass) and closed when the block ends: no connection is opened per transaction, nor
        the WAL checkpointed (and synced) as each one's closing would when it is the file's
        last. A spool whose file does not exist yet is given as it is."""
        from .db import hold

        if self.held is not None or not exists(self.path):
            yield self
            return
        try:
            conn = hold(self.path)
        except Exception:  # noqa: BLE001 (the transactions open their own, and say what is wrong)
            yield self
            return
        try:
            yield Spool(self.path, conn)
        finally:
            conn.close()

    def add(self, record_id: str, event: str, body: str, notifiers: Sequence[str], now: float) -> None:
        """Spool a complete record for ``notifiers``, all or nothing: one pending delivery
        per notifier, due at once (parameters as :func:`intend`'s)."""
        with self.transaction() as conn:
            values = (record_id, event, now, body)
            conn.execute("INSERT INTO records (id, event, created, body) VALUES (?, ?, ?, ?)", values)
            _deliveries(conn, record_id, notifiers, now)

    def complete(self, record_id: str, body: str, now: float, held: sqlite3.Connection | None = None) -> Completed:
        """Complete the intent ``record_id`` with its final ``body``, adding its deliveries
        (due at ``now``), and look up, in the same transaction, the intents left (other
        calls': the caller recovers those of dead processes, :meth:`recover`).

        Not synced to disk when it returns (:func:`mgrhooks.db.transaction`'s ``durable``;
        our choice: it saves a call a second sync): a machine crash may undo it, leaving the
        intent, which committed durably with the change and is recovered with the same id.
        ``held``: the connection to use (:func:`mgrhooks.db.hold`, opened with the change),
        left open.
        """
        with transaction(self.path, "", durable=False, held=held) as conn:  # (the intent made the tables)
            completed = _complete(conn, record_id, body, now)
            rows = conn.execute("SELECT id, owner FROM records WHERE state = 'intent' ORDER BY created").fetchall()
        return Completed(completed, tuple(Intent(*row) for row in rows))

    def intents(self) -> list[Intent]:
        """The records still intents, oldest first (none when nothing was ever written)."""
        if not exists(self.path):
            return []
        with self.transaction(write=False) as conn:
            rows = conn.execute("SELECT id, owner FROM records WHERE state = 'intent' ORDER BY created").fetchall()
        return [Intent(*row) for row in rows]

    def recover(self, records: Iterable[str], now: float) -> int:
        """Turn the intents ``records`` (their processes are gone) into records as their
        intents wrote them (``"recovered": true``), with their deliveries due at ``now``.
        :returns: how many were still intents"""
        with self.transaction() as conn:
            return sum(_complete(conn, record_id, None, now) for record_id in records)

    def claim(
        self,
        now: float,
        lease: float,
        only: str | None = None,
        limit: int = 100,
        holder_name: str | None = None,
        due_by: float | None = None,
        skip: Sequence[str] = (),
        notifiers: Sequence[str] | None = None,
    ) -> list[Delivery]:
        """Pending deliveries that are due and not leased, oldest due first, leased now for
        ``lease`` seconds to a new holder (another worker skips them meanwhile; only this
        claim may settle them).

        :param now: the time, in epoch seconds
        :param only: just the deliveries of this record (inline delivery after a call)
        :param limit: at most this many (a worker claims as many as it can try within the
            lease: :func:`mgrhooks.delivery.work`)
        :param holder_name: the holder (default: a new random one, :func:`holder`)
        :param due_by: just those due by then (default ``now``; a worker's pass gives its
            start, so that a retry falling due during the pass waits for the next)
        :param skip: not those of these notifiers (the relayed ones, for the local drivers)
        :param notifiers: just those of these notifiers (the relayed ones, for the relay)
        """
        name = holder_name or holder()
        where = "d.state = 'pending' AND d.due <= ? AND d.lease <= ?" + (" AND d.record = ?" if only else "")
        due = now if due_by is None else due_by
        args: tuple[object, ...] = (due, now, only) if only else (due, now)
        if skip:
            where += f" AND d.notifier NOT IN ({', '.join('?' for _ in skip)})"
            args += tuple(skip)
        if notifiers is not None:
            where += f" AND d.notifier IN ({', '.join('?' for _ in notifiers)})"
            args += tuple(notifiers)
        with self.transaction() as conn:
            rows = conn.execute(f"{_SELECT} WHERE {where} ORDER BY d.due LIMIT {int(limit)}", args).fetchall()
            conn.executemany(
                "UPDATE deliveries SET lease = ?, holder = ? WHERE record = ? AND notifier = ?",
                [(now + lease, name, row[0], row[1]) for row in rows],
            )
        return [Delivery(*row)._replace(holder=name) for row in rows]

    def settle(self, outcomes: Sequence[Outcome], unused: Sequence[Delivery] = ()) -> list[bool]:
        """Record the attempts' ``outcomes`` (each counted, its lease released) and release
        the leases of the claimed deliveries left ``unused`` (not attempted: their attempts
        and error as they were), in one transaction. Only a delivery's holder changes it: a
        claim whose lease ran out and was claimed again changes nothing.

        :returns: for each outcome, whether its ``delivery.holder`` still held it"""
        now = time.time()
        with self.transaction() as conn:
            held = [
                conn.execute(
                    "UPDATE deliveries SET state = ?, attempts = attempts + 1, due = ?, lease = 0, holder = '',"
                    " error = ?, done = ? WHERE record = ? AND notifier = ? AND state = 'pending' AND holder = ?",
                    (o.state, o.due, o.error[:500], now, o.delivery.record, o.delivery.notifier, o.delivery.holder),
                ).rowcount
                == 1
                for o in outcomes
            ]
            conn.executemany(
                "UPDATE deliveries SET lease = 0, holder = ''"
                " WHERE record = ? AND notifier = ? AND state = 'pending' AND holder = ?",
                [(d.record, d.notifier, d.holder) for d in unused],
            )
        return held

    def relayed(self, deliveries: Sequence[Delivery], now: float) -> int:
        """Mark ``deliveries`` relayed (the broker confirmed them: its workers deliver them
        now), their leases released; those whose holder lost them are left alone.
        :returns: how many were marked"""
        with self.transaction() as conn:
            return conn.executemany(
                "UPDATE deliveries SET state = 'relayed', lease = 0, holder = '', error = '', done = ?"
                " WHERE record = ? AND notifier = ? AND state = 'pending' AND holder = ?",
                [(now, d.record, d.notifier, d.holder) for d in deliveries],
            ).rowcount

    def release(self, deliveries: Sequence[Delivery], error: str) -> None:
        """Release the leases of ``deliveries`` that could not be relayed (the broker is
        down), keeping ``error`` (its first 500 characters) and their attempts as they
        were: the next pass tries them again."""
        with self.transaction() as conn:
            conn.executemany(
                "UPDATE deliveries SET lease = 0, holder = '', error = ?"
                " WHERE record = ? AND notifier = ? AND state = 'pending' AND holder = ?",
                [(error[:500], d.record, d.notifier, d.holder) for d in deliveries],
            )

    def purge(self, before: float, limit: int = 10000) -> int:
        """Forget deliveries delivered, relayed or dropped before ``before`` (epoch seconds), at most
        ``limit`` at once, and the records left without deliveries. :returns: how many
        deliveries"""
        if not exists(self.path):
            return 0
        with self.transaction() as conn:
            rows = conn.execute(
                "SELECT record, notifier FROM deliveries WHERE state IN ('delivered', 'dropped') AND done < ?"
                f" LIMIT {int(limit)}",
                (before,),
            ).fetchall()
            rows += conn.execute(
                f"SELECT record, notifier FROM deliveries WHERE state = 'relayed' AND done < ? LIMIT {int(limit)}",
                (before,),
            ).fetchall()
            conn.executemany("DELETE FROM deliveries WHERE record = ? AND notifier = ?", rows)
            conn.executemany(
                "DELETE FROM records WHERE id = ? AND state = 'ready'"
                " AND NOT EXISTS (SELECT 1 FROM deliveries WHERE record = ?)",
                [(row[0], row[0]) for row in {row[0]: row for row in rows}.values()],
            )
        return len(rows)

    def take_over(self, old: Path) -> int:
        """Move the pending and dead deliveries of an earlier version's spool ``old``
        (``var/<mgr>.spool.db``) here, with their records, then rename it
        ``*.migrated`` (what this spool already has is kept: taking over twice, after a
        crash between the two steps, adds nothing). :returns: how many deliveries"""
        import sqlite3

        source = sqlite3.connect(f"file:{old}?mode=ro", uri=True)
        try:
            undone = "FROM deliveries WHERE state IN ('pending', 'dead')"
            records = source.execute(
                f"SELECT id, event, created, body FROM records WHERE id IN (SELECT record {undone})"
            ).fetchall()
            deliveries = source.execute(f"SELECT record, notifier, state, attempts, due, error {undone}").fetchall()
        finally:
            source.close()
        with self.transaction() as conn:
            conn.executemany("INSERT OR IGNORE INTO records (id, event, created, body) VALUES (?, ?, ?, ?)", records)
            moved = conn.executemany(
                "INSERT OR IGNORE INTO deliveries (record, notifier, state, attempts, due, error)"
                " VALUES (?, ?, ?, ?, ?, ?)",
                deliveries,
            ).rowcount
        old.rename(old.with_name(old.name + ".migrated"))
        return moved

    def queued(self, dead_only: bool = False) -> list[Queued]:
        """The deliveries not done (pending and dead, or only the dead), oldest first.

        :raises RootError: the database cannot be used
        """
        states = ("dead",) if dead_only else ("pending", "dead")
        return [Queued(d.record, d.notifier, d.state, d.attempts, d.event, d.error) for d in self.list(states)]

    def list(self, states: Sequence[str] = ("pending", "dead")) -> list[Delivery]:
        """Deliveries in ``states``, oldest due first (none when the database was never
        written: it is not created for a look)."""
        if not exists(self.path):
            return []
        marks = ", ".join("?" for _ in states)
        with self.transaction(write=False) as conn:
            rows = conn.execute(f"{_SELECT} WHERE d.state IN ({marks}) ORDER BY d.due, d.record", tuple(states))
            return [Delivery(*row) for row in rows.fetchall()]

    def retry(self, records: Sequence[str], now: float | None = None) -> int:
        """Dead deliveries of ``records`` (every dead one when empty) back to pending, due
        at ``now`` (epoch seconds; the current time by default), with their attempts
        counted anew. :returns: how many."""
        assignments = "state = 'pending', attempts = 0, due = ?, lease = 0, holder = ''"
        return self._update_dead(assignments, records, (now or time.time(),))

    def drop(self, records: Sequence[str]) -> int:
        """Forget dead deliveries of ``records`` (every dead one when empty). :returns: how many."""
        return self._update_dead("state = 'dropped', done = ?", records, (time.time(),))

    def _update_dead(self, assignments: str, records: Sequence[str], values: tuple[object, ...]) -> int:
        where = "state = 'dead'" + (f" AND record IN ({', '.join('?' for _ in records)})" if records else "")
        with self.transaction() as conn:
            return conn.execute(f"UPDATE deliveries SET {assignments} WHERE {where}", (*values, *records)).rowcount


def _complete(conn: sqlite3.Connection, record_id: str, body: str | None, now: float) -> bool:
    """The intent ``record_id`` made a record (its ``body`` replaced unless ``None``) with
    its deliveries; ``False`` when it is no intent (any more)."""
    row = conn.execute("SELECT notifiers FROM records WHERE id = ? AND state = 'intent'", (record_id,)).fetchone()
    if row is None:
        return False
    if body is None:
        conn.execute("UPDATE records SET state = 'ready', owner = '' WHERE id = ?", (record_id,))
    else:
        conn.execute("UPDATE records SET state = 'ready', owner = '', body = ? WHERE id = ?", (body, record_id))
    _deliveries(conn, record_id, row[0].split(), now)
    return True


def _deliveries(conn: sqlite3.Connection, record_id: str, notifiers: Sequence[str], now: float) -> None:
    rows = [(record_id, name, now) for name in notifiers]
    conn.executemany("INSERT INTO deliveries (record, notifier, due) VALUES (?, ?, ?)", rows)


_SELECT = (
    "SELECT d.record, d.notifier, d.state, d.attempts, d.due, d.error, r.event, r.body"
    " FROM deliveries d JOIN records r ON r.id = d.record"
)
