"""The addon author's kit through the real ``mgrhooks`` command: dry runs."""

from __future__ import annotations

import os
import re
from pathlib import Path

from conftest import PanelRoot

BASH_STAMP = """
#!/bin/bash
echo ran >> var/stamp
cat
"""
PY_AFTER = """
#!/usr/bin/env python3
import sys
sys.stdout.write(sys.stdin.read())
"""


def listing(path: Path) -> dict[str, tuple[int, int]]:
    """Every file under ``path`` with its size and modification time."""
    found = {}
    for directory, _, files in os.walk(path):
        for name in files:
            stat = os.stat(os.path.join(directory, name))
            found[os.path.relpath(os.path.join(directory, name), path)] = (stat.st_size, stat.st_mtime_ns)
    return found


def kit_root(root: PanelRoot) -> None:
    root.handler("stamp.sh", BASH_STAMP, '<event name="user.add" before="yes"/>', attrs='timeout="7"')
    root.handler("after.sh", "#!/bin/sh\ncat\n", '<event name="user.add" after="yes"/>')
    root.handler("echo.py", PY_AFTER, '<event name="user.add" after="yes" postdata="yes"/>', type="cgi")


def test_dry_run_shows_each_step_and_runs_and_writes_nothing(root: PanelRoot) -> None:
    kit_root(root)
    assert root.mgrhooks("exec", "user", "--out", "text").returncode == 0  # the registry cache made
    before = listing(root.path)
    big = "x" * 100_000  # spilled to a file by a real call
    done = root.mgrhooks("exec", "user.add", "name=alice", "passwd=s3cr3t", "sok=ok", f"note={big}", "--dry-run")
    assert done.returncode == 0, done.stderr
    assert listing(root.path) == before  # no database, no log, no var/ file, no spill file
    out = done.stdout
    assert "s3cr3t" not in out and "AUTH_USER=root" in out
    assert f"program: {root.path}/addon/stamp.sh" in out
    assert "PARAM_passwd=***" in out and "PARAM_name=alice" in out
    assert "QUERY_STRING=func=user.add&name=alice&passwd=***&sok=ok\n" in out
    assert re.search(r"PARAM_note_FILE=/\S+/mgrhooks-0/<call dir>/\d+\n", out) and big not in out
    assert "timeout: 7 s, from the handler's timeout= (etc/xml/billmgr_mod_stamp_sh.xml:1)" in out
    assert "source: handler 'stamp.sh' (before user.add, etc/xml/billmgr_mod_stamp_sh.xml:1)" in out
    assert "timeout: 60 s, from the root's default" in out
    assert "stdin: " in out and "| <?xml" in out
    assert "user.add" in out and "runs inside mgrhooks (the core): not run in a dry run" in out
    assert "a real call gives the main logic's result" in out  # the after-handler's input is not known
    assert "| func=user.add&name=alice&passwd=***&sok=ok" in out  # a POST body, masked
    assert not (root.path / "var/stamp").exists()


def test_dry_run_of_an_unknown_function_is_an_error(root: PanelRoot) -> None:
    done = root.mgrhooks("exec", "no.such", "--dry-run")
    assert done.returncode == 1 and "no.such" in done.stderr


def test_dry_run_says_what_would_not_start_and_why(root: PanelRoot) -> None:
    """A handler of a disabled plugin is shown skipped, one whose program is not trusted
    is shown refused (with the trust finding), a final handler's stdin is explained, and
    the call's ``--timeout`` is named as its handlers' timeout; nothing runs."""
    root.handler("off.sh", BASH_STAMP, '<event name="user.add" before="yes"/>')
    assert root.mgrhooks("plugin disable", "off_sh").returncode == 0
    root.handler("open.sh", BASH_STAMP, '<event name="user.add" before="yes"/>').chmod(0o777)
    root.handler("fin.sh", BASH_STAMP, '<event name="user.add" final="yes"/>')
    done = root.mgrhooks("exec", "user.add", "name=alice", "passwd=x", "sok=ok", "--timeout", "5", "--dry-run")
    assert done.returncode == 0, done.stderr
    out = done.stdout
    assert "skipped: plugin disabled" in out
    assert "note: refused: Addon 'addon/open.sh' is writable by group or others (mode 777)" in out
    assert "stdin: a real call gives the response (sessiondata) or the starting document" in out
    assert "timeout: 5 s, from the call's --timeout" in out
    assert not (root.path / "var/stamp").exists()


BASH_XML = """
#!/bin/bash
sed 's|</doc>|<greeting>hello '"$PARAM_name"'</greeting></doc>|'
"""
PY_CGI = """
#!/usr/bin/env python3
import os
print("Content-Type: text/xml")
print()
print("<doc><seen>" + os.environ["PARAM_name"] + "</seen></doc>")
"""


def recording_root(root: PanelRoot) -> None:
    root.handler("greet.sh", BASH_XML, '<event name="user.add" after="yes"/>')
    root.handler("seen.py", PY_CGI, '<event name="user.add" after="yes"/>', type="cgi")


def call_ids(root: PanelRoot) -> list[str]:
    listed = root.mgrhooks("runs")
    assert listed.returncode == 0, listed.stderr
    return [line.split()[0] for line in listed.stdout.splitlines()]


def test_record_list_and_replay_unchanged_and_edited(root: PanelRoot, tmp_path: Path) -> None:
    recording_root(root)
    done = root.mgrhooks("exec", "user.add", "name=alice", "passwd=s3cr3t", "sok=ok", "--record")
    assert done.returncode == 0, done.stderr
    [call] = call_ids(root)
    listed = root.mgrhooks("runs").stdout
    assert re.fullmatch(rf"{call} \S+ \S+ user\.add user=root 01-greet\.sh:ok 02-seen\.py:ok\n", listed)
    assert "s3cr3t" not in listed
    runs = root.path / "var/runs"
    for path in [runs, *runs.rglob("*")]:
        assert path.stat().st_mode & 0o777 == (0o700 if path.is_dir() else 0o600), path
    assert b"s3cr3t" in (runs / call / "01-greet.sh/env.json").read_bytes()  # as the handler got it
    assert (runs / call / "02-seen.py/stdout").read_bytes().endswith(b"<doc><seen>alice</seen></doc>\n")

    same = root.mgrhooks("replay", call)
    assert same.returncode == 0, same.stdout + same.stderr
    assert same.stdout == "01-greet.sh: ok, same output\n02-seen.py: ok, same output\n"

    edited = tmp_path / "greet.sh"
    edited.write_text(BASH_XML.replace("hello", "goodbye").lstrip())
    edited.chmod(0o755)
    changed = root.mgrhooks("replay", call, "greet.sh", "--handler", str(edited))
    assert changed.returncode == 1, changed.stderr
    assert "01-greet.sh: ok, output differs" in changed.stdout
    assert "-  <greeting>hello alice</greeting>\n+  <greeting>goodbye alice</greeting>\n" in changed.stdout
    assert "02-seen.py" not in changed.stdout

    unknown = root.mgrhooks("replay", "nosuchcall")
    assert unknown.returncode == 2 and "no recorded call 'nosuchcall'" in unknown.stderr


def test_record_setting_names_handlers_and_keeps_the_newest_calls(root: PanelRoot) -> None:
    recording_root(root)
    (root.path / "etc/mgrhooks.conf").write_text("[record]\nhandlers = seen.py\nkeep = 2\n")
    for name in ("a", "b", "c"):
        assert root.mgrhooks("exec", "user.add", f"name={name}", "passwd=x", "sok=ok").returncode == 0
    listed = root.mgrhooks("runs").stdout.splitlines()
    assert len(listed) == 2 and all(line.endswith(" 01-seen.py:ok") for line in listed)
    newest = call_ids(root)[-1]
    assert b"<seen>c</seen>" in (root.path / "var/runs" / newest / "01-seen.py/stdout").read_bytes()


def test_a_bad_record_setting_names_file_line_and_key(root: PanelRoot) -> None:
    (root.path / "etc/mgrhooks.conf").write_text("[record]\nhandlers = x\nkeep = none\n")
    done = root.mgrhooks("exec", "user", "--record")
    assert done.returncode == 3
    assert "mgrhooks.conf: line 3: [record] keep: expected a whole number >= 1, got 'none'" in done.stderr


def test_bench_prints_each_step_with_percentiles_and_shares(root: PanelRoot) -> None:
    recording_root(root)
    root.handler("stamp.sh", BASH_STAMP, '<event name="user" before="yes"/>')
    done = root.mgrhooks("bench", "user", "-n", "3")
    assert done.returncode == 0, done.stderr
    head, columns, *steps = done.stdout.splitlines()
    assert re.fullmatch(r"user: 3 call\(s\), 0 with an <error>; p50 [\d.]+ ms, p95 [\d.]+ ms a call", head)
    assert columns.split() == ["step", "runs", "p50", "ms", "p95", "ms", "start", "handler", "parse+merge"]
    labels = [line[:40].strip() for line in steps]
    assert labels == ["before handler stamp.sh", "action action user"]
    number, share = r"\s+[\d.]+", r"\s+\d+%"
    for line in steps:
        assert re.fullmatch(rf".{{40}}\s+3{number}{number}{share}{share}{share}", line), line
    assert (root.read("var/stamp")).count("ran") == 3  # the handler really ran each time


def test_one_recorder_records_each_call_it_is_given_to_apart(root: PanelRoot) -> None:
    from mgrhooks.api import Panel
    from mgrhooks.dispatch import Options

    recording_root(root)
    panel = Panel(root.path)
    options = Options(monitors=(panel.recorder(),))
    for name in ("a", "b"):
        assert not panel.call("user.add", {"name": name, "passwd": "x", "sok": "ok"}, options=options).error
    recorded = panel.recordings()
    assert [r.func for r in recorded] == ["user.add", "user.add"]
    assert [[run.name for run in r.runs] for r in recorded] == [["01-greet.sh", "02-seen.py"]] * 2
