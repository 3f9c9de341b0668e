from __future__ import annotations

import json

from mgrhooks.render import render, render_bytes
from mgrhooks.xmldoc import error_doc, parse

LIST = b'<doc func="user" lang="en"><elem><name>a</name><level>16</level></elem><elem><name>b</name><level>29</level></elem></doc>'


def test_json_shape() -> None:
    doc = parse(b'<doc func="f"><ok/><name>alice</name><elem><n>1</n></elem><elem><n>2</n></elem><e a="1">t</e></doc>')
    assert json.loads(render(doc, "json")) == {
        "doc": {
            "$func": "f",
            "ok": {},
            "name": {"$": "alice"},
            "elem": [{"n": {"$": "1"}}, {"n": {"$": "2"}}],
            "e": {"$a": "1", "$": "t"},
        }
    }


def test_json_keeps_non_ascii() -> None:
    assert "Пётр" in render(parse("<doc><name>Пётр</name></doc>".encode()), "json")


def test_text_list_is_one_line_per_row() -> None:
    assert render(parse(LIST), "text") == "name=a level=16\nname=b level=29\n"


def test_text_form_ok_and_nested() -> None:
    doc = parse(b"<doc><ok/><id>alice</id><user><name>root</name><level>30</level></user><empty/></doc>")
    assert render(doc, "text") == "OK\nid=alice\nuser.name=root\nuser.level=30\n"


def test_text_errors() -> None:
    typed = error_doc("user.add", "exists", "user", "alice", "User 'alice' already exists")
    assert render(typed, "text") == "ERROR exists(user,alice): User 'alice' already exists\n"
    numeric = parse(b'<doc><error code="9">Access denied</error></doc>')
    assert render(numeric, "text") == "ERROR code 9: Access denied\n"
    assert (
        render(parse(b'<doc><error code="2" obj="user">exists</error></doc>'), "text") == "ERROR code 2(user): exists\n"
    )
    assert render(parse(b'<doc><error code="4" val="x y">bad</error></doc>'), "text") == "ERROR code 4(x y): bad\n"
    assert json.loads(render(parse(b'<doc><error code="2" obj="user"/></doc>'), "json")) == {
        "doc": {"error": {"$code": "2", "$obj": "user"}}
    }


def test_data_formats_leave_out_the_interface_and_devel_shows_it() -> None:
    doc = parse(b'<doc func="f"><metadata name="f"/><messages name="f"><msg name="t">T</msg></messages><x>1</x></doc>')
    assert render(doc, "xml") == '<?xml version="1.0" encoding="UTF-8"?>\n<doc func="f"><x>1</x>\n</doc>\n'
    assert render(doc, "text") == "x=1\n"
    devel = render(doc, "devel", [("func", "f"), ("a b", "1")])
    assert '<metadata name="f"/>' in devel
    assert '<tparams><func>f</func><param name="a b">1</param><out>devel</out></tparams>' in devel


def test_xml_is_the_serialised_document() -> None:
    assert render(parse(b"<doc/>"), "xml") == '<?xml version="1.0" encoding="UTF-8"?>\n<doc>\n</doc>\n'


def test_render_bytes_prints_a_kept_text_as_it_is_and_encodes_the_rest() -> None:
    kept = b'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="f"><n>\xc3\xa9</n>\n</doc>\n'
    assert render_bytes(None, "xml", (), kept) is kept
    for part in (b'<metadata name="f"/>', b"<messages/>", b"<tparams><out>xml</out></tparams>"):
        with_interface = kept.replace(b"<n>", part + b"<n>")
        assert render_bytes(None, "xml", (), with_interface) == render(None, "xml", (), with_interface).encode()
        assert part[:8] not in render_bytes(None, "xml", (), with_interface)
    doc = parse(kept)
    for fmt in ("xml", "devel", "json", "sjson", "text"):
        assert render_bytes(doc, fmt, [("func", "f")]) == render(doc, fmt, [("func", "f")]).encode("utf-8")


MIXED = b'<doc><name>a<!-- x -->b</name><elem><n>1<?pi x?>2</n></elem><note a="1"><!-- lead -->text</note></doc>'


def test_json_keeps_the_text_after_a_comment_or_processing_instruction() -> None:
    assert json.loads(render(parse(MIXED), "json")) == {
        "doc": {"name": {"$": "ab"}, "elem": {"n": {"$": "12"}}, "note": {"$a": "1", "$": "text"}}
    }


def test_sjson_keeps_the_text_after_a_comment_or_processing_instruction() -> None:
    assert json.loads(render(parse(MIXED), "sjson")) == {
        "doc": {"name": {"$": "ab"}, "elem": [{"n": [{"$": "12"}]}], "note": {"$a": "1", "$": "text"}}
    }


def test_text_keeps_the_text_after_a_comment_or_processing_instruction() -> None:
    assert render(parse(MIXED), "text") == "name=ab\nn=12\nnote=text\n"
    typed = b'<doc><error type="value" object="o"><msg>bad <!-- why -->value</msg></error></doc>'
    assert render(parse(typed), "text") == "ERROR value(o): bad value\n"
    numeric = b'<doc><error code="9">no<!-- c --> access</error></doc>'
    assert render(parse(numeric), "text") == "ERROR code 9: no access\n"


def test_text_keeps_one_record_a_line_whatever_the_values() -> None:
    """A value with a newline cannot make a record of its own, nor an escape reach the terminal."""
    doc = parse(
        "<doc><elem><name>a&#10;name=forged</name><note>\u202ex\u0085y</note></elem><id>x&#13;y</id></doc>".encode()
    )
    assert render(doc, "text") == "name=a\\nname=forged note=\\u202ex\\u0085y\nid=x\\ry\n"
    error = error_doc("user.add", "exists", "user", "a\nb", "User 'a\nERROR forged' already exists")
    assert render(error, "text") == "ERROR exists(user,a\\nb): User 'a\\nERROR forged' already exists\n"


def test_devel_echoes_no_secret_parameter() -> None:
    doc = parse(b'<doc func="user.add"><ok/></doc>')
    params = (("func", "user.add"), ("name", "ann"), ("passwd", "s3cret"), ("confirm", "s3cret"), ("api_key", "k"))
    devel = render(doc, "devel", params)
    assert "s3cret" not in devel and ">k<" not in devel
    tparams = parse(devel.encode()).find("tparams")
    assert [(e.tag, e.text) for e in tparams] == [
        ("func", "user.add"),
        ("name", "ann"),
        ("passwd", "***"),
        ("confirm", "***"),
        ("api_key", "***"),
        ("out", "devel"),
    ]
