"""Event records of calls: spooling them, and delivering them (the drivers and one pass
of the worker). I/O.

:class:`Notifications` follows a call through its monitor (:mod:`mgrhooks.monitor`): it
collects the handlers' run records and, when the call committed a change that notifiers
want, spools its record and delivers it inline at the start of the final stage (after
the response is out) within :data:`INLINE_TIMEOUT`; the worker does the rest.

The drivers are :mod:`mgrhooks.drivers`'s. A failed attempt (whatever the driver's
failure: :func:`~mgrhooks.drivers.attempt` never raises) is tried again after ``backoff``
seconds, doubled after each failure up to ``max_backoff`` (a day by default,
:data:`~mgrhooks.settings.MAX_SECONDS`), each delay drawn between its half and itself
("equal jitter", so that deliveries failed together are not all tried again together;
our choice); after ``attempts`` attempts the delivery goes to the dead letters
(``mgrhooks queue``).
"""

from __future__ import annotations

import json
import os
import time
from collections import Counter
from copy import deepcopy
from datetime import UTC, datetime
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from . import logs
from .drivers import Connections, attempt
from .model import ActionStep
from .monitor import Later, Monitor, StepEnd
from .root import Root
from .settings import Notifier
from .spool import Delivery, Intent, Outcome, Spool

if TYPE_CHECKING:
    import sqlite3

    from .document import Document
    from .model import HandlerRun, Request
    from .xmldoc import Element

#: seconds an inline attempt, made right after the call, may take
INLINE_TIMEOUT = 1.0
#: seconds a claimed delivery stays reserved beyond its notifier's timeout; a worker
#: killed mid-attempt delays that delivery by this much, no more
LEASE_MARGIN = 5.0
#: seconds of a lease kept for recording the outcomes: a worker's pass starts no attempt
#: that could end later than this before its batch's lease runs out
SETTLE_MARGIN = 1.0
#: the most deliveries a worker's pass claims at once (those sent before a worker is
#: killed but not yet recorded are sent again: at most this many)
BATCH = 100
NOTIFY = logs.Channel("notify")


class Pass(NamedTuple):
    """What one pass of the worker did: how many deliveries it delivered, left to be
    tried again, and moved to the dead letters (intents it recovered are logged)."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0


def spool_of(root: Root) -> Spool:
    """The spool of ``root``: in its database ``var/<mgr>.db``, the built-in core's own (the
    outbox: a record commits with the change it tells of)."""
    return Spool(root.db_file)


class _Intent(NamedTuple):
    """A call's record while it is an intent: its id, the time of the change, and the
    objects it changes with their sequence numbers."""

    record: str
    now: datetime
    numbered: tuple[tuple[str, int], ...]
    doc: Element


class Notifications(Monitor):
    """The event record of one call (a monitor subscriber, made per call): the outbox.

    The built-in core's action writes the record's intent in its own transaction
    (:meth:`committing`); other main logic gets it written right after it returned
    (:meth:`after`), a call whose before-handler answered ``skipaction`` when its response
    is decided. :meth:`committed` completes it with how the call ended and returns its
    inline delivery; :meth:`failed` completes it when the call raised. Intents of dead
    processes are recovered by the worker (:func:`recover`) and at the end of the next call
    whose completion sees one (it looks the intents up in its own transaction).

    :param notifiers: the root's notifiers (``[notify.NAME]`` sections); each gets the
        record of a change whose function matches its ``events``
    :param request: the call's request
    :param relayed: names of the notifiers relayed to a broker (``[relay] notifiers``):
        their deliveries are spooled as the others', but a call never tries them (the
        worker relays them: no call waits on a broker)
    """

    def __init__(
        self, root: Root, notifiers: tuple[Notifier, ...], request: Request, relayed: tuple[str, ...] = ()
    ) -> None:
        self.root = root
        self.notifiers = notifiers
        self.relayed = relayed
        self.request = request
        self.spool = spool_of(root)
        self.runs: list[HandlerRun] = []
        self.intent: _Intent | None = None
        self.held: sqlite3.Connection | None = None  # for the completion (:meth:`_hold`)

    def _wanted(self, request: Request) -> list[str]:
        from .notify import wanted

        if not request.is_change():
            return []
        return [n.name for n in self.notifiers if wanted(n.events, request.func)]

    def committing(self, request: Request, conn: sqlite3.Connection, path: Path, doc: Element) -> None:
        """Write the record's intent in the built-in core's transaction (when its database
        is the spool's: else after the action, as for other main logic)."""
        names = self._wanted(request)
        if names and path == self.spool.path:
            self._intend(conn, request, doc, names)
            self._hold(path)

    def _hold(self, path: Path) -> None:
        """Open the connection the completion will use, while the change's is open: the
        change's closing then leaves the WAL checkpoint (its syncs) to the completion's."""
        from .db import hold

        try:
            self.held = hold(path)
        except Exception as exc:  # noqa: BLE001 (an optimisation: the completion opens its own)
            NOTIFY.debug("cannot open %s ahead of the completion: %s", path, exc)

    def after(self, end: StepEnd) -> None:
        """Keep the run record of a handler that ran (for the event record); after main
        logic other than the built-in core's that succeeded, write the intent apart."""
        if end.result.run is not None:
            self.runs.append(end.result.run)
        if isinstance(end.start.step, ActionStep) and self.intent is None and not end.result.document.has_error():
            self._intend_apart(self.request, end.result.document.tree())

    def _intend_apart(self, request: Request, doc: Element) -> None:
        names = self._wanted(request)
        if not names:
            return
        try:
            with self.spool.transaction() as conn:
                self._intend(conn, request, doc, names)
        except Exception as exc:  # noqa: BLE001 (the change is made: report, do not fail the call)
            self.intent = None
            logs.ACTION.error("event record of '%s' could not be spooled, so it is lost: %s", request.func, exc)

    def _intend(self, conn: sqlite3.Connection, request: Request, doc: Element, names: list[str]) -> None:
        from .notify import objects, record
        from .owner import me
        from .spool import intend, sequence

        record_id = os.urandom(16).hex()
        now = datetime.now(UTC)
        keys = objects(request, doc)
        numbered = tuple(zip(keys, sequence(conn, keys), strict=True))
        body = record(request, self.root.mgr, doc, self.runs, record_id, now, numbered, status="unknown")
        intend(conn, record_id, request.func, json.dumps(body), names, me(), now.timestamp())
        self.intent = _Intent(record_id, now, numbered, deepcopy(doc))

    def committed(self, request: Request, document: Document) -> Later | None:
        """Complete the record with how the call ended (``ok``, or ``error`` when an
        after-handler failed after the change) and return its inline delivery; a call that
        changed nothing has none. A spool that fails is logged: the call has committed, it
        does not fail (an intent left is recovered later).
        :returns: the inline delivery (and recovery), or ``None``"""
        if self.intent is None:
            if document.has_error() or not self._wanted(request):
                return None
            self._intend_apart(request, document.tree())  # skipaction: the change was a handler's
            if self.intent is None:
                return None
        status = "error" if document.has_error() else "ok"
        left = self._complete(request, document.tree(), status)
        record_id = self.intent.record
        local = any(name not in self.relayed for name in self._wanted(request))

        def deliver() -> None:  # inline, when quick; the worker does the rest
            try:
                if left is None or _stale(left):  # (usually none: no look-up again)
                    recover(self.root)
                if local:  # (relayed deliveries are the relay's: nothing to claim)
                    work(self.root, self.notifiers, only=record_id, cap=INLINE_TIMEOUT, skip=self.relayed)
            except Exception as exc:  # noqa: BLE001 (a notifier never fails a call)
                NOTIFY.warning("inline delivery of '%s' failed: %s (the worker will)", record_id, exc)

        return deliver

    def failed(self, request: Request, error: BaseException) -> None:
        """Complete the record of a change the call made before it raised (``error``)."""
        if self.intent is not None:
            self._complete(request, self.intent.doc, "error")

    def _complete(self, request: Request, doc: Element, status: str) -> tuple[Intent, ...] | None:
        """Complete the intent; :returns: the intents left (other calls'), ``None`` when
        the completion failed (logged)."""
        from .notify import record

        assert self.intent is not None
        intent = self.intent
        body = record(request, self.root.mgr, doc, self.runs, intent.record, intent.now, intent.numbered, status)
        if doc.findtext("id") is None:
            body["result"]["id"] = intent.doc.findtext("id")
        held, self.held = self.held, None
        try:
            return self.spool.complete(intent.record, json.dumps(body), time.time(), held).intents
        except Exception as exc:  # noqa: BLE001 (the call has committed: report, do not fail it)
            logs.ACTION.error("event record of '%s' left as an intent (recovered later): %s", request.func, exc)
            return None
        finally:
            if held is not None:
                held.close()  # (the last connection: it checkpoints the WAL, synced)


def _stale(intents: tuple[Intent, ...]) -> bool:
    """Whether one of ``intents`` was left by a process that is gone."""
    from .owner import alive

    return not all(alive(intent.owner) for intent in intents)


def _take_over(root: Root, spool: Spool) -> None:
    """Move what an earlier version left in ``var/<mgr>.spool.db`` into the spool."""
    old = root.var_dir / f"{root.mgr}.spool.db"
    if old.exists():
        try:
            moved = spool.take_over(old)
        except Exception as exc:  # noqa: BLE001 (the old file is kept for another pass, or by hand)
            NOTIFY.error("cannot take over %s: %s", old, exc)
            return
        NOTIFY.warning("took over %d delivery(ies) from %s (renamed *.migrated)", moved, old)


def recover(root: Root) -> int:
    """Turn the intents whose processes are gone into records (``"recovered": true``),
    their deliveries due now. :returns: how many
    :raises RootError: the spool's database cannot be used"""
    from .owner import alive

    spool = spool_of(root)
    dead = [intent.record for intent in spool.intents() if not alive(intent.owner)]
    recovered = spool.recover(dead, time.time()) if dead else 0
    if recovered:
        NOTIFY.warning("recovered %d event record(s) left as intents by processes that died", recovered)
    return recovered


def work(
    root: Root,
    notifiers: tuple[Notifier, ...],
    only: str | None = None,
    cap: float | None = None,
    days: float = 7.0,
    skip: tuple[str, ...] = (),
) -> Pass:
    """Take over an earlier version's ``var/<mgr>.spool.db`` and recover intents of dead
    processes (:func:`recover`; not inline), then try every due delivery once (those of
    record ``only``, inline after a call), and settle each: delivered, tried again after
    its notifier's backoff (doubled per failed attempt), or dead after its ``attempts``.
    A delivery whose notifier is no longer in ``notifiers`` goes dead at once. Outcomes
    are logged (module ``notify``).

    A worker's pass claims deliveries a batch at a time (:func:`_batch`; inline, one at a
    time: each is recorded as soon as it was tried, should the call's process be killed
    during its final stage), each leased for the longest notifier timeout (at most
    ``cap``) plus :data:`LEASE_MARGIN`; it starts an attempt only while that attempt can
    end :data:`SETTLE_MARGIN` seconds before the lease runs out, and records the batch's
    outcomes, releasing what it did not try, in one transaction, on one connection kept
    for the pass; the http driver keeps its connections alive for the pass
    (:class:`~mgrhooks.drivers.Connections`).

    :param notifiers: the ``[notify.NAME]`` sections of ``etc/mgrhooks.conf``
    :param cap: the longest an attempt may take, in seconds (inline: :data:`INLINE_TIMEOUT`)
    :param days: a worker's pass (not inline) then purges deliveries delivered or dropped
        more than this many days ago (``[spool] days``)
    :param skip: notifiers whose deliveries are not tried here (the relayed ones:
        :func:`mgrhooks.relay.relay` sends them to the broker)
    :raises RootError: the spool's database cannot be used
    """
    by_name = {n.name: n for n in notifiers}
    spool = spool_of(root)
    if only is None:
        _take_over(root, spool)
        recover(root)
    longest = max((n.timeout for n in notifiers), default=1.0)
    lease = (min(longest, cap) if cap else longest) + LEASE_MARGIN
    counts: Counter[str] = Counter()
    started = time.time()
    limit = 1  # (a pass learns how many it can try within a lease: _batch; inline, one at a time)
    with spool.kept() as kept, Connections() as connections:
        tries = _Tries(root, by_name, cap, connections)
        while batch := kept.claim(claimed := time.time(), lease, only=only, limit=limit, due_by=started, skip=skip):
            began = time.monotonic()
            settled = tries.run(kept, batch, claimed + lease - SETTLE_MARGIN)
            counts.update(_logged(outcome, held) for outcome, held in settled)
            if only is None:
                limit = _batch(len(settled), time.monotonic() - began, LEASE_MARGIN - SETTLE_MARGIN)
    if only is None and (purged := spool.purge(time.time() - days * 86400.0)):
        NOTIFY.log(logs.EXTINFO, "purged %d delivery(ies) done more than %g day(s) ago", purged, days)
    return Pass(counts["delivered"], counts["retried"], counts["dead"])


class _Tries(NamedTuple):
    """What a pass's attempts need: the root, its notifiers by name, the cap of an
    attempt's seconds, the http driver's kept connections."""

    root: Root
    by_name: dict[str, Notifier]
    cap: float | None
    connections: Connections

    def run(self, spool: Spool, batch: list[Delivery], end: float) -> list[tuple[Outcome, bool]]:
        """Try the claimed ``batch`` in turn while an attempt can end by ``end`` (epoch
        seconds; the first is always tried), then record the outcomes and release the
        rest in one transaction (also when interrupted: what was sent is not sent again).
        :returns: each outcome, with whether the claim still held it"""
        outcomes: list[Outcome] = []
        try:
            for delivery in batch:
                notifier = self.by_name.get(delivery.notifier)
                timeout = _timeout(notifier, self.cap)
                if outcomes and time.time() + timeout > end:
                    break  # it could end after the lease: the rest go back (another claim's)
                error = "no such notifier in etc/mgrhooks.conf"
                if notifier is not None:
                    error = attempt(self.root, notifier, delivery, timeout, self.connections) or ""
                outcomes.append(_outcome(notifier, delivery, error))
        finally:
            held = spool.settle(outcomes, unused=batch[len(outcomes) :])
        return list(zip(outcomes, held, strict=True))


def _timeout(notifier: Notifier | None, cap: float | None) -> float:
    """Seconds an attempt of ``notifier`` may take (``0``: there is no such notifier)."""
    if notifier is None:
        return 0.0
    return min(notifier.timeout, cap) if cap else notifier.timeout


def _batch(tried: int, seconds: float, window: float) -> int:
    """How many deliveries to claim next: as many as the last batch's pace (``tried`` in
    ``seconds``) gets through in ``window`` seconds, at least one, at most :data:`BATCH`."""
    return max(1, min(BATCH, int(window * tried / max(seconds, 1e-6))))


def _outcome(notifier: Notifier | None, delivery: Delivery, error: str) -> Outcome:
    """What an attempt that failed with ``error`` (empty: it delivered) makes of
    ``delivery``: delivered, pending again after the backoff, or dead."""
    if not error:
        return Outcome(delivery, "delivered", delivery.due)
    attempts = delivery.attempts + 1
    dead = notifier is None or attempts >= notifier.attempts
    delay = backoff(notifier, attempts) if notifier is not None else 0.0
    return Outcome(delivery, "dead" if dead else "pending", time.time() + delay, error)


def _logged(outcome: Outcome, held: bool) -> str:
    """Log the recorded ``outcome``; :returns: its count's name (``lost``: the claim had
    lost the delivery, its lease ran out and another claim took it: that one's outcome
    stands)."""
    delivery = outcome.delivery
    if not held:
        NOTIFY.warning(
            "%s '%s' to %s: the lease ran out during the attempt and another worker holds it: its outcome stands",
            delivery.event,
            delivery.record,
            delivery.notifier,
        )
        return "lost"
    if outcome.state == "delivered":
        NOTIFY.log(logs.EXTINFO, "delivered %s '%s' to %s", delivery.event, delivery.record, delivery.notifier)
        return "delivered"
    dead = outcome.state == "dead"
    NOTIFY.warning(
        "%s '%s' to %s: attempt %d failed: %s (%s)",
        delivery.event,
        delivery.record,
        delivery.notifier,
        delivery.attempts + 1,
        outcome.error,
        "dead letter" if dead else "will retry",
    )
    return "dead" if dead else "retried"


def backoff(notifier: Notifier, attempts: int) -> float:
    """Seconds to wait after ``attempts`` failed attempts: ``backoff`` doubled per failure
    after the first, at most ``max_backoff``, drawn between its half and itself (see the
    module docstring)."""
    import random

    delay = min(notifier.backoff * 2.0 ** min(attempts - 1, 64), notifier.max_backoff)  # (2.0 ** 1100 overflows)
    return random.uniform(delay / 2, delay)
