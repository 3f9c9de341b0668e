from __future__ import annotations

import threading

import pytest
from hypothesis import example, given, settings
from hypothesis import strategies as st
from lxml import etree

from mgrhooks.xmldoc import (
    DECLARATION,
    DocumentError,
    Rows,
    _doctype,  # the scan that keeps a DTD from being parsed at all
    add,
    as_rows,
    checked,
    error_doc,
    error_text,
    find_error,
    is_empty_doc,
    new_doc,
    parse,
    serialise,
)


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


def test_checked_accepts_our_form_without_building_a_tree() -> None:
    doc = new_doc("user")
    add(doc, "elem", "a & <b>")
    assert checked(serialise(doc))


@pytest.mark.parametrize(
    "data",
    [
        b'<doc func="user">\n</doc>\n',  # no declaration
        DECLARATION + b'<doc func="user"><x/></doc>',  # </doc> not on a line of its own
        DECLARATION + b"<!-- c --><doc>\n</doc>\n",  # something before the root
        DECLARATION + b"<docs>\n</docs>\n</doc>\n",  # another root
        DECLARATION + b'<doc><error type="x"/>\n</doc>\n',  # an error: look at it properly
        DECLARATION + b"<doc><x>&lt;</x><skipaction/>\n</doc>\n",
        DECLARATION + b"<!DOCTYPE doc><doc>\n</doc>\n",
    ],
    ids=["no-declaration", "closing-tag", "comment-first", "other-root", "error", "skipaction", "dtd"],
)
def test_checked_leaves_anything_else_to_parse(data: bytes) -> None:
    assert not checked(data)


def test_checked_refuses_malformed_text_with_its_line() -> None:
    with pytest.raises(DocumentError) as raised:
        checked(DECLARATION + b"<doc>\n<a>\n<b></a>\n</doc>\n")
    assert raised.value.line == 4 and "invalid XML" in raised.value.reason  # the declaration is line 1
    with pytest.raises(DocumentError):
        checked(DECLARATION + b"<doc>&undefined;\n</doc>\n")


EMPTY = [
    b"<doc/>",
    b"<doc/>\n",
    b'<?xml version="1.0" encoding="UTF-8"?>\n<doc/>\n',
    b"<?xml version='1.0'?><doc></doc>",
    b'<?xml version="1.0" encoding="utf-8" ?>\r\n<doc >\n</doc >\n',
    b"\n  <doc/>",
]
NOT_EMPTY = [
    b'<doc a="1"/>',  # an attribute
    b"<doc><x/></doc>",
    b"<doc>text</doc>",
    b"<doc><!-- c --></doc>",
    b' <?xml version="1.0"?><doc/>',  # no whitespace may precede the declaration
    b"<doc/>\x0c",  # not XML whitespace
    b'<?xml version="1.0" encoding="latin-1"?><doc/>',
    b"<doc/><doc/>",
    b"<doc></doc2>",
    b"<?xml version='1.0\"?><doc/>",
    b"",
]


@pytest.mark.parametrize("data", EMPTY + NOT_EMPTY)
def test_is_empty_doc_says_yes_only_for_what_parses_to_an_empty_doc(data: bytes) -> None:
    try:
        doc = parse(data)
        empty = len(doc) == 0 and not doc.attrib and not (doc.text or "").strip()
    except DocumentError:
        empty = False
    assert is_empty_doc(data) is (data in EMPTY)
    if is_empty_doc(data):
        assert empty


LIST = (
    DECLARATION
    + b'<doc func="big" total="2" note="a&gt;b">\n<elem><n>1</n></elem>\n<elem><n>&lt;2</n></elem>\n</doc>\n'
)


def test_as_rows_gives_the_attributes_and_the_rows_as_text() -> None:
    rows = as_rows(LIST)
    assert rows is not None
    assert rows.attrib == {"func": "big", "total": "2", "note": "a>b"}
    assert bytes(rows.rows) == b"<elem><n>1</n></elem>\n<elem><n>&lt;2</n></elem>\n"
    empty = as_rows(DECLARATION + b'<doc func="x">\n</doc>\n')
    assert empty is not None and bytes(empty.rows) == b""


@pytest.mark.parametrize(
    "text",
    [
        b"<doc>\n<elem/>\n</doc>\n",  # no declaration: not our form
        DECLARATION + b"<doc>\n<elem/><ok/>\n</doc>\n",  # a child that is not a row
        DECLARATION + b"<doc>\n<elem/><!-- c -->\n</doc>\n",
        DECLARATION + b'<doc xmlns:x="urn:x">\n<x:elem/>\n</doc>\n',
        DECLARATION + b"<doc>\n<elem/><error/>\n</doc>\n",
        DECLARATION + b"<doc>\n<?pi x?><elem/>\n</doc>\n",
    ],
)
def test_as_rows_leaves_every_other_document_to_the_parser(text: bytes) -> None:
    assert as_rows(text) is None


def test_as_rows_refuses_broken_text_with_its_line() -> None:
    with pytest.raises(DocumentError) as caught:
        as_rows(DECLARATION + b"<doc>\n<elem>\n<a></elem>\n</doc>\n")
    assert caught.value.line >= 3
    # text that is not even shaped as a list is left to the parser, broken or not (it
    # reports the line then): no second pass of libxml2 over a document parsed anyway
    assert as_rows(DECLARATION + b"<doc>\n<elem>\n<elem/>\n</doc>\n") is None


def test_dtd_after_the_declaration_comments_and_processing_instructions_is_refused_before_parsing() -> None:
    data = DECLARATION + b"<?pi a?b?>\n<!-- c - >\n-->\n<!DOCTYPE doc [<!ENTITY x 'y'>]><doc>&x;</doc>"
    with pytest.raises(DocumentError, match="DTD") as raised:
        parse(data)
    assert raised.value.line == 5


def test_prolog_of_many_processing_instructions_is_scanned_once() -> None:
    """A regular expression backtracked over these for minutes before (2**n ways to split n
    processing instructions); the document is well-formed and has no DTD."""
    data = DECLARATION + b"<?a?>" * 5000 + b"<doc><![CDATA[<!DOCTYPE]]></doc>\n"
    assert parse(data).text == "<!DOCTYPE"
    with pytest.raises(DocumentError, match="DTD"):
        parse(b"<?a?>" * 5000 + b"<!DOCTYPE doc><doc/>")


# --- the fast checks never disagree with the full parse ----------------------------------

PROLOG = [
    b"",
    b" \n",
    b"<?pi x?>",
    b"<?pi ?x?>",
    b"<?a?>" * 40,
    b"<!-- c -->",
    b"<!-- <!DOCTYPE doc> -->",
    b"<!DOCTYPE doc>",
    b"<!DOCTYPE doc [<!ENTITY e 'x'>]>",
    b"\xef\xbb\xbf",
]
ROOTS = [b"<doc", b'<doc a="1"', b'<doc xmlns="urn:x"', b'<x:doc xmlns:x="urn:x"', b"<docs", b"<doc\n", b"<doc/"]
CHILDREN = [
    b"",
    b"\n",
    b"text",
    b"<error/>",
    b'<error code="1">e</error>',
    b'<error type="t" object="o" value="v"><msg>m</msg></error>',
    b"<skipaction/>",
    b"<elem><n>1</n></elem>",
    b'<x name="a">t</x>',
    b"<!-- <error/> <skipaction/> -->",
    b"<![CDATA[<!DOCTYPE x> <error/> <skipaction/>]]>",
    b"<?pi <error/>?>",
    b"&lt;&#60;",
    b"&undefined;",
    b'<a:error xmlns:a="urn:x"/>',
    b'<error xmlns="urn:x"/>',
    b'<e xmlns="urn:x"><error/></e>',
    b"<a>",
    b"</a>",
    b"</doc>",
    b"<!DOCTYPE doc>",
    b"\x00",
    b"\xff",
    b"<p:x/>",  # a prefix never declared: libxml2 goes on, lxml refuses the tree
    b'<x p:a="1"/>',
    b"<x:y:z/>",  # not a QName
    b"<:x/>",
    b'<x xmlns="rel/uri"/>',  # a warning only: the full parse accepts it
]
ENDS = [b"\n</doc>\n", b"</doc>", b"</doc>\n", b"", b"\n</docs>\n", b"\n</doc>\n<doc/>"]


@st.composite
def documents(draw: st.DrawFn) -> bytes:
    head = draw(st.sampled_from([DECLARATION, b'<?xml version="1.0"?>', b""]))
    prolog = b"".join(draw(st.lists(st.sampled_from(PROLOG), max_size=4)))
    root = draw(st.sampled_from(ROOTS)) + draw(st.sampled_from([b">", b" >", b"/>"]))
    body = b"".join(draw(st.lists(st.sampled_from(CHILDREN), max_size=6)))
    data = head + prolog + root + body + draw(st.sampled_from(ENDS))
    if draw(st.booleans()):  # a stray byte anywhere
        at = draw(st.integers(0, len(data)))
        data = data[:at] + draw(st.sampled_from([b"<", b">", b"?", b"-", b"!", b'"', b"&"])) + data[at:]
    return data


def full_parse(data: bytes):
    try:
        return parse(data)
    except DocumentError:
        return None


@settings(max_examples=500, deadline=None)
@given(documents())
def test_fast_checks_agree_with_the_full_parse(data: bytes) -> None:
    doc = full_parse(data)
    try:
        fast = checked(data)
    except DocumentError:
        assert doc is None, "checked refused what parse accepts"
        fast = False
    if fast:
        assert doc is not None, "checked accepted what parse refuses"
        assert find_error(doc) is None and doc.find("skipaction") is None
    rows = None
    try:
        rows = as_rows(data)
    except DocumentError:
        assert doc is None, "as_rows refused what parse accepts"
    if rows is not None:
        assert doc is not None and all(child.tag == "elem" for child in doc) and rows.attrib == dict(doc.attrib)
    if is_empty_doc(data):
        assert doc is not None and len(doc) == 0 and not doc.attrib


@settings(max_examples=500, deadline=None)
@given(documents())
def test_every_dtd_the_parser_would_see_is_found_before_parsing(data: bytes) -> None:
    permissive = etree.XMLParser(resolve_entities=False, no_network=True, load_dtd=False, recover=False)
    try:
        tree = etree.fromstring(data, permissive)
    except etree.XMLSyntaxError:
        return
    if tree.getroottree().docinfo.doctype:
        assert _doctype(data) >= 0
        with pytest.raises(DocumentError, match="DTD"):
            parse(data)


# --- lists: the byte counts of as_rows never take a document the parser reads otherwise ---

#: how a row may start, end, and what may stand between rows; the hostile ones would put
#: something that is not an <elem> among <doc>'s children if a count could be fooled
ROW_STARTS = [
    b"<elem>",
    b"<elem>",
    b'<elem a="1">',
    b'<elem a=">">',
    b"<elem\t>",
    b'<elem xmlns="urn:x">',
    b'<p:elem xmlns:p="urn:x">',
    b"<elem/>",
    b"<elemx>",
    b"<elem a='</elem>'>",
    b"<error>",
    b"<skipaction/>",
    b"",
]
ROW_ENDS = [b"</elem>", b"</elem>", b"</elem >", b"</elemx>", b"</p:elem>", b"</error>", b""]
IN_ROW = [
    b"text",
    b"<n>1</n>",
    b"<error/>",  # below a row: not the document's error
    b"<skipaction/>",
    b"&lt;error&gt;&amp;&#60;elem&#62;",
    b"&undefined;",
    b"telemetry",  # "elem" in the text
    b"<x a='&lt;/elem&gt;'/>",
    b"</elem>\n<error/>\n<elem>",  # closes its row early: an error among <doc>'s children
    b"</elem>\n<elem/>\n<elem>",
    b"</elem><ok/><elem>",
    b"<elem>",
    b"</elem>",
    b"<elem></elem>",
    b"<a>",
    b"</a>",
    b"<!-- </elem>\n<error/>\n<elem> -->",
    b"<![CDATA[</elem>\n<error/>\n<elem>]]>",
    b"<![CDATA[</elem>\n<elem>]]>",  # a row boundary as text: counted, yet no row
    b"<![CDATA[</elem>\n<elem>]]></elem>\n<ok/><elem>",
    b"</elem>\n<ok/><elem><![CDATA[</elem>\n<elem>]]>",
    b"<![CDATA[",
    b"]]>",
    b"<![CDATA[x]]>",
    b"<?pi </elem>\n<skipaction/>\n<elem>?>",
    b"<!DOCTYPE x>",
    b"]]>",
    b"\n",
    b"\r\n",
    b"<p:x/>",
    b"<x:y:z/>",
    b'<x xmlns="urn:y"><elem/></x>',
    b"</doc><doc>",
]
BETWEEN = [b"\n", b"\n", b"\n", b"", b"\r\n", b"\n\n", b" \n", b"text\n", b"\n<!-- c -->\n", b"\n<?pi?>\n"]
HEADS = [
    b"<doc>",
    b'<doc func="big">',
    b"<doc func=\"a&gt;b\" n='2'>",
    b'<doc a=">">',
    b'<doc xmlns="urn:x">',
    b"<doc a='<'>",
]


@st.composite
def rows(draw: st.DrawFn, hostile: bool = True) -> bytes:
    """One row and what follows it."""
    if not hostile:
        body = b"".join(draw(st.lists(st.sampled_from([b"text", b"<n>1</n>", b"&lt;error&gt;", b"<x a='1'/>"]))))
        return b"<elem>" + body + b"</elem>\n"
    start = draw(st.sampled_from(ROW_STARTS))
    body = b"".join(draw(st.lists(st.sampled_from(IN_ROW), max_size=3)))
    return start + body + draw(st.sampled_from(ROW_ENDS)) + draw(st.sampled_from(BETWEEN))


@st.composite
def lists(draw: st.DrawFn, hostile: bool = True) -> bytes:
    """A 50,000-row list in miniature: our form, mostly, with rows of every kind."""
    head = draw(st.sampled_from(HEADS)) if hostile else b'<doc func="big">'
    body = b"".join(draw(st.lists(rows(hostile), max_size=5)))
    end = draw(st.sampled_from([b"</doc>\n", b"</doc>\n", b"</doc>", b"</doc>\n<doc/>"])) if hostile else b"</doc>\n"
    return DECLARATION + head + b"\n" + body + end


def children_shape(doc) -> list:
    return [(c.tag, dict(c.attrib), c.text, [children_shape(c)]) for c in doc]


@settings(max_examples=2000, deadline=None)
@given(lists())
@example(DECLARATION + b'<doc func="big">\n<elem><p:x/></elem>\n</doc>\n')  # libxml2 goes on, lxml refuses
@example(DECLARATION + b"<doc>\n<elem><x:y:z/></elem>\n</doc>\n")
@example(DECLARATION + b"<doc>\n<elem></elem>\n<error/>\n<elem></elem>\n</doc>\n")
@example(DECLARATION + b"<doc>\n<elem><![CDATA[</elem>\n<error/>\n<elem>]]></elem>\n</doc>\n")
def test_as_rows_takes_only_lists_the_full_parse_reads_as_lists(data: bytes) -> None:
    doc = full_parse(data)
    try:
        rows = as_rows(data)
    except DocumentError:
        assert doc is None, "as_rows refused what parse accepts"
        return
    if rows is None:
        return
    assert doc is not None, "as_rows accepted what parse refuses"
    assert all(child.tag == "elem" for child in doc), "a child that is not a row"
    assert find_error(doc) is None and doc.find("skipaction") is None
    assert rows.attrib == dict(doc.attrib)
    again = parse(DECLARATION + b"<doc>" + bytes(rows.rows) + b"</doc>")
    assert children_shape(again) == children_shape(doc), "the rows as text are not the document's rows"


@settings(max_examples=1000, deadline=None)
@given(lists())
@example(DECLARATION + b"<doc>\n<elem><a></elem>\n</doc>\n")  # a list by its counts, broken for libxml2
@example(DECLARATION + b"<doc>\n<elem></elem><!-- c -->\n</doc>\n")
def test_work_done_meanwhile_changes_nothing_as_rows_decides(data: bytes) -> None:
    """``meanwhile`` (the walk building the listed document while libxml2 checks) runs
    once for what the counts take as a list, and the answer is the same as without it.
    It is given the rows as counted: when they are returned, they are what it was given."""
    calls: list[Rows] = []
    try:
        alone: Rows | DocumentError | None = as_rows(data)
    except DocumentError as exc:
        alone = exc
    try:
        rows: Rows | DocumentError | None = as_rows(data, calls.append)
    except DocumentError as exc:
        rows = exc
    if isinstance(alone, DocumentError):
        assert isinstance(rows, DocumentError) and (rows.reason, rows.line) == (alone.reason, alone.line)
    else:
        assert rows == alone
    assert len(calls) <= 1 and (rows is None or isinstance(rows, DocumentError) or calls == [rows])


def test_work_done_meanwhile_runs_only_for_a_list_and_what_it_raises_is_raised() -> None:
    calls: list[str] = []
    assert as_rows(DECLARATION + b"<doc>\n<ok/>\n</doc>\n", lambda rows: calls.append("not a list")) is None
    assert calls == []
    broken = DECLARATION + b"<doc>\n<elem>\n<a></elem>\n</doc>\n"  # counted as a list, then refused
    with pytest.raises(DocumentError) as caught:
        as_rows(broken, lambda rows: calls.append(bytes(rows.rows).decode()))
    assert calls == ["<elem>\n<a></elem>\n"] and caught.value.line >= 3
    twice = DECLARATION + b'<doc a="1" a="2">\n<elem></elem>\n</doc>\n'  # counted, but its tag does not parse
    with pytest.raises(DocumentError):
        as_rows(twice, lambda rows: calls.append("twice"))
    assert "twice" not in calls

    def fails(rows: Rows) -> None:
        raise OSError("no guardian")

    with pytest.raises(OSError, match="no guardian"):
        as_rows(LIST, fails)
    assert not [t for t in threading.enumerate() if t.name == "mgrhooks-xml-check"], "the check outlived the call"


@settings(max_examples=300, deadline=None)
@given(lists(hostile=False))
def test_as_rows_takes_plain_lists(data: bytes) -> None:
    """The fast path is used, not only safe: a list in our form is taken as text."""
    rows = as_rows(data)
    assert rows is not None and len(parse(data)) == bytes(rows.rows).count(b"\n")


@settings(max_examples=1000, deadline=None)
@given(lists())
@example(DECLARATION + b"<doc>\n<elem><p:x/></elem>\n</doc>\n")
@example(DECLARATION + b'<doc>\n<x p:a="1"/>\n</doc>\n')
def test_checked_agrees_with_the_full_parse_on_lists(data: bytes) -> None:
    doc = full_parse(data)
    try:
        fast = checked(data)
    except DocumentError:
        assert doc is None, "checked refused what parse accepts"
        return
    if fast:
        assert doc is not None, "checked accepted what parse refuses"
        assert find_error(doc) is None and doc.find("skipaction") is None
