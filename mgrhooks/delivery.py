"""Event records of calls: spooling them, and delivering them (the drivers and one pass
of the worker). I/O.

:class:`Notifications` follows a call through its monitor (:mod:`mgrhooks.monitor`): it
collects the handlers' run records and, when the call committed a change that notifiers
want, spools its record and delivers it inline at the start of the final stage (after
the response is out) within :data:`INLINE_TIMEOUT`; the worker does the rest.

Drivers (``driver =`` in a ``[notify.NAME]`` section):

* ``log``: appends the record as one JSON line to ``path`` (relative to the root; default
  ``var/<mgr>.events.jsonl``), like Dovecot's debug-log driver.
* ``http``: POSTs the record (``application/json``) to ``url`` with ``timeout``, HTTP basic
  authentication when ``user`` is set, and the headers ``X-Mgrhooks-Event`` and
  ``X-Mgrhooks-Id`` (the record id: receivers use it to drop duplicates, as delivery is at
  least once). Any 2xx status is success.
* ``script``: runs ``program`` from ``addon/`` (vetted as handler programs are) with the
  record on stdin; exit status 0 is success.

A failed attempt is tried again after ``backoff`` seconds, doubled after each failure up
to a day (:data:`~mgrhooks.settings.MAX_SECONDS`; our choice); after ``attempts``
attempts the delivery goes to the dead letters (``mgrhooks queue``).
"""

from __future__ import annotations

import base64
import os
import time
from typing import TYPE_CHECKING, NamedTuple

from . import logs
from .monitor import Later, Monitor, StepEnd
from .root import Root
from .settings import MAX_SECONDS, Notifier
from .spool import Delivery, Spool

if TYPE_CHECKING:
    from .document import Document
    from .model import HandlerRun, Request

#: seconds an inline attempt, made right after the call, may take
INLINE_TIMEOUT = 1.0
#: seconds a claimed delivery stays reserved beyond its notifier's timeout; a worker
#: killed mid-attempt delays that delivery by this much, no more
LEASE_MARGIN = 5.0
NOTIFY = logs.Channel("notify")


class Pass(NamedTuple):
    """What one pass of the worker did: how many deliveries it delivered, left to be
    tried again, and moved to the dead letters."""

    delivered: int = 0
    retried: int = 0
    dead: int = 0


def spool_of(root: Root) -> Spool:
    """The spool of ``root``: ``var/<mgr>.spool.db`` (not created until a record is added)."""
    return Spool(root.var_dir / f"{root.mgr}.spool.db")


class Notifications(Monitor):
    """The event notifications of one call (a monitor subscriber, made per call).

    :param notifiers: the root's notifiers (``[notify.NAME]`` sections); each gets the
        record of a call whose function matches its ``events``
    """

    def __init__(self, root: Root, notifiers: tuple[Notifier, ...]) -> None:
        self.root = root
        self.notifiers = notifiers
        self.runs: list[HandlerRun] = []

    def after(self, end: StepEnd) -> None:
        """Keep the run record of a handler that ran (for the event record)."""
        if end.result.run is not None:
            self.runs.append(end.result.run)

    def committed(self, request: Request, document: Document) -> Later | None:
        """Spool the record of a successful change (:mod:`mgrhooks.notify`) for the
        notifiers that want it. A spool that fails is logged (the record is lost: the
        call has committed, it does not fail). :returns: the inline delivery, or ``None``"""
        from .notify import is_change, record, wanted

        if document.has_error() or not is_change(request):
            return None
        names = [n.name for n in self.notifiers if wanted(n.events, request.func)]
        if not names:
            return None
        import json
        from datetime import UTC, datetime

        record_id = os.urandom(16).hex()
        body = record(request, self.root.mgr, document.tree(), self.runs, record_id, datetime.now(UTC))
        try:
            spool_of(self.root).add(record_id, request.func, json.dumps(body), names, time.time())
        except Exception as exc:  # noqa: BLE001 (the call has committed: report, do not fail it)
            logs.ACTION.error("event record of '%s' could not be spooled, so it is lost: %s", request.func, exc)
            return None

        def deliver() -> None:  # inline, when quick; the worker does the rest
            work(self.root, self.notifiers, only=record_id, cap=INLINE_TIMEOUT)

        return deliver


def work(root: Root, notifiers: tuple[Notifier, ...], only: str | None = None, cap: float | None = None) -> Pass:
    """Try every due delivery once (those of record ``only``, inline after a call), and
    settle each: delivered, tried again after its notifier's backoff (doubled per failed
    attempt), or dead after its ``attempts``. A delivery whose notifier is no longer in
    ``notifiers`` goes dead at once. Outcomes are logged (module ``notify``).

    :param notifiers: the ``[notify.NAME]`` sections of ``etc/mgrhooks.conf``
    :param cap: the longest an attempt may take, in seconds (inline: :data:`INLINE_TIMEOUT`)
    :raises RootError: the spool's database cannot be used
    """
    by_name = {n.name: n for n in notifiers}
    spool = spool_of(root)
    longest = max((n.timeout for n in notifiers), default=1.0)
    counts = {"delivered": 0, "retried": 0, "dead": 0}
    for delivery in spool.claim(time.time(), lease=longest + LEASE_MARGIN, only=only):
        notifier = by_name.get(delivery.notifier)
        error = "no such notifier in etc/mgrhooks.conf" if notifier is None else None
        if notifier is not None:
            timeout = min(notifier.timeout, cap) if cap else notifier.timeout
            error = attempt(root, notifier, delivery, timeout)
        counts[_settle(spool, notifier, delivery, error)] += 1
    return Pass(**counts)


def _settle(spool: Spool, notifier: Notifier | None, delivery: Delivery, error: str | None) -> str:
    if error is None:
        spool.delivered(delivery)
        NOTIFY.log(logs.EXTINFO, "delivered %s '%s' to %s", delivery.event, delivery.record, delivery.notifier)
        return "delivered"
    attempts = delivery.attempts + 1
    dead = notifier is None or attempts >= notifier.attempts
    backoff = notifier.backoff if notifier is not None else 0.0
    delay = min(backoff * 2.0 ** min(attempts - 1, 64), MAX_SECONDS)  # (2.0 ** 1100 overflows)
    spool.failed(delivery, error, time.time() + delay, dead)
    outcome = "dead letter" if dead else "will retry"
    NOTIFY.warning(
        "%s '%s' to %s: attempt %d failed: %s (%s)",
        delivery.event,
        delivery.record,
        delivery.notifier,
        attempts,
        error,
        outcome,
    )
    return "dead" if dead else "retried"


def attempt(root: Root, notifier: Notifier, delivery: Delivery, timeout: float) -> str | None:
    """Try to deliver ``delivery.body`` once through ``notifier``'s driver (see the module
    docstring), for at most ``timeout`` seconds (the http and script drivers; the log
    driver writes one line and does not wait).

    :returns: ``None`` on success, else why not as one line (``HTTP 500 from URL``,
        ``cannot reach URL: ...``, ``cannot write PATH: ...``, the script's failure);
        a failing driver is returned, never raised
    """
    if notifier.driver == "log":
        return _to_log(root, notifier, delivery)
    if notifier.driver == "http":
        return _to_http(notifier, delivery, timeout)
    return _to_script(root, notifier, delivery, timeout)


def _to_log(root: Root, notifier: Notifier, delivery: Delivery) -> str | None:
    path = root.path / (notifier.path or f"var/{root.mgr}.events.jsonl")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(descriptor, delivery.body.encode() + b"\n")  # one write: lines never interleave
        finally:
            os.close(descriptor)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    return None


def _to_http(notifier: Notifier, delivery: Delivery, timeout: float) -> str | None:
    import urllib.error
    import urllib.request

    headers = {
        "Content-Type": "application/json",
        "X-Mgrhooks-Event": delivery.event,
        "X-Mgrhooks-Id": delivery.record,
    }
    if notifier.user:
        token = base64.b64encode(f"{notifier.user}:{notifier.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    request = urllib.request.Request(notifier.url, data=delivery.body.encode(), headers=headers, method="POST")
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            status = int(response.status)
    except urllib.error.HTTPError as exc:
        return f"HTTP {exc.code} from {notifier.url}"
    except (urllib.error.URLError, OSError) as exc:
        reason = getattr(exc, "reason", exc)
        return f"cannot reach {notifier.url}: {reason}"
    return None if 200 <= status < 300 else f"HTTP {status} from {notifier.url}"


def _to_script(root: Root, notifier: Notifier, delivery: Delivery, timeout: float) -> str | None:
    from .env import DEFAULT_PATH
    from .process import Processes
    from .process.runner import RunRequest
    from .programs import inspect

    program = inspect(root.addon_dir, notifier.program)
    if program.path is None:
        return "; ".join(program.errors)
    env = {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "MGR": root.mgr,
        "MGRHOOKS_ROOT": str(root.path),
        "MGRHOOKS_EVENT": delivery.event,
        "MGRHOOKS_EVENT_ID": delivery.record,
    }
    request = RunRequest((str(program.path),), str(root.path), env, delivery.body.encode(), timeout)
    with Processes(guard=False) as processes:
        outcome = processes.run(request)
    return None if outcome.ok else f"{program.shown}: {outcome.reason}"
