"""Spill files: written once per call, mode 600 in a directory of the call's own, removed at
its end, and those of a killed call removed by the next one."""

from __future__ import annotations

import os
import stat
from pathlib import Path

import pytest

from mgrhooks.env import NOTHING_SPILLED, Facts
from mgrhooks.model import Request
from mgrhooks.spill import release, write

FACTS = Facts("billmgr", "/srv/root", "1")
BIG = "p" * (70 * 1024)


@pytest.fixture
def tmpdir_(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Path:
    monkeypatch.setenv("TMPDIR", str(tmp_path))
    return tmp_path / f"mgrhooks-{os.geteuid()}"


def test_spilled_values_are_written_once_and_removed_at_the_end(tmpdir_: Path) -> None:
    spill = write(Request("user.add", (("name", "al"), ("passwd", BIG))), {}, FACTS)
    assert spill.directory is not None and Path(spill.directory).parent == tmpdir_
    (key, path), *_ = spill.files
    assert key == "passwd" and Path(path).read_text() == BIG
    assert spill.query_file is not None and Path(spill.query_file).read_text().startswith(
        "func=user.add&name=al&passwd=ppp"
    )
    assert stat.S_IMODE(os.stat(path).st_mode) == 0o600
    assert stat.S_IMODE(os.stat(spill.directory).st_mode) == stat.S_IMODE(os.stat(tmpdir_).st_mode) == 0o700
    release(spill)
    assert not tmpdir_.exists()


def test_nothing_is_written_when_everything_fits(tmpdir_: Path) -> None:
    assert write(Request("user.add", (("name", "al"),)), {}, FACTS) == NOTHING_SPILLED
    assert not tmpdir_.exists()


def test_the_next_call_removes_what_dead_processes_left(tmpdir_: Path) -> None:
    mine = write(Request("f", (("v", BIG),)), {}, FACTS)
    assert mine.directory is not None
    start = Path(mine.directory).name.split("-")[1]
    dead = [tmpdir_ / "999999999-1-0000abcd", tmpdir_ / f"{os.getpid()}-{int(start) + 1}-0000abcd"]  # pid used again
    for directory in dead:
        directory.mkdir()
        (directory / "0").write_text("secret")
    release(None)  # a call that spilled nothing
    assert sorted(tmpdir_.iterdir()) == [Path(mine.directory)]  # this process's own is alive
    release(mine)
    assert not tmpdir_.exists()


def test_a_spill_directory_that_is_not_ours_alone_is_refused(tmpdir_: Path) -> None:
    tmpdir_.mkdir(mode=0o777)
    tmpdir_.chmod(0o777)
    with pytest.raises(OSError) as raised:
        write(Request("f", (("v", BIG),)), {}, FACTS)
    assert (
        raised.value.strerror == f"{tmpdir_} is not a directory of this user's alone (drwxrwxrwx, owner {os.geteuid()})"
    )
    assert list(tmpdir_.iterdir()) == []
