"""Event records: what a call that changed something tells the world afterwards. Pure.

After the model of RFC 5423 event notifications (Cyrus) and Dovecot's push notifications:
one JSON record per change, made only when the call succeeded (never for a call a
handler stopped, or that failed), then spooled and delivered (see :mod:`mgrhooks.spool`
and :mod:`mgrhooks.delivery`).

A call is a *change* by COREmanager's naming (our reading): lists are named after the
object (``user``) and operations ``object.verb`` (``user.add``, ``user.delete``); a call
is a change when its function has a verb, except a form (``.add``/``.edit``) that is only
shown (no ``sok``) and a list of sub-objects (``domain.record``, a zone's records). Record shape::

    {"id": "<hex>", "event": "user.add", "timestamp": "2026-11-21T09:40:06.123Z",
     "service": "billmgr", "user": "root", "level": 30, "call": "<call id>",
     "objects": [{"type": "user", "id": "alice", "seq": 1}],
     "params": {"name": "alice", "passwd": "***", "sok": "ok"},
     "result": {"status": "ok", "id": "alice"},
     "handlers": [{"name": "samba.pl", "stage": "after", "ms": 21.4, "status": "ok"}],
     "recovered": false}

``objects`` are what the change touched (:func:`objects`), each with its per-object
sequence number (1 for an object's first change; receivers order an object's records by
it). ``result.status`` is how the call ended: ``ok``, ``error`` (an after-handler failed
after the change was made; ``result.error`` is the error's type), or ``unknown`` in a
record *recovered* from the outbox after its process died (``"recovered": true``; then
``handlers`` are those that had run by the change).
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .model import HandlerRun, Request
from .secret import masked
from .xmldoc import Element, find_error


def wanted(patterns: Sequence[str], func: str) -> bool:
    """Whether ``func`` matches one of a notifier's shell ``patterns`` (``user.*``)."""
    return any(fnmatch.fnmatchcase(func, pattern) for pattern in patterns)


def redact(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The parameters as a dict (a repeated key: its last value), values of keys that
    look secret (:func:`mgrhooks.secret.is_secret`: ``passwd``, ``confirm``, ``token``,
    ...) replaced by ``***``."""
    return dict(masked(params))


def objects(request: Request, doc: Element) -> list[str]:
    """What a change of ``request`` touched, as ``TYPE:ID`` keys of the sequences (our
    reading of COREmanager's naming): the type is the function without its verb (``user``
    for ``user.add``); the ids are the group ``elid`` (names joined by ``", "``), else the
    response's ``<id>`` (an object created), and the ``<id>`` too when it differs from a
    single ``elid`` (an object renamed). Empty when neither says."""
    kind = request.func.rpartition(".")[0]
    elid = request.get("elid")
    ids = list(dict.fromkeys(elid.split(", "))) if elid else []
    new = doc.findtext("id")
    if new and (not ids or (len(ids) == 1 and new != ids[0])):
        ids.append(new)
    return [f"{kind}:{name}" for name in ids if name]


def record(
    request: Request,
    service: str,
    doc: Element,
    handlers: Sequence[HandlerRun],
    record_id: str,
    now: datetime,
    numbered: Sequence[tuple[str, int]] = (),
    status: str = "ok",
) -> dict[str, Any]:
    """The event record of a committed change (see the module docstring for its shape),
    ready for ``json.dumps``.

    :param service: the product (``billmgr``)
    :param doc: the response; its ``<id>`` is the result's id (``null`` without one), its
        ``<error>``'s type the result's ``error``
    :param handlers: the handlers that ran, in order (``ms`` in milliseconds)
    :param record_id: the record's unique id (hex)
    :param now: when the change committed (a naive datetime is local time), written in UTC
        to the millisecond
    :param numbered: the objects (:func:`objects` keys) with their sequence numbers
    :param status: ``ok``, ``error``, or ``unknown`` for a record written to be recovered
        (``"recovered": true``)
    """
    stamp = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    result: dict[str, Any] = {"status": status, "id": doc.findtext("id")}
    error = find_error(doc)
    if status == "error" and error is not None:
        result["error"] = error.get("type") or error.get("code") or "error"
    return {
        "id": record_id,
        "event": request.func,
        "timestamp": stamp,
        "service": service,
        "user": request.user,
        "level": request.level,
        "call": request.call_id,
        "objects": [_numbered(key, seq) for key, seq in numbered],
        "params": redact(request.params),
        "result": result,
        "handlers": [run._asdict() for run in handlers],
        "recovered": status == "unknown",
    }


def _numbered(key: str, seq: int) -> dict[str, Any]:
    kind, _, name = key.partition(":")
    return {"type": kind, "id": name, "seq": seq}
