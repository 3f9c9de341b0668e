"""The response document while a call runs: the rule tying a tree to its bytes."""

from __future__ import annotations

import pytest

from mgrhooks.document import Document
from mgrhooks.xmldoc import DocumentError, add, as_rows, error_doc, new_doc, parse, serialise

PRINTED = b'<?xml version="1.0" encoding="UTF-8"?>\n<doc  func=\'user\'   kept="as printed"><elem/>\n</doc>\n'


def test_text_is_its_own_bytes_and_builds_no_tree() -> None:
    document = Document.text(PRINTED)
    assert document.data() is PRINTED and document.known() is PRINTED
    assert not document.has_error() and document.is_text  # told without a tree


def test_reading_the_tree_of_text_keeps_the_bytes() -> None:
    document = Document.text(PRINTED)
    assert document.tree().get("kept") == "as printed" and not document.is_text
    assert document.tree() is document.tree()  # parsed once
    assert document.data() is PRINTED  # the printed bytes still stand for it


def test_a_change_in_place_forgets_the_bytes() -> None:
    document = Document.text(PRINTED)
    add(document.edit(), "note", "changed")
    assert document.known() is None
    data = document.data()
    assert b"<note>changed</note>" in data and data.endswith(b"\n</doc>\n")
    assert document.data() is data  # serialised once, then kept until the next change
    document.edit().set("again", "yes")
    assert b'again="yes"' in document.data()


def test_a_tree_is_serialised_on_demand() -> None:
    tree = new_doc("user")
    document = Document.of(tree)
    assert document.known() is None and document.tree() is tree
    assert document.data() == serialise(new_doc("user")) and document.known() is not None


def test_printed_bytes_stand_for_their_tree_only_in_our_form_and_intact() -> None:
    assert Document.parsed(parse(PRINTED), PRINTED, intact=True).data() is PRINTED
    # something was taken out of the tree (a <skipaction/>): the bytes no longer say it
    assert Document.parsed(parse(PRINTED), PRINTED, intact=False).known() is None
    bare = b"<doc><elem/></doc>"  # no declaration, </doc> not on its own line
    assert Document.parsed(parse(bare), bare, intact=True).known() is None
    trailing = PRINTED.replace(b"\n</doc>\n", b"</doc>")
    assert Document.parsed(parse(trailing), trailing, intact=True).known() is None


def test_printed_text_is_kept_only_when_checked() -> None:
    kept = Document.printed(PRINTED)
    assert kept is not None and kept.is_text and kept.data() is PRINTED
    assert Document.printed(b"<doc/>") is None  # not in our form: parse it
    assert Document.printed(PRINTED.replace(b"<elem/>", b"<error/>")) is None  # a tree must tell
    with pytest.raises(DocumentError, match="invalid XML") as caught:
        Document.printed(PRINTED.replace(b"<elem/>", b"<elem>"))
    assert caught.value.line == 3


def test_a_copy_never_changes_the_document() -> None:
    for document in (Document.text(PRINTED), Document.of(parse(PRINTED))):
        before = document.data()
        add(document.copy(), "sneaky")
        assert document.data() is before and b"sneaky" not in document.data()


def test_an_error_is_found_in_the_tree() -> None:
    assert Document.of(error_doc("user", "handler", "x", "after", "failed")).has_error()
    assert not Document.of(new_doc("user")).has_error()


LIST = b'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="site" total="2">\n<elem><n>1</n></elem>\n<elem/>\n</doc>\n'


def test_a_supplied_list_as_text_is_plain_only_when_the_document_it_joins_is() -> None:
    """The rows are all <elem>: the text holds an interface part only if the document the
    rows join does (then ``--out xml`` must leave it out, so it must be searched for)."""
    rows = as_rows(LIST.replace(b"<elem/>", b"<elem></elem>"))
    assert rows is not None
    listed = Document.listed(new_doc("site"), rows)
    assert listed.plain and listed.is_text and b"<n>1</n>" in listed.data()
    with_interface = new_doc("site")
    add(with_interface, "metadata", name="site")
    assert not Document.listed(with_interface, rows).plain
    listed.edit()
    assert not listed.plain  # changed in place: nothing is known of it
    assert not Document.text(PRINTED).plain and not Document.of(new_doc("x")).plain
