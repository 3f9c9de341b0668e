"""Event records: what a call that changed something tells the world afterwards. Pure.

After the model of RFC 5423 event notifications (Cyrus) and Dovecot's push notifications:
one JSON record per change, made only when the call succeeded (never for a call a
handler stopped, or that failed), then spooled and delivered (see :mod:`mgrhooks.spool`
and :mod:`mgrhooks.delivery`).

A call is a *change* by COREmanager's naming (our reading): lists are named after the
object (``user``) and operations ``object.verb`` (``user.add``, ``user.delete``); a call
is a change when its function has a verb, except a form (``.add``/``.edit``) that is only
shown (no ``sok``). Record shape::

    {"id": "<hex>", "event": "user.add", "timestamp": "2026-11-21T09:40:06.123Z",
     "service": "billmgr", "user": "root", "level": 30, "call": "<call id>",
     "params": {"name": "alice", "passwd": "***", "sok": "ok"},
     "result": {"status": "ok", "id": "alice"},
     "handlers": [{"name": "samba.pl", "stage": "after", "ms": 21.4, "status": "ok"}]}
"""

from __future__ import annotations

import fnmatch
from collections.abc import Sequence
from datetime import UTC, datetime
from typing import Any

from .model import HandlerRun, Request
from .secret import masked
from .xmldoc import Element

_FORMS = (".add", ".edit")


def is_change(request: Request) -> bool:
    """Whether a successful call of ``request`` changed something (see the module docstring)."""
    if "." not in request.func:
        return False
    return not (request.func.endswith(_FORMS) and not request.get("sok"))


def wanted(patterns: Sequence[str], func: str) -> bool:
    """Whether ``func`` matches one of a notifier's shell ``patterns`` (``user.*``)."""
    return any(fnmatch.fnmatchcase(func, pattern) for pattern in patterns)


def redact(params: Sequence[tuple[str, str]]) -> dict[str, str]:
    """The parameters as a dict (a repeated key: its last value), values of keys that
    look secret (:func:`mgrhooks.secret.is_secret`: ``passwd``, ``confirm``, ``token``,
    ...) replaced by ``***``."""
    return dict(masked(params))


def record(
    request: Request, service: str, doc: Element, handlers: Sequence[HandlerRun], record_id: str, now: datetime
) -> dict[str, Any]:
    """The event record of a successful change (see the module docstring for its shape),
    ready for ``json.dumps``.

    :param service: the product (``billmgr``)
    :param doc: the response; its ``<id>`` is the result's id (``null`` without one)
    :param handlers: the handlers that ran, in order (``ms`` in milliseconds)
    :param record_id: the record's unique id (hex)
    :param now: when the call committed (a naive datetime is local time), written in UTC
        to the millisecond
    """
    stamp = now.astimezone(UTC).isoformat(timespec="milliseconds").replace("+00:00", "Z")
    return {
        "id": record_id,
        "event": request.func,
        "timestamp": stamp,
        "service": service,
        "user": request.user,
        "level": request.level,
        "call": request.call_id,
        "params": redact(request.params),
        "result": {"status": "ok", "id": doc.findtext("id")},
        "handlers": [run._asdict() for run in handlers],
    }
