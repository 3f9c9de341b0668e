"""The xml protocol (generation 5, ``type="xml"``; PROTOCOL §4, §5). Pure.

In: the response document on stdin (its bytes as the last xml handler printed them, when
nothing changed it since: :mod:`mgrhooks.document`). Out: the whole document, which
replaces the response. An answer that is byte for byte its input leaves the document as
it was; an answer :func:`~mgrhooks.xmldoc.checked` accepts is kept as text, no tree built
(the big-document path, docs/performance.md); anything else is parsed.
"""

from __future__ import annotations

from ..document import Document
from ..merge import apply
from ..model import HandlerType
from ..step import StepResult
from ..xmldoc import DocumentError, parse
from .base import Call, RunOutcome, RunRequest, Turn, answered, failed, invalid, ran, run_request


def request(turn: Turn, program: str, call: Call, document: Document) -> RunRequest:
    """Run ``program`` with the document's bytes on stdin (``postdata`` means nothing here)."""
    return run_request(turn, call, (program,), document.data())


def result(turn: Turn, call: Call, outcome: RunOutcome, document: Document) -> StepResult:
    """The handler's output as the new document (or a failure naming it)."""
    run = ran(turn, outcome)
    if not outcome.ok:
        return failed(turn, call, document, outcome.reason, run)
    output = outcome.stdout
    if output == outcome.request.stdin:  # stdin was the document's own bytes: it stays as it is
        return StepResult(document, run=run)
    try:
        kept = Document.printed(output)  # the usual xml handler: its text is the new document
        if kept is not None:
            return StepResult(kept, run=run)
        tree = parse(output)
    except DocumentError as exc:
        return failed(turn, call, document, invalid(exc), run)
    merged = apply(None, tree, HandlerType.XML)
    return answered(turn, merged, Document.parsed(merged.doc, output, intact=not merged.skipaction), run)
