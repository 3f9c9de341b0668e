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
