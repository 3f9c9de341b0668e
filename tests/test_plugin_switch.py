"""mgrhooks plugin list|enable|disable, through the CLI."""

from __future__ import annotations

from conftest import PanelRoot, unmeasured


def test_disable_and_enable_a_plugin(root: PanelRoot) -> None:
    root.handler("stamp.sh", "#!/bin/sh\nsed 's|^</doc>|<stamp/>\\n</doc>|'\n", '<event name="user" after="yes"/>')
    root.plugin(
        "tool",
        '<mgrdata><handler name="tool.sh" type="xml"><func name="my.tool"/></handler></mgrdata>',
        directory="etc",
    )
    root.addon("tool.sh", "#!/bin/sh\ncat\n")
    assert root.mgrhooks("plugin list").stdout.splitlines() == [
        "stamp_sh             enabled  handlers=1 functions=0 etc/xml/billmgr_mod_stamp_sh.xml",
        "tool                 enabled  handlers=0 functions=1 etc/billmgr_mod_tool.xml",
    ]
    assert root.mgrhooks("plugin disable", "stamp_sh").stdout == "stamp_sh: disabled\n"
    assert root.mgrhooks("plugin disable", "billmgr_mod_stamp_sh.xml").stdout == "stamp_sh: disabled (already)\n"
    assert "<stamp/>" not in root.mgrhooks("exec", "user").stdout
    assert "[skipped: plugin disabled]" in root.mgrhooks("plan", "user").stdout
    assert "stamp_sh             disabled" in root.mgrhooks("plugin list").stdout
    assert (root.path / "etc/xml/billmgr_mod_stamp_sh.xml").exists()
    assert "plugin billmgr_mod_stamp_sh.xml disabled" in root.log()

    root.mgrhooks("plugin disable", "tool")
    result = root.mgrhooks("exec", "my.tool", "--out", "text")
    assert (result.returncode, result.stdout) == (
        1,
        "ERROR missed(func,my.tool): Function 'my.tool' comes from plugin billmgr_mod_tool.xml, which is disabled\n",
    )
    assert root.mgrhooks("plugin enable", "stamp_sh").stdout == "stamp_sh: enabled\n"
    assert "<stamp/>" in root.mgrhooks("exec", "user").stdout
    assert root.read("etc/mgrhooks.disabled").splitlines()[1:] == ["billmgr_mod_tool.xml"]


def test_an_unknown_plugin_is_a_usage_error(root: PanelRoot) -> None:
    result = root.mgrhooks("plugin disable", "nope")
    assert result.returncode == 2
    assert f"no plugin 'nope' in {root.path} for billmgr" in result.stderr


def test_a_switch_that_cannot_be_written_changes_nothing_and_leaves_nothing(root: PanelRoot) -> None:
    """The state file is replaced at once (mgrhooks.files): when the new one cannot be
    written (here a file size limit, as a full disk), exit status 3 names the file, the old
    one is as it was, and no temporary file is left beside it."""
    import resource
    import subprocess

    root.handler("stamp.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    state = root.path / "etc/mgrhooks.disabled"
    state.write_text("# kept\n")
    limit = 16  # bytes: less than the new file's comment line
    result = subprocess.run(
        root.argv("plugin disable", "stamp_sh"),
        capture_output=True,
        text=True,
        env=unmeasured(),
        preexec_fn=lambda: resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit)),
    )
    assert result.returncode == 3, result
    assert result.stderr.endswith(f"Error: cannot write {state}: File too large\n")
    assert state.read_text() == "# kept\n"
    assert sorted(p.name for p in state.parent.iterdir()) == ["mgrhooks.disabled", "xml"]
