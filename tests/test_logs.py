"""The panel log belongs to the call writing it: panels side by side in threads of one
process, or nested in one thread, each write their own var/<mgr>.log."""

from __future__ import annotations

import logging
import os
import stat
import subprocess
import threading
from pathlib import Path

import pytest

from conftest import PanelRoot
from mgrhooks import Panel, logs
from mgrhooks.printable import printable


def make_panel(path: Path) -> Panel:
    for sub in ("etc/xml", "addon", "var"):
        (path / sub).mkdir(parents=True)
    return Panel(path)


def lines(panel: Panel) -> list[str]:
    return [line.split("] ", 1)[1] for line in (panel.root.log_file).read_text().splitlines()]


def test_two_panels_in_two_threads_each_write_their_own_log(tmp_path: Path) -> None:
    """Both threads are inside their panel's logging block at once and write in turns;
    each file gets exactly its own records, in order, none of the other's."""
    panels = {name: make_panel(tmp_path / name) for name in ("first", "second")}
    turns = threading.Barrier(2)
    failures: list[BaseException] = []

    def write(name: str) -> None:
        try:
            with panels[name].logging():
                turns.wait()
                for number in range(20):
                    logs.ACTION.info("%s %d", name, number)
                    turns.wait()
        except BaseException as exc:  # noqa: BLE001 (reported by the test)
            failures.append(exc)
            turns.abort()

    threads = [threading.Thread(target=write, args=(name,)) for name in panels]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join(30)
    assert not failures
    for name, panel in panels.items():
        assert lines(panel) == [f"action INFO {name} {number}" for number in range(20)]


def test_a_panel_logging_inside_another_gives_the_log_back(tmp_path: Path) -> None:
    outer, inner = make_panel(tmp_path / "outer"), make_panel(tmp_path / "inner")
    with outer.logging():
        logs.ACTION.info("one")
        with inner.logging():
            logs.ACTION.info("two")
        logs.ACTION.info("three")
    assert lines(outer) == ["action INFO one", "action INFO three"]
    assert lines(inner) == ["action INFO two"]


def test_the_applications_loggers_are_left_as_they_were(tmp_path: Path) -> None:
    """Writing the panel log changes nothing of the ``mgrhooks`` logger an embedding
    application configures (it lost its propagation and level before)."""
    logger = logging.getLogger("mgrhooks")
    before = (logger.level, logger.propagate, list(logger.handlers))
    with make_panel(tmp_path / "root").logging():
        logs.EXTERNAL.error("written")
    assert (logger.level, logger.propagate, list(logger.handlers)) == before


# --- lines that cannot be forged, a file that cannot be redirected ---------------------

FORGED = "\n2026-01-01 00:00:00 [1:1] action ERROR forged line"
ANSI = "\x1b[31m"


def test_a_value_with_a_newline_and_an_ansi_escape_is_one_escaped_line(root: PanelRoot) -> None:
    """A caller's value in a core error and a handler's stderr line with an ANSI escape and
    a carriage return reach the log, and ``--verbose``'s stderr, as one line each."""
    root.handler(
        "noisy.sh",
        "#!/bin/sh\nprintf 'red \\033[31mtext\\r2026 overwritten\\n' >&2\ncat\n",
        '<event name="user.add" before="yes"/>',
    )
    result = root.mgrhooks("exec", "user.add", f"name=a{FORGED}{ANSI}", "sok=ok", "--verbose")
    assert result.returncode == 1
    log = root.log()
    assert "forged line" in log and "\x1b" not in log and "\r" not in log
    (failed,) = [line for line in log.splitlines() if "forged line" in line]
    assert "action INFO 'user.add' failed: Invalid user name 'a\\n2026-01-01 00:00:00 [1:1] action" in failed
    assert failed.endswith("forged line\\x1b[31m': letters, digits, '_.@-', 1 to 64")
    assert "external INFO noisy.sh: red \\x1b[31mtext\\r2026 overwritten" in log, log
    assert not any(line.startswith("2026") for line in log.splitlines())
    echoed = [line for line in result.stderr.splitlines() if "forged line" in line or "noisy.sh:" in line]
    assert len(echoed) == 2 and "\x1b" not in result.stderr and "\r" not in result.stderr


def test_the_clis_own_messages_on_stderr_are_escaped(root: PanelRoot) -> None:
    missing = f"{root.path}/no{FORGED}{ANSI}"
    result = root.mgrhooks("exec", "desktop", "--root", missing)
    assert result.returncode != 0 and "\x1b" not in result.stderr
    assert result.stderr.count("\n") == 1 and "no\\n2026-01-01" in result.stderr, result.stderr


def logged_call(root: PanelRoot) -> subprocess.CompletedProcess[str]:
    """A ``user.add`` through a before-handler: a call that writes log records."""
    root.handler("first.sh", "#!/bin/sh\ncat\n", '<event name="user.add" before="yes"/>')
    return root.mgrhooks("exec", "user.add", "name=ann", "sok=ok", "passwd=x")


def test_a_new_log_is_made_with_mode_600(root: PanelRoot) -> None:
    result = logged_call(root)
    assert result.returncode == 0, result.stderr
    assert stat.S_IMODE((root.path / "var/billmgr.log").stat().st_mode) == 0o600


@pytest.mark.parametrize("target", ["var/other.txt", "/tmp/{name}"], ids=["inside", "outside"])
def test_a_log_that_is_a_link_is_refused_and_not_followed(root: PanelRoot, tmp_path: Path, target: str) -> None:
    """``O_NOFOLLOW``: a link is never written through, wherever it leads; the call goes on."""
    aim = root.path / target if not target.startswith("/") else Path(target.format(name=tmp_path.name + ".log"))
    aim.write_text("kept\n")
    log = root.path / "var/billmgr.log"
    log.symlink_to(aim)
    try:
        result = logged_call(root)
        assert result.returncode == 0
        reason = "not a regular file but a symbolic link (never followed)"
        assert result.stderr == f"mgrhooks: cannot write the log {log}: {reason}; its records are lost\n"
        assert aim.read_text() == "kept\n" and log.is_symlink()
    finally:
        aim.unlink()


def test_a_var_folder_linked_out_of_the_root_gets_no_log(root: PanelRoot) -> None:
    """The log's folder must be inside the root; a ``var/`` elsewhere is refused for the log."""
    import tempfile

    with tempfile.TemporaryDirectory() as elsewhere:
        (root.path / "var").rmdir()
        (root.path / "var").symlink_to(elsewhere)
        result = logged_call(root)
        assert result.returncode == 0, result.stderr
        reason = f"a symbolic link leading out of the root (to {elsewhere})"
        log = f"{root.path}/var/billmgr.log"
        assert result.stderr == f"mgrhooks: cannot write the log {log}: {reason}; its records are lost\n"
        assert not os.path.exists(f"{elsewhere}/billmgr.log")


def test_open_log_never_waits_on_a_fifo_nor_opens_a_device(tmp_path: Path) -> None:
    fifo = tmp_path / "fifo.log"
    os.mkfifo(fifo)
    with pytest.raises(OSError, match="not a regular file but a FIFO"):
        logs.open_log(fifo)
    with pytest.raises(OSError, match="not a regular file but a character device"):
        logs.open_log(Path("/dev/null"))


@pytest.mark.parametrize(
    ("text", "shown"),
    [
        ("plain Пётр 🙂 C:\\dir", "plain Пётр 🙂 C:\\dir"),
        ("a\nb\r\tc", "a\\nb\\r\\tc"),
        ("\x1b[31mred\x07\x7f", "\\x1b[31mred\\x07\\x7f"),
        ("nel\x85 ls\u2028 ps\u2029", "nel\\u0085 ls\\u2028 ps\\u2029"),
        ("rtl\u202e \u2066x\u2069", "rtl\\u202e \\u2066x\\u2069"),
        (b"raw \xff\xfe".decode("utf-8", "surrogateescape"), "raw \\xff\\xfe"),
    ],
    ids=["kept", "line-breaks", "ansi-and-del", "unicode-line-breaks", "bidi", "not-utf8"],
)
def test_printable_escapes_what_could_break_a_line_or_drive_a_terminal(text: str, shown: str) -> None:
    assert printable(text) == shown
