"""What the handler protocols share: the call they run in, a handler's turn, and the
answers every protocol gives alike (failures, refusals, final handlers' ends). Pure.

A failure names its handler, stage, function and declaration, as the panel's log does
(PROTOCOL §5): ``Handler 'x.sh' (after user.add, etc/xml/billmgr_mod_x.xml:3) failed:
exit status 1``. With ``ignore_errors="yes"`` it is only logged and the document stays
as it was; else the call stops with that message as a ``type="handler"`` error.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import NamedTuple

from ..document import Document
from ..env import stage_environment
from ..logs import ERROR, INFO, WARNING
from ..merge import Merged
from ..model import EMPTY, ActionStep, Handler, HandlerRun, HandlerStep, Request, RunStatus, Stage
from ..process.runner import RunOutcome, RunRequest  # the one place the protocols import the runner's records from
from ..settings import Settings
from ..step import EXTERNAL, Note, StepResult
from ..xmldoc import DocumentError, error_doc

__all__ = [
    "Call",
    "RunOutcome",
    "RunRequest",
    "Turn",
    "answered",
    "failed",
    "final",
    "invalid",
    "ran",
    "refused",
    "run_request",
    "turn",
]


class Call(NamedTuple):
    """What every handler of one call shares.

    :param request: the call
    :param cwd: the handlers' working directory (the root)
    :param settings: the root's limits for handler runs (seconds, bytes)
    :param timeout: seconds every handler of this call may run (``--timeout``), or ``None``
        for each handler's own ``timeout=``, else the settings'
    :param environment: the variables every handler of the call gets
        (:func:`mgrhooks.env.call_environment`; empty until a program is to start)
    """

    request: Request
    cwd: str
    settings: Settings
    timeout: float | None = None
    environment: Mapping[str, str] = EMPTY


class Turn(NamedTuple):
    """One handler in its place in the plan.

    :param stage: ``before``, ``after``, ``final``, or ``action`` for an addon's ``<func>``
        (``HANDLER_STAGE`` and ``EVENT_TYPE``; the old generation's ``argv[1]``)
    :param postdata: ``postdata="yes"``: a cgi handler gets the parameters on stdin
    :param why: where it was registered (``file:line``), for the run's description
    """

    handler: Handler
    stage: str
    postdata: bool = False
    why: str = ""


def run_request(
    turn: Turn, call: Call, argv: tuple[str, ...], stdin: bytes, post_length: int | None = None
) -> RunRequest:
    """What to start for ``turn``: ``argv`` (``argv[0]`` the program's absolute path) with
    ``stdin``, in the root, with the call's environment and this stage's variables
    (PROTOCOL §4); the timeout (seconds) is the call's, else the handler's, else the root's.

    :param post_length: bytes of a POST body on stdin (cgi with ``postdata="yes"``), else ``None``
    """
    limits = call.settings
    return RunRequest(
        argv,
        call.cwd,
        stage_environment(call.environment, turn.stage, post_length),
        stdin,
        call.timeout or turn.handler.timeout or limits.timeout,
        description=f"handler '{turn.handler.name}' ({turn.stage} {call.request.func}, {turn.why})",
        output_limit=limits.output_limit,
        kill_grace=limits.kill_grace,
        drain_grace=limits.drain_grace,
    )


def ran(turn: Turn, outcome: RunOutcome) -> HandlerRun:
    """The run record of a program that started (its time in milliseconds)."""
    status = RunStatus(outcome.failure) if outcome.failure else RunStatus.OK
    return HandlerRun(turn.handler.name, turn.stage, round(outcome.duration * 1000, 1), status)


def failed(turn: Turn, call: Call, document: Document, reason: str, run: HandlerRun | None = None) -> StepResult:
    """A handler that failed for ``reason``: the call stops with a ``type="handler"``
    error naming it, or, with ``ignore_errors="yes"``, goes on with ``document``."""
    handler = turn.handler
    message = f"Handler '{handler.name}' ({turn.stage} {call.request.func}, {handler.source}) failed: {reason}"
    if handler.ignore_errors:
        return StepResult(
            document, run=run, notes=(Note(EXTERNAL, WARNING, f'{message}; ignored (ignore_errors="yes")'),)
        )
    error = error_doc(call.request.func, "handler", handler.name, turn.stage, message)
    return StepResult(Document.of(error), stop=True, run=run, notes=(Note(EXTERNAL, ERROR, message),))


def refused(turn: Turn, call: Call, document: Document, reason: str) -> StepResult:
    """A handler whose program was not started (refused by :func:`mgrhooks.programs.inspect`,
    or its parameter files could not be written): ``reason`` is logged as a warning, then
    it fails as a run that failed would, with no run record."""
    result = _final(turn, document, reason) if turn.stage == Stage.FINAL else failed(turn, call, document, reason)
    return result._replace(notes=(Note(EXTERNAL, WARNING, reason), *result.notes))


def final(turn: Turn, outcome: RunOutcome, document: Document) -> StepResult:
    """A final-stage handler's end, whatever its protocol: its output is not read and the
    response stays as it is (PROTOCOL §3); a failure is only logged."""
    return _final(turn, document, outcome.reason if not outcome.ok else "", ran(turn, outcome))


def _final(turn: Turn, document: Document, reason: str, run: HandlerRun | None = None) -> StepResult:
    notes = (Note(EXTERNAL, WARNING, f"final handler '{turn.handler.name}' failed: {reason}"),) if reason else ()
    return StepResult(document, run=run, notes=notes)


def answered(turn: Turn, merged: Merged, document: Document, run: HandlerRun | None) -> StepResult:
    """A program's answer applied (``document`` is ``merged.doc``'s): an ``<error>`` in it
    stops the call; ``<skipaction/>`` counts in the before stage only."""
    notes = (Note(EXTERNAL, INFO, f"'{turn.handler.name}' ({turn.stage}) answered an error: the call stops"),)
    skip = merged.skipaction and turn.stage == Stage.BEFORE
    return StepResult(document, merged.error, skip, run, notes if merged.error else ())


def invalid(exc: DocumentError) -> str:
    """The reason for output that is not an acceptable document, with its line."""
    return f"invalid output: {exc.reason}" + (f" (line {exc.line})" if exc.line else "")


def turn(step: HandlerStep | ActionStep) -> Turn:
    """The turn of the handler a plan step runs: a registered handler's, or an addon's
    ``<func>`` (stage ``action``; ``ValueError`` for the core's own action, which runs no handler)."""
    if isinstance(step, HandlerStep):
        event = step.event
        return Turn(event.handler, event.stage.value, event.postdata, str(event.source))
    if step.func is None:
        raise ValueError(f"the core's action '{step.name}' runs no handler")
    return Turn(step.func.handler, "action", False, str(step.func.source))
