"""Rendering the response document as XML, JSON or text (PROTOCOL §6). Pure.

* ``xml``: the document's data, UTF-8, with a declaration and ``</doc>`` on its own line.
  The interface parts (``<metadata>``, ``<messages>``) are left out of every format but:
* ``devel``: the whole document, plus ``<tparams>`` holding the request's parameters
  (``func`` first, then ``out``), as the panel's developer output; a secret one
  (``passwd``, ``confirm``: :func:`mgrhooks.secret.is_secret`) is echoed as ``***``.
* ``json``: ``{"doc": {...}}``: attributes as ``"$name"``, element text as ``"$"``,
  children by tag, a tag that repeats under one parent as an array (COREmanager's form).
* ``sjson``: as ``json``, but shaped for programs that do not want to test for arrays
  (our reading of the panel's "stable" JSON): ``elem`` is always an array, and every field
  of a row is an array.
* ``text``: mgrctl's form (our reading of it): an error is one line
  ``ERROR type(object,value): message`` (numeric errors ``ERROR code N: text``);
  ``<ok/>`` is ``OK``; each ``<elem>`` row is one line of space-separated ``key=value``
  pairs; any other element with text is a ``key=value`` line, nested ones with a dotted
  path (``user.name=alice``). One record is one line whatever the values: control
  characters in keys and values are escaped (``\\n``, ``\\x1b``:
  :mod:`mgrhooks.printable`), so a value with a newline cannot make a record of its own,
  nor an ANSI escape drive the terminal.

Comments and processing instructions are left out of ``json``, ``sjson`` and ``text``; the
text on both sides of one is kept, as one text (``<name>a<!-- x -->b</name>`` is ``ab``).
"""

from __future__ import annotations

import re
from collections.abc import Sequence
from typing import Any

from .printable import printable
from .secret import masked
from .shape import INTERFACE, is_xml_name
from .xmldoc import Element, add, error_text, find_error, parse, serialise

FORMATS = ("xml", "devel", "json", "sjson", "text")


def render(
    doc: Element | None, fmt: str, params: Sequence[tuple[str, str]] = (), serialised: bytes | None = None
) -> str:
    """The document in format ``fmt`` (one of :data:`FORMATS`), ending in a newline.

    :param doc: the document; may be ``None`` when ``serialised`` is given (it is parsed
        only if the format needs a tree: not for ``xml`` of a document without interface
        parts, which is ``serialised`` itself)
    :param params: the request's parameters, ``func`` first (shown by ``devel``)
    :param serialised: ``doc`` already serialised, if known (spares serialising it again)
    """
    kept = _as_kept(doc, fmt, serialised)
    if kept is not None:
        return kept.decode("utf-8")
    if doc is None:
        assert serialised is not None, "render needs a document or its text"
        doc = parse(serialised)
    if fmt == "devel":
        return serialise(_with_tparams(doc, params)).decode("utf-8")
    data = _data_only(doc)
    if fmt == "xml":
        return serialise(data).decode("utf-8")
    if fmt in ("json", "sjson"):
        import json

        return json.dumps({str(data.tag): to_json(data, simple=fmt == "sjson")}, ensure_ascii=False) + "\n"
    if fmt == "text":
        return to_text(data)
    raise ValueError(f"unknown output format {fmt!r}")


def render_bytes(
    doc: Element | None,
    fmt: str,
    params: Sequence[tuple[str, str]] = (),
    serialised: bytes | None = None,
    plain: bool = False,
) -> bytes:
    """:func:`render`, as UTF-8 bytes; the ``xml`` of a document known as text is that
    text itself (a 10 MB list is not decoded and encoded again to be printed).

    :param plain: ``serialised`` is known to hold no interface part (it is not searched
        for one: :attr:`mgrhooks.document.Document.plain`)
    """
    kept = _as_kept(doc, fmt, serialised, plain)
    return kept if kept is not None else render(doc, fmt, params, serialised).encode("utf-8")


def _as_kept(doc: Element | None, fmt: str, serialised: bytes | None, plain: bool = False) -> bytes | None:
    """``serialised`` when it is the ``xml`` output as it is (no interface parts to leave out:
    known ``plain``, or, without a tree, none of their start tags anywhere in the text, one
    scan for the three)."""
    if fmt != "xml" or serialised is None:
        return None
    if doc is None:
        has_interface = not plain and re.search(_INTERFACE_TAG, serialised) is not None
    else:
        has_interface = _interface(doc)
    return None if has_interface else serialised


#: the start of an interface part's tag (one regular expression scans 11 MB in half the time
#: of three searches for the tags one by one); compiled on first use, re caches it (bench row
#: "cold start | ratio")
_INTERFACE_TAG = b"<(?:" + b"|".join(tag.encode() for tag in INTERFACE) + b")"


def _interface(doc: Element) -> bool:
    return any(child.tag in INTERFACE for child in doc)


def _data_only(doc: Element) -> Element:
    """``doc`` without its interface parts (a copy only when it has some)."""
    if not _interface(doc):
        return doc
    import copy

    data = copy.deepcopy(doc)
    for child in [c for c in data if c.tag in INTERFACE]:
        data.remove(child)
    return data


def _with_tparams(doc: Element, params: Sequence[tuple[str, str]]) -> Element:
    import copy

    devel = copy.deepcopy(doc)
    tparams = add(devel, "tparams")
    for key, value in (*masked(params), ("out", "devel")):
        if is_xml_name(key):
            add(tparams, key, value)
        else:
            add(tparams, "param", value, name=key)
    return devel


def to_json(elem: Element, simple: bool = False, in_row: bool = False) -> dict[str, Any]:
    """One element as COREmanager's JSON object (see the module docstring).

    :param simple: the ``sjson`` shape: ``elem`` and the fields of rows always arrays
    """
    obj: dict[str, Any] = {f"${key}": value for key, value in elem.attrib.items()}
    text = _text(elem)
    if text.strip():
        obj["$"] = text
    for child in elem:
        if not isinstance(child.tag, str):
            continue
        tag = str(child.tag)
        value = to_json(child, simple, in_row=tag == "elem")
        known = obj.get(tag)
        if isinstance(known, list):
            known.append(value)  # (in place: a copy each time took 14 s for 40,000 rows)
        elif known is not None:
            obj[tag] = [known, value]
        else:
            obj[tag] = [value] if simple and (in_row or tag == "elem") else value
    return obj


def _text(elem: Element) -> str:
    """The text of ``elem`` itself: its text and the text after each comment or processing
    instruction in it (those are left out of ``json``, ``sjson`` and ``text``, the text
    around them is kept as one); not the text of, or after, child elements."""
    parts = [elem.text or ""]
    parts += [child.tail or "" for child in elem if not isinstance(child.tag, str)]
    return "".join(parts)


def to_text(doc: Element) -> str:
    """The document as mgrctl's text output (see the module docstring)."""
    error = find_error(doc)
    if error is not None:
        return printable(_error_line(error)) + "\n"
    lines: list[str] = []
    for child in doc:
        if not isinstance(child.tag, str):
            continue
        if child.tag == "ok":
            lines.append("OK")
        elif child.tag == "elem":
            lines.append(" ".join(f"{k}={v}" for k, v in _leaves(child, "")))
        else:
            lines += [f"{k}={v}" for k, v in _leaves(child, "", top=True)]
    return "".join(printable(line) + "\n" for line in lines)


def _leaves(elem: Element, prefix: str, top: bool = False) -> list[tuple[str, str]]:
    """``(dotted.key, text)`` for every element with text below (or at, if ``top``) elem."""
    if top:
        children = [elem]
    else:
        children = [c for c in elem if isinstance(c.tag, str)]
    pairs: list[tuple[str, str]] = []
    for child in children:
        key = prefix + str(child.tag)
        if any(isinstance(grandchild.tag, str) for grandchild in child):
            pairs += _leaves(child, key + ".")
        elif _text(child).strip():
            pairs.append((key, _text(child).strip()))
    return pairs


def _error_line(error: Element) -> str:
    """``ERROR type(object,value): msg``; numeric: ``ERROR code N(obj,val): text``."""
    message = error_text(error)
    if error.get("type") is None and error.get("code") is not None:
        kind, parts = f"code {error.get('code')}", (error.get("obj", ""), error.get("val", ""))
    else:
        kind, parts = error.get("type", "error"), (error.get("object", ""), error.get("value", ""))
    detail = ",".join(p for p in parts if p)
    return f"ERROR {kind}({detail}): {message}" if detail else f"ERROR {kind}: {message}"
