from __future__ import annotations

import pytest

from mgrhooks.xmldoc import DocumentError, add, error_doc, error_text, find_error, new_doc, parse, serialise


def test_empty_document_still_ends_with_closing_tag_on_its_own_line() -> None:
    data = serialise(new_doc("user"))
    assert data == b'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="user" lang="en">\n</doc>\n'
    assert b"<doc/>" not in data


def test_closing_tag_on_its_own_line_after_children() -> None:
    doc = new_doc("user")
    add(doc, "elem", "x")
    assert serialise(doc).endswith(b"<elem>x</elem>\n</doc>\n")


def test_serialise_is_idempotent_and_round_trips() -> None:
    doc = parse(b"<doc a='1'><x>t</x></doc>")
    once = serialise(doc)
    assert serialise(parse(once)) == once


@pytest.mark.parametrize(
    ("data", "reason"),
    [
        (b"", "empty output"),
        (b"  \n", "empty output"),
        (b"<doc>", "invalid XML"),
        (b"\xff\xfe garbage", "invalid XML"),
        (b"<html/>", "root element is <html>, expected <doc>"),
        (b'<!DOCTYPE doc [<!ENTITY a "aaaa"><!ENTITY b "&a;&a;&a;">]><doc>&b;</doc>', "DTD"),
        (b'<!DOCTYPE doc [<!ENTITY x SYSTEM "file:///etc/passwd">]><doc>&x;</doc>', "DTD"),
        (b"<doc>" + b"<a>" * 10000 + b"</a>" * 10000 + b"</doc>", "invalid XML"),
    ],
    ids=["empty", "blank", "truncated", "binary", "wrong-root", "entity-bomb", "external-entity", "deep-nesting"],
)
def test_parse_refuses(data: bytes, reason: str) -> None:
    with pytest.raises(DocumentError, match=reason):
        parse(data)


def test_parse_error_has_a_line() -> None:
    with pytest.raises(DocumentError) as info:
        parse(b"<doc>\n<a>\n</b>\n</doc>")
    assert info.value.line == 3


def test_error_doc_shape() -> None:
    doc = error_doc("user.add", "exists", "user", "alice", "User 'alice' already exists")
    error = find_error(doc)
    assert error is not None
    assert dict(error.attrib) == {"type": "exists", "object": "user", "value": "alice"}
    assert error_text(error) == "User 'alice' already exists"
    assert [p.get("name") for p in error.findall("param")] == ["object", "value"]


def test_numeric_error_text() -> None:
    error = find_error(parse(b'<doc><error code="9">bad thing</error></doc>'))
    assert error is not None and error_text(error) == "bad thing"
