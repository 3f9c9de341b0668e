"""The old generation's protocol (ISPmanager 4 / BILLmanager 4 plugin files in
``etc/<mgr>_mod_*.xml``, either type; PROTOCOL §4). Pure.

In: the stage as ``argv[1]``; stdin the response document in the old shape (``user`` and
``level`` attributes, a ``<params>`` block: :func:`mgrhooks.shape.old_generation_input`),
or for a cgi handler with ``postdata="yes"`` the POST body as in :mod:`.cgi`. Out: as in
the new generation for the handler's type, once the old shape is taken out of the answer
(:func:`mgrhooks.shape.without_old_generation`); the printed bytes never stand for the
document (they held the old shape).
"""

from __future__ import annotations

from ..document import Document
from ..merge import apply
from ..model import HandlerType
from ..shape import old_generation_input, without_old_generation
from ..step import StepResult
from ..xmldoc import DocumentError, parse, serialise
from . import cgi
from .base import Call, RunOutcome, RunRequest, Turn, answered, failed, invalid, ran, run_request


def request(turn: Turn, program: str, call: Call, document: Document) -> RunRequest:
    """Run ``program STAGE`` with the old-shaped document (a copy) or the POST body on stdin."""

    def old_shape() -> bytes:
        return serialise(old_generation_input(document.tree(), call.request))

    if turn.handler.type is HandlerType.CGI:
        return run_request(turn, call, (program, turn.stage), *cgi.stdin(turn, call, old_shape))
    return run_request(turn, call, (program, turn.stage), old_shape())


def result(turn: Turn, call: Call, outcome: RunOutcome, document: Document) -> StepResult:
    """The handler's output, its old shape taken out, merged (cgi) or as the new document (xml)."""
    run = ran(turn, outcome)
    if not outcome.ok:
        return failed(turn, call, document, outcome.reason, run)
    if turn.handler.type is HandlerType.CGI:
        try:
            output = cgi.xml_body(outcome.stdout)
        except cgi.ResponseError as exc:
            return failed(turn, call, document, str(exc), run)
        return cgi.merge(turn, call, output, document, run, without_old_generation)
    try:
        tree = without_old_generation(parse(outcome.stdout))
    except DocumentError as exc:
        return failed(turn, call, document, invalid(exc), run)
    merged = apply(None, tree, HandlerType.XML)
    return answered(turn, merged, Document.of(merged.doc), run)
