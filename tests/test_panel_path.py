"""``--panel-path``: addons that hard-code /usr/local/mgr5 run unchanged, in a private
mount namespace, and the host's /usr/local/mgr5 is left as it was."""

from __future__ import annotations

import os
import subprocess
import sys
import time
from pathlib import Path

import pytest

from conftest import PanelRoot
from mgrhooks.panelpath import Layout, layout
from mgrhooks.root import mgrctl_script

PANEL = "/usr/local/mgr5"
as_root = pytest.mark.skipif(os.geteuid() != 0, reason="a mount namespace needs root here (CI runs as root)")

#: in the shape of public addons: the panel's absolute paths for mgrctl, its etc/ and itself
PATHS_ADDON = """\
    #!/bin/bash
    cat >/dev/null
    users=$(/usr/local/mgr5/sbin/mgrctl -m billmgr user) || exit 3
    greeting=$(cat /usr/local/mgr5/etc/greeting.conf) || exit 4
    echo "<doc><users>$users</users><greeting>$greeting</greeting><self>$0</self><cwd>$(pwd)</cwd></doc>"
"""


def _host_state() -> list[str] | None:
    """What the host has at /usr/local/mgr5 (``None``: nothing)."""
    return sorted(os.listdir(PANEL)) if os.path.lexists(PANEL) else None


@pytest.fixture
def paths_root(root: PanelRoot) -> PanelRoot:
    """A root with sbin/mgrctl, etc/greeting.conf and a function addon using absolute paths."""
    (root.path / "sbin").mkdir()
    (root.path / "sbin" / "mgrctl").write_text(mgrctl_script(sys.executable))
    (root.path / "sbin" / "mgrctl").chmod(0o755)
    (root.path / "etc" / "greeting.conf").write_text("hello from etc\n")
    root.handler("paths.sh", PATHS_ADDON, '<func name="paths.show"/>')
    for path in [root.path, *root.path.rglob("*")]:
        path.chmod(path.stat().st_mode & ~0o022)
    added = root.mgrhooks("exec", "user.add", "name=alice", "passwd=x", "sok=ok")
    assert added.returncode == 0, added.stderr
    return root


@as_root
def test_an_addon_with_absolute_panel_paths_runs_with_the_option(paths_root: PanelRoot) -> None:
    before = _host_state()
    result = paths_root.mgrhooks("exec", "paths.show", "--panel-path", PANEL, "--out", "json")
    assert result.returncode == 0, result.stdout + result.stderr
    assert '"users": {"$": "name=alice level=16 state=active"}' in result.stdout
    assert '"greeting": {"$": "hello from etc"}' in result.stdout
    # the handler runs where the panel runs it: its own path and working directory
    assert f'"self": {{"$": "{PANEL}/addon/paths.sh"}}' in result.stdout
    assert f'"cwd": {{"$": "{PANEL}"}}' in result.stdout
    assert _host_state() == before  # the host's /usr/local/mgr5 is unchanged (here: absent)


@as_root
def test_without_the_option_the_same_addon_fails(paths_root: PanelRoot) -> None:
    if os.path.lexists(PANEL):
        pytest.skip(f"{PANEL} exists on this machine")
    result = paths_root.mgrhooks("exec", "paths.show", "--out", "text")
    assert result.returncode == 1
    assert "Handler 'paths.sh' (action paths.show" in result.stdout


@as_root
def test_the_handler_is_still_contained_under_the_option(root: PanelRoot) -> None:
    """A handler that hangs is killed at its timeout, with what it started."""
    marker = f"panel-path-{os.getpid()}-{time.monotonic_ns()}"
    child = f"sh -c 'sleep 300; : {marker}'"
    root.handler("hang.sh", f"#!/bin/sh\n{child} &\nexec {child}\n", '<func name="hang.up"/>')
    started = time.monotonic()
    result = root.mgrhooks("exec", "hang.up", "--timeout", "1", "--panel-path", "/usr/local/mgr5", "--out", "text")
    assert result.returncode == 1
    assert "timed out after 1s" in result.stdout
    assert time.monotonic() - started < 15
    left = [p for p in Path("/proc").glob("[0-9]*/cmdline") if _holds(p, marker)]
    assert left == []


def _holds(cmdline: Path, marker: str) -> bool:
    try:
        return marker in cmdline.read_text()
    except OSError:
        return False


def test_nothing_is_needed_when_the_root_is_already_at_the_path(paths_root: PanelRoot) -> None:
    """Any user: no namespace is made, so nothing can be refused."""
    result = paths_root.mgrhooks("exec", "user", "--panel-path", str(paths_root.path), "--out", "text")
    assert result.returncode == 0, result.stderr
    assert "name=alice" in result.stdout


@pytest.mark.parametrize(
    ("path", "reason"),
    [
        ("usr/local/mgr5", "not an absolute path"),
        ("/", "cannot put the root at /"),
        ("/no-such-top-folder-x/mgr5", "/no-such-top-folder-x does not exist"),
    ],
)
def test_a_path_that_cannot_be_used_is_a_usage_error(root: PanelRoot, path: str, reason: str) -> None:
    result = root.mgrhooks("exec", "user", "--panel-path", path)
    assert result.returncode == 2
    assert f"Error: --panel-path {path}: {reason}" in result.stderr


def test_layout_covers_the_nearest_existing_folder() -> None:
    present = {"/", "/usr", "/usr/local"}
    assert layout("/usr/local/mgr5/", present.__contains__) == Layout(
        "/usr/local/mgr5", "/usr/local", ("/usr/local/mgr5",)
    )
    assert layout("/usr/local/a/b", present.__contains__) == Layout(
        "/usr/local/a/b", "/usr/local", ("/usr/local/a", "/usr/local/a/b")
    )
    assert layout("/usr/local", present.__contains__) == Layout("/usr/local")


def _unprivileged(*outer: str) -> list[str]:
    """The command line prefix that runs a program as an unprivileged user (nobody, no
    capabilities) through util-linux's unshare, after ``outer`` (shell) in a user
    namespace of root's; skipped where unshare cannot map a user."""
    probe = subprocess.run(["unshare", "--user", "--map-user=65534", "true"], capture_output=True)
    if probe.returncode != 0:
        pytest.skip("util-linux unshare cannot map a user here")
    inner = ["unshare", "--user", "--map-user=65534", "--map-group=65534"]
    if not outer:
        return inner
    return ["unshare", "--user", "--map-root-user", "sh", "-c", f'{" ".join(outer)} && exec "$@"', "sh", *inner]


@as_root
def test_an_unprivileged_user_gets_a_user_namespace_of_its_own(paths_root: PanelRoot) -> None:
    """As nobody, without capabilities (the root's files are its own in the namespace)."""
    argv = _unprivileged() + paths_root.argv("exec", "paths.show", "--panel-path", PANEL, "--out", "text")
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 0, result.stdout + result.stderr
    assert "greeting=hello from etc" in result.stdout.splitlines()


@as_root
def test_a_refused_namespace_is_an_error_naming_the_reason(paths_root: PanelRoot) -> None:
    """No user namespace left to make (the limit reached): exit status 3, the reason, what is needed."""
    argv = _unprivileged("echo 1 > /proc/sys/user/max_user_namespaces") + paths_root.argv(
        "exec", "paths.show", "--panel-path", PANEL
    )
    result = subprocess.run(argv, capture_output=True, text=True, timeout=60)
    assert result.returncode == 3, result.stdout + result.stderr
    assert result.stdout == ""
    assert result.stderr.startswith(
        f"Error: --panel-path {PANEL}: cannot make a private mount namespace: No space left on device (ENOSPC); "
        "a private mount namespace needs root, or unprivileged user namespaces"
    )
