"""Applying a handler's output document to the response document (PROTOCOL §5). Pure.

* xml handler: its document replaces the current one.
* cgi handler: its document is merged into the current one, child by child:
  ``<param>`` is ignored; ``<error>`` replaces any error and ends the merge (no tag after
  it is processed); ``<ok>`` and ``<redirect>`` replace their namesake; ``<elem>`` rows
  are appended; any other element replaces the first child with the same tag and the
  same ``name`` attribute, or is appended. Attributes of the handler's ``<doc>`` are set
  on the response's ``<doc>`` (``func`` excepted). Our choice where the vendor is silent.
* ``<skipaction/>`` anywhere among ``<doc>``'s children is taken out and reported.

Both documents are consumed: the result is made of their elements, moved, not copied
(copying a 50,000-row list element by element took most of a call's time).
"""

from __future__ import annotations

from typing import NamedTuple

from .model import HandlerType
from .xmldoc import Element, Rows, find_error, serialise

_REPLACED = ("ok", "redirect")


class Merged(NamedTuple):
    """The new response document and what the handler asked for."""

    doc: Element
    error: bool
    skipaction: bool


def apply(current: Element | None, output: Element, handler_type: HandlerType) -> Merged:
    """Combine ``current`` with a handler's parsed ``output``. Both are consumed: use
    only the returned document afterwards. ``current`` is not needed (may be ``None``)
    for an xml handler, whose output replaces it."""
    if handler_type is HandlerType.XML:
        result = output
    else:
        assert current is not None, "a cgi handler's output is merged into a document"
        result = _merge(current, output)
    skip = _take_skipaction(result)
    return Merged(result, find_error(result) is not None, skip)


def append_rows(current: Element, rows: Rows) -> bytes:
    """:func:`apply` of a cgi handler's list answer given as text (:func:`mgrhooks.xmldoc.as_rows`),
    serialised: its attributes (``func`` excepted) set on ``current``, its rows after
    ``current``'s children. The document :func:`apply` would build from the parsed answer
    (tests), without a tree of the rows. ``current`` is left as it was (the walk builds
    this while the rows are still being checked: they may yet be refused)."""
    attributes = {key: value for key, value in rows.attrib.items() if key != "func"}
    if attributes:
        import copy

        current = copy.deepcopy(current)
        for key, value in attributes.items():
            current.set(key, value)
    head = serialise(current)
    return b"".join((memoryview(head)[: -len(b"</doc>\n")], rows.rows, b"</doc>\n"))


def changes_nothing(output: Element, handler_type: HandlerType) -> bool:
    """Whether :func:`apply` would return the current document as it was: a cgi
    handler's answer with no child and no attribute but ``func`` (the usual ``<doc/>``)."""
    return handler_type is HandlerType.CGI and len(output) == 0 and set(output.attrib.keys()) <= {"func"}


def _take_skipaction(doc: Element) -> bool:
    flags = doc.findall("skipaction")
    for flag in flags:
        _remove(flag)
    return bool(flags)


def _remove(elem: Element) -> None:
    """Remove ``elem`` but keep its tail text in place."""
    parent = elem.getparent()
    assert parent is not None
    if elem.tail and elem.tail.strip():
        previous = elem.getprevious()
        if previous is not None:
            previous.tail = (previous.tail or "") + elem.tail
        else:
            parent.text = (parent.text or "") + elem.tail
    parent.remove(elem)


def _merge(current: Element, output: Element) -> Element:
    doc = current
    for key, value in output.attrib.items():
        if key != "func":
            doc.set(key, value)
    children = list(output)
    if all(child.tag == "elem" for child in children):  # a list: its rows are appended, in one go
        doc.extend(children)
        return doc
    first = _first_children(doc)
    for child in children:
        if not isinstance(child.tag, str) or child.tag == "param":
            continue
        if child.tag == "skipaction":
            doc.append(child)
        elif child.tag == "error":
            for old in doc.findall("error"):
                _remove(old)
            doc.append(child)
            break
        else:
            _place(doc, child, first)
    return doc


def _key(elem: Element) -> tuple[str, str | None]:
    """What a merged element replaces: the first child with the same tag and ``name``
    attribute; for ``<ok>`` and ``<redirect>``, the first with the same tag."""
    tag = str(elem.tag)
    return (tag, None) if tag in _REPLACED else (tag, elem.get("name"))


def _first_children(doc: Element) -> dict[tuple[str, str | None], Element]:
    """The first child of ``doc`` by :func:`_key`: one pass, so that merging n children
    takes time linear in n (looking each up among the children took minutes for 20,000)."""
    first: dict[tuple[str, str | None], Element] = {}
    for child in doc:
        if isinstance(child.tag, str):
            first.setdefault(_key(child), child)
    return first


def _place(doc: Element, child: Element, first: dict[tuple[str, str | None], Element]) -> None:
    """Put ``child`` in place of the child it replaces, or append it; ``first`` is kept up to date."""
    if child.tag == "elem":
        doc.append(child)
        return
    key = _key(child)
    old = first.get(key)
    if old is not None:
        child.tail = old.tail
        doc.replace(old, child)
    else:
        doc.append(child)
    first[key] = child
