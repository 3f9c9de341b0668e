"""The panel's small habits: every response, an error too, carries the panel's own
``<doc>`` attributes (``func``, ``lang``, ``binary``); an xml handler printing a bare
``<doc>`` does not lose them; every call gets a request line in the log."""

from __future__ import annotations

from lxml import etree

from conftest import PanelRoot

PANEL = {"func", "lang", "binary"}


def _doc(stdout: str) -> etree._Element:
    return etree.fromstring(stdout.encode())


def test_an_error_carries_the_same_doc_attributes_as_a_success(root: PanelRoot) -> None:
    ok = root.mgrhooks("exec", "user.add", "name=alice", "passwd=x", "sok=ok", "--lang", "ru")
    again = root.mgrhooks("exec", "user.add", "name=alice", "passwd=x", "sok=ok", "--lang", "ru")
    unknown = root.mgrhooks("exec", "no.such", "--lang", "ru")
    assert (ok.returncode, again.returncode, unknown.returncode) == (0, 1, 1)
    expected = {"func": "user.add", "lang": "ru", "binary": "/billmgr"}
    assert dict(_doc(ok.stdout).attrib) == expected
    assert dict(_doc(again.stdout).attrib) == expected  # the core's typed error
    assert dict(_doc(unknown.stdout).attrib) == {**expected, "func": "no.such"}


def test_a_handler_failure_carries_them_too(root: PanelRoot) -> None:
    ispmgr = PanelRoot(root.path, "ispmgr")
    ispmgr.handler("broken.sh", "#!/bin/sh\nexit 3\n", '<event name="user" before="yes"/>')
    result = ispmgr.mgrhooks("exec", "user")
    assert result.returncode == 1
    assert dict(_doc(result.stdout).attrib) == {"func": "user", "lang": "en", "binary": "/ispmgr"}


def test_a_bare_doc_from_an_xml_handler_gets_the_panel_attributes_back(root: PanelRoot) -> None:
    """The next handler sees them, and so does the caller; an attribute the handler set stays."""
    root.handler(
        "bare.py",
        "#!/bin/sh\ncat > /dev/null\necho '<doc lang=\"de\"><note>bare</note></doc>'\n",
        '<event name="user" after="yes"/>',
    )
    root.handler("zz_next.sh", "#!/bin/sh\ntee var/next.seen\n", '<event name="user" after="yes"/>')
    result = root.mgrhooks("exec", "user")
    assert result.returncode == 0, result.stderr
    seen = _doc(root.read("var/next.seen"))
    assert dict(seen.attrib) == {"func": "user", "lang": "de", "binary": "/billmgr"}
    assert seen.findtext("note") == "bare"
    assert dict(_doc(result.stdout).attrib) == dict(seen.attrib)


def test_every_call_is_logged_with_a_request_line_secrets_hidden(root: PanelRoot) -> None:
    listed = root.mgrhooks("exec", "user")  # no handler at all
    added = root.mgrhooks(
        "exec", "user.add", "name=bob", "passwd=hunter2", "sok=ok", "--user", "admin", "--level", "29"
    )
    assert (listed.returncode, added.returncode) == (0, 0), added.stderr
    lines = [line.split("] ", 1)[1] for line in root.log().splitlines() if " Request [" in line]
    assert lines == [
        "action INFO Request [root][30] 'func=user'",
        "action INFO Request [admin][29] 'func=user.add&name=bob&passwd=***&sok=ok'",
    ]
    assert "hunter2" not in root.log()
