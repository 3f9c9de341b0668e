"""End to end through the real ``mgrhooks`` command, with real handlers in four languages."""

from __future__ import annotations

import contextlib
import json
import os
import re
import signal
import sqlite3
import subprocess
import time
from urllib.parse import parse_qsl

import psutil
import pytest

from conftest import PanelRoot, need, unmeasured

PERL_CGI_ECHO = r"""
#!/usr/bin/perl
use CGI;
my $Q = CGI->new;
open(my $out, ">", "var/perl.seen") or die;
print $out join("&", map { "$_=" . $Q->param($_) } $Q->param), "\n";
print $out "$ENV{REQUEST_METHOD} $ENV{HANDLER_STAGE} $ENV{AUTH_USER} $ENV{AUTH_LEVEL}\n";
close($out);
print "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<doc/>\n";
"""


def users(root: PanelRoot) -> list[str]:
    if not (root.path / "var/billmgr.db").exists():
        return []
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        return [name for (name,) in db.execute("SELECT name FROM users ORDER BY name")]


def add_alice(root: PanelRoot, *extra: str):
    return root.mgrhooks("exec", "user.add", "name=alice", "passwd=s3cr&t x", "sok=ok", *extra)


def test_perl_cgi_reads_post_body(root: PanelRoot) -> None:
    need("perl", ["perl", "-MCGI", "-e1"])
    root.handler("echo.pl", PERL_CGI_ECHO, '<event name="user.add" after="yes" postdata="yes"/>', type="cgi")
    result = add_alice(root)
    assert result.returncode == 0, result.stderr
    params, meta = root.read("var/perl.seen").splitlines()
    assert params == "func=user.add&name=alice&passwd=s3cr&t x&sok=ok"
    assert meta == "POST after root 30"


def test_perl_cgi_reads_query_string(root: PanelRoot) -> None:
    need("perl", ["perl", "-MCGI", "-e1"])
    root.handler("echo.pl", PERL_CGI_ECHO, '<event name="user.add" before="yes"/>', type="cgi")
    result = root.mgrhooks("exec", "user.add", "--elid", "bob", "--user", "admin", "--level", "29")
    assert result.returncode == 1  # bob does not exist
    params, meta = root.read("var/perl.seen").splitlines()
    assert params == "func=user.add&elid=bob"
    assert meta == "GET before admin 29"


def test_bash_sed_inserts_before_closing_tag(root: PanelRoot) -> None:
    root.handler(
        "stamp.sh",
        """
        #!/bin/sh
        sed "s|^</doc>|<stamp>$PARAM_func/$HANDLER_STAGE</stamp>\\n</doc>|"
        """,
        '<event name="user" after="yes"/>',
    )
    result = root.mgrhooks("exec", "user", "--out", "json")
    assert result.returncode == 0, result.stderr
    assert json.loads(result.stdout)["doc"]["stamp"] == {"$": "user/after"}


def test_php_simplexml_on_stdin(root: PanelRoot) -> None:
    need("php", ["php", "-r", "exit(class_exists('SimpleXMLElement') ? 0 : 1);"])
    root.handler(
        "count.php",
        """
        #!/usr/bin/env php
        <?php
        $doc = simplexml_load_string(file_get_contents("php://stdin"));
        $doc->addChild("rows", (string) count($doc->elem));
        $doc->addChild("who", getenv("AUTH_USER") . "@" . $_SERVER["MGR"]);
        echo $doc->asXML();
        """,
        '<event name="user" after="yes"/>',
    )
    for name in ("a", "b"):
        root.mgrhooks("exec", "user.add", f"name={name}", "passwd=x", "sok=ok")
    result = root.mgrhooks("exec", "user", "--out", "text")
    assert result.stdout == "name=a level=16 state=active\nname=b level=16 state=active\nrows=2\nwho=root@billmgr\n"


def test_python_environment_and_stdin(root: PanelRoot) -> None:
    root.handler(
        "env.py",
        """
        #!/usr/bin/env python3
        import json, os, sys
        import xml.etree.ElementTree as ET
        doc = ET.fromstring(sys.stdin.read())
        seen = {k: v for k, v in os.environ.items() if k.startswith(("PARAM_", "AUTH_", "QUERY", "EVENT", "ACTION"))}
        ET.SubElement(doc, "seen").text = json.dumps(seen, sort_keys=True)
        ET.SubElement(doc, "cwd").text = os.getcwd()
        print(ET.tostring(doc, encoding="unicode"))
        """,
        '<event name="user.edit" before="yes"/>',
    )
    result = root.mgrhooks("exec", "user.edit", "-p", "note=a b&c", "--user", "admin", "--level", "29", "--out", "json")
    doc = json.loads(result.stdout)["doc"]
    seen = json.loads(doc["seen"]["$"])
    assert parse_qsl(seen.pop("QUERY_STRING")) == [("func", "user.edit"), ("note", "a b&c")]
    assert seen == {
        "ACTION_NAME": "user.edit",
        "AUTH_LEVEL": "29",
        "AUTH_USER": "admin",
        "EVENT_TYPE": "before",
        "PARAM_func": "user.edit",
        "PARAM_note": "a b&c",
    }
    assert doc["cwd"]["$"] == str(root.path)


def test_error_from_before_handler_stops_the_call_and_nothing_is_written(root: PanelRoot) -> None:
    root.handler(
        "deny.sh",
        """
        #!/bin/sh
        echo '<doc><error type="value" object="name" value="alice"><msg>name is reserved</msg></error></doc>'
        """,
        '<event name="user.add" before="yes"/>',
    )
    root.handler("after.sh", "#!/bin/sh\ntouch var/after.ran\ncat\n", '<event name="user.add" after="yes"/>')
    result = add_alice(root)
    assert result.returncode == 1
    assert result.stdout.count("<error") == 1 and "name is reserved" in result.stdout
    assert users(root) == []
    assert not (root.path / "var/after.ran").exists()


def test_skipaction_replaces_the_core_action(root: PanelRoot) -> None:
    root.handler(
        "skip.py",
        """
        #!/usr/bin/env python3
        print("<doc><skipaction/><ok/><done>by addon</done></doc>")
        """,
        '<event name="user.add" before="yes"/>',
    )
    root.handler("z_later.sh", "#!/bin/sh\ntouch var/later.ran\ncat\n", '<event name="user.add" before="yes"/>')
    root.handler("after.sh", "#!/bin/sh\ntouch var/after.ran\ncat\n", '<event name="user.add" after="yes"/>')
    result = add_alice(root, "--out", "text")
    assert (result.returncode, result.stdout) == (0, "OK\ndone=by addon\n")
    assert users(root) == []
    assert not (root.path / "var/later.ran").exists()
    assert not (root.path / "var/after.ran").exists()


def test_failing_after_handler_is_an_error_naming_it(root: PanelRoot) -> None:
    plugin = root.handler("broken.sh", "#!/bin/sh\necho oops >&2\nexit 7\n", '<event name="user.add" after="yes"/>')
    del plugin
    result = add_alice(root, "--out", "text")
    assert result.returncode == 1
    assert result.stdout == (
        "ERROR handler(broken.sh,after): Handler 'broken.sh' (after user.add, "
        "etc/xml/billmgr_mod_broken_sh.xml:1) failed: exit status 7\n"
    )
    assert users(root) == ["alice"]  # the action had committed before after-handlers ran
    assert "external INFO broken.sh: oops" in root.log()
    assert "oops" not in result.stdout


def test_ignore_errors_keeps_the_document(root: PanelRoot) -> None:
    root.handler(
        "junk.sh", "#!/bin/sh\necho 'not xml'\n", '<event name="user.add" after="yes"/>', attrs='ignore_errors="yes"'
    )
    result = add_alice(root, "--out", "text")
    assert (result.returncode, result.stdout) == (0, "OK\nid=alice\n")
    assert "failed: invalid output: invalid XML" in root.log()


def test_timeouts_per_handler_and_per_call(root: PanelRoot) -> None:
    root.handler("slow.sh", "#!/bin/sh\nsleep 30\n", '<event name="user" before="yes"/>', attrs='timeout="0.5"')
    result = root.mgrhooks("exec", "user", "--out", "text")
    assert result.stdout.endswith("failed: timed out after 0.5s\n")
    result = root.mgrhooks("exec", "user", "--out", "text", "--timeout", "0.2")
    assert result.stdout.endswith("failed: timed out after 0.2s\n")


def test_unusable_programs_are_refused_with_the_panel_wording(root: PanelRoot) -> None:
    root.handler("noexec.sh", "#!/bin/sh\ncat\n", '<event name="user" before="yes"/>')
    (root.path / "addon/noexec.sh").chmod(0o640)
    result = root.mgrhooks("exec", "user", "--out", "text")
    assert result.returncode == 1
    assert "Addon 'addon/noexec.sh' is not executable" in result.stdout
    assert "external WARNING Addon 'addon/noexec.sh' is not executable" in root.log()


def test_final_handler_gets_result_with_sessiondata_and_cannot_change_it(root: PanelRoot) -> None:
    root.handler(
        "fin.sh",
        "#!/bin/sh\ncat > var/final.seen\necho '<doc><error code=\"1\">ignored</error></doc>'\n",
        '<event name="user.add" final="yes" sessiondata="yes"/>',
    )
    root.handler("fin2.sh", "#!/bin/sh\ncat > var/final2.seen\necho '<doc/>'\n", '<event name="user.add" final="yes"/>')
    result = add_alice(root, "--out", "text")
    assert (result.returncode, result.stdout) == (0, "OK\nid=alice\n")
    assert "<id>alice</id>" in root.read("var/final.seen")
    assert (
        root.read("var/final2.seen")
        == '<?xml version="1.0" encoding="UTF-8"?>\n<doc func="user.add" lang="en" binary="/billmgr">\n</doc>\n'
    )


def test_addon_function_runs_as_the_action(root: PanelRoot) -> None:
    root.plugin("hello", '<mgrdata><handler name="hello.sh" type="xml"><func name="hello.world"/></handler></mgrdata>')
    root.addon("hello.sh", '#!/bin/sh\nsed "s|^</doc>|<greeting>$EVENT_TYPE $PARAM_who</greeting>\\n</doc>|"\n')
    result = root.mgrhooks("exec", "hello.world", "who=there", "--out", "text")
    assert (result.returncode, result.stdout) == (0, "greeting=action there\n")


def test_desktop_after_base_project_sees_balance(root: PanelRoot) -> None:
    probe = (
        "#!/bin/sh\nif grep -q '<balance>'; then saw=balance; else saw=none; fi\necho \"<doc><$1 saw='$saw'/></doc>\"\n"
    )
    root.handler("early.sh", probe.replace("$1", "early"), '<event name="desktop" after="yes"/>', type="cgi")
    late = '<event name="desktop" after="yes" proirity="after" base="project"/>'
    root.handler("late.sh", probe.replace("$1", "late"), late, type="cgi")
    doc = json.loads(root.mgrhooks("exec", "desktop", "--out", "json").stdout)["doc"]
    assert (doc["early"], doc["late"]) == ({"$saw": "none"}, {"$saw": "balance"})


def test_plan_prints_order_and_reasons(root: PanelRoot) -> None:
    root.handler("late.sh", "#!/bin/sh\ncat\n", '<event name="desktop" after="yes" proirity="after" base="project"/>')
    result = root.mgrhooks("plan", "desktop")
    assert result.returncode == 0
    assert result.stdout.splitlines()[::2] == [
        "  1. action  action    desktop",
        "  2. after   internal  desktop.user",
        "  3. after   internal  desktop.balance",
        "  4. after   handler   late.sh (xml)",
    ]
    assert "why: after stage, slot base=project, proirity=after; file billmgr_mod_late_sh.xml" in result.stdout


def test_plan_of_an_unknown_function_is_an_error_line_and_status_1(root: PanelRoot) -> None:
    result = root.mgrhooks("plan", "no.such")
    assert (result.returncode, result.stdout, result.stderr) == (1, "", "Error: Unknown function 'no.such'\n")


def test_check_reports_every_problem_with_file_and_line(root: PanelRoot) -> None:
    root.plugin("broken", "<mgrdata><handler name='x'>\n</mgrdata>")
    root.handler("ok.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    root.plugin(
        "ghost", '<mgrdata>\n<handler name="ghost.sh" type="cgi"><event name="user" after="yes"/></handler></mgrdata>'
    )
    root.plugin(
        "escape",
        '<mgrdata>\n\n<handler name="../etc/passwd" type="xml"><event name="user" after="yes"/></handler></mgrdata>',
    )
    root.handler("loose.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    (root.path / "addon/loose.sh").chmod(0o777)
    result = root.mgrhooks("check")
    assert result.returncode == 1
    assert result.stdout.splitlines() == [
        "etc/xml/billmgr_mod_broken.xml:2: error: invalid XML: Opening and ending tag mismatch: handler line 1 and mgrdata, "
        "line 2, column 11",
        "etc/xml/billmgr_mod_escape.xml:3: error: handler '../etc/passwd': Addon '../etc/passwd' must be a file name inside addon/",
        "etc/xml/billmgr_mod_ghost.xml:2: error: handler 'ghost.sh': Addon 'addon/ghost.sh' does not exist",
        "etc/xml/billmgr_mod_loose_sh.xml:1: error: handler 'loose.sh': Addon 'addon/loose.sh' is writable by group or others "
        "(mode 777)",
        "etc/xml/billmgr_mod_loose_sh.xml:1: warning: handler 'loose.sh': Addon 'addon/loose.sh' may be read or run by others "
        "(mode 777; 750 advised)",
    ]
    assert result.stderr == "4 error(s), 1 warning(s)\n"


def test_a_broken_plugin_file_does_not_stop_the_others(root: PanelRoot) -> None:
    root.plugin("aaa_broken", "<mgrdata><handler")
    root.handler("fine.sh", "#!/bin/sh\nsed 's|^</doc>|<fine/>\\n</doc>|'\n", '<event name="user" after="yes"/>')
    result = root.mgrhooks("exec", "user")
    assert result.returncode == 0 and "<fine/>" in result.stdout
    assert "action ERROR etc/xml/billmgr_mod_aaa_broken.xml:1: error: invalid XML" in root.log()


def test_log_lines_like_the_panel(root: PanelRoot) -> None:
    root.handler("samba.pl", "#!/bin/sh\necho '<doc/>'\n", '<event name="user.add" after="yes"/>', type="cgi")
    add_alice(root)
    log = root.log()
    assert "action EXTINFO Register event 'samba.pl' for action 'user.add'" in log
    assert "external INFO Executing: addon/samba.pl" in log
    add_alice(root)
    assert root.log().count("Register event") == 1  # logged again only when plugin files change


def test_a_handlers_end_is_logged_when_it_failed_or_was_slow(root: PanelRoot) -> None:
    """One record per handler that went well and quickly (``Executing:``); its end, with
    pid, status and seconds, at the default level when it failed or took a second or more,
    else at debug levels."""
    root.handler("quick.sh", "#!/bin/sh\necho '<doc/>'\n", '<event name="user" after="yes"/>', type="cgi")
    root.handler("slow.sh", "#!/bin/sh\nsleep 1.1\necho '<doc/>'\n", '<event name="user" after="yes"/>', type="cgi")
    root.handler(
        "fails.sh", "#!/bin/sh\nexit 3\n", '<event name="user" after="yes"/>', type="cgi", attrs='ignore_errors="yes"'
    )
    root.mgrhooks("exec", "user")
    log = root.log()
    assert "Executing: addon/quick.sh" in log and "'quick.sh' pid" not in log
    assert re.search(r"external EXTINFO 'slow.sh' pid \d+: ok \(exit 0\) in 1\.\d+s", log)
    assert re.search(r"external EXTINFO 'fails.sh' pid \d+: exit status 3 \(exit 3\)", log)
    (root.path / "etc/debug.conf").write_text("*.external 5\n")
    root.mgrhooks("exec", "user")
    assert re.search(r"external DEBUG 'quick.sh' pid \d+: ok \(exit 0\) in 0\.\d+s", root.log())


def test_a_handler_finds_its_executing_line_already_in_the_log(root: PanelRoot) -> None:
    """Each record is written before the call goes on: a handler that hangs is named in
    the log while it runs."""
    root.handler(
        "look.sh",
        "#!/bin/sh\ntail -n 1 var/billmgr.log > var/look.seen\necho '<doc/>'\n",
        '<event name="user" after="yes"/>',
        type="cgi",
    )
    assert root.mgrhooks("exec", "user").returncode == 0
    assert re.fullmatch(
        r"\w{3} \d\d \d\d:\d\d:\d\d \[\d+:1\] external INFO Executing: addon/look.sh\n", root.read("var/look.seen")
    )


def test_usage_errors(root: PanelRoot) -> None:
    result = root.mgrhooks("exec", "user", "novalue")
    assert result.returncode == 2 and "expected key=value, got 'novalue'" in result.stderr
    result = root.mgrhooks("exec", "user", "--out", "yaml")
    assert result.returncode == 2


@pytest.mark.parametrize(
    ("args", "message"),
    [
        ([b"us\x01er"], "Invalid function name 'us\\x01er': control character U+0001 at position 3"),
        ([b"us\xffer"], "Invalid function name 'us\\xffer': byte 0xFF at position 3 is not UTF-8"),
        ([b"desktop", b"--user", b"a\nb"], "Invalid user (--user) 'a\\nb': control character U+000A at position 2"),
        ([b"desktop", b"--user", b"\xc3("], "Invalid user (--user) '\\xc3(': byte 0xC3 at position 1 is not UTF-8"),
        ([b"desktop", b"--lang", b"e\x1b[2Jn"], "Invalid language (--lang) 'e\\x1b[2Jn': control character U+001B"),
        ([b"desktop", b"--lang", b"\xc2\x85"], "Invalid language (--lang) '\\x85': control character U+0085"),
        (
            [b"desktop", b"--user", b"u" * 131000],
            f"Invalid user (--user) '{'u' * 60}...': 131000 characters, more than 255",
        ),
        ([b"f" * 256], f"Invalid function name '{'f' * 60}...': 256 characters, more than 255"),
    ],
)
def test_names_no_call_can_take_are_usage_errors(root: PanelRoot, args: list[bytes], message: str) -> None:
    """A control character, a byte that is not UTF-8 or over 255 characters in the function
    name, --user or --lang: exit status 2 naming it, and no handler runs (a '*' handler
    would; with a 131,000-character user it failed with E2BIG)."""
    root.handler("any.sh", "#!/bin/sh\necho ran > var/ran\ncat\n", '<event name="*" before="yes"/>')
    result = subprocess.run([*root.argv("exec"), *args], capture_output=True)
    assert result.returncode == 2, result.stderr
    assert result.stderr.decode().startswith(f"Error: {message}") and result.stderr.count(b"\n") == 1
    assert not (root.path / "var/ran").exists()
    plan = subprocess.run([*root.argv("plan"), b"us\x01er"], capture_output=True, text=True)
    assert (plan.returncode, plan.stderr) == (
        2,
        "Error: Invalid function name 'us\\x01er': control character U+0001 at position 3\n",
    )


def test_times_beyond_a_day_or_not_a_number_are_refused_with_file_and_line(root: PanelRoot) -> None:
    for value in ("inf", "nan", "1e9", "86400.5", "0", "-1", ""):
        result = root.mgrhooks("exec", "user", "--timeout", value)
        assert result.returncode == 2 and "Error: Invalid value for '--timeout': " in result.stderr, result.stderr
    assert root.mgrhooks("worker", "--interval", "inf", "--once").returncode == 2
    root.handler("h.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>', attrs='timeout="1e9"')
    (root.path / "etc/mgrhooks.conf").write_text("[handlers]\n; a day is the most\ntimeout = inf\n")
    check = root.mgrhooks("check")
    assert (check.returncode, check.stdout) == (
        1,
        "etc/mgrhooks.conf:3: error: [handlers] timeout: expected at most 86400 seconds (a day), got 'inf'\n"
        "etc/xml/billmgr_mod_h_sh.xml:1: error: handler 'h.sh': attribute 'timeout': expected at most 86400"
        " seconds (a day), got '1e9': default used\n",
    )
    result = root.mgrhooks("exec", "user")
    conf = root.path / "etc/mgrhooks.conf"
    assert (result.returncode, result.stderr) == (
        3,
        f"Error: {conf}: line 3: [handlers] timeout: expected at most 86400 seconds (a day), got 'inf'\n",
    )
    conf.unlink()
    assert root.mgrhooks("exec", "user", "--timeout", "86400").returncode == 0  # h.sh runs, with the default


def test_raw_utf_8_in_the_body_is_taken_as_utf_8(root: PanelRoot) -> None:
    from mgrhooks.core import verify_password

    root.handler("seen.sh", '#!/bin/sh\nprintf %s "$PARAM_v" > var/v\ncat\n', '<event name="user.add" after="yes"/>')
    body = "name=al&passwd=pé€ 𝄞&v=hé%C3%A9 ok".encode() + b"\xff&sok=ok"  # and one byte that is not UTF-8
    result = subprocess.run([*root.argv("exec", "user.add", "--body", "-")], input=body, capture_output=True)
    assert result.returncode == 0, result.stderr
    assert (root.path / "var/v").read_bytes() == "héé ok".encode() + b"\xff"
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        ((stored,),) = db.execute("SELECT password FROM users").fetchall()
    assert verify_password("pé€ 𝄞", stored)  # (it was the hash of 'p\ufffd\ufffd...')


#: every command line on the machine, while the call runs: does one show the password
#: (``{word}``, one of its own per run: another test run at the same time on this machine
#: must not be counted)?
SEEK_PASSWORD = """#!/bin/sh
for f in /proc/[0-9]*/cmdline; do tr '\\0' ' ' < "$f" 2>/dev/null; echo; done | grep -c '{word}' > var/shown
cat
"""


def test_a_password_from_stdin_is_on_no_command_line(root: PanelRoot) -> None:
    from mgrhooks.core import verify_password

    password = f"hunter2-{os.urandom(6).hex()}"
    # the pattern's [] keep grep's own command line from matching
    root.handler(
        "seek.sh", SEEK_PASSWORD.format(word=f"[{password[0]}]{password[1:]}"), '<event name="user.add" before="yes"/>'
    )
    result = root.mgrhooks("exec", "user.add", "name=al", f"passwd={password}", "sok=ok")
    assert result.returncode == 0 and root.read("var/shown") == "1\n"  # the way the README showed it
    argv = root.argv("exec", "user.add", "name=bo", "sok=ok", "--stdin", "passwd", "--stdin", "confirm")
    result = subprocess.run(argv, input=f"{password}\r\nsecond line\n".encode(), capture_output=True)
    assert result.returncode == 0 and root.read("var/shown") == "0\n", result.stderr
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        (stored,) = db.execute("SELECT password FROM users WHERE name = 'bo'").fetchone()
    assert verify_password(password, stored)


@pytest.mark.parametrize(
    ("args", "stdin", "message"),
    [
        (["--stdin", "passwd"], b"", "standard input ended before the line of 'passwd'"),
        (["--stdin", "passwd", "--stdin", "confirm"], b"one\n", "standard input ended before the line of 'confirm'"),
        (["--stdin", "passwd", "--body", "-"], b"x\n", "standard input cannot carry both --body - and --stdin"),
        (["--stdin", "pass=wd"], b"x\n", "expected a parameter name, got 'pass=wd'"),
    ],
)
def test_stdin_values_that_cannot_be_read_are_usage_errors(
    root: PanelRoot, args: list[str], stdin: bytes, message: str
) -> None:
    result = subprocess.run(root.argv("exec", "user.add", "name=al", "sok=ok", *args), input=stdin, capture_output=True)
    assert result.returncode == 2 and f"Error: Invalid value for '--stdin': {message}" in result.stderr.decode()
    assert not (root.path / "var/billmgr.db").exists()


def test_stdin_values_are_asked_for_without_echo_on_a_terminal(root: PanelRoot) -> None:
    import pty
    import select

    from mgrhooks.core import verify_password

    controller, terminal = pty.openpty()
    argv = root.argv("exec", "user.add", "name=al", "sok=ok", "--stdin", "passwd", "--out", "text")
    # a new session: no controlling terminal, so getpass asks on stdin, the terminal given
    process = subprocess.Popen(argv, stdin=terminal, stdout=subprocess.PIPE, stderr=terminal, start_new_session=True)
    os.close(terminal)
    shown = b""
    while b"passwd: " not in shown and select.select([controller], [], [], 60)[0]:
        shown += os.read(controller, 1024)
    os.write(controller, b"s3cret\n")
    assert process.communicate(timeout=60)[0] == b"OK\nid=al\n"
    try:
        shown += os.read(controller, 1024)
    except OSError:  # (EIO: the terminal's other end is closed)
        pass
    os.close(controller)
    assert b"s3cret" not in shown  # not echoed
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        (stored,) = db.execute("SELECT password FROM users").fetchone()
    assert verify_password("s3cret", stored)


def test_missing_root_is_a_clear_error(root: PanelRoot) -> None:
    result = PanelRoot(root.path / "nope").mgrhooks("exec", "user")
    assert result.returncode == 3
    assert result.stderr == f"Error: root {root.path / 'nope'} is not a directory\n"


def test_background_child_holding_stdout_does_not_hang_the_call(root: PanelRoot) -> None:
    """The call answers once the drain window is over; the child still holding the
    handler's stdout is part of the handler and is stopped (issue 15: it was left running)."""
    root.handler(
        "daemon.sh",
        "#!/bin/sh\nsleep 30 &\necho $! > var/daemon.pid\necho '<doc><started/></doc>'\n",
        '<event name="user" after="yes"/>',
        type="cgi",
    )
    started = time.monotonic()
    result = root.mgrhooks("exec", "user", timeout=10)
    elapsed = time.monotonic() - started
    pid = int(root.read("var/daemon.pid"))
    try:
        assert result.returncode == 0 and "<started/>" in result.stdout
        assert elapsed < 10
        assert not psutil.pid_exists(pid) or psutil.Process(pid).status() == psutil.STATUS_ZOMBIE
        assert f"'daemon.sh' exited; killed what still held its output 0.5s later: {pid}" in root.log()
    finally:
        with contextlib.suppress(ProcessLookupError):
            os.kill(pid, signal.SIGKILL)


def test_the_command_runs_in_process_with_a_final_handler(root: PanelRoot) -> None:
    """Embedding the command (click's CliRunner) gives stdout without a file descriptor."""
    from click.testing import CliRunner

    from mgrhooks.cli import main

    root.handler("fin.sh", "#!/bin/sh\ntouch var/final.ran\necho '<doc/>'\n", '<event name="user" final="yes"/>')
    result = CliRunner().invoke(
        main, ["exec", "--root", str(root.path), "user", "--out", "text"], catch_exceptions=False
    )
    assert (result.exit_code, result.output) == (0, "")
    assert (root.path / "var/final.ran").exists()


def test_an_internal_error_is_one_line_and_exit_status_4(root: PanelRoot, monkeypatch) -> None:
    from click.testing import CliRunner

    from mgrhooks.api import Panel
    from mgrhooks.cli import main

    def broken(*args, **kwargs):
        raise RuntimeError("a bug")

    monkeypatch.setattr(Panel, "call", broken)
    result = CliRunner().invoke(main, ["exec", "--root", str(root.path), "user"])
    assert result.exit_code == 4
    assert result.stderr.startswith("mgrhooks: internal error: RuntimeError: a bug\n")
    monkeypatch.setenv("MGRHOOKS_DEBUG", "1")
    assert isinstance(CliRunner().invoke(main, ["exec", "--root", str(root.path), "user"]).exception, RuntimeError)


def test_interrupted_is_exit_status_130(root: PanelRoot, monkeypatch) -> None:
    from click.testing import CliRunner

    from mgrhooks.api import Panel
    from mgrhooks.cli import main

    def interrupted(*args, **kwargs):
        raise KeyboardInterrupt

    monkeypatch.setattr(Panel, "call", interrupted)
    result = CliRunner().invoke(main, ["exec", "--root", str(root.path), "user"])
    assert (result.exit_code, result.stderr) == (130, "Interrupted\n")


CAT = "#!/bin/sh\ncat\n"


def test_documents_kept_as_text_between_xml_handlers_are_still_checked(root: PanelRoot) -> None:
    """xml handlers that pass the list on unchanged hand each other its text (no tree);
    an error, a broken document or a cgi merge after them behaves as with trees."""
    assert root.mgrhooks("exec user.add name=alice passwd=secret sok=ok").returncode == 0
    root.handler("cat1.sh", CAT, '<event name="user" after="yes"/>')
    root.handler("cat2.sh", CAT, '<event name="user" after="yes"/>')
    listed = root.mgrhooks("exec user")
    assert listed.returncode == 0 and listed.stdout.count("<elem>") == 1
    assert json.loads(root.mgrhooks("exec user --out json").stdout)["doc"]["elem"]["name"]["$"] == "alice"

    root.handler("broken.sh", "#!/bin/sh\nsed 's|^</doc>|<open>\\n</doc>|'\n", '<event name="user" after="yes"/>')
    broken = root.mgrhooks("exec user")
    assert broken.returncode == 1
    assert "Handler 'broken.sh' (after user" in broken.stdout and "invalid output: invalid XML" in broken.stdout
    (root.path / "etc/xml/billmgr_mod_broken_sh.xml").unlink()

    root.handler(
        "refuse.sh", "#!/bin/sh\nsed 's|^</doc>|<error type=\"x\"/>\\n</doc>|'\n", '<event name="user" after="yes"/>'
    )
    root.handler("zlast.sh", "#!/bin/sh\necho ran >> var/after.ran\ncat\n", '<event name="user" after="yes"/>')
    refused = root.mgrhooks("exec user")
    assert refused.returncode == 1 and '<error type="x"/>' in refused.stdout
    assert not (root.path / "var/after.ran").exists()  # the error stopped the call
    (root.path / "etc/xml/billmgr_mod_refuse_sh.xml").unlink()

    root.handler(
        "note.sh", "#!/bin/sh\necho '<doc><note>seen</note></doc>'\n", '<event name="user" after="yes"/>', type="cgi"
    )
    merged = root.mgrhooks("exec user")
    assert merged.returncode == 0 and "<note>seen</note>" in merged.stdout and "<name>alice</name>" in merged.stdout


def test_the_command_ends_without_teardown_and_loses_nothing(root: PanelRoot) -> None:
    """``cli.run`` ends the process with os._exit: stdout, the log and final handlers are
    complete before it, and the exit status is the command's."""
    rows = "".join(f"<elem><name>u{n}</name></elem>\n" for n in range(20_000))
    root.handler(
        "list.sh",
        f"#!/bin/sh\ncat > /dev/null\nprintf '%s' '<doc>\n{rows}</doc>\n'\n",
        '<event name="user" after="yes"/>',
    )
    root.handler("fin.sh", "#!/bin/sh\ntouch var/final.ran\necho '<doc/>'\n", '<event name="user" final="yes"/>')
    result = root.mgrhooks("exec", "user")
    assert result.returncode == 0
    assert result.stdout.count("<elem>") == 20_000 and result.stdout.endswith("</doc>\n")
    assert (root.path / "var/final.ran").exists()
    assert root.log().splitlines()[-1].endswith("Executing: addon/fin.sh")  # the last record reached the file
    assert root.mgrhooks("exec", "user.delete", "elid=nobody").returncode == 1
    assert root.mgrhooks("exec", "user", "novalue").returncode == 2


def test_a_reader_that_goes_away_gets_no_traceback(root: PanelRoot) -> None:
    import subprocess

    rows = "".join(f"<elem><name>u{n}</name></elem>\n" for n in range(100_000))
    source = f"#!/bin/sh\ncat > /dev/null\ncat <<'END'\n<doc>\n{rows}</doc>\nEND\n"
    root.handler("list.sh", source, '<event name="user" after="yes"/>')
    process = subprocess.Popen(root.argv("exec", "user"), stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    assert process.stdout is not None and process.stderr is not None
    assert process.stdout.read(10) == b"<?xml vers"
    process.stdout.close()
    error = process.stderr.read().decode()
    process.stderr.close()
    process.wait(timeout=60)
    assert "Traceback" not in error and "Exception ignored" not in error


def test_a_descriptor_the_command_inherits_never_reaches_a_handler(root: PanelRoot, tmp_path) -> None:
    """The command seals its descriptors before the first handler (Processes(seal=True)) and
    starts handlers through posix_spawn; whatever its parent passed it stays with it.

    The handler lists what its descriptors point to, not their numbers: a shell holds
    descriptors of its own (dash: the script at 10, a saved stdout at 11), and the number
    the parent passed may be one of them."""
    import subprocess

    root.handler(
        "fds.sh",
        '#!/bin/sh\nfor fd in /proc/$$/fd/*; do readlink "$fd"; done > var/fds.seen\n'
        "cat > /dev/null\necho '<doc/>'\n",
        '<event name="user" after="yes"/>',
    )
    with open(tmp_path / "panel.secret", "w") as secret:
        result = subprocess.run(root.argv("exec", "user"), capture_output=True, text=True, pass_fds=(secret.fileno(),))
    assert result.returncode == 0, result.stderr
    seen = root.read("var/fds.seen")
    assert "fds.seen" in seen and "panel.secret" not in seen


def test_an_empty_cgi_answer_passes_the_document_on_as_printed(root: PanelRoot) -> None:
    """A cgi handler answering ``<doc/>`` changes nothing: the next handler gets the bytes
    the handler before it printed, not a document parsed and serialised again."""
    printed = "<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<doc  func='user'   kept='as printed' lang='en'  binary='/billmgr'>\n</doc>\n"
    root.handler(
        "first.sh", f"#!/bin/sh\ncat > /dev/null\ncat <<'END'\n{printed}END\n", '<event name="user" after="yes"/>'
    )
    root.handler("second.sh", "#!/bin/sh\necho '<doc/>'\n", '<event name="user" after="yes"/>', type="cgi")
    root.handler("third.sh", "#!/bin/sh\ntee var/third.seen\n", '<event name="user" after="yes"/>')
    result = root.mgrhooks("exec", "user")
    assert result.returncode == 0, result.stderr
    assert root.read("var/third.seen") == printed


def test_stdout_that_cannot_take_the_response_is_status_120_and_final_handlers_still_run(root: PanelRoot) -> None:
    import subprocess

    root.handler("fin.sh", "#!/bin/sh\ntouch var/final.ran\necho '<doc/>'\n", '<event name="user" final="yes"/>')
    with open("/dev/full", "wb") as full:
        result = subprocess.run(root.argv("exec", "user"), stdout=full, stderr=subprocess.PIPE, text=True)
    assert result.returncode == 120
    assert result.stderr == "mgrhooks: cannot write the response: No space left on device\n"
    assert (root.path / "var/final.ran").exists()


def test_a_closed_stdout_or_stderr_is_no_error(root: PanelRoot) -> None:
    import subprocess

    closed_stdout = subprocess.run(root.argv("exec", "user"), stdout=subprocess.DEVNULL, stderr=subprocess.PIPE)
    assert closed_stdout.returncode == 0
    for descriptor in (1, 2):  # started with the descriptor closed (sys.stdout or sys.stderr is None)
        script = f'exec {descriptor}>&- ; exec "$@"'
        result = subprocess.run(["sh", "-c", script, "sh", *root.argv("exec", "user")], capture_output=True)
        assert result.returncode == 0, result.stderr
        assert b"Traceback" not in result.stderr + result.stdout


@pytest.mark.parametrize(
    ("log", "reason"),
    [
        ("directory", "Is a directory"),
        ("full", "File too large"),
        ("fifo", "not a regular file but a FIFO"),
        ("/dev/full", "not a regular file but a symbolic link (never followed)"),
    ],
    ids=["cannot-open", "disk-full", "fifo", "link-to-a-device"],
)
def test_a_log_that_cannot_be_written_costs_one_stderr_line_and_never_the_call(
    root: PanelRoot, log: str, reason: str
) -> None:
    """The panel log's failures never fail or stop a call (the before-handler and the core's
    change both happen, exit status 0): one line on stderr names the file and the reason.
    A FIFO is never waited on, and a link never followed (here to a device)."""
    import resource

    path = root.path / "var/billmgr.log"
    limit = resource.RLIM_INFINITY
    if log == "directory":
        path.mkdir()
    elif log == "full":  # a file size limit the log has reached: its next write fails, as on a full disk
        limit = 1 << 20
        path.write_bytes(b"x\n" * (limit // 2))
    elif log == "fifo":
        os.mkfifo(path)
    else:
        path.symlink_to(log)
    root.handler("first.sh", "#!/bin/sh\necho ran > var/first.ran\ncat\n", '<event name="user.add" before="yes"/>')
    result = subprocess.run(
        root.argv("exec", "user.add", "name=ann", "passwd=x", "sok=ok", "--out", "text"),
        capture_output=True,
        text=True,
        timeout=60,
        env=unmeasured(),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert result.returncode == 0 and result.stdout == "OK\nid=ann\n", result
    assert result.stderr == f"mgrhooks: cannot write the log {path}: {reason}; its records are lost\n"
    assert root.read("var/first.ran") == "ran\n"
    assert "name=ann" in root.mgrhooks("exec", "user", "--out", "text").stdout


def test_parameter_files_that_cannot_be_written_fail_the_handler_not_the_call(root: PanelRoot, tmp_path) -> None:
    """A value too large for the environment goes to a file (PARAM_v_FILE). When it cannot be
    written (here a file size limit, as a full /tmp would do), the handler is not started,
    the call answers with a handler error naming it, and no parameter directory is left."""
    import resource
    import subprocess

    root.handler("first.sh", "#!/bin/sh\necho ran > var/first.ran\ncat\n", '<event name="desktop" before="yes"/>')
    body = tmp_path / "body.txt"
    body.write_text("v=" + "x" * 1_000_000)
    temporary = tmp_path / "tmp"
    temporary.mkdir()
    limit = 256 * 1024  # room for the log and the database, not for the 1 MB value
    result = subprocess.run(
        root.argv("exec", "desktop", "--body", str(body), "--out", "text"),
        capture_output=True,
        text=True,
        env={**os.environ, "TMPDIR": str(temporary)},
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert result.returncode == 1 and result.stderr == "", result
    assert "Handler 'first.sh' (before desktop" in result.stdout
    assert result.stdout.rstrip().endswith("failed: cannot write its parameter files: File too large")
    assert not (root.path / "var/first.ran").exists()
    assert list(temporary.iterdir()) == []


def test_a_var_that_is_not_a_directory_is_named_and_fails_only_what_needs_it(root: PanelRoot) -> None:
    """var/ a file (as when it cannot be searched): a function that needs nothing from var/
    still answers (the registry cache and the log are optional; one stderr line), the
    built-in core and the spool give exit status 3 naming their file, never status 4."""
    (root.path / "var").rmdir()
    (root.path / "var").write_text("not a directory")
    root.plugin("hello", '<mgrdata><handler name="hello.sh" type="xml"><func name="hello.world"/></handler></mgrdata>')
    root.addon("hello.sh", '#!/bin/sh\nsed "s|^</doc>|<greeting>hi</greeting>\\n</doc>|"\n')
    log_line = f"mgrhooks: cannot write the log {root.path}/var/billmgr.log: Not a directory; its records are lost\n"

    hello = root.mgrhooks("exec", "hello.world", "--out", "text")
    assert (hello.returncode, hello.stdout, hello.stderr) == (0, "greeting=hi\n", log_line)

    users = root.mgrhooks("exec", "user", "--out", "text")
    database = f"{root.path}/var/billmgr.db: cannot make {root.path}/var: File exists"
    assert (users.returncode, users.stderr) == (3, f"{log_line}Error: cannot use the database {database}\n")

    queue = root.mgrhooks("queue list")
    spool = f"{root.path}/var/billmgr.db: Not a directory"
    assert (queue.returncode, queue.stderr) == (3, f"Error: cannot use the database {spool}\n")


def test_an_addon_that_cannot_be_looked_at_says_why(root: PanelRoot) -> None:
    """``does not exist`` (the panel's words) only when it is missing; a symlink loop, or no
    permission on addon/, is named as such."""
    root.plugin(
        "loop", '<mgrdata><handler name="loop.sh" type="xml"><event name="user" after="yes"/></handler></mgrdata>'
    )
    (root.path / "addon/loop.sh").symlink_to("loop.sh")
    result = root.mgrhooks("check")
    assert result.stdout == (
        "etc/xml/billmgr_mod_loop.xml:1: error: handler 'loop.sh': "
        "Addon 'addon/loop.sh' cannot be looked at: Too many levels of symbolic links\n"
    )
