"""The response document while a call runs: a tree, or checked text, with its bytes. Pure.

A call hands its document from step to step. Most steps need a tree (a cgi merge, the
core action, an internal handler, an observer); an xml handler needs only bytes on its
stdin, and what it prints may stand for the next document without a tree being built (a
50,000-row list takes nine times its text as a tree: docs/performance.md). A
:class:`Document` holds either or both, and the one rule tying them:

* **Text** (:meth:`Document.text`) is bytes :func:`~mgrhooks.xmldoc.checked` accepted: our
  serialised form, well-formed, no DTD, no ``<error`` or ``<skipaction`` in it. It is the
  document's bytes as it is; a tree is parsed from it when a step asks for one.
* **Printed bytes stand for the tree parsed from them** (:meth:`Document.parsed`) when
  they are in our form (the declaration, ``</doc>`` on the last line) and nothing was
  taken out of the tree since (no ``<skipaction/>`` removed): the next handler gets them
  as printed, not serialised again.
* **A change in place forgets the bytes**: :meth:`Document.edit` is the only way to a
  tree that may be changed, and it drops them; :meth:`Document.tree` is for reading.
  Bytes made by :meth:`Document.data` are kept until then.

lxml trees are mutable: a step that changes the tree it got from :meth:`Document.tree`
breaks the rule. Steps that change the document (internal handlers, observers, the core
action, a cgi merge) take it from :meth:`Document.edit`.
"""

from __future__ import annotations

import re

from .xmldoc import DECLARATION, Element, Rows, checked, find_error, parse, serialise

#: the start tag of ``<doc>`` in a document's first bytes, and an attribute name in it
#: (compiled on first use, re caches them: bench row "cold start | ratio")
_DOC_TAG = rb"<doc(?:\s[^>]*)?>"
_NAME = rb"\s([^\s=]+)\s*="
#: bytes searched for the start tag (the declaration, a comment or two)
_HEAD = 4096


class Document:
    """The response document: a tree, or checked text, or a tree with the bytes that
    stand for it. Made by the class methods; one object per state of the response (a
    step that replaces the document makes a new one)."""

    __slots__ = ("_tree", "_data", "_plain")

    def __init__(self, tree: Element | None, data: bytes | None, plain: bool = False) -> None:
        assert tree is not None or data is not None, "a document is a tree, text, or both"
        self._tree = tree
        self._data = data
        self._plain = plain and data is not None

    @classmethod
    def of(cls, tree: Element) -> Document:
        """A tree whose bytes are not known yet (serialised when asked for)."""
        return cls(tree, None)

    @classmethod
    def text(cls, data: bytes) -> Document:
        """Text that may stand for its document without a tree: ``data`` passed
        :func:`~mgrhooks.xmldoc.checked`, or was built from such text and a tree without an
        ``<error>`` child (:func:`mgrhooks.merge.append_rows`). Not checked again here."""
        return cls(None, data)

    @classmethod
    def listed(cls, current: Element, rows: Rows) -> Document:
        """``current`` (left as it was) with a supplied list's rows after its children, as
        text (:func:`mgrhooks.merge.append_rows`): :attr:`plain` when ``current`` holds no
        interface part, the rows being all ``<elem>``."""
        from .merge import append_rows
        from .shape import INTERFACE

        plain = not any(child.tag in INTERFACE for child in current)
        return cls(None, append_rows(current, rows), plain)

    @classmethod
    def printed(cls, data: bytes) -> Document | None:
        """What a handler printed, kept as text when :func:`~mgrhooks.xmldoc.checked`
        allows it; ``None``: a tree is needed (parse it, then :meth:`parsed`).

        :raises DocumentError: ``data`` is in our form but not well-formed (with its line)
        """
        return cls(None, data) if checked(data) else None

    @classmethod
    def parsed(cls, tree: Element, data: bytes, intact: bool) -> Document:
        """``tree``, parsed from ``data`` a handler printed; ``data`` stands for it when
        ``intact`` (nothing was taken out of the tree since parsing) and ``data`` is in our
        form: the declaration first, ``</doc>`` on its own last line (:func:`serialise`'s
        shape, which addons editing with sed expect)."""
        reusable = intact and data.startswith(DECLARATION) and data.endswith(b"\n</doc>\n")
        return cls(tree, data if reusable else None)

    def tree(self) -> Element:
        """The document as a tree, for reading (parsed from the text on first use and
        kept; the bytes still stand for it). Change it only through :meth:`edit`."""
        if self._tree is None:
            assert self._data is not None
            self._tree = parse(self._data)  # checked well-formed before: does not raise
        return self._tree

    def edit(self) -> Element:
        """The document as a tree, to be changed in place: its bytes are forgotten."""
        tree = self.tree()
        self._data = None
        self._plain = False
        return tree

    def copy(self) -> Element:
        """A new tree of the document, for a reader that may change it (final observers):
        parsed from the text when there is no tree yet, else a deep copy."""
        if self._tree is None:
            assert self._data is not None
            return parse(self._data)
        import copy

        return copy.deepcopy(self._tree)

    def data(self) -> bytes:
        """The document's bytes (UTF-8, with the declaration, ending in ``\\n</doc>\\n``):
        the text or printed bytes when they stand for it, else serialised and kept."""
        if self._data is None:
            assert self._tree is not None
            self._data = serialise(self._tree)
        return self._data

    def known(self) -> bytes | None:
        """The document's bytes when known without serialising it, else ``None``."""
        return self._data

    @property
    def plain(self) -> bool:
        """Whether the known bytes (:meth:`known`) are known to hold no interface part
        (``<metadata>``, ``<messages>``, ``<tparams>``: left out of every output but
        ``devel``), so that ``--out xml`` prints them as they are without searching them
        (11 MB took ~12 ms). ``False`` says nothing either way."""
        return self._plain

    @property
    def is_text(self) -> bool:
        """Whether the document is held as text only (no tree built)."""
        return self._tree is None

    def with_attributes(self, attributes: tuple[tuple[str, str], ...]) -> Document:
        """This document when its ``<doc>`` has every attribute named in ``attributes``
        (``(name, value)`` pairs), else one with the missing ones put back with those
        values; an attribute it has keeps its own value. Text whose start tag has them all
        stays text (no tree is built to tell)."""
        if self._tree is None:
            assert self._data is not None
            tag = re.search(_DOC_TAG, self._data[:_HEAD])
            if tag is not None and {n for n, _ in attributes} <= {m.decode() for m in re.findall(_NAME, tag.group())}:
                return self
        tree = self.tree()
        missing = [(name, value) for name, value in attributes if name not in tree.attrib]
        if not missing:
            return self
        tree = self.edit()
        for name, value in missing:
            tree.set(name, value)
        return Document.of(tree)

    def has_error(self) -> bool:
        """Whether the document holds an ``<error>`` child (typed or numeric). Text never
        does (see :func:`~mgrhooks.xmldoc.checked`): no tree is built to tell."""
        return self._tree is not None and find_error(self._tree) is not None
