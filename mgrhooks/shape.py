"""The documents handlers see (PROTOCOL §4). Pure.

* Every call starts from ``<doc func= lang= binary=>`` carrying the plugin files'
  ``<metadata name=FUNC>`` and ``<messages name=FUNC>`` for the request's language (``en``
  when there are none in it), as the panel builds them: function addons and handlers that
  edit forms find them there.
* A form several plugin files extend (``<metadata name="webdomain.edit" type="form">`` in
  each) is one form (:func:`merge_form`): the core's own first (a supplied core document's),
  then each plugin file's fields in file name order, each in its ``<page>`` when it names
  one.
* Old-generation handlers (``etc/<mgr>_mod_*.xml``) get the document with ``user`` and
  ``level`` attributes and a ``<params>`` block holding one element per request parameter
  (``<params><func>user.edit</func><elid>alice</elid></params>``; a key that is not an XML
  name is left out there, as it cannot be an element). What they print back loses that
  block and those attributes again, so the caller never sees them.
"""

from collections.abc import Iterator
from typing import NamedTuple

from lxml import etree

from .model import Registry, Request
from .xmldoc import Element, add, new_doc, parse

#: elements describing the interface, shown only by the ``devel`` output
INTERFACE = ("metadata", "messages", "tparams")
_OLD_ATTRIBUTES = ("user", "level")


def panel_attributes(request: Request, mgr: str) -> tuple[tuple[str, str], ...]:
    """The ``<doc>`` attributes that are the panel's own, as ``(name, value)`` pairs: ``func``
    (the function), ``lang`` (the request's language) and ``binary`` (``/MGR``). Every
    response carries them, an error too, and one an xml handler printed without them gets
    them back (:meth:`mgrhooks.document.Document.with_attributes`; our choice, docs/protocol.md)."""
    return (("func", request.func), ("lang", request.lang), ("binary", f"/{mgr}"))


def initial_document(request: Request, mgr: str, registry: Registry) -> Element:
    """The document a call of ``request.func`` starts from (PROTOCOL §4), a new tree each
    time: ``<doc func="FUNC" lang="LANG" binary="/MGR">``, then the plugin files'
    ``<metadata name=FUNC>`` (the first file's; for a form, every file's fields merged into
    it when the registry was built: :func:`merge_form`) and one ``<messages name=FUNC>`` holding
    the children of every file's ``<messages name=FUNC>`` for ``request.lang``, or for
    ``en`` when no file has that language."""
    doc = new_doc(*(value for _, value in panel_attributes(request, mgr)))
    metadata = registry.metadata.get(request.func)
    if metadata is not None:
        doc.append(parse(metadata, root_tag="metadata"))
    parts = registry.messages.get((request.lang, request.func)) or registry.messages.get(("en", request.func), ())
    if parts:
        messages = add(doc, "messages", name=request.func)
        for part in parts:
            messages.extend(list(parse(part, root_tag="messages")))  # a new tree: moved, not copied
    return doc


class Overlap(NamedTuple):
    """A part of a later form :func:`merge_form` left out: its form already has one of that
    name (the first declaration wins). ``elem`` is the later form's element (its
    ``sourceline`` is where it was declared)."""

    elem: Element
    tag: str
    name: str


def is_form(metadata: Element) -> bool:
    """Whether ``metadata`` describes a form (``type="form"``, or a ``<form>`` child)."""
    return metadata.get("type") == "form" or metadata.find("form") is not None


def merge_form(metadata: Element, later: Element) -> list[Overlap]:
    """Add the form of ``later`` (a ``<metadata>`` of the same function) to ``metadata``'s,
    in place; ``later`` is consumed (its elements are moved). Our choice, as ISPmanager
    plugins extend the panel's forms:

    * a ``<page name=P>`` whose name the form has: its children go at the end of that page;
      a page the form does not have is added at the end of the form;
    * any other child of ``<form>`` (``<field>``, ``<buttons>`` ...) goes at the end of the form;
    * a ``<field>`` whose name the form already has anywhere, or another element whose tag
      and ``name`` a sibling already has, is left out (the first declaration wins) and
      returned, for the caller to report.

    :returns: what was left out, in document order
    """
    form = metadata.find("form")
    if form is None:
        form = etree.SubElement(metadata, "form")
    extra = later.find("form")
    if extra is None:
        return []
    fields = {n for n in (field.get("name") for field in form.iter("field")) if n}
    pages = {page.get("name"): page for page in form.iterchildren("page") if page.get("name")}
    left_out: list[Overlap] = []
    for child in _elements(extra):
        name = child.get("name") or ""
        page = pages.get(name) if child.tag == "page" and name else None
        if page is not None:
            left_out += _place_all(page, list(_elements(child)), fields)
        else:
            left_out += _place_all(form, [child], fields)
            if child.tag == "page" and name:
                pages[name] = child
    return left_out


def _elements(parent: Element) -> Iterator[Element]:
    return (child for child in parent if isinstance(child.tag, str))


def _place_all(parent: Element, children: list[Element], fields: set[str]) -> list[Overlap]:
    """Append each of ``children`` to ``parent`` unless a field name in it is taken (anywhere
    in the form: ``fields``, kept up to date) or, for another element, its tag and name
    (among ``parent``'s children)."""
    left_out = []
    for child in children:
        tag, name = str(child.tag), child.get("name") or ""
        names = [n for n in (field.get("name") for field in child.iter("field")) if n]
        overlap = next((Overlap(child, "field", n) for n in names if n in fields), None)
        if overlap is None and tag != "field" and name and any(s.tag == tag and s.get("name") == name for s in parent):
            overlap = Overlap(child, tag, name)
        if overlap is not None:
            left_out.append(overlap)
            continue
        fields.update(names)
        parent.append(child)
    return left_out


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
