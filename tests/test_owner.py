"""Who holds a lease or an intent (mgrhooks.owner): a process named by its boot, pid and
start time, or, from older records, by its pid alone."""

from __future__ import annotations

import os
import subprocess
import sys

from mgrhooks.owner import alive, me


def test_this_process_is_alive_by_its_full_name_and_by_its_pid() -> None:
    assert alive(me())
    assert alive(str(os.getpid()))


def test_an_ended_process_is_not_alive_by_its_pid() -> None:
    child = subprocess.Popen([sys.executable, "-c", "pass"])
    child.wait()  # reaped: its pid names nothing (until reused)
    assert not alive(str(child.pid))


def test_a_name_of_another_shape_is_nobody() -> None:
    assert not alive("")
    assert not alive("one two")
    assert not alive("not-a-pid")
    assert not alive(f"another-boot {os.getpid()} 1")
