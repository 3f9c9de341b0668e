"""Addons as written for real panels, run unchanged through the CLI (issue: both plugin
generations, function addons, final stage, mgrctl, every output format, logging)."""

from __future__ import annotations

import json
import subprocess
import sys
import time

import psutil
import pytest

from conftest import PanelRoot, need

OLD_PARAMS_READER = """
#!/usr/bin/env python3
# ISPmanager 4 style: the stage in argv[1], request parameters in <params> on stdin
import sys
import xml.etree.ElementTree as ET
doc = ET.fromstring(sys.stdin.read())
params = doc.find("params")
with open("var/old.seen", "w") as seen:
    seen.write(" ".join([sys.argv[1], doc.get("user"), doc.get("level"), params.findtext("func"), params.findtext("elid")]))
if params.findtext("elid") == "root":
    print('<doc><error code="9">root cannot be edited</error></doc>')
else:
    print(ET.tostring(doc, encoding="unicode"))
"""


@pytest.fixture
def panel(root: PanelRoot) -> PanelRoot:
    """A root laid out by ``mgrhooks init`` (so it has sbin/mgrctl)."""
    result = subprocess.run([sys.executable, "-m", "mgrhooks", "init", str(root.path)], capture_output=True, text=True)
    assert result.returncode == 0, result.stderr
    assert f"created {root.path}/sbin/mgrctl" in result.stdout
    return root


def test_old_generation_handler_reads_params_and_answers_a_numeric_error(root: PanelRoot) -> None:
    root.plugin(
        "old",
        '<mgrdata><handler name="old.py" type="xml"><event before="yes">user.edit</event></handler></mgrdata>',
        directory="etc",
    )
    root.addon("old.py", OLD_PARAMS_READER)
    result = root.mgrhooks("exec", "user.edit", "--elid", "root", "--user", "admin", "--level", "29", "--out", "text")
    assert (result.returncode, result.stdout) == (1, "ERROR code 9: root cannot be edited\n")
    assert root.read("var/old.seen") == "before admin 29 user.edit root"
    result = root.mgrhooks("exec", "user.edit", "--elid", "root", "--out", "json")
    assert json.loads(result.stdout)["doc"]["error"] == {"$code": "9", "$": "root cannot be edited"}


def test_old_generation_echo_does_not_leak_params_or_attributes(root: PanelRoot) -> None:
    root.plugin(
        "old",
        '<mgrdata><handler name="echo.sh" type="xml"><event after="yes">user.add</event></handler></mgrdata>',
        directory="etc",
    )
    root.addon("echo.sh", "#!/bin/sh\ncat\n")
    result = root.mgrhooks("exec", "user.add", "name=al", "passwd=secret", "sok=ok")
    assert result.returncode == 0
    assert "<params>" not in result.stdout and "secret" not in result.stdout and 'level="' not in result.stdout
    assert "<id>al</id>" in result.stdout


def test_both_generations_load_and_order_by_file_name(root: PanelRoot) -> None:
    root.plugin(
        "b_new", '<mgrdata><handler name="n.sh" type="xml"><event name="user" after="yes"/></handler></mgrdata>'
    )
    root.plugin(
        "a_old",
        '<mgrdata><handler name="o.sh" type="xml"><event after="yes">user</event></handler></mgrdata>',
        directory="etc",
    )
    root.addon("n.sh", "#!/bin/sh\ncat\n")
    root.addon("o.sh", "#!/bin/sh\ncat\n")
    lines = root.mgrhooks("plan", "user").stdout.splitlines()[::2]
    assert lines == [
        "  1. action  action    user",
        "  2. after   handler   o.sh (xml)",
        "  3. after   handler   n.sh (xml)",
    ]


def test_minlevel_on_handler_and_func(root: PanelRoot) -> None:
    root.plugin(
        "lvl",
        """<mgrdata>
        <handler name="admin_only.sh" type="xml" minlevel="29"><event after="yes">desktop</event></handler>
        <handler name="tool.sh" type="xml"><func minlevel="24">reseller.tool</func></handler>
        </mgrdata>""",
        directory="etc",
    )
    root.addon("admin_only.sh", "#!/bin/sh\nsed 's|^</doc>|<admin/>\\n</doc>|'\n")
    root.addon("tool.sh", "#!/bin/sh\nsed 's|^</doc>|<tool/>\\n</doc>|'\n")
    assert "<admin/>" in root.mgrhooks("exec", "desktop").stdout
    assert "<admin/>" not in root.mgrhooks("exec", "desktop", "--user", "bob", "--level", "16").stdout
    assert "<tool/>" in root.mgrhooks("exec", "reseller.tool", "--level", "24").stdout
    result = root.mgrhooks("exec", "reseller.tool", "--level", "16", "--out", "text")
    assert (result.returncode, result.stdout) == (
        1,
        "ERROR access(func,reseller.tool): Access to 'reseller.tool' needs level 24\n",
    )


FORM_PLUGIN = """<mgrdata>
  <handler name="{name}" type="{type}"><func name="hello.form"/></handler>
  <metadata name="hello.form" type="form"><form><field name="greeting"><input type="text" name="greeting"/></field></form></metadata>
  <lang name="en"><messages name="hello.form"><msg name="title">Hello</msg></messages></lang>
  <lang name="ru"><messages name="hello.form"><msg name="title">Привет</msg></messages></lang>
</mgrdata>"""


def test_function_addon_gets_metadata_and_messages_for_the_language(root: PanelRoot) -> None:
    root.plugin("hello", FORM_PLUGIN.format(name="hello.sh", type="xml"))
    root.addon("hello.sh", "#!/bin/sh\ntee var/hello.seen\n")
    result = root.mgrhooks("exec", "hello.form", "--lang", "ru", "--out", "text")
    assert result.returncode == 0
    seen = root.read("var/hello.seen")
    assert '<metadata name="hello.form" type="form">' in seen and '<input type="text" name="greeting"/>' in seen
    assert '<messages name="hello.form"><msg name="title">Привет</msg></messages>' in seen
    assert result.stdout == ""  # interface parts are not data
    devel = root.mgrhooks("exec", "hello.form", "greeting=hi", "--out", "devel").stdout
    assert "<metadata" in devel and '<msg name="title">Hello</msg>' in devel
    assert "<tparams><func>hello.form</func><greeting>hi</greeting><out>devel</out></tparams>" in devel


def test_cgi_function_addon_gets_metadata_around_its_answer(root: PanelRoot) -> None:
    root.plugin("hello", FORM_PLUGIN.format(name="hello.cgi", type="cgi"))
    root.addon(
        "hello.cgi", '#!/bin/sh\necho "<doc><greeting>$PARAM_greeting</greeting><ok/><banner>saved</banner></doc>"\n'
    )
    devel = root.mgrhooks("exec", "hello.form", "greeting=hi", "--out", "devel").stdout
    assert devel.index("<metadata") < devel.index("<greeting>hi</greeting>")
    assert (
        root.mgrhooks("exec", "hello.form", "greeting=hi", "--out", "text").stdout == "greeting=hi\nOK\nbanner=saved\n"
    )


def test_merge_of_ok_redirect_banner_and_rows_from_cgi_handlers(root: PanelRoot) -> None:
    root.handler(
        "rows.sh",
        '#!/bin/sh\necho \'<doc><elem><name>extra</name></elem><ok type="form"/><redirect>location="x"</redirect><banner>b</banner></doc>\'\n',
        '<event name="user" after="yes"/>',
        type="cgi",
    )
    root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")
    doc = json.loads(root.mgrhooks("exec", "user", "--out", "json").stdout)["doc"]
    assert [row["name"]["$"] for row in doc["elem"]] == ["al", "extra"]
    assert (doc["ok"], doc["redirect"]["$"], doc["banner"]["$"]) == ({"$type": "form"}, 'location="x"', "b")


def test_final_handler_runs_after_the_output_is_released_and_its_failure_is_only_logged(root: PanelRoot) -> None:
    root.handler(
        "slow_final.sh",
        "#!/bin/sh\nsleep 2\ncat > var/final.seen\nexit 3\n",
        '<event name="user.add" final="yes" sessiondata="yes"/>',
    )
    started = time.monotonic()
    process = subprocess.Popen(
        root.argv("exec", "user.add", "name=al", "passwd=x", "sok=ok", "--out", "text"),
        stdout=subprocess.PIPE,
    )
    with process:
        output = process.stdout.read()  # returns at EOF: when the response is out
        released = time.monotonic() - started
        assert process.wait(timeout=30) == 0
    assert output == b"OK\nid=al\n"
    assert released < 1.9  # before the final handler's 2 s
    assert "<id>al</id>" in root.read("var/final.seen")
    assert "final handler 'slow_final.sh' failed: exit status 3" in root.log()


def test_final_handler_runs_whatever_the_response(root: PanelRoot) -> None:
    root.handler("fin.sh", "#!/bin/sh\ntouch var/final.ran\necho '<doc/>'\n", '<event name="*" final="yes"/>')
    result = root.mgrhooks("exec", "user.delete", "--elid", "ghost")
    assert result.returncode == 1
    assert (root.path / "var/final.ran").exists()


def test_handler_calls_mgrctl_for_a_nested_call(panel: PanelRoot) -> None:
    panel.handler(
        "list_users.sh",
        "#!/bin/sh\nsbin/mgrctl -m billmgr -o xml user > var/nested.xml\nsbin/mgrctl -m billmgr user > var/nested.txt\necho '<doc/>'\n",
        '<event name="user.add" after="yes"/>',
        type="cgi",
    )
    result = panel.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")
    assert result.returncode == 0, result.stdout
    assert "<elem><name>al</name>" in panel.read("var/nested.xml")  # the after-handler sees the committed user
    assert panel.read("var/nested.txt") == "name=al level=16 state=active\n"


def test_a_handler_calling_itself_is_stopped_by_the_depth_limit(panel: PanelRoot) -> None:
    panel.plugin("loop", '<mgrdata><handler name="loop.sh" type="cgi"><func name="loop.me"/></handler></mgrdata>')
    panel.addon(
        "loop.sh",
        '#!/bin/sh\nsbin/mgrctl -o xml loop.me > /dev/null\necho "<doc><depth>$MGRHOOKS_DEPTH</depth></doc>"\n',
    )
    result = panel.mgrhooks("exec", "loop.me", "--out", "text", timeout=60)
    assert (result.returncode, result.stdout) == (0, "depth=1\n")
    assert "Calls nested deeper than 8: " + " > ".join(["loop.me"] * 9) in panel.log()
    assert not [p for p in psutil.process_iter(["cmdline"]) if "loop.me" in " ".join(p.info["cmdline"] or [])]


def test_the_repository_root_has_the_same_mgrctl_as_init_makes() -> None:
    from conftest import REPO
    from mgrhooks.root import mgrctl_script

    script = REPO / "sbin/mgrctl"
    assert script.read_text() == mgrctl_script("$root/.venv/bin/python")
    assert script.stat().st_mode & 0o111


def test_mgrctl_lists_functions_and_parameters(panel: PanelRoot) -> None:
    panel.plugin("hello", FORM_PLUGIN.format(name="hello.sh", type="xml"))
    panel.addon("hello.sh", "#!/bin/sh\ncat\n")
    mgrctl = str(panel.path / "sbin/mgrctl")
    functions = subprocess.run([mgrctl, "-m", "billmgr", "-i"], capture_output=True, text=True).stdout.split()
    assert {"user.add", "eventlist", "hello.form", "desktop"} <= set(functions)
    assert subprocess.run([mgrctl, "-i", "hello.form"], capture_output=True, text=True).stdout == "greeting\n"
    assert subprocess.run([mgrctl, "-i", "user.delete"], capture_output=True, text=True).stdout == "elid\n"


def test_eventlist_lists_every_registration(root: PanelRoot) -> None:
    root.plugin(
        "ev",
        '<mgrdata><handler name="a.sh" type="cgi"><event name="user.add" after="yes" final="yes"/><func name="x.y"/></handler></mgrdata>',
    )
    assert root.mgrhooks("exec", "eventlist", "--out", "text").stdout == (
        "name=user.add stage=after handler=a.sh type=cgi plugin=etc/xml/billmgr_mod_ev.xml:1\n"
        "name=user.add stage=final handler=a.sh type=cgi plugin=etc/xml/billmgr_mod_ev.xml:1\n"
        "name=x.y stage=action handler=a.sh type=cgi plugin=etc/xml/billmgr_mod_ev.xml:1\n"
    )


def test_sjson_rows_and_fields_are_always_arrays(root: PanelRoot) -> None:
    root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")
    doc = json.loads(root.mgrhooks("exec", "user", "--out", "sjson").stdout)["doc"]
    assert doc["elem"] == [{"name": [{"$": "al"}], "level": [{"$": "16"}], "state": [{"$": "active"}]}]


def test_functions_of_other_products_from_supplied_documents(root: PanelRoot) -> None:
    root.mgr = "ispmgr"
    (root.path / "etc/core/ispmgr").mkdir(parents=True)
    (root.path / "etc/core/ispmgr/webdomain.xml").write_text("<doc><elem><name>example.com</name></elem></doc>")
    root.handler(
        "vhost.sh",
        "#!/bin/sh\nsed 's|^</doc>|<seen>'$PARAM_name'</seen>\\n</doc>|'\n",
        '<event name="webdomain.edit" after="yes"/>',
    )
    supplied = root.path / "edit.xml"
    supplied.write_text("<doc><ok/><id>example.com</id></doc>")
    result = root.mgrhooks(
        "exec", "webdomain.edit", "name=example.com", "sok=ok", "--core-doc", str(supplied), "--out", "text"
    )
    assert (result.returncode, result.stdout) == (0, "OK\nid=example.com\nseen=example.com\n")
    assert root.mgrhooks("exec", "webdomain", "--out", "text").stdout == "name=example.com\n"
    assert root.mgrhooks("exec", "webdomain.edit").returncode == 1  # no document for it: unknown function
    assert "Register event 'vhost.sh' for action 'webdomain.edit'" in root.read("var/ispmgr.log")


def test_a_supplied_list_in_our_form_reaches_the_handlers_as_text(root: PanelRoot) -> None:
    """A supplied list in the serialised form is merged as text (no tree of its rows);
    handlers and the response see the same document as through a tree, and a broken one
    is still reported with its file and line."""
    rows = "".join(f"<elem><name>site{n}.example</name><note>a &amp; b</note></elem>\n" for n in range(300))
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    listed = root.path / "etc/core/billmgr/site.xml"
    listed.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="site" total="300">\n{rows}</doc>\n')
    root.handler(
        "count.sh",
        "#!/bin/sh\ngrep -c '<elem>' > var/count.seen\necho '<doc/>'\n",
        '<event name="site" after="yes"/>',
        type="cgi",
    )
    root.handler("mark.sh", "#!/bin/sh\nsed 's|^</doc>|<marked/>\\n</doc>|'\n", '<event name="site" after="yes"/>')
    from mgrhooks.xmldoc import as_rows

    assert as_rows(listed.read_bytes()) is not None  # so the call takes the text path
    result = root.mgrhooks("exec", "site", "--out", "json")
    assert result.returncode == 0, result.stdout
    doc = json.loads(result.stdout)["doc"]
    assert (doc["$func"], doc["$total"], doc["$lang"]) == ("site", "300", "en")
    assert len(doc["elem"]) == 300 and doc["elem"][299]["note"]["$"] == "a & b" and "marked" in doc
    assert root.read("var/count.seen") == "300\n"
    xml = root.mgrhooks("exec", "site").stdout  # printed as the handlers left it
    assert xml.count("<elem>") == 300 and xml.endswith("<marked/>\n</doc>\n")
    root.plugin("meta", '<mgrdata><metadata name="site" type="list"><coldata/></metadata></mgrdata>')
    xml = root.mgrhooks("exec", "site").stdout  # an interface part: left out of the output
    assert xml.count("<elem>") == 300 and "<metadata" not in xml and "<coldata" not in xml
    assert "<coldata/>" in root.mgrhooks("exec", "site", "--out", "devel").stdout
    listed.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="site">\n{rows}<elem>\n</doc>\n')
    broken = root.mgrhooks("exec", "site", "--out", "text")
    assert broken.returncode == 1 and f"Core document {listed}:304: invalid XML" in broken.stdout


def test_a_list_that_libxml2_refuses_after_its_counts_passed_runs_no_handler(root: PanelRoot) -> None:
    """The handlers are made ready while libxml2 checks a supplied list (docs/performance.md):
    a list whose byte counts pass but which is not well-formed is still the core's error,
    with its file and line, and no handler runs after it."""
    rows = "".join(f"<elem><name>site{n}</name></elem>\n" for n in range(50))
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    listed = root.path / "etc/core/billmgr/site.xml"
    broken = rows + "<elem><name>x</nam></elem>\n"  # line 53
    listed.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="site">\n{broken}</doc>\n')
    root.handler("seen.sh", "#!/bin/sh\ntouch var/seen\ncat\n", '<event name="site" after="yes"/>')
    result = root.mgrhooks("exec", "site", "--out", "text")
    assert result.returncode == 1 and f"Core document {listed}:53: invalid XML" in result.stdout
    assert not (root.path / "var/seen").exists()
    listed.write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="site">\n{rows}</doc>\n')
    assert root.mgrhooks("exec", "site", "--out", "text").returncode == 0 and (root.path / "var/seen").exists()


def test_broken_supplied_document_is_a_clear_error(root: PanelRoot) -> None:
    broken = root.path / "broken.xml"
    broken.write_text("<doc>\n<unclosed>\n</doc>")
    result = root.mgrhooks("exec", "site.edit", "--core-doc", str(broken), "--out", "text")
    assert result.returncode == 1
    assert result.stdout.startswith(f"ERROR value(core-doc,{broken}): Core document {broken}:3: invalid XML")


def test_debug_conf_raises_the_external_level(root: PanelRoot) -> None:
    root.handler("h.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    root.mgrhooks("exec", "user")
    assert "TRACE" not in root.log() and "DEBUG" not in root.log()
    (root.path / "etc/debug.conf").write_text("# raise the external module\n*.external 9\n")
    root.mgrhooks("exec", "user")
    log = root.log()
    assert "external DEBUG 'h.sh': " in log and "bytes on stdin, environment " in log
    assert "external TRACE 'h.sh' stdin: b'<?xml" in log
    (root.path / "etc/debug.conf").write_text("billmgr.* 1\n")
    before = root.log()
    root.mgrhooks("exec", "user")
    assert root.log() == before  # level 1: errors only, and there were none


# --- real interpreters and libraries -------------------------------------------------


def test_php_reads_server_getenv_and_parse_str(root: PanelRoot) -> None:
    need("php", ["php", "-r", "exit(0);"])
    root.handler(
        "qs.php",
        """
        #!/usr/bin/env php
        <?php
        parse_str(getenv("QUERY_STRING"), $q);
        $doc = new SimpleXMLElement(stream_get_contents(STDIN));
        $seen = $q["func"] . "/" . $q["name"] . "/" . $_SERVER["AUTH_USER"] . "/" . getenv("HANDLER_STAGE");
        $doc->addChild("seen", htmlspecialchars($seen));  # addChild does not escape "&" itself
        echo $doc->asXML();
        """,
        '<event name="user.add" before="yes"/>',
    )
    result = root.mgrhooks("exec", "user.add", "name=o'brien & co", "--out", "json")
    assert json.loads(result.stdout)["doc"]["seen"] == {"$": "user.add/o'brien & co/root/before"}


def test_python_elementtree_reserialised_output(root: PanelRoot) -> None:
    root.handler(
        "et.py",
        """
        #!/usr/bin/env python3
        import os, sys
        import xml.etree.ElementTree as ET
        doc = ET.fromstring(sys.stdin.buffer.read())
        ET.SubElement(doc, "ok")
        ET.SubElement(doc, "who").text = os.environ["AUTH_USER"]
        sys.stdout.write(ET.tostring(doc, encoding="unicode"))  # <ok />, no declaration, no newline
        """,
        '<event name="desktop" after="yes"/>',
    )
    assert root.mgrhooks("exec", "desktop", "--out", "text").stdout.startswith(
        "user.name=root\nuser.level=30\nOK\nwho=root\n"
    )


def test_non_blocking_stdin_reader_gets_the_whole_document(root: PanelRoot) -> None:
    root.handler(
        "nb.py",
        """
        #!/usr/bin/env python3
        import os, sys
        os.set_blocking(0, False)
        data = os.read(0, 1 << 20)  # one read, at once: the document must already be there
        sys.stdout.write(data.decode().replace("</doc>", "<bytes>%d</bytes></doc>" % len(data)))
        """,
        '<event name="user" before="yes"/>',
    )
    for _ in range(5):
        result = root.mgrhooks("exec", "user", "--out", "json")
        assert int(json.loads(result.stdout)["doc"]["bytes"]["$"]) > 50


def test_bash_cat_passes_the_document_through(root: PanelRoot) -> None:
    root.handler("cat.sh", "#!/bin/bash\ncat\n", '<event name="desktop" after="yes" proirity="after" base="project"/>')
    result = root.mgrhooks("exec", "desktop")
    assert result.stdout.endswith("<balance>0.00</balance>\n</doc>\n")
