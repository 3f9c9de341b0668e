"""The handler protocols as pure adapters: requests and answers, without processes."""

from __future__ import annotations

import re

import pytest

from mgrhooks import protocol
from mgrhooks.document import Document
from mgrhooks.errors import PanelError
from mgrhooks.logs import ERROR, INFO, WARNING
from mgrhooks.model import ActionStep, Handler, HandlerType, Request, RunStatus, Source
from mgrhooks.process.runner import RunOutcome, RunRequest
from mgrhooks.protocol import Call, Turn, cgi, observer, old, xml
from mgrhooks.protocol.observer import Answer
from mgrhooks.settings import Settings
from mgrhooks.step import Note
from mgrhooks.xmldoc import add, new_doc, parse

REQUEST = Request("user.edit", (("elid", "alice"), ("name", "Alice A")), user="admin", level=29)
CALL = Call(REQUEST, "/root", Settings(timeout=60.0), environment={"PATH": "/bin", "AUTH_USER": "admin"})
PRINTED = b'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="user.edit"><name>alice</name>\n</doc>\n'


def turn(
    kind: HandlerType = HandlerType.CGI, stage: str = "after", generation: int = 5, postdata: bool = False, **options
) -> Turn:
    source = Source("etc/xml/billmgr_mod_x.xml", 3)
    handler = Handler("x.sh", kind, "billmgr_mod_x.xml", source, generation=generation, **options)
    return Turn(handler, stage, postdata, why=str(source))


def outcome(request: RunRequest, stdout: bytes, failure: str | None = None, reason: str = "") -> RunOutcome:
    return RunOutcome(request, 1 if failure else 0, stdout, b"", 0.0125, pid=42, failure=failure, reason=reason)


def document() -> Document:
    tree = new_doc("user.edit")
    add(tree, "name", "alice")
    return Document.of(tree)


def test_the_adapter_is_chosen_by_generation_then_type() -> None:
    assert protocol.adapter(turn(HandlerType.CGI).handler) is protocol.CGI
    assert protocol.adapter(turn(HandlerType.XML).handler) is protocol.XML
    assert protocol.adapter(turn(HandlerType.PYTHON).handler) is protocol.OBSERVER
    for kind in (HandlerType.CGI, HandlerType.XML):
        assert protocol.adapter(turn(kind, generation=4).handler) is protocol.OLD


def test_a_program_gets_the_document_its_stage_and_the_calls_limits() -> None:
    given = document()
    request = xml.request(turn(HandlerType.XML), "/root/addon/x.sh", CALL, given)
    assert request.argv == ("/root/addon/x.sh",) and request.cwd == "/root"
    assert request.stdin is given.data()  # the document's own bytes, made once
    assert request.env["HANDLER_STAGE"] == request.env["EVENT_TYPE"] == "after"
    assert request.env["REQUEST_METHOD"] == "GET" and "CONTENT_LENGTH" not in request.env
    assert request.env["AUTH_USER"] == "admin" and request.timeout == 60.0
    assert request.description == "handler 'x.sh' (after user.edit, etc/xml/billmgr_mod_x.xml:3)"
    assert xml.request(turn(HandlerType.XML, timeout=5.0), "/p", CALL, given).timeout == 5.0
    assert xml.request(turn(HandlerType.XML, timeout=5.0), "/p", CALL._replace(timeout=2.0), given).timeout == 2.0


def test_a_cgi_handler_with_postdata_gets_the_parameters_as_a_post_body() -> None:
    request = cgi.request(turn(postdata=True), "/p", CALL, document())
    assert request.stdin == b"func=user.edit&elid=alice&name=Alice+A"
    assert request.env["REQUEST_METHOD"] == "POST" and request.env["CONTENT_LENGTH"] == str(len(request.stdin))
    assert request.env["CONTENT_TYPE"] == "application/x-www-form-urlencoded"


def test_a_failed_run_stops_the_call_with_an_error_naming_the_handler() -> None:
    given = document()
    request = cgi.request(turn(), "/p", CALL, given)
    result = cgi.result(turn(), CALL, outcome(request, b"", "exit", "exit status 1"), given)
    message = "Handler 'x.sh' (after user.edit, etc/xml/billmgr_mod_x.xml:3) failed: exit status 1"
    assert result.stop and result.document.tree().find("error").get("type") == "handler"
    assert result.document.tree().findtext("error/msg") == message
    assert result.notes == (Note("external", ERROR, message),)
    assert result.run is not None and result.run == ("x.sh", "after", 12.5, RunStatus.EXIT)


def test_ignore_errors_keeps_the_document_and_only_warns() -> None:
    given = document()
    request = cgi.request(turn(ignore_errors=True), "/p", CALL, given)
    result = cgi.result(turn(ignore_errors=True), CALL, outcome(request, b"", "timeout", "timed out after 1s"), given)
    assert not result.stop and result.document is given
    assert result.notes[0].level == WARNING and result.notes[0].text.endswith('; ignored (ignore_errors="yes")')


def test_the_usual_cgi_answer_leaves_the_document_and_its_bytes() -> None:
    given = document()
    request = cgi.request(turn(), "/p", CALL, given)
    for answer in (b"<doc/>", b"Content-Type: text/xml\r\n\r\n<doc/>", b'<doc func="user.edit"></doc>'):
        result = cgi.result(turn(), CALL, outcome(request, answer), given)
        assert result.document is given and given.known() is request.stdin
        assert not (result.stop or result.skip or result.notes) and result.run.status is RunStatus.OK


def test_a_cgi_answer_is_merged_after_its_header_block() -> None:
    given = document()
    request = cgi.request(turn(), "/p", CALL, given)
    answer = b"Content-Type: text/xml\n\n<doc theme='dark'><name>Alice</name><note>hi</note></doc>"
    result = cgi.result(turn(), CALL, outcome(request, answer), given)
    tree = result.document.tree()
    assert (tree.get("theme"), tree.findtext("name"), tree.findtext("note")) == ("dark", "Alice", "hi")
    assert given.known() is None  # merged in place: the old bytes no longer say it


def test_an_error_answered_stops_the_call_and_skipaction_counts_before_only() -> None:
    given = document()
    request = cgi.request(turn(), "/p", CALL, given)
    refused = cgi.result(turn(), CALL, outcome(request, b'<doc><error type="exists"/></doc>'), given)
    assert refused.stop and refused.notes == (
        Note("external", INFO, "'x.sh' (after) answered an error: the call stops"),
    )
    skip = b"<doc><skipaction/></doc>"
    assert cgi.result(turn(stage="before"), CALL, outcome(request, skip), document()).skip
    after = cgi.result(turn(), CALL, outcome(request, skip), document())
    assert not after.skip and after.document.tree().find("skipaction") is None


def test_broken_output_fails_the_handler_with_its_line() -> None:
    given = document()
    request = cgi.request(turn(), "/p", CALL, given)
    result = cgi.result(turn(), CALL, outcome(request, b"<doc>\n<open>\n</doc>"), given)
    assert result.stop and "failed: invalid output: invalid XML" in result.notes[0].text
    assert result.notes[0].text.endswith("(line 3)")


def test_an_xml_handler_printing_its_input_leaves_the_document_as_it_was() -> None:
    given = Document.text(PRINTED)
    request = xml.request(turn(HandlerType.XML), "/p", CALL, given)
    result = xml.result(turn(HandlerType.XML), CALL, outcome(request, bytes(PRINTED)), given)
    assert result.document is given and given.is_text and given.data() is PRINTED


def test_an_xml_handlers_checked_answer_is_kept_as_text() -> None:
    changed = PRINTED.replace(b"alice", b"bob")
    request = xml.request(turn(HandlerType.XML), "/p", CALL, document())
    result = xml.result(turn(HandlerType.XML), CALL, outcome(request, changed), document())
    assert result.document.is_text and result.document.data() is changed and not result.stop


def test_an_xml_handlers_parsed_answer_keeps_its_bytes_unless_something_was_taken_out() -> None:
    request = xml.request(turn(HandlerType.XML, stage="before"), "/p", CALL, document())
    with_error = PRINTED.replace(b"<name>", b'<error type="x"/><name>')
    result = xml.result(turn(HandlerType.XML, stage="before"), CALL, outcome(request, with_error), document())
    assert result.stop and result.document.known() is with_error  # parsed: <error> needs a tree
    skipping = PRINTED.replace(b"<name>", b"<skipaction/><name>")
    result = xml.result(turn(HandlerType.XML, stage="before"), CALL, outcome(request, skipping), document())
    assert result.skip and result.document.known() is None and b"skipaction" not in result.document.data()


def test_the_old_generation_gets_its_shape_and_loses_it_in_the_answer() -> None:
    given = document()
    before = given.data()
    request = old.request(turn(HandlerType.XML, generation=4), "/root/addon/x.sh", CALL, given)
    assert request.argv == ("/root/addon/x.sh", "after")
    sent = parse(request.stdin)
    assert (sent.get("user"), sent.get("level"), sent.findtext("params/elid")) == ("admin", "29", "alice")
    assert given.data() is before  # a copy was shaped, not the response
    answer = request.stdin.replace(b"<name>alice</name>", b"<name>bob</name>")
    result = old.result(turn(HandlerType.XML, generation=4), CALL, outcome(request, answer), given)
    tree = result.document.tree()
    assert tree.findtext("name") == "bob" and tree.find("params") is None and tree.get("user") is None
    assert result.document.known() is None  # the printed bytes held the old shape


def test_an_old_cgi_handler_merges_like_a_new_one() -> None:
    given = document()
    request = old.request(turn(generation=4, postdata=True), "/p", CALL, given)
    assert request.argv == ("/p", "after") and request.stdin.startswith(b"func=user.edit&")
    answer = b'<doc user="x"><params><elid>x</elid></params><note>hi</note></doc>'
    tree = old.result(turn(generation=4), CALL, outcome(request, answer), given).document.tree()
    assert tree.findtext("note") == "hi" and tree.find("params") is None and tree.get("user") is None
    assert old.result(turn(generation=4), CALL, outcome(request, b"<doc/>"), given).document is given


def test_a_final_handlers_output_is_not_read_and_its_failure_only_logged() -> None:
    given = document()
    request = cgi.request(turn(stage="final"), "/p", CALL, given)
    done = protocol.final(turn(stage="final"), outcome(request, b"<doc><error/></doc>"), given)
    assert done.document is given and not done.stop and not done.notes
    failed = protocol.final(turn(stage="final"), outcome(request, b"", "exit", "exit status 2"), given)
    assert failed.notes == (Note("external", WARNING, "final handler 'x.sh' failed: exit status 2"),)


def test_a_refused_program_is_logged_then_fails_without_a_run_record() -> None:
    reason = "Addon 'addon/x.sh' is not executable"
    result = protocol.refused(turn(), CALL, document(), reason)
    assert result.stop and result.run is None
    assert [(n.level, n.text.endswith(reason)) for n in result.notes] == [(WARNING, True), (ERROR, True)]
    final = protocol.refused(turn(stage="final"), CALL, document(), reason)
    assert not final.stop and [n.level for n in final.notes] == [WARNING, WARNING]


def test_an_observer_changes_the_tree_it_is_handed_and_its_bytes_are_forgotten() -> None:
    given = Document.text(PRINTED)

    def rename(request: Request, doc) -> None:
        doc.find("name").text = request.get("name")
        add(doc, "skipaction")

    answer = observer.invoke(rename, REQUEST, given)
    assert answer.error is None and given.known() is None
    result = observer.result(turn(HandlerType.PYTHON, stage="before"), CALL, answer, given)
    assert result.skip and result.document.tree().findtext("name") == "Alice A"
    assert result.run.status is RunStatus.OK and result.document.tree().find("skipaction") is None


def test_an_observers_answers_and_failures() -> None:
    python = turn(HandlerType.PYTHON)
    replaced = observer.result(python, CALL, Answer(new_doc("other"), None, 0.001), document())
    assert replaced.document.tree().get("func") == "other" and replaced.run.ms == 1.0
    typed = observer.result(python, CALL, Answer(None, PanelError("value", "name", "", "Say who"), 0.0), document())
    assert typed.stop and typed.document.tree().find("error").get("object") == "name"
    assert typed.notes == (Note("action", INFO, "'user.edit' failed: Say who"),) and typed.run.status is RunStatus.ERROR
    raised = observer.result(python, CALL, Answer(None, ValueError("boom"), 0.0), document())
    assert raised.stop and raised.notes[0].text.endswith("failed: raised ValueError: boom")
    assert raised.run.status is RunStatus.EXCEPTION
    wrong = observer.result(python, CALL, Answer("text", None, 0.0), document())
    assert wrong.stop and wrong.notes[0].text.endswith("failed: returned str, not a <doc> or None")


def test_invoking_an_observer_never_raises_for_its_exception() -> None:
    def boom(request: Request, doc) -> None:
        raise KeyError("x")

    answer = observer.invoke(boom, REQUEST, document())
    assert isinstance(answer.error, KeyError) and answer.value is None
    unregistered = observer.invoke(None, REQUEST, document())  # unregistered meanwhile: answers None
    assert unregistered.value is None and unregistered.error is None


def test_an_old_handlers_failure_and_broken_answer_name_it() -> None:
    given = document()
    old_xml = turn(HandlerType.XML, generation=4)
    request = old.request(old_xml, "/p", CALL, given)
    failed = old.result(old_xml, CALL, outcome(request, b"", "spawn", "cannot start /p: Permission denied"), given)
    assert failed.stop and failed.notes[0].text.endswith("failed: cannot start /p: Permission denied")
    assert failed.run.status is RunStatus.SPAWN
    broken = old.result(old_xml, CALL, outcome(request, b"<doc>"), given)
    assert broken.stop and "failed: invalid output: invalid XML" in broken.notes[0].text


def test_text_before_the_xml_that_is_no_header_block_is_left_for_the_parser() -> None:
    given = document()
    request = cgi.request(turn(), "/p", CALL, given)
    result = cgi.result(turn(), CALL, outcome(request, b"hello\n\n<doc/>"), given)
    assert result.stop and "invalid output" in result.notes[0].text


def test_the_cores_own_action_is_no_handlers_turn() -> None:
    with pytest.raises(ValueError, match="runs no handler"):
        protocol.turn(ActionStep("user.edit", "main logic"))


# --- the CGI response header block (RFC 3875 §6.3) ---------------------------------------


@pytest.mark.parametrize(
    ("output", "body"),
    [
        (b"<doc/>", b"<doc/>"),
        (b"", b""),
        (b"  \n<doc/>", b"  \n<doc/>"),
        (b"Content-Type: text/xml\r\n\r\n<doc/>", b"<doc/>"),
        (b"Status: 200 OK\nContent-Type: text/xml; charset=utf-8\n\n<doc/>", b"<doc/>"),
        (b"Status: 204\n\n", b""),
        (b"X-Note: one\n  folded\nContent-Type: text/html; charset=ISO-8859-1\n\n<doc/>", b"<doc/>"),
        (b"no header: <doc/>\n\n", b"no header: <doc/>\n\n"),
    ],
    ids=["bare", "empty", "leading-space", "crlf", "status-200", "status-204", "folded", "not-a-header-line"],
)
def test_a_body_under_a_2xx_status_or_none_is_taken_as_it_is(output: bytes, body: bytes) -> None:
    assert cgi.xml_body(output) == body


@pytest.mark.parametrize(
    ("output", "reason"),
    [
        (b"Status: 403 Forbidden\r\n\r\n", 'answered "Status: 403 Forbidden"'),
        (b"Content-Type: text/xml\nStatus: 500 Oops\n\n<doc/>", 'answered "Status: 500 Oops"'),
        (b"Status: OK\n\n<doc/>", 'an invalid CGI header line "Status: OK"'),
        (b"Location: /elsewhere\n\n", 'answered a redirect "Location: /elsewhere", not a document'),
        (b"Content-Type: text/xml; charset=x-martian\n\n<doc/>", 'an unknown charset "x-martian" in its Content-Type'),
        (b"Content-Type: text/xml; charset=base64\n\n<doc/>", 'an unknown charset "base64" in its Content-Type'),
        (b"Content-Type: text/xml; charset=us-ascii\n\n<doc>\xd0</doc>", "a body that is not us-ascii"),
    ],
    ids=["403", "500-after-type", "not-a-status", "redirect", "unknown-charset", "not-a-text-codec", "bad-byte"],
)
def test_a_failing_status_or_a_charset_that_cannot_decode_the_body_is_a_failure(output: bytes, reason: str) -> None:
    with pytest.raises(cgi.ResponseError, match=re.escape(reason)):
        cgi.xml_body(output)


def test_an_xml_content_types_charset_decodes_the_body_and_its_declaration_follows() -> None:
    body = '<?xml version="1.0" encoding="windows-1251"?>\n<doc><name>Пётр</name></doc>\n'
    output = b"Content-Type: application/xml; charset=windows-1251\r\n\r\n" + body.encode("cp1251")
    assert cgi.xml_body(output) == body.replace("windows-1251", "UTF-8").encode()
    koi8 = "<doc><name>Пётр</name></doc>".encode("koi8-r")
    assert (
        cgi.xml_body(b'Content-Type: text/xml; charset="KOI8-R"\n\n' + koi8) == "<doc><name>Пётр</name></doc>".encode()
    )


def test_another_media_types_charset_says_nothing_about_the_xml_body() -> None:
    """CGI.pm's ``header()`` sends ``text/html; charset=ISO-8859-1`` whatever the script prints."""
    body = "<doc><name>Пётр</name></doc>".encode()
    assert cgi.xml_body(b"Content-Type: text/html; charset=ISO-8859-1\r\n\r\n" + body) == body


def test_a_failing_status_fails_the_handler_naming_the_status_line() -> None:
    request = cgi.request(turn(), "/root/addon/x.sh", CALL, document())
    result = cgi.result(turn(), CALL, outcome(request, b"Status: 403 Forbidden\r\n\r\n"), document())
    assert result.stop and result.notes[0].text.endswith('failed: answered "Status: 403 Forbidden"')
