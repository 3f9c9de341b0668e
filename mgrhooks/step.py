"""What one step of a call came to: the response after it, whether the call stops, the
handler's run record, and what the panel log says about it. Pure.

Made by the handler protocols (:mod:`mgrhooks.protocol`) and by the walk for the core's
own steps (:mod:`mgrhooks.dispatch`); read by the walk (stop or go on) and by the
monitor's subscribers (:mod:`mgrhooks.monitor`: the panel log, event records).
"""

from typing import NamedTuple

from .document import Document
from .errors import PanelError
from .logs import INFO
from .model import HandlerRun, Request
from .xmldoc import error_doc

#: the panel log modules a note goes to (:mod:`mgrhooks.logs`)
ACTION, EXTERNAL = "action", "external"


class Note(NamedTuple):
    """A line for the panel log: its module (:data:`ACTION`, :data:`EXTERNAL`), level
    (the numbers of :mod:`mgrhooks.logs`) and text."""

    module: str
    level: int
    text: str


class StepResult(NamedTuple):
    """What one step of a call came to (frozen).

    :param document: the response document after the step
    :param stop: the call stops here (an ``<error>`` answered, or a handler failed)
    :param skip: a before-handler answered ``<skipaction/>``: the main logic and the
        after-handlers do not run
    :param run: the handler's part in the call, for event records (``None``: no handler
        started, or the step ran none)
    :param notes: what the panel log says about the step's answer, in order
    """

    document: Document
    stop: bool = False
    skip: bool = False
    run: HandlerRun | None = None
    notes: tuple[Note, ...] = ()


def panel_error(request: Request, exc: PanelError, run: HandlerRun | None = None) -> StepResult:
    """A typed error raised by the core or an observer (PROTOCOL §5): the call stops with
    it as the response (``<error type= object= value=>``), logged at INFO in ``action``."""
    document = Document.of(error_doc(request.func, exc.type, exc.object, exc.value, exc.msg))
    return StepResult(document, stop=True, run=run, notes=(Note(ACTION, INFO, f"'{request.func}' failed: {exc.msg}"),))
