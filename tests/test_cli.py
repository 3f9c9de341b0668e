"""The ``mgrhooks`` command line's own options, through the real command: what a caller
gets for a mistake is a usage error (exit status 2) that names the option and why."""

from __future__ import annotations

import subprocess
import sys
from pathlib import Path

from conftest import PanelRoot
from mgrhooks import __version__


def test_version_is_printed_without_a_root(tmp_path: Path) -> None:
    result = subprocess.run(
        [sys.executable, "-m", "mgrhooks", "--version"], cwd=tmp_path, capture_output=True, text=True, timeout=60
    )
    assert (result.returncode, result.stdout) == (0, f"mgrhooks, version {__version__}\n")


def test_stdin_takes_parameter_names_only(root: PanelRoot) -> None:
    result = subprocess.run(
        root.argv("exec", "user.add", "name=al", "sok=ok", "--stdin", "passwd=x"),
        input="secret\n",
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "Invalid value for '--stdin': expected a parameter name, got 'passwd=x'" in result.stderr
    assert "secret" not in result.stderr


def test_stdin_closed_is_a_usage_error_and_nothing_runs(root: PanelRoot) -> None:
    result = subprocess.run(
        root.argv("exec", "user.add", "name=al", "sok=ok", "--stdin", "passwd"),
        stdin=subprocess.DEVNULL,
        capture_output=True,
        text=True,
        timeout=60,
    )
    assert result.returncode == 2
    assert "standard input ended before the line of 'passwd'" in result.stderr
    assert root.mgrhooks("exec", "user", "--out", "text").stdout == ""


def test_an_unreadable_body_names_the_file(root: PanelRoot, tmp_path: Path) -> None:
    missing = tmp_path / "no-such-body"
    result = root.mgrhooks("exec", "user.add", "--body", str(missing))
    assert result.returncode == 2
    assert f"Invalid value for '--body': cannot read {missing}: No such file or directory" in result.stderr
