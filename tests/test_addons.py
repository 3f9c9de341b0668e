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
