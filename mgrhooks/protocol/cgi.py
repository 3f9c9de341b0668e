"""The cgi protocol (generation 5, ``type="cgi"``; PROTOCOL §4, §5). Pure.

In: the parameters in ``QUERY_STRING`` and ``PARAM_*``; stdin the response document, or
with ``postdata="yes"`` the parameters urlencoded as a POST body (``CONTENT_LENGTH``).
Out: an XML document merged into the response (:func:`mgrhooks.merge.apply`), after a
CGI header block if there is one, read as RFC 3875 §6.3 defines it (:func:`xml_body`: a
``Status`` other than 2xx fails the handler, an XML ``Content-Type``'s ``charset``
decodes the body); ``<doc/>``, the usual answer, changes nothing and the document's
bytes stay as they were.
"""

from __future__ import annotations

import re
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
    try:
        output = xml_body(outcome.stdout)
    except ResponseError as exc:
        return failed(turn, call, document, str(exc), run)
    return merge(turn, call, output, document, run)


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


#: a header line of a CGI response: a field name (an HTTP token), then a colon (compiled
#: at first use and kept by re, as _DECLARED: most answers have no header block)
_FIELD = rb"[!#$%&'*+.^_`|~0-9A-Za-z-]+:"
#: the encoding an XML declaration names, replaced once the body is UTF-8
_DECLARED = rb"""\A(\s*<\?xml\s[^>]*?\bencoding\s*=\s*)(["'])[^"']*\2"""


class ResponseError(ValueError):
    """A CGI response that holds no document for the call: ``str()`` is the handler's
    failure reason."""


def xml_body(output: bytes) -> bytes:
    """The XML document in a cgi handler's ``output`` (RFC 3875 §6.3).

    The protocol wants bare XML, but scripts written with stock CGI libraries often print
    a header block first (header lines, then an empty line); the panel's users expect
    them to work (our choice). When there is one, it is read as CGI defines it (the
    standard library's :mod:`email` parser reads the lines):

    * a ``Status`` other than 2xx is the handler saying it failed, as is a ``Location``
      without one (a redirect: no document);
    * the ``charset`` of an XML ``Content-Type`` (``text/xml``, ``application/xml``,
      ``*+xml``) is the body's (RFC 7303: it overrides an XML declaration): the body is
      decoded from it and given back as UTF-8, its declaration saying so. Another media
      type's ``charset`` says nothing about an XML body and is left alone (CGI.pm's
      ``header()`` sends ``text/html; charset=ISO-8859-1`` whatever the script prints).

    :returns: the body (``output`` itself when it has no header block)
    :raises ResponseError: the reason naming the status line, the ``Location``, an
        unknown charset, or the first byte not in the charset
    """
    split = _header_block(output)
    if split is None:
        return output
    from email.parser import BytesHeaderParser

    headers = BytesHeaderParser().parsebytes(split[0])
    status, location = headers.get("Status"), headers.get("Location")
    if status is not None:
        code, _, rest = status.strip().partition(" ")
        if not (len(code) == 3 and code.isdigit()):
            raise ResponseError(f'an invalid CGI header line "Status: {status}"')
        if code[0] != "2":
            raise ResponseError(f'answered "Status: {status}"')
    elif location is not None:
        raise ResponseError(f'answered a redirect "Location: {location}", not a document')
    return _decoded(split[1], headers.get_content_type(), headers.get_content_charset())


def _header_block(output: bytes) -> tuple[bytes, bytes] | None:
    """``(header lines, body)`` when ``output`` starts with a CGI header block, else
    ``None`` (bare XML, or text that is not a header block: parsing it says what is wrong).
    Reads no further than the block's end (a 100 MB body is not split into lines)."""
    if output[:1] in (b"<", b"") or output[:1].isspace():
        return None
    start = 0
    while True:
        end = output.find(b"\n", start)
        if end < 0:
            return None
        line = output[start:end].rstrip(b"\r")
        if not line:
            return output[:start], output[end + 1 :]
        if not (re.match(_FIELD, line) or (start > 0 and line[:1] in (b" ", b"\t"))):  # (or a folded line)
            return None
        start = end + 1


def _decoded(body: bytes, media_type: str, charset: str | None) -> bytes:
    """``body`` in UTF-8, from the ``charset`` of an XML ``media_type`` (see :func:`xml_body`)."""
    xml = media_type in ("text/xml", "application/xml") or media_type.endswith("+xml")
    if charset is None or not xml or charset in ("utf-8", "utf8"):
        return body
    try:
        text = body.decode(charset)
    except LookupError:  # (also a codec that is not a text encoding: base64, rot13)
        raise ResponseError(f'an unknown charset "{charset}" in its Content-Type') from None
    except UnicodeDecodeError as exc:
        raise ResponseError(f"a body that is not {charset} as its Content-Type says (byte {exc.start})") from None
    return re.sub(_DECLARED, lambda found: found.group(1) + b'"UTF-8"', text.encode("utf-8"), count=1)
