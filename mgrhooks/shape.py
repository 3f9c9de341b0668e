"""The documents handlers see (PROTOCOL §4). Pure.

* Every call starts from ``<doc func= lang= binary=>`` carrying the plugin files'
  ``<metadata name=FUNC>`` and ``<messages name=FUNC>`` for the request's language (``en``
  when there are none in it), as the panel builds them: function addons and handlers that
  edit forms find them there.
* Old-generation handlers (``etc/<mgr>_mod_*.xml``) get the document with ``user`` and
  ``level`` attributes and a ``<params>`` block holding one element per request parameter
  (``<params><func>user.edit</func><elid>alice</elid></params>``; a key that is not an XML
  name is left out there, as it cannot be an element). What they print back loses that
  block and those attributes again, so the caller never sees them.
"""

from __future__ import annotations

from lxml import etree

from .model import Registry, Request
from .xmldoc import Element, add, new_doc, parse

#: elements describing the interface, shown only by the ``devel`` output
INTERFACE = ("metadata", "messages", "tparams")
_OLD_ATTRIBUTES = ("user", "level")


def initial_document(request: Request, mgr: str, registry: Registry) -> Element:
    """The document a call of ``request.func`` starts from (PROTOCOL §4), a new tree each
    time: ``<doc func="FUNC" lang="LANG" binary="/MGR">``, then the plugin files'
    ``<metadata name=FUNC>`` (the first file's) and one ``<messages name=FUNC>`` holding
    the children of every file's ``<messages name=FUNC>`` for ``request.lang``, or for
    ``en`` when no file has that language."""
    doc = new_doc(request.func, request.lang, f"/{mgr}")
    metadata = registry.metadata.get(request.func)
    if metadata is not None:
        doc.append(parse(metadata, root_tag="metadata"))
    parts = registry.messages.get((request.lang, request.func)) or registry.messages.get(("en", request.func), ())
    if parts:
        messages = add(doc, "messages", name=request.func)
        for part in parts:
            messages.extend(list(parse(part, root_tag="messages")))  # a new tree: moved, not copied
    return doc


def old_generation_input(doc: Element, request: Request) -> Element:
    """A copy of ``doc`` in the old generation's shape (PROTOCOL §4): attributes
    ``user`` and ``level`` (the caller's), and first a ``<params>`` block with one element
    per parameter, ``func`` first (``<params><func>user.edit</func><elid>a</elid></params>``);
    a key that is not an XML name is left out. ``doc`` itself is not changed."""
    import copy

    old = copy.deepcopy(doc)
    old.set("user", request.user)
    old.set("level", str(request.level))
    params = etree.Element("params")
    for key, value in request.all_params:
        if is_xml_name(key):
            add(params, key, value)
    params.tail = "\n"
    old.insert(0, params)
    return old


def without_old_generation(doc: Element) -> Element:
    """``doc`` without the ``<params>`` blocks and the ``user``/``level`` attributes
    old-generation input added (changed in place and returned), so the caller never sees
    them."""
    for params in doc.findall("params"):
        doc.remove(params)
    for attribute in _OLD_ATTRIBUTES:
        doc.attrib.pop(attribute, None)
    return doc


def is_xml_name(key: str) -> bool:
    """Whether ``key`` can be an element name: lxml takes it and it has no namespace
    prefix (``user.name`` yes; ``1a``, ``a b``, ``x:y`` no)."""
    try:
        etree.Element(key)
    except ValueError:
        return False
    return ":" not in key
