"""Which process wrote something, and whether it still runs (the outbox's intents). I/O.

A process is named ``BOOT PID START``: the kernel's boot id, the process id and the
process's start time in clock ticks since boot (``/proc/PID/stat``, field 22), so that a
process id used again after a crash or a reboot is not taken for the writer. Read from
``/proc`` (Linux), not psutil: a call's start-up does not pay for importing it. Where
``/proc`` is missing, the name is the process id alone and a signal 0 says whether it
runs.
"""

from __future__ import annotations

import os
from pathlib import Path

_PROC = Path("/proc")


def me() -> str:
    """The name of this process (see the module docstring)."""
    return name_of(os.getpid())


def name_of(pid: int) -> str:
    """The name of the running process ``pid`` (its process id alone when ``/proc`` says nothing)."""
    start = _start(pid)
    return f"{_boot()} {pid} {start}" if start is not None else str(pid)


def alive(owner: str) -> bool:
    """Whether the process named ``owner`` (:func:`me`) still runs: a process that ended,
    a zombie, another process with its id or one of an earlier boot is not it."""
    fields = owner.split()
    if len(fields) == 3:
        boot, pid, start = fields
        return boot == _boot() and pid.isdigit() and _start(int(pid)) == start
    if len(fields) == 1 and fields[0].isdigit():
        try:
            os.kill(int(fields[0]), 0)
        except ProcessLookupError:
            return False
        except PermissionError:
            return True
        return True
    return False


def _boot() -> str:
    try:
        return (_PROC / "sys/kernel/random/boot_id").read_text().strip()
    except OSError:
        return "-"


def _start(pid: int) -> str | None:
    """The start time of ``pid`` (``None``: no such process, or it is a zombie)."""
    try:
        stat = (_PROC / str(pid) / "stat").read_text()
    except OSError:
        return None
    fields = stat[stat.rindex(")") + 2 :].split()  # the name in parentheses may hold spaces
    state, start = fields[0], fields[19]
    return None if state in ("Z", "X") else start
