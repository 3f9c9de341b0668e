"""The handler protocols, one small module each (after pre-commit's ``languages/``). Pure,
but for :func:`.observer.invoke`, which calls the observer.

=================  =====================================================================
module             handlers
=================  =====================================================================
:mod:`.cgi`        ``type="cgi"`` in ``etc/xml/`` (generation 5)
:mod:`.xml`        ``type="xml"`` in ``etc/xml/`` (generation 5)
:mod:`.old`        either type in the old generation's ``etc/<mgr>_mod_*.xml`` (4)
:mod:`.observer`   Python observers registered in-process (:mod:`mgrhooks.observers`)
=================  =====================================================================

A program's protocol (:class:`Spawned`) turns a handler's turn, the call and the document
into a :class:`~mgrhooks.runner.RunRequest`, and the run's outcome into a
:class:`~mgrhooks.step.StepResult`; an observer's (:class:`InProcess`) calls it instead of a
program. :func:`adapter` is the one place that tells which protocol a handler speaks.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import NamedTuple

from ..document import Document
from ..model import Handler, HandlerType, Request
from ..step import StepResult
from . import cgi, observer, old, xml
from .base import Call, RunOutcome, RunRequest, Turn, final, refused, turn
from .observer import Answer, Callback

__all__ = [
    "Call",
    "InProcess",
    "Spawned",
    "StepResult",
    "Turn",
    "adapter",
    "final",
    "reads_document",
    "refused",
    "turn",
]


class Spawned(NamedTuple):
    """The protocol of handlers that run as programs."""

    #: (turn, program's absolute path, call, document) → what to start
    request: Callable[[Turn, str, Call, Document], RunRequest]
    #: (turn, call, what the run did, the document it was given) → the step's result
    result: Callable[[Turn, Call, RunOutcome, Document], StepResult]


class InProcess(NamedTuple):
    """The protocol of handlers called in this process (Python observers)."""

    #: (the callable, request, document) → what it did (the document handed out for change)
    invoke: Callable[[Callback | None, Request, Document], Answer]
    #: (turn, call, what it did, the document it was given) → the step's result
    result: Callable[[Turn, Call, Answer, Document], StepResult]


CGI = Spawned(cgi.request, cgi.result)
XML = Spawned(xml.request, xml.result)
OLD = Spawned(old.request, old.result)
OBSERVER = InProcess(observer.invoke, observer.result)
_BY_TYPE: dict[HandlerType, Spawned | InProcess] = {
    HandlerType.CGI: CGI,
    HandlerType.XML: XML,
    HandlerType.PYTHON: OBSERVER,
}


def reads_document(handler: Handler) -> bool:
    """Whether ``handler``'s program gets the document's own bytes (:meth:`Document.data
    <mgrhooks.document.Document.data>`) on stdin: an xml handler's of the new generation
    (the old one's gets the old shape, other bytes)."""
    return adapter(handler) is XML


def adapter(handler: Handler) -> Spawned | InProcess:
    """The protocol ``handler`` speaks: the old generation's for ``etc/<mgr>_mod_*.xml``
    files (``generation`` 4), else by its ``type``."""
    return OLD if handler.generation == 4 else _BY_TYPE[handler.type]
