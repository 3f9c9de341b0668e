"""sshd's StrictModes rule for a root (mgrhooks.trust): what is believed, what is refused,
and where the check stops. Real files, real modes, real owners (the tests run as root)."""

from __future__ import annotations

import os
import subprocess
from pathlib import Path

import pytest

from conftest import PanelRoot
from faults import NOBODY, guard, owner

OTHER = 4242  # a uid with no account: neither root, nor the root's owner, nor nobody


@pytest.fixture(autouse=True)
def _as_root() -> None:
    if os.geteuid() != 0:
        pytest.skip("changes owners: run as root (as CI does)")


def runs_guard(root: PanelRoot) -> bool:
    """Whether a call of ``user`` ran guard.sh (it appends to var/ran)."""
    ran = root.path / "var/ran"
    before = ran.read_text().count("ran") if ran.exists() else 0
    result = root.mgrhooks("exec", "user", "--out", "text")
    assert result.returncode == 0, result.stdout + result.stderr
    return (ran.read_text().count("ran") if ran.exists() else 0) > before


def check_lines(root: PanelRoot) -> list[str]:
    return root.mgrhooks("check").stdout.splitlines()


def test_the_check_stops_at_the_root_directory_itself(tmp_path: Path) -> None:
    """A world-writable folder holding the root is not looked at (as sshd stops at the
    home directory: what holds the root is the system's business); the root is."""
    above = tmp_path / "shared"
    (above / "root/etc/xml").mkdir(parents=True)
    (above / "root/addon").mkdir()
    above.chmod(0o777)
    root = PanelRoot(above / "root")
    guard(root)
    assert runs_guard(root)
    assert root.mgrhooks("check").returncode == 0
    root.path.chmod(0o770)
    result = root.mgrhooks("exec", "user", "--out", "text")  # the before-handler stays in force, and is refused
    assert result.returncode == 1 and not (root.path / "var/ran").read_text().count("ran") > 1
    assert f"Addon 'addon/guard.sh' is not trusted: folder {root.path}/ is writable" in result.stdout
    lines = check_lines(root)
    assert lines[0] == (
        f"{root.path}/: error: not trusted: folder {root.path}/ is writable by group or others (mode 770); what"
        " mgrhooks runs or reads, and each folder up to the root, must be owned by root or the root's owner and"
        " writable by no one else (sshd's StrictModes rule)"
    )
    assert f"etc/xml/billmgr_mod_guard.xml: error: not trusted: folder {root.path}/ is writable" in lines[1]
    assert "its last good version is used" in lines[1]  # believed before: kept, not read again


def test_files_of_the_roots_owner_are_believed_and_a_third_users_are_not(root: PanelRoot) -> None:
    program = root.handler("theirs.sh", "#!/bin/sh\ncat\n", '<event name="user" before="yes"/>')
    plugin = root.path / "etc/xml/billmgr_mod_theirs_sh.xml"
    for path in (root.path, root.path / "etc", root.path / "etc/xml", root.path / "addon", plugin, program):
        os.chown(path, NOBODY, -1)
    assert root.mgrhooks("exec", "user").returncode == 0
    assert root.mgrhooks("check").returncode == 0
    os.chown(program, OTHER, -1)
    result = root.mgrhooks("exec", "user", "--out", "text")
    assert result.returncode == 1
    assert (
        f"Addon 'addon/theirs.sh' is not trusted: it is owned by uid {OTHER}, not by root or the root's owner"
        f" ({owner(NOBODY)})" in result.stdout
    )


def test_a_setgid_program_is_refused(root: PanelRoot) -> None:
    root.handler("sgid.sh", "#!/bin/sh\ncat\n", '<event name="user" before="yes"/>').chmod(0o2750)
    result = root.mgrhooks("exec", "user", "--out", "text")
    assert (
        result.returncode == 1 and "Addon 'addon/sgid.sh' is set-user-ID or set-group-ID (mode 2750)" in result.stdout
    )


def test_a_program_reached_through_a_link_is_judged_where_it_really_is(root: PanelRoot) -> None:
    """addon/tools -> addon/real/tools: the folders on the real path count, not the link's."""
    real = root.path / "addon/real/tools"
    real.mkdir(parents=True)
    (root.path / "addon/tools").symlink_to("real/tools")
    root.plugin(
        "t", '<mgrdata><handler name="tools/t.sh" type="xml"><event name="user" before="yes"/></handler></mgrdata>'
    )
    program = real / "t.sh"
    program.write_text("#!/bin/sh\necho ran >> var/ran\ncat\n")
    program.chmod(0o750)
    assert runs_guard(root)
    (root.path / "addon/real").chmod(0o757)
    result = root.mgrhooks("exec", "user", "--out", "text")
    assert "Addon 'addon/tools/t.sh' is not trusted: folder addon/real/ is writable by group or others (mode 757)" in (
        result.stdout
    )


def test_etc_xml_linked_outside_the_root_checks_every_folder_it_passes(root: PanelRoot, tmp_path: Path) -> None:
    """An absolute link is followed from /: a world-writable folder on the way (here the
    one it points into) is named, wherever it is."""
    outside = Path(os.path.realpath(tmp_path.parent)) / f"{tmp_path.name}-plugins"
    (outside / "xml").mkdir(parents=True)
    try:
        outside.chmod(0o777)
        (root.path / "etc/xml").rmdir()
        (root.path / "etc/xml").symlink_to(outside / "xml")
        guard(root)
        assert not runs_guard(root)
        text = root.mgrhooks("check").stdout
        assert "etc/xml/billmgr_mod_guard.xml: error: not trusted: folder /" in text
        assert "is writable by group or others (mode 1777)" in text or f"folder {outside}/ is writable" in text, text
        outside.chmod(0o755)
        believed = all(
            os.stat(folder).st_mode & 0o022 == 0 for folder in (outside.parent, *outside.parent.parents)
        )  # /tmp (1777) on the way is refused too, as sshd would
        assert runs_guard(root) == believed
    finally:
        subprocess.run(["rm", "-rf", str(outside)], check=True)


def test_a_plugin_file_believed_again_is_read_again(root: PanelRoot) -> None:
    plugin = guard(root)
    plugin.chmod(0o664)
    assert not runs_guard(root)
    plugin.chmod(0o644)
    assert runs_guard(root)
    assert root.mgrhooks("check").returncode == 0


def test_plugin_list_counts_what_calls_use_and_names_a_file_not_believed(root: PanelRoot) -> None:
    """A plugin file others may write: ``plugin list`` counts its last good version (what
    calls still run), not the text now in it, and ends its line with the error; a file
    never believed declares nothing."""
    plugin = guard(root)
    line = "guard                enabled  handlers=1 functions=0 etc/xml/billmgr_mod_guard.xml"
    assert root.mgrhooks("plugin list").stdout.splitlines() == [line]
    plugin.write_text(
        plugin.read_text().replace("</mgrdata>", '<handler name="more.sh"><event>user</event></handler></mgrdata>')
    )
    plugin.chmod(0o666)
    refused = "etc/xml/billmgr_mod_guard.xml: error: not trusted: file etc/xml/billmgr_mod_guard.xml is writable"
    (listed,) = root.mgrhooks("plugin list").stdout.splitlines()
    assert listed.startswith(f"{line} [{refused}") and listed.endswith("; its last good version is used]")
    root.plugin("late", '<mgrdata><handler name="late.sh"><event>user</event></handler></mgrdata>').chmod(0o666)
    late = root.mgrhooks("plugin list").stdout.splitlines()[1]
    assert late.startswith("late                 enabled  handlers=0 functions=0 etc/xml/billmgr_mod_late.xml [")
    assert "its last good version" not in late


def test_a_switch_file_others_may_write_stops_calls_and_switches(root: PanelRoot) -> None:
    guard(root)
    state = root.path / "etc/mgrhooks.disabled"
    state.write_text("# nothing off\n")
    state.chmod(0o646)
    reason = f"Error: {state}: not trusted: file etc/mgrhooks.disabled is writable by group or others (mode 646)"
    for command in (("exec", "user"), ("plugin disable", "guard")):
        result = root.mgrhooks(*command)
        assert (result.returncode, result.stderr.split(";")[0]) == (3, reason)
    assert not (root.path / "var/ran").exists()
    assert state.read_text() == "# nothing off\n"


def test_a_debug_conf_others_may_write_is_not_used_and_the_log_says_why(root: PanelRoot) -> None:
    """Our choice: an ``etc/debug.conf`` that is not believed stops no call (it only sets
    how much the log says), but its levels are not used: whoever could write it could
    silence the log or fill it. The log and ``check`` name it."""
    root.handler("h.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    conf = root.path / "etc/debug.conf"
    conf.write_text("*.external 9\n")
    conf.chmod(0o666)
    result = root.mgrhooks("exec", "user")
    assert result.returncode == 0
    log = root.log()
    assert "external DEBUG" not in log and "TRACE" not in log  # the defaults
    assert f"{conf}: not trusted, its levels are not used: file etc/debug.conf is writable by group" in log
    assert [line.split(": error:")[0] for line in check_lines(root)] == ["etc/debug.conf"]
    conf.chmod(0o644)
    root.mgrhooks("exec", "user")
    assert "external DEBUG 'h.sh'" in root.log()  # believed again: used again


def test_check_names_each_bad_folder_and_file_once(root: PanelRoot) -> None:
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    (root.path / "etc/core/billmgr/a.xml").write_text("<doc/>")
    (root.path / "etc/core/billmgr/b.xml").write_text("<doc/>")
    (root.path / "etc/core").chmod(0o775)
    (root.path / "etc/mgrhooks.conf").write_text("")
    os.chown(root.path / "etc/mgrhooks.conf", NOBODY, -1)
    places = [line.split(": error:")[0] for line in check_lines(root)]
    assert places == ["etc/core/", "etc/mgrhooks.conf"]


def test_core_documents_in_etc_core_are_judged_and_core_doc_files_are_not(root: PanelRoot) -> None:
    """``--core-doc FILE`` is the caller's own input and is not judged; etc/core/ is."""
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    document = root.path / "etc/core/billmgr/site.list.xml"
    document.write_text("<doc><elem><name>a</name></elem></doc>")
    assert root.mgrhooks("exec", "site.list", "--out", "text").stdout == "name=a\n"
    document.chmod(0o666)
    result = root.mgrhooks("exec", "site.list", "--out", "text")
    assert result.returncode == 1 and "is not trusted: file etc/core/billmgr/site.list.xml is writable" in result.stdout
    given = root.path / "var/page.xml"
    given.write_text("<doc><elem><name>b</name></elem></doc>")
    given.chmod(0o666)
    assert root.mgrhooks("exec", "x.y", "--core-doc", str(given), "--out", "text").stdout == "name=b\n"


# --- what the handlers of one call share (programs.Inspector, trust.Folder) -----------------


def two_handlers(root: PanelRoot, first: str) -> None:
    """``first.sh`` (running the shell text ``first``) then ``second.sh`` (recording that it
    ran in var/ran), both cgi after-handlers of ``user``: the second is checked after the
    first changed something, in the same call."""
    root.plugin(
        "two",
        '<mgrdata><handler name="first.sh" type="cgi"><event name="user" after="yes"/></handler>'
        '<handler name="second.sh" type="cgi"><event name="user" after="yes"/></handler></mgrdata>',
    )
    root.addon("first.sh", f"#!/bin/sh\n{first}\necho '<doc/>'\n")
    root.addon("second.sh", "#!/bin/sh\necho ran >> var/ran\necho '<doc/>'\n")


@pytest.mark.parametrize(
    ("change", "finding"),
    [
        ("chmod 775 addon", "folder addon/ is writable by group or others (mode 775)"),
        (f"chown {OTHER} addon", f"folder addon/ is owned by uid {OTHER}, not by root or the root's owner"),
        ('chmod 777 "$MGRHOOKS_ROOT"', "is writable by group or others (mode 777)"),
        (
            "mv addon addon.real && mkdir -m 777 ../shared && cp -p addon.real/* ../shared/ && ln -s ../shared addon",
            "shared/ is writable by group or others (mode 777)",
        ),
        ("chmod 770 addon/second.sh", "is writable by group or others (mode 770)"),
        (f"chown {OTHER} addon/second.sh", f"it is owned by uid {OTHER}"),
    ],
)
def test_a_change_made_by_one_handler_is_seen_when_the_next_handler_is_checked(
    root: PanelRoot, change: str, finding: str
) -> None:
    """The programs of a call share one check of addon/'s folders, looked at again for each
    program: what a handler changes in them, or in the next program, is seen before the
    next program of the same call runs (docs/performance.md, "per handler")."""
    two_handlers(root, change)
    result = root.mgrhooks("exec", "user", "--out", "text")
    assert result.returncode == 1, result.stdout + result.stderr
    assert "failed: Addon 'addon/second.sh' " in result.stdout and finding in result.stdout
    assert not (root.path / "var/ran").exists()


def test_a_folder_judged_once_is_looked_at_again_and_walked_again_when_it_changed(root: PanelRoot) -> None:
    from mgrhooks import trust

    folder = trust.Folder(str(root.path), "addon")
    examined, found = folder.judged()
    assert found is None and [path for path, _ in examined.folders] == [str(root.path), str(root.path / "addon")]
    assert folder.judged()[1] is None
    (root.path / "addon").chmod(0o775)
    assert str(folder.judged()[1]) == "folder addon/ is writable by group or others (mode 775)"
    (root.path / "addon").chmod(0o755)
    assert folder.judged()[1] is None
    (root.path / "addon").rename(root.path / "addon.real")
    (root.path / "addon").symlink_to("addon.real")
    examined, found = folder.judged()  # a link on the way: followed, then walked every time
    assert found is None and examined.real == str(root.path / "addon.real")
    (root.path / "addon.real").chmod(0o777)
    assert str(folder.judged()[1]) == "folder addon.real/ is writable by group or others (mode 777)"
    (root.path / "addon.real").chmod(0o755)
    (root.path / "addon").unlink()
    with pytest.raises(FileNotFoundError):
        folder.judged()
