"""Rendering the response document as XML, JSON or text (PROTOCOL §6). Pure.

* ``xml``: the document itself, UTF-8, with a declaration and ``</doc>`` on its own line.
* ``json``: ``{"doc": {...}}``: attributes as ``"$name"``, element text as ``"$"``,
  children by tag, a tag that repeats under one parent as an array (COREmanager's form).
* ``text``: mgrctl's form (our reading of it): an error is one line
  ``ERROR type(object,value): message`` (numeric errors ``ERROR code N: text``);
  ``<ok/>`` is ``OK``; each ``<elem>`` row is one line of space-separated ``key=value``
  pairs; any other element with text is a ``key=value`` line, nested ones with a dotted
  path (``user.name=alice``).
"""

from __future__ import annotations

import json
from typing import Any

from .xmldoc import Element, error_text, find_error, serialise

FORMATS = ("xml", "json", "text")


def render(doc: Element, fmt: str) -> str:
    """The document in format ``fmt`` (one of :data:`FORMATS`), ending in a newline."""
    if fmt == "xml":
        return serialise(doc).decode("utf-8")
    if fmt == "json":
        return json.dumps({str(doc.tag): to_json(doc)}, ensure_ascii=False) + "\n"
    if fmt == "text":
        return to_text(doc)
    raise ValueError(f"unknown output format {fmt!r}")


def to_json(elem: Element) -> dict[str, Any]:
    """One element as COREmanager's JSON object (see the module docstring)."""
    obj: dict[str, Any] = {f"${key}": value for key, value in elem.attrib.items()}
    text = (elem.text or "").strip()
    if text:
        obj["$"] = elem.text
    for child in elem:
        if not isinstance(child.tag, str):
            continue
        value = to_json(child)
        tag = str(child.tag)
        if tag not in obj:
            obj[tag] = value
        elif isinstance(obj[tag], list):
            obj[tag].append(value)
        else:
            obj[tag] = [obj[tag], value]
    return obj


def to_text(doc: Element) -> str:
    """The document as mgrctl's text output (see the module docstring)."""
    error = find_error(doc)
    if error is not None:
        return _error_line(error) + "\n"
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
    return "".join(line + "\n" for line in lines)


def _leaves(elem: Element, prefix: str, top: bool = False) -> list[tuple[str, str]]:
    """``(dotted.key, text)`` for every element with text below (or at, if ``top``) elem."""
    if top:
        children = [elem]
    else:
        children = [c for c in elem if isinstance(c.tag, str)]
    pairs: list[tuple[str, str]] = []
    for child in children:
        key = prefix + str(child.tag)
        if len(child):
            pairs += _leaves(child, key + ".")
        elif child.text is not None and child.text.strip():
            pairs.append((key, child.text.strip()))
    return pairs


def _error_line(error: Element) -> str:
    message = error_text(error)
    code = error.get("code")
    if code is not None and error.get("type") is None:
        return f"ERROR code {code}: {message}"
    detail = ",".join(v for v in (error.get("object", ""), error.get("value", "")) if v)
    return f"ERROR {error.get('type', 'error')}({detail}): {message}"
