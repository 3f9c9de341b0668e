from __future__ import annotations

from hypothesis import given, settings
from hypothesis import strategies as st

from mgrhooks.merge import append_rows, apply, changes_nothing
from mgrhooks.model import HandlerType
from mgrhooks.xmldoc import DECLARATION, as_rows, parse, serialise

CURRENT = b'<doc func="user.edit" lang="en"><name>alice</name><ok/><elem><n>1</n></elem><x name="a">1</x><x name="b">2</x></doc>'


def body(doc) -> str:
    return serialise(doc).decode().split("\n", 1)[1].replace("\n", "")


def test_xml_handler_output_replaces_the_document() -> None:
    output = parse(b"<doc><only/></doc>")
    merged = apply(parse(CURRENT), output, HandlerType.XML)
    assert body(merged.doc) == "<doc><only/></doc>"
    assert merged.doc is output  # taken over, not copied
    assert not merged.error and not merged.skipaction


def test_cgi_empty_doc_changes_nothing() -> None:
    merged = apply(parse(CURRENT), parse(b"<doc/>"), HandlerType.CGI)
    assert body(merged.doc) == body(parse(CURRENT))


def test_changes_nothing_is_true_only_when_the_merge_leaves_the_document_as_it_was() -> None:
    """The dispatcher skips the merge (and keeps the document's bytes) on this answer."""
    answers = [
        b"<doc/>",
        b'<doc func="other"/>',
        b"<doc>\n</doc>",
        b'<doc theme="x"/>',
        b"<doc><ok/></doc>",
        b"<doc><!-- c --></doc>",
        b"<doc><skipaction/></doc>",
        b"<doc><elem/></doc>",
    ]
    for answer in answers:
        unchanged = body(apply(parse(CURRENT), parse(answer), HandlerType.CGI).doc) == body(parse(CURRENT))
        if changes_nothing(parse(answer), HandlerType.CGI):
            assert unchanged, answer
    assert [changes_nothing(parse(a), HandlerType.CGI) for a in answers[:3]] == [True, True, True]
    assert not any(changes_nothing(parse(a), HandlerType.CGI) for a in answers[3:])
    assert not changes_nothing(parse(b"<doc/>"), HandlerType.XML)  # an xml answer replaces the document


def test_cgi_merge_rules() -> None:
    output = b"""<doc theme="dark" func="evil"><param name="x">ignored</param><name>bob</name>
    <ok type="form"/><elem><n>2</n></elem><x name="b">20</x><x name="c">30</x><new>n</new></doc>"""
    merged = apply(parse(CURRENT), parse(output), HandlerType.CGI)
    assert body(merged.doc) == (
        '<doc func="user.edit" lang="en" theme="dark"><name>bob</name><ok type="form"/><elem><n>1</n></elem>'
        '<x name="a">1</x><x name="b">20</x><elem><n>2</n></elem><x name="c">30</x><new>n</new></doc>'
    )


def test_cgi_error_replaces_errors_and_stops_the_merge() -> None:
    current = parse(b'<doc><error code="1">old</error></doc>')
    merged = apply(current, parse(b'<doc><a/><error type="value" object="name"/><b/></doc>'), HandlerType.CGI)
    assert merged.error
    assert body(merged.doc) == '<doc><a/><error type="value" object="name"/></doc>'


def test_numeric_error_counts_as_error_for_xml_handlers() -> None:
    assert apply(parse(b"<doc/>"), parse(b'<doc><error code="9">no</error></doc>'), HandlerType.XML).error


def test_skipaction_is_reported_and_removed() -> None:
    for handler_type in HandlerType:
        merged = apply(parse(b"<doc><a/></doc>"), parse(b"<doc>\n<skipaction/>\n<ok/>\n</doc>"), handler_type)
        assert merged.skipaction
        assert merged.doc.find("skipaction") is None
        assert merged.doc.find("ok") is not None


def shape(elem) -> tuple:
    """Tag, attributes, stripped text and children: what a document says, not its spacing."""
    return (elem.tag, dict(elem.attrib), (elem.text or "").strip(), [shape(c) for c in elem])


def test_append_rows_builds_what_apply_builds() -> None:
    answer = (
        DECLARATION
        + b'<doc func="other" total="2">\n<elem><n>1</n></elem>\n<elem><n>2</n><x a="&amp;"/></elem>\n</doc>\n'
    )
    currents = [
        b'<doc func="user" lang="en" binary="/billmgr"/>',
        b'<doc func="user" lang="en"><metadata name="user"><col name="n"/></metadata><messages name="user"/></doc>',
        b'<doc func="user" total="9"><elem><n>0</n></elem></doc>',
    ]
    for current in currents:
        rows = as_rows(answer)
        assert rows is not None
        tree = parse(current)
        text = append_rows(tree, rows)
        assert text.startswith(DECLARATION) and text.endswith(b"\n</doc>\n")
        assert shape(tree) == shape(parse(current)), "the current document was changed (the rows may yet be refused)"
        assert shape(parse(text)) == shape(apply(parse(current), parse(answer), HandlerType.CGI).doc)


# --- the merge over generated documents -------------------------------------------------

CHILD_TAGS = ["ok", "redirect", "x", "y", "elem", "error", "skipaction", "param", "#comment"]
children = st.lists(st.tuples(st.sampled_from(CHILD_TAGS), st.sampled_from([None, "a", "b"]), st.integers(0, 9)))


def build(items: list[tuple[str, str | None, int]]) -> bytes:
    parts = []
    for tag, name, text in items:
        if tag == "#comment":
            parts.append(f"<!-- {text} -->t{text}")
        else:
            attr = f' name="{name}"' if name is not None else ""
            parts.append(f"<{tag}{attr}>{text}</{tag}>\n")
    return f'<doc func="f">{"".join(parts)}</doc>'.encode()


def merge_as_specified(current, output):
    """The cgi merge of PROTOCOL §5 the plain way, child by child, each looked up among the
    document's children (quadratic: the oracle for the linear one); no <skipaction> left."""
    merged = merge_children(current, output)
    for flag in merged.findall("skipaction"):
        remove_keeping_tail(flag)
    return merged


def merge_children(current, output):
    for key, value in output.attrib.items():
        if key != "func":
            current.set(key, value)
    kids = list(output)
    if all(child.tag == "elem" for child in kids):
        current.extend(kids)
        return current
    for child in kids:
        if not isinstance(child.tag, str) or child.tag == "param":
            continue
        if child.tag == "skipaction":
            current.append(child)
        elif child.tag == "error":
            for old in current.findall("error"):
                remove_keeping_tail(old)
            current.append(child)
            break
        else:
            for old in current.iterchildren(child.tag) if child.tag != "elem" else ():
                if child.tag in ("ok", "redirect") or old.get("name") == child.get("name"):
                    child.tail = old.tail
                    current.replace(old, child)
                    break
            else:
                current.append(child)
    return current


def remove_keeping_tail(elem) -> None:
    parent, previous = elem.getparent(), elem.getprevious()
    if elem.tail and elem.tail.strip():
        if previous is not None:
            previous.tail = (previous.tail or "") + elem.tail
        else:
            parent.text = (parent.text or "") + elem.tail
    parent.remove(elem)


@settings(max_examples=300, deadline=None)
@given(children, children)
def test_cgi_merge_is_the_specified_one(current: list, output: list) -> None:
    merged = apply(parse(build(current)), parse(build(output)), HandlerType.CGI)
    assert serialise(merged.doc) == serialise(merge_as_specified(parse(build(current)), parse(build(output))))
