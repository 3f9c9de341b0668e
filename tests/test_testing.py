"""The pytest plugin for addon authors (mgrhooks.pytest_plugin, mgrhooks.testing,
mgrhooks.expect): addon projects with their own tests, run by pytest in-process
(pytester), as their authors would run them."""

from __future__ import annotations

import re
import sys
from pathlib import Path

import pytest
from lxml import etree

from conftest import REPO
from mgrhooks.expect import mismatch, side_by_side
from mgrhooks.testing import Result

pytest_plugins = ["pytester"]

PLUGIN = """<mgrdata><handler name="hello.py" type="xml"><event name="user" after="yes"/></handler></mgrdata>"""
HELLO = f"""#!{sys.executable}
import os, sys
doc = sys.stdin.read()
sys.stdout.write(doc.replace("</doc>", "<hello>" + os.environ["AUTH_USER"] + "</hello>\\n</doc>"))
"""


def _project(where: Path, mode: int = 0o775) -> None:
    (where / "etc" / "xml").mkdir(parents=True)
    (where / "etc" / "xml" / "billmgr_mod_hello.xml").write_text(PLUGIN)
    (where / "addon").mkdir()
    (where / "addon" / "hello.py").write_text(HELLO)
    (where / "addon" / "hello.py").chmod(mode)
    for folder in (where / "etc", where / "etc" / "xml", where / "addon"):
        folder.chmod(0o775)  # as a checkout made with umask 002
    (where / "etc" / "xml" / "billmgr_mod_hello.xml").chmod(0o664)


def test_a_project_at_the_rootdir_is_laid_out_and_called(pytester: pytest.Pytester) -> None:
    _project(pytester.path)
    pytester.makepyfile(
        """
        import stat

        def test_hello(mgr_root, mgr_call):
            result = mgr_call("user", user="admin", level=29)
            result.assert_ok()
            result.assert_xpath("/doc/hello", "admin")
            assert result.status == 0
            program = mgr_root.path / "addon" / "hello.py"
            assert stat.S_IMODE(program.stat().st_mode) == 0o755
            assert (mgr_root.path / "sbin" / "mgrctl").exists()

        def test_each_test_has_its_own_root(mgr_root):
            assert not (mgr_root.path / "var" / "billmgr.log").exists()
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=2)


def test_a_failing_fragment_shows_both_documents_side_by_side(pytester: pytest.Pytester) -> None:
    _project(pytester.path)
    pytester.makepyfile(
        """
        def test_hello(mgr_call):
            mgr_call("user", user="alice").assert_xpath("/doc/hello", "<hello>bob</hello>")
        """
    )
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(failed=1)
    result.stdout.fnmatch_lines(
        [
            "*AssertionError: user",
            "*XPath /doc/hello selects an element that differs from the expected one",
            "*expected*actual",
            "*<hello>bob</hello>*|*<hello>alice</hello>",
        ]
    )


def test_the_project_and_the_panel_come_from_ini_options(pytester: pytest.Pytester) -> None:
    _project(pytester.path / "addons" / "hello")
    (pytester.path / "addons" / "hello" / "etc" / "xml" / "billmgr_mod_hello.xml").rename(
        pytester.path / "addons" / "hello" / "etc" / "xml" / "ispmgr_mod_hello.xml"
    )
    pytester.makeini("[pytest]\nmgrhooks_project = addons/hello\nmgrhooks_mgr = ispmgr\n")
    pytester.makepyfile(
        """
        def test_hello(mgr_root, mgr_call):
            assert mgr_root.mgr == "ispmgr"
            mgr_call("user").assert_xpath("/doc/@binary", "/ispmgr")
            mgr_call("user").assert_xpath("/doc/hello", "root")
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_the_project_fixture_can_be_overridden(pytester: pytest.Pytester) -> None:
    _project(pytester.path / "elsewhere")
    pytester.makeconftest(
        """
        import pytest

        @pytest.fixture
        def mgr_project(pytestconfig):
            return pytestconfig.rootpath / "elsewhere"
        """
    )
    pytester.makepyfile("def test_hello(mgr_call):\n    mgr_call('user').assert_xpath('/doc/hello')\n")
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_a_project_without_addons_is_named(pytester: pytest.Pytester) -> None:
    pytester.makepyfile("def test_hello(mgr_root):\n    pass\n")
    result = pytester.runpytest("-p", "no:cacheprovider")
    result.assert_outcomes(errors=1)
    result.stdout.fnmatch_lines(["*RootError: *: no addon/ or etc/ to lay a root out from (set mgrhooks_project)"])


def test_a_program_the_project_does_not_make_executable_fails_as_on_a_panel(pytester: pytest.Pytester) -> None:
    _project(pytester.path, mode=0o664)
    pytester.makepyfile(
        """
        def test_hello(mgr_call):
            result = mgr_call("user")
            result.assert_error(type="handler")
            assert result.status == 1
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=1)


def test_levels_formats_and_core_documents_go_as_exec_takes_them(pytester: pytest.Pytester) -> None:
    _project(pytester.path)
    pytester.makepyfile(
        """
        import pytest

        PAGE = "<doc><ok/><name>a.example</name></doc>"

        def test_core_documents(mgr_root, mgr_call, tmp_path):
            given = mgr_call("webdomain.edit", "name=a.example", core_doc=PAGE, out="sjson")
            assert given.json["doc"]["name"] == {"$": "a.example"}
            (tmp_path / "page.xml").write_text(PAGE)
            mgr_call("webdomain.edit", core_doc=tmp_path / "page.xml").assert_xpath("/doc/name", "a.example")
            mgr_root.core_document("webdomain.edit", PAGE)
            mgr_call("webdomain.edit", out="text").assert_xpath("/doc/name", "a.example")

        def test_levels(mgr_call):
            mgr_call("user.add", "name=alice", "passwd=x", sok="ok").assert_ok()
            mgr_call("user.add", "name=bob", "passwd=x", sok="ok", user="alice", level=16).assert_error(type="access")
            with pytest.raises(ValueError, match="expected key=value, got 'alice'"):
                mgr_call("user.add", "alice")
            assert mgr_call("user", out="text").output == "name=alice level=16 state=active\\nhello=root\\n"

        def test_the_command(mgr_exec):
            result = mgr_exec("user", "--level", "99")
            assert result.status == 2 and "--level" in result.stderr
            devel = mgr_exec("user", "--out", "devel")
            devel.assert_xpath("/doc/tparams/out", "devel")
            assert mgr_exec("user", "--out=json").json["doc"]["hello"] == {"$": "root"}
        """
    )
    pytester.runpytest("-p", "no:cacheprovider").assert_outcomes(passed=3)


def test_the_project_in_docs_testing_md_passes_its_own_tests(pytester: pytest.Pytester) -> None:
    page = (REPO / "docs" / "testing.md").read_text()
    files = re.findall(r"```\w+ file=(\S+)\n(.*?)```", page, re.S)
    assert {name for name, _ in files} >= {"addon/domainguard.py", "tests/test_domainguard.py", "pyproject.toml"}
    for name, text in files:
        path = pytester.path / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(text.replace("#!/usr/bin/env python3", f"#!{sys.executable}", 1))
    (pytester.path / "addon" / "domainguard.py").chmod(0o755)
    result = pytester.runpytest_subprocess("-p", "no:cacheprovider")  # a pytest of its own, as the author runs it
    result.assert_outcomes(passed=7)


# --- the expectations themselves (mgrhooks.expect, pure) --------------------------------

DOC = etree.fromstring(
    b'<doc func="user"><elem><name>alice</name></elem><elem><name>bob</name></elem><!-- x --><ok/></doc>'
)


@pytest.mark.parametrize(
    ("xpath", "expected"),
    [
        ("/doc/ok", None),
        ("/doc/elem/name", ["alice", "bob"]),
        ("/doc/elem[1]", "<elem>\n  <name>alice</name>\n</elem>"),
        ("/doc/@func", "user"),
        ("count(/doc/elem)", 2),
        ("/doc/elem[name='bob']", "bob"),
        ("boolean(/doc/ok)", True),
        ("string(/doc/elem[2]/name)", "bob"),
    ],
    ids=["exists", "texts", "fragment", "attribute", "count", "text", "boolean", "string"],
)
def test_expectations_that_hold(xpath: str, expected: object) -> None:
    assert mismatch(DOC, xpath, *([] if expected is None else [expected])) is None


@pytest.mark.parametrize(
    ("xpath", "expected", "said"),
    [
        ("/doc/banner", None, "XPath /doc/banner selects nothing"),
        ("/doc/elem/name", "alice", "XPath /doc/elem/name selects 2 nodes, expected one with text 'alice'"),
        ("count(/doc/elem)", 3, "XPath count(/doc/elem)\n  expected: 3\n  found:    2.0"),
        ("/doc/elem/name", ["bob", "alice"], "  expected: ['bob', 'alice']\n  found:    ['alice', 'bob']"),
        ("/doc/nothing", "<nothing/>", "XPath /doc/nothing selects nothing, expected one element:\n<nothing/>"),
    ],
    ids=["nothing", "two", "count", "order", "fragment"],
)
def test_expectations_that_fail_say_what_was_found(xpath: str, expected: object, said: str) -> None:
    message = mismatch(DOC, xpath, *([] if expected is None else [expected]))
    assert message is not None and said in message
    assert 'the response document:\n    <doc func="user">\n      <elem>' in message


def test_an_invalid_xpath_is_named() -> None:
    with pytest.raises(ValueError, match=r"invalid XPath '/doc\[': "):
        mismatch(DOC, "/doc[")


def test_side_by_side_marks_changed_missing_and_added_lines() -> None:
    view = side_by_side(
        ["<a>", "  <b/>", "  <c/>", "</a>"], ["<a>", "  <c/>", "  <d/>", "</a>"], ("expected", "actual")
    )
    assert view.splitlines() == [
        "expected   actual",
        "--------   --------",
        "<a>        <a>",
        "  <b/>   <",
        "  <c/>       <c/>",
        "         >   <d/>",
        "</a>       </a>",
    ]


# --- results: what a failed assertion says (mgrhooks.testing.Result) --------------------

ANSWER = etree.fromstring(
    b'<doc func="user.add"><error type="exists" object="user" value="alice"><msg>User exists</msg></error></doc>'
)


def _result(doc: etree._Element | None, out: str = "xml", output: str = "") -> Result:
    return Result("user.add", (("name", "alice"), ("sok", "ok")), out, 1, output, "", doc)


def test_a_result_names_the_call_and_the_error_it_got() -> None:
    result = _result(ANSWER)
    with pytest.raises(AssertionError) as failed:
        result.assert_ok()
    assert str(failed.value).startswith(
        'user.add name=alice sok=ok answered an error: <error type="exists" object="user" value="alice">: User exists\n'
        "the response document:\n"
        '<?xml version="1.0" encoding="UTF-8"?>\n<doc func="user.add"><error'
    )
    with pytest.raises(AssertionError, match=r'answered <error type="exists" .*: User exists, expected type="access"$'):
        result.assert_error(type="access")
    assert result.assert_error(value="alice") is result.error
    with pytest.raises(
        AssertionError, match=r"^user.add name=alice sok=ok\nXPath /doc/error/@type selects \['exists'\]"
    ):
        result.assert_no_xpath("/doc/error/@type")
    with pytest.raises(AssertionError, match=r"expected text: 'Exists'\n  found text:    'User exists'"):
        result.assert_xpath("/doc/error/msg", "Exists")
    assert result.xpath("string(/doc/error/@object)") == "user"


def test_a_result_without_an_error_says_so() -> None:
    result = _result(etree.fromstring(b"<doc><ok/><!-- kept out --><id>alice</id></doc>"))
    result.assert_no_xpath("/doc/error")
    result.assert_doc("<doc><ok/><id>alice</id></doc>")
    with pytest.raises(AssertionError, match=r"^user.add name=alice sok=ok answered no error\n"):
        result.assert_error()


def test_a_result_that_is_not_a_document_says_what_it_is() -> None:
    result = _result(None, out="text", output="OK\n")
    with pytest.raises(AssertionError, match=r"^user.add name=alice sok=ok: output is text, not a document:\nOK\n$"):
        result.assert_xpath("/doc/ok")
