"""The cgi protocol (generation 5, ``type="cgi"``; PROTOCOL §4, §5). Pure.

In: the parameters in ``QUERY_STRING`` and ``PARAM_*``; stdin the response document, or
with ``postdata="yes"`` the parameters urlencoded as a POST body (``CONTENT_LENGTH``).
Out: an XML document merged into the response (:func:`mgrhooks.merge.apply`); a CGI
header block before it is dropped (our choice); ``<doc/>``, the usual answer, changes
nothing and the document's bytes stay as they were.
"""

from __future__ import annotations

from collections.abc import Callable

from ..document import Document
from ..env import query_string
from ..merge import apply, changes_nothing
from ..model import HandlerRun, HandlerType
from ..step import StepResult
from ..xmldoc import DocumentError, Element, is_empty_doc, parse
from .base import Call, RunOutcome, RunRequest, Turn, answered, failed, invalid, ran, run_request


def request(turn: Turn, program: str, call: Call, document: Document) -> RunRequest:
    """Run ``program`` with the document on stdin, or the POST body with ``postdata``."""
    return run_request(turn, call, (program,), *stdin(turn, call, document.data))


def stdin(turn: Turn, call: Call, document: Callable[[], bytes]) -> tuple[bytes, int | None]:
    """A cgi handler's stdin and POST length: the parameters urlencoded with
    ``postdata="yes"``, else ``document()`` (the response's bytes) and ``None``."""
    if turn.postdata:
        body = query_string(call.request).encode()
        return body, len(body)
    return document(), None


def result(turn: Turn, call: Call, outcome: RunOutcome, document: Document) -> StepResult:
    """The handler's output merged into ``document`` (or a failure naming it)."""
    run = ran(turn, outcome)
    if not outcome.ok:
        return failed(turn, call, document, outcome.reason, run)
    return merge(turn, call, without_headers(outcome.stdout), document, run)


def merge(
    turn: Turn,
    call: Call,
    output: bytes,
    document: Document,
    run: HandlerRun,
    reshape: Callable[[Element], Element] = lambda tree: tree,
) -> StepResult:
    """``output`` (a cgi answer without its headers) merged into ``document``; ``reshape``
    is applied to the parsed answer first (the old generation's input block taken out)."""
    if is_empty_doc(output):  # the usual answer: nothing to parse, nothing changes
        return StepResult(document, run=run)
    try:
        answer = reshape(parse(output))
    except DocumentError as exc:
        return failed(turn, call, document, invalid(exc), run)
    if changes_nothing(answer, HandlerType.CGI):  # the document (tree or text) and its bytes stay
        return StepResult(document, run=run)
    merged = apply(document.edit(), answer, HandlerType.CGI)
    return answered(turn, merged, Document.of(merged.doc), run)


def without_headers(output: bytes) -> bytes:
    """Drop a CGI header block (``Content-Type: ...`` then a blank line) before the XML.

    The protocol wants bare XML, but scripts written with stock CGI libraries often print
    a header first; the panel's users expect them to work (our choice).
    """
    head = output.lstrip()[:1]
    if head in (b"<", b""):
        return output
    for separator in (b"\r\n\r\n", b"\n\n"):
        header, found, body = output.partition(separator)
        if found and all(b":" in line for line in header.splitlines()):
            return body
    return output
