"""Public addons as their authors run them (issue 16): group operations read ``PARAM_elids``,
scripts whose interpreter is missing, install instructions calling ``mgrctl``, form plugins,
functions known only from handlers and core documents. Every addon here is written in the
shape of the public ones, run through the real CLI."""

from __future__ import annotations

import os
import subprocess
import sys

import pytest

from conftest import PYTHON_SHEBANG, PanelRoot, need

#: an ISPmanager 5 samba addon's shape: one cgi after-handler on the user functions, reading
#: the selected ids of the group operations from PARAM_elids
SAMBA_PLUGIN = """<?xml version="1.0" encoding="UTF-8"?>
<mgrdata>
  <handler name="samba.py" type="cgi">
    <event after="yes" name="user.edit"/>
    <event after="yes" name="user.delete"/>
    <event after="yes" name="user.suspend"/>
    <event after="yes" name="user.resume"/>
  </handler>
</mgrdata>"""
SAMBA_PY = """
import os

env = os.environ
with open("var/smb.log", "a") as log:
    if env["PARAM_func"] in ("user.suspend", "user.resume", "user.delete"):
        for user in env["PARAM_elids"].split(", "):
            log.write(env["PARAM_func"] + " " + user + "\\n")
    else:
        log.write(env["PARAM_func"] + " elids=" + env.get("PARAM_elids", "-") + "\\n")
print('<?xml version="1.0" encoding="UTF-8"?>\\n<doc/>')
"""


def _add_users(root: PanelRoot, *names: str) -> None:
    for name in names:
        assert root.mgrhooks("exec", "user.add", f"name={name}", "passwd=x", "sok=ok").returncode == 0


def test_group_operations_give_the_selected_ids_in_elids(root: PanelRoot) -> None:
    root.mgr = "ispmgr"
    root.plugin("samba", SAMBA_PLUGIN)
    root.addon("samba.py", PYTHON_SHEBANG + SAMBA_PY)
    _add_users(root, "alice", "bob")
    assert root.mgrhooks("exec", "user.suspend", "--elid", "alice, bob").returncode == 0
    assert root.mgrhooks("exec", "user.resume", "elid=bob").returncode == 0
    assert root.mgrhooks("exec", "user.edit", "--elid", "bob").returncode == 0  # a form: no group
    assert root.mgrhooks("exec", "user.delete", "--elid", "alice, bob").returncode == 0
    assert root.read("var/smb.log") == (
        "user.suspend alice\nuser.suspend bob\nuser.resume bob\nuser.edit elids=-\nuser.delete alice\nuser.delete bob\n"
    )


def test_elids_is_in_the_post_body_and_a_callers_own_is_kept(root: PanelRoot) -> None:
    need("perl", ["perl", "-MCGI", "-e1"])
    root.handler(
        "smb.pl",
        """#!/usr/bin/perl
        use CGI;
        my $q = CGI->new;
        open(my $log, ">>", "var/smb.log");
        print $log $q->param("func") . " [" . $q->param("elids") . "] $ENV{QUERY_STRING}\\n";
        print "<?xml version=\\"1.0\\" encoding=\\"UTF-8\\"?>\\n<doc/>\\n";
        """,
        '<event name="user.suspend" after="yes" postdata="yes"/>',
        type="cgi",
    )
    _add_users(root, "alice", "bob")
    assert root.mgrhooks("exec", "user.suspend", "--elid", "alice, bob").returncode == 0
    assert root.mgrhooks("exec", "user.suspend", "elids=bob", "--elid", "alice").returncode == 0
    assert root.read("var/smb.log") == (
        "user.suspend [alice, bob] func=user.suspend&elid=alice%2C+bob&elids=alice%2C+bob\n"
        "user.suspend [bob] func=user.suspend&elids=bob&elid=alice\n"
    )


def test_a_missing_interpreter_is_named_by_check_and_by_the_call(root: PanelRoot) -> None:
    missing = f"{root.path}/usr/bin/python"
    root.mgr = "ispmgr"
    root.plugin("samba", SAMBA_PLUGIN)
    root.addon("samba.py", f"#!{missing}\n" + SAMBA_PY)
    problem = f"interpreter '{missing}' is missing, needed by 'addon/samba.py' (its #! line)"
    result = root.mgrhooks("check")
    assert result.returncode == 1
    assert result.stdout == f"etc/xml/ispmgr_mod_samba.xml:3: error: handler 'samba.py': {problem}\n"
    _add_users(root, "alice")
    called = root.mgrhooks("exec", "user.suspend", "--elid", "alice", "--out", "text")
    assert called.returncode == 1 and called.stdout.endswith(f"failed: {problem}\n")
    assert problem in root.log()


def test_an_interpreter_through_env_is_looked_up_in_path(root: PanelRoot) -> None:
    command = f"python-{os.urandom(4).hex()}"
    root.handler("x.py", f"#!/usr/bin/env {command}\nprint('<doc/>')\n", '<event name="user" after="yes"/>')
    result = root.mgrhooks("check")
    assert result.returncode == 1
    assert f"handler 'x.py': interpreter '{command}' is not found in PATH (" in result.stdout
    assert f"needed by 'addon/x.py' (its #! line: /usr/bin/env {command})" in result.stdout
    root.addon("x.py", "#!/bin/sh\r\necho '<doc/>'\r\n")
    carriage = root.mgrhooks("check").stdout
    assert "the #! line of 'addon/x.py' ends in a carriage return (Windows line ends)" in carriage
    root.addon("x.py", "#!/usr/bin/env sh\necho '<doc/>'\n")
    assert root.mgrhooks("check").returncode == 0


def test_programs_of_one_call_sharing_a_missing_interpreter_are_each_named(root: PanelRoot) -> None:
    """A call judges each #! line once (programs.Inspector); every program it refuses is
    still named in its own message."""
    missing = f"{root.path}/usr/bin/python"
    root.plugin(
        "two",
        '<mgrdata><handler name="a.py" type="cgi" ignore_errors="yes"><event name="user" after="yes"/></handler>'
        '<handler name="b.py" type="cgi" ignore_errors="yes"><event name="user" after="yes"/></handler></mgrdata>',
    )
    for name in ("a.py", "b.py"):
        root.addon(name, f"#!{missing}\nprint('<doc/>')\n")
    assert root.mgrhooks("exec", "user").returncode == 0
    log = root.log()
    for name in ("a.py", "b.py"):
        assert f"interpreter '{missing}' is missing, needed by 'addon/{name}' (its #! line)" in log


@pytest.fixture
def panel(root: PanelRoot) -> PanelRoot:
    """A root laid out by ``mgrhooks init`` (so it has sbin/mgrctl)."""
    result = subprocess.run([sys.executable, "-m", "mgrhooks", "init", str(root.path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    return root


def _mgrctl(root: PanelRoot, *args: str) -> subprocess.CompletedProcess[str]:
    env = {**os.environ, "MGRHOOKS_PYTHON": sys.executable}
    return subprocess.run([str(root.path / "sbin/mgrctl"), *args], capture_output=True, text=True, env=env)


def test_mgrctl_takes_what_install_instructions_run(panel: PanelRoot) -> None:
    for args in (["-m", "ispmgr", "exit"], ["-R"], ["-m", "billmgr", "--restart"]):
        result = _mgrctl(panel, *args)
        assert (result.returncode, result.stdout) == (0, ""), (args, result.stderr)
        assert result.stderr.startswith("mgrctl: no resident panel to restart")
    assert "action INFO mgrctl exit: no resident panel to restart (nothing done)" in panel.read("var/ispmgr.log")
    assert "action INFO mgrctl -R: no resident panel to restart" in panel.read("var/billmgr.log")
    listed = _mgrctl(panel, "-m", "ispmgr")
    assert listed.returncode == 0 and listed.stdout == _mgrctl(panel, "-m", "ispmgr", "-i").stdout
    assert {"user", "user.add", "eventlist"} <= set(listed.stdout.split())


def test_mgrctl_names_an_unknown_option(panel: PanelRoot) -> None:
    result = _mgrctl(panel, "-m", "ispmgr", "-x", "user")
    assert result.returncode == 2 and result.stdout == ""
    assert result.stderr.startswith("Usage: mgrctl [OPTIONS] [FUNC] [KEY=VALUE]...")
    assert "Error: unknown option '-x' (mgrctl takes -m MGR, -o FORMAT, -i, -R/--restart" in result.stderr


#: three ISPmanager plugins extending the panel's site form (files sorted by name: a, b, c)
FORM_PLUGINS = {
    "a_backup": """<?xml version="1.0" encoding="UTF-8"?>
<mgrdata>
  <metadata name="webdomain.edit" type="form">
    <form>
      <page name="main">
        <field name="backup"><input type="checkbox" name="backup"/></field>
      </page>
    </form>
  </metadata>
  <lang name="en">
    <messages name="webdomain.edit"><msg name="backup">Daily backup</msg></messages>
  </lang>
  <handler name="backup.sh" type="cgi"><event name="webdomain.edit" after="yes"/></handler>
</mgrdata>""",
    "b_cdn": """<?xml version="1.0" encoding="UTF-8"?>
<mgrdata>
  <metadata name="webdomain.edit" type="form">
    <form>
      <page name="cdn">
        <field name="cdn_zone"><input type="text" name="cdn_zone"/></field>
      </page>
      <field name="cdn"><input type="checkbox" name="cdn"/></field>
    </form>
  </metadata>
  <lang name="en">
    <messages name="webdomain.edit"><msg name="cdn">Use the CDN</msg></messages>
  </lang>
</mgrdata>""",
    "c_waf": """<?xml version="1.0" encoding="UTF-8"?>
<mgrdata>
  <metadata name="webdomain.edit" type="form">
    <form>
      <page name="main">
        <field name="waf"><select name="waf"/></field>
        <field name="backup"><input type="text" name="backup"/></field>
      </page>
      <page name="cdn"><field name="cdn_purge"><input type="checkbox" name="cdn_purge"/></field></page>
    </form>
  </metadata>
</mgrdata>""",
}
CORE_FORM = """<doc>
  <metadata name="webdomain.edit" type="form">
    <form>
      <page name="main"><field name="name"><input type="text" name="name"/></field></page>
    </form>
  </metadata>
  <name>example.com</name>
</doc>"""


def _form_fields(devel: str) -> list[tuple[str, str]]:
    """(page, field) of each field of the response's one form, in order (page '' outside one)."""
    import xml.etree.ElementTree as ET

    forms = ET.fromstring(devel.encode()).findall("metadata")
    assert len(forms) == 1
    found = []
    for child in forms[0].find("form"):
        if child.tag == "page":
            found += [(child.get("name", ""), field.get("name", "")) for field in child.findall("field")]
        else:
            found.append(("", child.get("name", "")))
    return found


def test_form_plugins_extend_one_form_in_a_documented_order(root: PanelRoot) -> None:
    root.mgr = "ispmgr"
    for name, xml in FORM_PLUGINS.items():
        root.plugin(name, xml)
    root.addon("backup.sh", "#!/bin/sh\ncat > var/backup.seen\necho '<doc/>'\n")
    core = root.path / "webdomain.edit.xml"
    core.write_text(CORE_FORM)
    result = root.mgrhooks("exec", "webdomain.edit", "--elid", "example.com", "--core-doc", str(core), "--out", "devel")
    assert result.returncode == 0, result.stdout
    expected = [("main", "name"), ("main", "backup"), ("main", "waf"), ("cdn", "cdn_zone"), ("cdn", "cdn_purge")]
    assert _form_fields(result.stdout) == [*expected, ("", "cdn")]
    assert '<select name="waf"/>' in result.stdout and '<input type="text" name="backup"/>' not in result.stdout
    assert '<msg name="backup">Daily backup</msg><msg name="cdn">Use the CDN</msg>' in result.stdout
    # without a form of the core's own, the plugin files' form is the one (handlers see it too)
    (root.path / "plain.xml").write_text("<doc><name>example.com</name></doc>")
    plain = root.mgrhooks("exec", "webdomain.edit", "--core-doc", str(root.path / "plain.xml"), "--out", "devel")
    assert _form_fields(plain.stdout) == [*expected[1:], ("", "cdn")]
    assert _form_fields(root.read("var/backup.seen")) == _form_fields(plain.stdout)
    checked = root.mgrhooks("check")
    assert checked.stdout == (
        "etc/xml/ispmgr_mod_c_waf.xml:7: warning: form 'webdomain.edit': field 'backup' is already in the form: ignored\n"
    )


def test_a_function_addon_gets_every_plugins_fields(root: PanelRoot) -> None:
    root.mgr = "ispmgr"
    root.plugin(
        "a_cdn",
        """<mgrdata>
        <handler name="cdn.py" type="xml"><func name="cdn.settings"/></handler>
        <metadata name="cdn.settings" type="form"><form><field name="zone"><input name="zone"/></field></form></metadata>
        </mgrdata>""",
    )
    root.plugin(
        "b_purge",
        """<mgrdata><metadata name="cdn.settings" type="form"><form>
        <field name="purge"><input name="purge"/></field></form></metadata></mgrdata>""",
    )
    root.addon(
        "cdn.py",
        PYTHON_SHEBANG + "import sys\ndata = sys.stdin.read()\nopen('var/cdn.seen', 'w').write(data)\nprint(data)\n",
    )
    result = root.mgrhooks("exec", "cdn.settings", "--out", "devel")
    assert result.returncode == 0, result.stdout
    assert _form_fields(root.read("var/cdn.seen")) == [("", "zone"), ("", "purge")] == _form_fields(result.stdout)


def test_plan_works_for_functions_known_from_handlers_or_a_core_document(root: PanelRoot) -> None:
    root.mgr = "ispmgr"
    root.handler("vhost.sh", "#!/bin/sh\ncat\n", '<event name="webdomain.edit" after="yes"/>')
    planned = root.mgrhooks("plan", "webdomain.edit")
    assert planned.returncode == 0, planned.stderr
    assert planned.stdout.splitlines()[0] == (
        "  1. action  action    webdomain.edit  [skipped: no main logic: nothing answers 'webdomain.edit' here;"
        " give its result with --core-doc FILE or etc/core/ispmgr/webdomain.edit.xml]"
    )
    assert planned.stdout.splitlines()[2] == "  2. after   handler   vhost.sh (xml)"
    assert root.mgrhooks("exec", "webdomain.edit").returncode == 1  # a call still needs a main logic
    page = root.path / "page.xml"
    page.write_text("<doc><name>example.com</name></doc>")
    supplied = root.mgrhooks("plan", "webdomain.edit", "--core-doc", str(page))
    assert supplied.stdout.splitlines()[:2] == [
        "  1. action  action    webdomain.edit",
        f"     why: main logic: core document {page}",
    ]
    alone = root.mgrhooks("plan", "site.backup", "--core-doc", str(page))  # known only from the document
    assert alone.returncode == 0 and f"why: main logic: core document {page}" in alone.stdout
    assert root.mgrhooks("plan", "no.such").returncode == 1  # no handler, no document: unknown


def test_a_document_for_one_object_answers_before_the_functions_own(panel: PanelRoot) -> None:
    panel.mgr = "ispmgr"
    core = panel.path / "etc/core/ispmgr"
    (core / "webdomain.edit").mkdir(parents=True)
    (core / "webdomain.edit/a.example.xml").write_text("<doc><name>a.example</name><php>8.2</php></doc>")
    (core / "webdomain.edit/b.example.xml").write_text("<doc><name>b.example</name><php>7.4</php></doc>")
    # an addon that loops over the selected sites, reading each one's form through mgrctl
    panel.plugin(
        "php_report", '<mgrdata><handler name="php_report.sh" type="cgi"><func name="php.report"/></handler></mgrdata>'
    )
    panel.addon(
        "php_report.sh",
        """#!/bin/bash
        echo "<doc>"
        IFS=',' read -ra sites <<< "${PARAM_elid//, /,}"
        for site in "${sites[@]}"; do
          php=$(sbin/mgrctl -m ispmgr -o text webdomain.edit elid="$site" | sed -n 's/^php=//p')
          echo "<elem><name>$site</name><php>$php</php></elem>"
        done
        echo "</doc>"
        """,
    )
    env = {**os.environ, "MGRHOOKS_PYTHON": sys.executable}
    report = panel.mgrhooks("exec", "php.report", "--elid", "a.example, b.example", "--out", "text", env=env)
    assert (report.returncode, report.stdout) == (0, "name=a.example php=8.2\nname=b.example php=7.4\n")
    missing = panel.mgrhooks("exec", "webdomain.edit", "--elid", "c.example", "--out", "text")
    assert missing.returncode == 1
    assert missing.stdout == (
        "ERROR missed(core-doc,c.example): No core document answers for 'webdomain.edit' object 'c.example':"
        f" neither {core}/webdomain.edit/c.example.xml nor {core}/webdomain.edit.xml\n"
    )
    assert panel.mgrhooks("plan", "webdomain.edit").stdout.splitlines()[1] == (
        "     why: main logic: core documents etc/core/ispmgr/webdomain.edit/<elid>.xml, one for each object"
        " (none for others)"
    )
    (core / "webdomain.edit.xml").write_text("<doc><php>8.3</php></doc>")  # every other object
    assert panel.mgrhooks("exec", "webdomain.edit", "--elid", "c.example", "--out", "text").stdout == "php=8.3\n"
    assert (
        panel.mgrhooks("exec", "webdomain.edit", "--elid", "../webdomain.edit", "--out", "text").stdout == "php=8.3\n"
    )
    planned = panel.mgrhooks("plan", "webdomain.edit").stdout
    assert (
        "why: main logic: core document etc/core/ispmgr/webdomain.edit.xml"
        " (etc/core/ispmgr/webdomain.edit/<elid>.xml first, for one object)"
    ) in planned
    # the trust rule holds for the folder and its documents
    (core / "webdomain.edit").chmod(0o777)
    refused = panel.mgrhooks("exec", "webdomain.edit", "--elid", "a.example", "--out", "text")
    assert (
        refused.returncode == 1
        and "is not trusted: folder etc/core/ispmgr/webdomain.edit/ is writable" in refused.stdout
    )
    assert "etc/core/ispmgr/webdomain.edit/: error: not trusted" in panel.mgrhooks("check").stdout


def test_a_core_document_replaces_a_built_in_function_only_when_it_says_so(root: PanelRoot) -> None:
    _add_users(root, "alice")
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    document = root.path / "etc/core/billmgr/user.xml"
    document.write_text("<doc><elem><name>from-file</name></elem></doc>")
    assert root.mgrhooks("exec", "user", "--out", "text").stdout == "name=alice level=16 state=active\n"
    assert root.mgrhooks("plan", "user").stdout.splitlines()[1] == (
        "     why: main logic: the core's function 'user'"
        ' (etc/core/billmgr/user.xml is not used: its <doc> does not say mgrhooks-replace="yes")'
    )
    checked = root.mgrhooks("check")
    assert (checked.returncode, checked.stdout) == (
        0,
        "etc/core/billmgr/user.xml: warning: 'user' is a built-in function: this document is not used"
        ' (its <doc> does not say mgrhooks-replace="yes")\n',
    )
    document.write_text('<doc mgrhooks-replace="yes"><elem><name>from-file</name></elem></doc>')
    replaced = root.mgrhooks("exec", "user", "--out", "xml")
    assert "<name>from-file</name>" in replaced.stdout and "mgrhooks-replace" not in replaced.stdout
    assert root.mgrhooks("plan", "user").stdout.splitlines()[1] == (
        "     why: main logic: core document etc/core/billmgr/user.xml, in place of the built-in function"
        ' (its <doc mgrhooks-replace="yes">)'
    )
    assert root.mgrhooks("check").stdout == (
        "etc/core/billmgr/user.xml: warning: replaces the built-in function 'user'"
        ' (its <doc mgrhooks-replace="yes">)\n'
    )
    supplied = root.path / "other.xml"  # the caller's own --core-doc answers, as asked
    supplied.write_text("<doc><elem><name>asked</name></elem></doc>")
    assert root.mgrhooks("exec", "user", "--core-doc", str(supplied), "--out", "text").stdout == "name=asked\n"


def test_per_object_documents_of_a_built_in_function(root: PanelRoot) -> None:
    """``etc/core/<mgr>/<func>/<elid>.xml`` of a built-in function answers for its object
    only when it says mgrhooks-replace="yes"; other objects, and calls without an elid, get
    the built-in function (docs/protocol.md, core documents)."""
    _add_users(root, "alice", "bob")
    objects = root.path / "etc/core/billmgr/user.edit"
    objects.mkdir(parents=True)
    (objects / "alice.xml").write_text('<doc mgrhooks-replace="yes"><name>from-file</name></doc>')
    (objects / "bob.xml").write_text("<doc><name>not-used</name></doc>")
    alice = root.mgrhooks("exec", "user.edit", "--elid", "alice", "--out", "xml")
    assert alice.returncode == 0 and "<name>from-file</name>" in alice.stdout, alice.stdout
    for elid in ("bob", "carol", ""):  # not saying replace, no file, no object at all
        called = root.mgrhooks("exec", "user.edit", *(["--elid", elid] if elid else []), "--out", "xml")
        assert "from-file" not in called.stdout and "not-used" not in called.stdout, (elid, called.stdout)
    assert root.mgrhooks("exec", "user.edit", "--elid", "bob", "--out", "text").stdout.startswith(
        "elid=bob\nname=bob\n"
    )
    assert root.mgrhooks("plan", "user.edit").stdout.splitlines()[1] == (
        "     why: main logic: the core's function 'user.edit' (etc/core/billmgr/user.edit/<elid>.xml answers"
        ' for its object only when its <doc> says mgrhooks-replace="yes")'
    )
    checked = root.mgrhooks("check").stdout
    assert "etc/core/billmgr/user.edit/alice.xml: warning: replaces the built-in function 'user.edit'" in checked
    assert "etc/core/billmgr/user.edit/bob.xml: warning: 'user.edit' is a built-in function" in checked


def test_a_broken_document_of_a_built_in_function_leaves_the_function_answering(root: PanelRoot) -> None:
    """A document of a built-in function that cannot be parsed does not take the function
    down: the built-in function answers, the action log says why, and ``check`` reports it
    as an error naming the file."""
    _add_users(root, "alice")
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    (root.path / "etc/core/billmgr/user.xml").write_text('<doc mgrhooks-replace="yes"><elem>')
    listed = root.mgrhooks("exec", "user", "--out", "text")
    assert (listed.returncode, listed.stdout) == (0, "name=alice level=16 state=active\n")
    assert "the built-in function 'user' answers" in root.log()
    assert root.mgrhooks("plan", "user").stdout.splitlines()[1] == (
        "     why: main logic: the core's function 'user'"
        ' (etc/core/billmgr/user.xml is not used: its <doc> does not say mgrhooks-replace="yes")'
    )
    checked = root.mgrhooks("check")
    assert checked.returncode != 0
    assert checked.stdout.startswith("etc/core/billmgr/user.xml: error: "), checked.stdout


def test_an_interpreter_installed_by_an_earlier_handler_is_seen_by_a_later_one(root: PanelRoot) -> None:
    """A #! line refused for one program is judged again for the next: an earlier handler
    of the same call may have installed its interpreter (programs.Inspector)."""
    interpreter = f"{root.path}/opt/py"
    root.plugin(
        "three",
        '<mgrdata><handler name="a.sh" type="cgi" ignore_errors="yes"><event name="user" after="yes"/></handler>'
        '<handler name="b.sh" type="cgi" ignore_errors="yes"><event name="user" after="yes"/></handler>'
        '<handler name="c.sh" type="cgi" ignore_errors="yes"><event name="user" after="yes"/></handler></mgrdata>',
    )
    body = "echo ran >> var/ran_$(basename $0)\necho '<doc/>'\n"
    root.addon("a.sh", f"#!{interpreter}\n{body}")
    root.addon("b.sh", f"#!/bin/sh\nmkdir -p opt && ln -s /bin/sh {interpreter}\necho '<doc/>'\n")
    root.addon("c.sh", f"#!{interpreter}\n{body}")
    root.mgrhooks("exec", "user", "--out", "text")
    assert not (root.path / "var/ran_a.sh").exists()  # refused: missing then
    assert f"interpreter '{interpreter}' is missing, needed by 'addon/a.sh'" in root.log()
    assert (root.path / "var/ran_c.sh").exists(), root.log()  # there when c.sh's turn came
