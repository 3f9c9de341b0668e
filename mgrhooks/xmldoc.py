"""The XML response document: safe parsing, serialising, typed errors. Pure.

Every document mgrhooks reads (plugin descriptions, handler output) goes through one
hardened lxml parser: no entity expansion, no DTD loading, no network, libxml2's default
size and depth limits (256 levels). A document that declares a DTD is refused outright,
so entity bombs and external entities are never expanded nor fetched.
"""

from __future__ import annotations

import contextlib
import functools
import re
import threading
from collections.abc import Callable
from typing import Any, NamedTuple, TypeVar, cast

from lxml import etree

Element = etree._Element
#: XML's white space (the S of XML 1.0; not \s, which also takes \v and \f)
_S = rb"[ \t\r\n]*"
#: what XML 1.0 cannot hold
_NOT_XML = "[^\t\n\r\x20-\ud7ff\ue000-\ufffd\U00010000-\U0010ffff]"


@functools.cache
def _pattern(source: str | bytes) -> re.Pattern[Any]:
    """Compiled on first use: these patterns take milliseconds to compile."""
    return re.compile(source, re.S)


_T = TypeVar("_T")

#: the declaration every serialised document starts with, in the panel's own quoting
DECLARATION = b'<?xml version="1.0" encoding="UTF-8"?>\n'


class DocumentError(ValueError):
    """Bytes that are not an acceptable XML document; ``line`` is 1-based, 0 if unknown."""

    def __init__(self, reason: str, line: int = 0) -> None:
        super().__init__(reason)
        self.reason = reason
        self.line = line


def parser(remove_blank_text: bool = False) -> etree.XMLParser:
    """A new hardened parser (lxml parsers are not thread-safe, so one per use)."""
    return etree.XMLParser(
        remove_blank_text=remove_blank_text,
        resolve_entities=False,
        no_network=True,
        load_dtd=False,
        dtd_validation=False,
        huge_tree=False,
    )


_local = threading.local()


def _parser() -> etree.XMLParser:
    """This thread's hardened parser, made once (a new one costs more than parsing a
    small document; a parser must not be shared between threads)."""
    made: etree.XMLParser | None = getattr(_local, "parser", None)
    if made is None:
        made = _local.parser = parser()
    return made


def parse(data: bytes, root_tag: str | None = "doc") -> Element:
    """Parse ``data`` into an element, refusing DTDs and, if given, another root tag.

    :raises DocumentError: empty input, malformed XML, a DTD, or the wrong root element.
    """
    if not data or data.isspace():  # (strip() would copy a large document)
        raise DocumentError("empty output, expected an XML document")
    at = _doctype(data)
    if at >= 0:  # before parsing: whatever the DTD holds is never looked at
        raise DocumentError("a DTD (<!DOCTYPE>) is not allowed", data.count(b"\n", 0, at) + 1)
    try:
        tree = etree.fromstring(data, _parser())
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"invalid XML: {exc.msg}", exc.lineno or 0) from None
    if tree.getroottree().docinfo.doctype:
        raise DocumentError("a DTD (<!DOCTYPE>) is not allowed", 1)
    if root_tag is not None and tree.tag != root_tag:
        raise DocumentError(f"root element is <{str(tree.tag)}>, expected <{root_tag}>", tree.sourceline or 0)
    return tree


def _doctype(data: bytes) -> int:
    """Where a ``<!DOCTYPE`` stands in the prolog of ``data`` (after a BOM, white space,
    the declaration, comments and processing instructions), or -1.

    One scan from the start, each part ended by its first terminator as XML ends it
    (``?>``, ``-->``): time linear in the size of ``data`` whatever it holds (a regular
    expression did this before and backtracked exponentially over a run of processing
    instructions, minutes for 200 bytes). Text that is not a well-formed prolog stops the
    scan: the parser refuses such text anyway, and a DTD that gets past this scan is still
    refused once parsed (:func:`parse`).
    """
    if b"<!DOCTYPE" not in data:
        return -1
    space = _pattern(_S)
    at = 3 if data.startswith(b"\xef\xbb\xbf") else 0
    while True:
        at = cast(re.Match[bytes], space.match(data, at)).end()  # (a character class: linear)
        if data.startswith(b"<?", at):
            end = data.find(b"?>", at + 2)
        elif data.startswith(b"<!--", at):
            end = data.find(b"-->", at + 4)
        else:
            return at if data.startswith(b"<!DOCTYPE", at) else -1
        if end < 0:
            return -1
        at = data.find(b">", end) + 1


#: ``<doc/>`` or ``<doc></doc>``, nothing in it, alone or after a version 1.0, UTF-8 declaration
_EMPTY_DOC = (
    rb"(<\?xml version=([\"'])1\.0\2( encoding=([\"'])(?i:utf-8)\4)?"
    + _S
    + rb"\?>)?"
    + _S
    + rb"<doc"
    + _S
    + rb"(/>|>"
    + _S
    + rb"</doc"
    + _S
    + rb">)"
    + _S
)


def is_empty_doc(data: bytes) -> bool:
    """Whether ``data`` is a ``<doc>`` with no attribute and nothing in it, told from the
    bytes: ``<doc/>`` or ``<doc></doc>`` (whitespace around and inside), alone or after
    ``<?xml version="1.0"?>``, with ``encoding="UTF-8"`` or not. Such text always parses
    (:func:`parse`) to an empty ``<doc>``; ``False`` says nothing either way (parse it).

    The usual answer of a cgi handler that has nothing to add; recognising it without a
    parser saves most of what mgrhooks spends on such a handler (docs/performance.md).
    """
    return len(data) <= 128 and _pattern(_EMPTY_DOC).fullmatch(data) is not None


def checked(data: bytes) -> bool:
    """Whether ``data`` may stand for its document as it is, without a tree.

    A tree of a 50,000-row list takes about nine times the text and three times as long
    to build as this check (our measure, docs/performance.md). ``True`` when ``data`` is
    in our serialised form (:func:`serialise`: the declaration, the ``<doc>`` root right
    after it, ``\n</doc>\n`` at its end), holds no DTD and neither ``<error`` nor
    ``<skipaction`` anywhere (so no such child), and libxml2 finds it well-formed with the
    hardened options of :func:`parser`, building nothing, and reports no error the full
    parse would refuse it for (a namespace prefix never declared, a name that is not a
    QName). ``False``: use :func:`parse`.

    :raises DocumentError: the text is not well-formed XML (with its line)
    """
    return _plain(data) and _well_formed(data, _Seen()) is not None


class Rows(NamedTuple):
    """A list document told apart without a tree (:func:`as_rows`): the ``<doc>``'s
    attributes, and its rows as text (from the first ``<elem>`` to the ``</doc>`` line)."""

    attrib: dict[str, str]
    rows: memoryview


#: the ``<doc>`` start tag right after the declaration, attribute by attribute (no ``<`` in
#: a value: XML allows none); linear, whatever follows it
_DOC_START = rb"<doc(?:" + _S[:-1] + rb"+[^ \t\r\n=/>]+" + _S + rb"=" + _S + rb"(?:\"[^\"<]*\"|'[^'<]*'))*" + _S + rb">"
_END = b"</doc>\n"


def as_rows(data: bytes, meanwhile: Callable[[Rows], object] | None = None) -> Rows | None:
    """``data`` as a list without building a tree, when it is one: in our serialised form
    (the declaration, ``<doc ...>`` right after it, ``\n</doc>\n`` at its end), every child
    of ``<doc>`` an ``<elem>`` with no namespace, one after another with a newline between
    them, no comment or processing instruction anywhere, and well-formed for libxml2
    (hardened options, no tree; no error the full parse would refuse it for). ``None``:
    parse it.

    How it is told without a Python call per element (a callback per element took three
    times the parser's own time): two byte counts, and libxml2 with a target that keeps
    nothing, in another thread meanwhile (:func:`_rows_only` says why the counts cannot be
    fooled once the text is well-formed). About an eighth of the CPU time the previous check
    took (docs/performance.md).

    :param meanwhile: called in this thread with the rows as counted, while libxml2 still
        checks them: the caller's work toward using them (the walk builds the listed
        document and gets its handlers ready). The check may still refuse them: nothing it
        makes of them may reach anyone unless they are returned. What it raises is raised,
        after the check ended.
    :raises DocumentError: the text is not well-formed XML (with its line)
    """
    if not (data.startswith(DECLARATION) and data.endswith(b"\n" + _END)):
        return None
    head = _pattern(_DOC_START).match(data, len(DECLARATION))
    if head is None or b"xmlns" in head.group():  # (a namespace could put <doc> or its rows in one)
        return None
    end = len(data) - len(_END)
    first = data.find(b"<", head.end(), end)  # the first row; none: an empty list
    if first >= 0 and not (data.startswith(b"<elem", first) and data.endswith(b"</elem>\n", first, end)):
        return None
    # libxml2 runs in another thread (lxml lets the GIL go, but for moments) while this one
    # counts: part of the counts' ~15 ms off the bench's "big document / ratio to that" row
    # (bench/run.py; docs/performance.md, "Big documents, fifth round")
    seen = _meanwhile(functools.partial(_well_formed, data, _Seen()))
    counted = first < 0 or _rows_only(data, first, end)
    rows = _counted_rows(head.group(), memoryview(data)[first if first >= 0 else end : end]) if counted else None
    if rows is not None and meanwhile is not None:
        _while_waiting(functools.partial(meanwhile, rows), seen)
    try:
        checked = seen()
    except DocumentError:
        if not counted:  # not a list: the parser reports what is wrong with it
            return None
        raise
    if rows is None or checked is None or checked.other:
        return None
    return rows


def _counted_rows(head: bytes, rows: memoryview) -> Rows | None:
    """The rows with the attributes of ``head``, the ``<doc ...>`` start tag; ``None`` when
    the tag does not parse (a repeated attribute: the check refuses the whole text then)."""
    try:
        return Rows(dict(parse(head + _END).attrib), rows)
    except DocumentError:
        return None


def _rows_only(data: bytes, first: int, end: int) -> bool:
    """Whether ``data[first:end]``, which starts with ``<elem`` and ends with ``</elem>\n``
    (the caller looked), is rows ``<elem ...>...</elem>`` one after another with a newline
    after each, no ``elem`` start or end tag in them but their own, no namespace
    declaration on a row: byte counts, C loops over the text.

    Why that is enough, for a document libxml2 then finds well-formed, with no comment or
    processing instruction (:func:`as_rows`), ``data[first]`` the first ``<`` after the
    ``<doc>`` start tag. The text is ``<elem`` X1 J X2 J ... Xn ``</elem>\n``, J being
    ``</elem>\n<elem``, with no ``<elem`` or ``</elem`` in any X. The first ``<elem`` is a
    tag (the first ``<`` of the content); so is the last ``</elem>`` (nothing after it could
    end a CDATA section; ``<`` stands in no attribute value). A CDATA section can neither
    start nor end inside a J (neither ``<![CDATA[`` nor ``]]>`` fits in it), so each J is
    all text of one, or both its tags are tags. So the ``elem`` tags are the first, the
    last, and both of some Js', in that order. After the first, the depth is 2 (``<doc>``'s
    child); what follows up to the next ``elem`` end tag holds no ``elem`` tag, so it cannot
    close that one (only ``</elem`` could), and it must leave it the innermost open element
    (the end tag must match it): it is balanced, inside the row. That end tag closes the
    row (so it was named ``elem``, not ``elemx``, and not self-closing); the J's newline is
    text between rows and its ``<elem`` starts the next one. So ``<doc>``'s children are
    the rows, and the text between them the newlines.
    """
    rows = data.count(b"</elem>\n<elem>", first, end) + 1  # rows with no attribute (the usual)
    if data.startswith(b"<elem>", first) and data.count(b"elem", first, end) == 2 * rows:
        return True  # every "elem" in the text is one of those rows' own: nothing else to count
    rows = data.count(b"</elem>\n<elem", first, end) + 1
    return (
        data.count(b"<elem", first, end) == rows
        and data.count(b"</elem", first, end) == rows
        and data.find(b"xmlns", first, end) < 0
    )


def _while_waiting(work: Callable[[], object], result: Callable[[], object]) -> None:
    """Run ``work`` here while another thread computes ``result``; when ``work`` raises,
    wait for that thread's end before raising it (no thread outlives the call)."""
    try:
        work()
    except BaseException:
        with contextlib.suppress(BaseException):  # (what the work raised is what the caller sees)
            result()
        raise


def _meanwhile(work: Callable[[], _T]) -> Callable[[], _T]:
    """Start ``work`` in another thread; return what waits for its end and gives its result
    (or raises what it raised). For C code that releases the GIL, as libxml2's parsing does
    (but for moments: work here that holds the GIL slows it), so that this thread does
    something else at the same time (our choice: on a 2-CPU machine, a 50,000-row list's
    byte counts took 15 of the ~50 ms its check took)."""
    outcome: list[tuple[bool, Any]] = []

    def run() -> None:
        try:
            outcome.append((True, work()))
        except BaseException as exc:  # (given to the waiting thread, which raises it)
            outcome.append((False, exc))

    thread = threading.Thread(target=run, name="mgrhooks-xml-check", daemon=True)
    thread.start()

    def result() -> _T:
        thread.join()
        done, value = outcome[0]
        if not done:
            raise value
        return cast(_T, value)

    return result


def _plain(data: bytes) -> bool:
    """In our serialised form (the declaration, the ``<doc>`` start tag right after it, with
    no namespace declaration, ``</doc>`` on the last line), with no DTD, ``<error`` or
    ``<skipaction`` anywhere in the text (one scan for the three)."""
    if not (data.startswith(DECLARATION) and data.endswith(b"\n" + _END)):
        return False
    head = _pattern(_DOC_START).match(data, len(DECLARATION))
    # (a namespace declared on <doc> puts it in one: not ours; declared anywhere else, it
    # puts no child of <doc> in one that is not ours either way)
    return head is not None and b"xmlns" not in head.group() and _pattern(_FLAGS).search(data) is None


#: what keeps a text from standing for its document (:func:`checked`)
_FLAGS = rb"<(?:!DOCTYPE|error|skipaction)"


class _Seen:
    """A parser target that keeps nothing but whether a comment or processing instruction
    was seen: libxml2 checks the text, no tree is built, no Python call per element."""

    def __init__(self) -> None:
        self.other = False

    def comment(self, text: str) -> None:
        self.other = True

    def pi(self, target: str, data: str | None = None) -> None:
        self.other = True

    def close(self) -> None:
        return None


def _well_formed(data: bytes, target: _Seen) -> _Seen | None:
    """Run libxml2 over ``data`` with the options of :func:`parser`, feeding ``target``
    (which builds no tree); return it, or ``None`` when libxml2 reported an error that is
    not fatal to it but is to the full parse (lxml refuses a tree with any error: an
    undeclared namespace prefix, a name that is not a QName). :raises DocumentError:"""
    checker = etree.XMLParser(
        target=cast(Any, target), resolve_entities=False, no_network=True, load_dtd=False, huge_tree=False
    )
    try:
        etree.fromstring(data, checker)
    except etree.XMLSyntaxError as exc:
        raise DocumentError(f"invalid XML: {exc.msg}", exc.lineno or 0) from None
    if any(entry.level >= etree.ErrorLevels.ERROR for entry in checker.error_log):
        return None
    return target


def new_doc(func: str, lang: str = "en", binary: str = "") -> Element:
    """An empty response document ``<doc func= lang= binary=>`` (COREmanager's attributes)."""
    doc = etree.Element("doc")
    doc.set("func", func)
    doc.set("lang", lang)
    if binary:
        doc.set("binary", binary)
    return doc


def xml_safe(text: str) -> str:
    """``text`` with every character XML 1.0 cannot hold (control characters, lone
    surrogates from undecodable bytes) replaced by U+FFFD."""
    if text.isascii() and text.isprintable():
        return text
    return str(_pattern(_NOT_XML).sub("\ufffd", text))


def add(parent: Element, tag: str, text: str | None = None, **attrs: str) -> Element:
    """Append ``<tag attrs>text</tag>`` to ``parent`` and return it (values made :func:`xml_safe`)."""
    child = etree.SubElement(parent, tag, {k: xml_safe(v) for k, v in attrs.items()})
    if text is not None:
        child.text = xml_safe(text)
    return child


def serialise(doc: Element) -> bytes:
    """The document as UTF-8 bytes with a declaration, ending in ``\\n</doc>\\n``.

    Never ``<doc/>``: addons insert text before ``</doc>`` with sed, so the closing tag
    always stands on a line of its own (PROTOCOL §4, Choice). Whitespace is adjusted on
    the document itself (the last child's tail, or the root's text).
    """
    children = list(doc)
    if children:
        last = children[-1]
        if not (last.tail or "").endswith("\n"):
            last.tail = (last.tail or "") + "\n"
    elif not (doc.text or "").endswith("\n"):
        doc.text = (doc.text or "") + "\n"
    body: bytes = etree.tostring(doc, encoding="UTF-8", xml_declaration=False)
    return DECLARATION + body + b"\n"


def error_doc(func: str, type: str, object: str, value: str, msg: str, **attrs: str) -> Element:  # noqa: A002
    """A typed COREmanager error document (PROTOCOL §5).

    Shape: ``<doc func=F><error type=T object=O value=V [attrs]><param name="object">O</param>
    <param name="value">V</param><msg>MSG</msg></error></doc>``.
    """
    doc = etree.Element("doc", func=func)  # the call's lang and binary are put back (shape.panel_attributes)
    err = add(doc, "error", type=type, object=object, value=value, **attrs)
    add(err, "param", object, name="object")
    add(err, "param", value, name="value")
    add(err, "msg", msg)
    return doc


def find_error(doc: Element) -> Element | None:
    """The first ``<error>`` child of the document (typed or numeric), or ``None``."""
    return doc.find("error")


def error_text(error: Element) -> str:
    """The human message of a typed (``<msg>``) or numeric (element text) error: all of
    its text, with comments and processing instructions left out (not the text after them)."""
    msg = error.find("msg")
    return "".join((msg if msg is not None else error).itertext()).strip()
