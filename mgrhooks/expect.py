"""Expectations on response documents by XPath, and the failure messages that show the
expected and actual documents side by side. Pure.

:func:`mismatch` is the whole rule: it answers ``None`` when the document meets the
expectation, else the message to fail with. Used by :mod:`mgrhooks.testing` (the pytest
plugin's results); our choice throughout, as the vendor has no test tooling.

What an expectation is (``expected``):

* :data:`ANY`: the expression selects something (a node set that is not empty, a
  boolean that is true, a number that is not 0, a string that is not empty);
* a string beginning with ``<``: an XML fragment; the expression selects exactly one
  element, equal to it (tag, attributes in any order, text; whitespace-only text
  between elements is ignored, as are comments);
* any other string: the expression selects exactly one node whose text is it (an
  element's text is all of its text, stripped; an attribute's is its value), or yields
  that string (``string(...)``);
* a number or a boolean: what ``count(...)``, ``number(...)`` or a comparison yields;
* a list of strings: the nodes selected, one each, in document order.
"""

from __future__ import annotations

import copy
import difflib
from collections.abc import Sequence
from typing import Final

from lxml import etree

from .xmldoc import Element

#: the expectation that the expression selects something
ANY: Final = object()
#: how wide a side of the side-by-side view is at most, in characters; longer lines wrap
WIDTH = 70
#: the lines of the actual document shown under a message at most
SHOWN_LINES = 200


def select(doc: Element, xpath: str) -> object:
    """What ``xpath`` yields on ``doc`` (evaluated from the ``<doc>`` element).

    :raises ValueError: the expression is not valid XPath (lxml's reason)
    """
    try:
        return doc.xpath(xpath)
    except etree.XPathError as exc:
        raise ValueError(f"invalid XPath {xpath!r}: {exc}") from None


def mismatch(doc: Element, xpath: str, expected: object = ANY) -> str | None:
    """``None`` when ``xpath`` on ``doc`` meets ``expected`` (see the module docstring),
    else a message naming the expression, what was expected and what was found, with the
    expected and actual documents side by side (an XML fragment against the element
    selected), or the actual document under it.

    :raises ValueError: the expression is not valid XPath
    """
    found = select(doc, xpath)
    nodes = found if isinstance(found, list) else None
    if expected is ANY:
        if _selects_something(found):
            return None
        return _with_document(f"XPath {xpath} selects nothing", doc)
    if isinstance(expected, str) and expected.lstrip().startswith("<"):
        return _fragment_mismatch(doc, xpath, nodes, expected)
    if isinstance(expected, list | tuple):
        wanted = [str(item) for item in expected]
        actual = [text_of(node) for node in nodes] if nodes is not None else [str(found)]
        if actual == wanted:
            return None
        return _with_document(f"XPath {xpath}\n  expected: {wanted!r}\n  found:    {actual!r}", doc)
    if nodes is None:
        if _same_value(found, expected):
            return None
        return _with_document(f"XPath {xpath}\n  expected: {expected!r}\n  found:    {found!r}", doc)
    if len(nodes) != 1:
        return _with_document(f"XPath {xpath} selects {_count(nodes)}, expected one with text {expected!r}", doc)
    actual_text = text_of(nodes[0])
    if actual_text == str(expected):
        return None
    return _with_document(f"XPath {xpath}\n  expected text: {str(expected)!r}\n  found text:    {actual_text!r}", doc)


def absent(doc: Element, xpath: str) -> str | None:
    """``None`` when ``xpath`` selects nothing on ``doc``, else a message naming what it
    selected, with the document. :raises ValueError: the expression is not valid XPath"""
    found = select(doc, xpath)
    if not _selects_something(found):
        return None
    shown = [text_of(node) for node in found] if isinstance(found, list) else found
    return _with_document(f"XPath {xpath} selects {shown!r}, expected nothing", doc)


def text_of(node: object) -> str:
    """A selected node's text: an element's whole text, stripped; an attribute's value or
    a text node as it is."""
    if isinstance(node, etree._Element):
        return "".join(node.itertext()).strip()
    return str(node)


def _selects_something(found: object) -> bool:
    """A node set that is not empty, a true boolean, a number not 0, a string not empty."""
    return bool(found)


def _same_value(found: object, expected: object) -> bool:
    if isinstance(found, bool) or isinstance(expected, bool):
        return found is expected
    if isinstance(found, float) and isinstance(expected, int | float):
        return found == expected
    return str(found) == str(expected)


def _count(nodes: Sequence[object]) -> str:
    return "nothing" if not nodes else f"{len(nodes)} nodes"


def _fragment_mismatch(doc: Element, xpath: str, nodes: list[object] | None, expected: str) -> str | None:
    wanted = etree.fromstring(expected.strip().encode("utf-8"), etree.XMLParser(resolve_entities=False))
    elements = [node for node in nodes or [] if isinstance(node, etree._Element)]
    if nodes is None or len(nodes) != 1 or len(elements) != 1:
        selected = "a value" if nodes is None else _count(nodes)
        return _with_document(f"XPath {xpath} selects {selected}, expected one element:\n{expected.strip()}", doc)
    if canonical(elements[0]) == canonical(wanted):
        return None
    view = side_by_side(pretty(wanted), pretty(elements[0]), ("expected", "actual"))
    return f"XPath {xpath} selects an element that differs from the expected one\n{view}"


def normalised(elem: Element) -> Element:
    """A copy of ``elem`` without comments, processing instructions, its own tail and
    whitespace-only text between elements."""
    clean = copy.deepcopy(elem)
    clean.tail = None
    for junk in clean.xpath(".//comment() | .//processing-instruction()"):
        parent = junk.getparent()
        if parent is not None:
            previous = junk.getprevious()
            tail = junk.tail or ""
            if previous is not None:
                previous.tail = (previous.tail or "") + tail
            else:
                parent.text = (parent.text or "") + tail
            parent.remove(junk)
    for node in clean.iter():
        if node.text is not None and not node.text.strip():
            node.text = None
        if node is not clean and node.tail is not None and not node.tail.strip():
            node.tail = None
    return clean


def canonical(elem: Element) -> bytes:
    """``elem`` as canonical XML (attributes sorted) after :func:`normalised`."""
    return etree.tostring(normalised(elem), method="c14n")


def pretty(elem: Element) -> list[str]:
    """``elem`` indented, one line per element, after :func:`normalised`."""
    clean = normalised(elem)
    etree.indent(clean, space="  ")
    return etree.tostring(clean, encoding="unicode").splitlines()


def side_by_side(left: Sequence[str], right: Sequence[str], titles: tuple[str, str]) -> str:
    """Two texts in two columns, as ``diff --side-by-side`` shows them: a line the same on
    both sides has no mark, a changed one ``|``, one only on the left ``<``, only on the
    right ``>``. Lines longer than :data:`WIDTH` are cut with ``…``."""
    width = min(WIDTH, max(len(line) for line in (*left, *right, *titles)))
    rows = [(titles[0], " ", titles[1]), ("-" * width, " ", "-" * width)]
    matcher = difflib.SequenceMatcher(a=list(left), b=list(right), autojunk=False)
    for tag, a0, a1, b0, b1 in matcher.get_opcodes():
        lefts, rights = list(left[a0:a1]), list(right[b0:b1])
        mark = {"equal": " ", "replace": "|", "delete": "<", "insert": ">"}[tag]
        for index in range(max(len(lefts), len(rights))):
            one = lefts[index] if index < len(lefts) else ""
            other = rights[index] if index < len(rights) else ""
            row_mark = mark if tag != "replace" else ("|" if one and other else "<" if one else ">")
            rows.append((one, row_mark, other))
    return "\n".join(f"{_cut(a, width):<{width}} {m} {_cut(b, width)}".rstrip() for a, m, b in rows)


def _cut(line: str, width: int) -> str:
    return line if len(line) <= width else line[: width - 1] + "…"


def _with_document(message: str, doc: Element) -> str:
    lines = pretty(doc)
    more = len(lines) - SHOWN_LINES
    shown = "\n".join("    " + line for line in lines[:SHOWN_LINES])
    return f"{message}\nthe response document:\n{shown}" + (f"\n    ... {more} more line(s)" if more > 0 else "")
