"""In-process Python observers as handlers (:mod:`mgrhooks.observers`).

An observer is called as ``callback(request, doc)`` with the response as a tree; it may
change it in place, return a new ``<doc>`` (or ``None``), or raise
:class:`~mgrhooks.errors.PanelError` to answer that typed error. Its answer is taken as
an xml handler's: an ``<error>`` stops the call, ``<skipaction/>`` counts in the before
stage. Anything else it raises, or returns, is a handler failure naming it.

:func:`invoke` runs the callback (the in-process counterpart of starting a program);
:func:`result` is pure.
"""

from __future__ import annotations

import time
from collections.abc import Callable
from typing import Any, NamedTuple

from ..document import Document
from ..errors import PanelError
from ..merge import apply
from ..model import HandlerRun, HandlerType, Request, RunStatus, Stage
from ..step import StepResult, panel_error
from ..xmldoc import Element
from .base import Call, Turn, failed

Callback = Callable[[Request, Element], Any]


class Answer(NamedTuple):
    """What an observer did: returned ``value``, or raised ``error``; in ``seconds``."""

    value: object
    error: Exception | None
    seconds: float


def invoke(callback: Callback | None, request: Request, document: Document) -> Answer:
    """Call ``callback(request, tree)`` with the document's tree, handed out for change
    (:meth:`~mgrhooks.document.Document.edit`). ``None`` (unregistered meanwhile) answers
    ``None``. Never raises but what is not an ``Exception`` (``KeyboardInterrupt``)."""
    tree = document.edit()
    started = time.monotonic()
    try:
        value = callback(request, tree) if callback is not None else None
    except Exception as exc:  # noqa: BLE001 (an observer's failure is a handler's failure)
        return Answer(None, exc, time.monotonic() - started)
    return Answer(value, None, time.monotonic() - started)


def result(turn: Turn, call: Call, answer: Answer, document: Document) -> StepResult:
    """The observer's answer applied to ``document`` (the one :func:`invoke` handed out)."""
    error = answer.error
    if isinstance(error, PanelError):
        return panel_error(call.request, error, _ran(turn, answer, RunStatus.ERROR))
    if error is not None:
        reason = f"raised {type(error).__name__}: {error}"
        return failed(turn, call, document, reason, _ran(turn, answer, RunStatus.EXCEPTION))
    run = _ran(turn, answer, RunStatus.OK)
    value = answer.value
    if value is None:
        value = document.edit()
    elif not (isinstance(value, Element) and value.tag == "doc"):
        return failed(turn, call, document, f"returned {type(value).__name__}, not a <doc> or None", run)
    merged = apply(None, value, HandlerType.XML)
    return StepResult(Document.of(merged.doc), merged.error, merged.skipaction and turn.stage == Stage.BEFORE, run)


def _ran(turn: Turn, answer: Answer, status: RunStatus) -> HandlerRun:
    return HandlerRun(turn.handler.name, turn.stage, round(answer.seconds * 1000, 1), status)
