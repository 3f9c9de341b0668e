"""Keeping handler processes contained: finding and stopping a handler's whole process
tree, and not leaving it behind when mgrhooks itself is killed. I/O.

* Every handler runs in its own session (process group).
* :func:`adopt_orphans` makes this process a child subreaper (Linux): a daemon that a
  handler double-forks, or that calls ``setsid``, is re-parented here instead of to PID 1,
  so it can still be found and stopped. The CLI turns this on; an application embedding
  mgrhooks may.
* :func:`kill_tree` stops a handler: SIGTERM to its group and every descendant, then,
  after a grace period, SIGKILL in repeated sweeps until nothing of it runs (a process
  bomb keeps forking while it is being killed).
* :class:`Guardian` is a tiny ``sh`` process, in a session of its own, that learns the
  process group of the handler running now over a pipe. If mgrhooks dies mid-handler
  (even by SIGKILL) the pipe ends and the guardian kills that group.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # psutil and subprocess load when needed, not at start-up
    import subprocess

    import psutil

_PR_SET_CHILD_SUBREAPER = 36
#: the guardian: remembers the last line (a process group, or empty when none runs) and
#: kills that group when its stdin ends
_GUARDIAN = (
    'current=; while IFS= read -r line; do current=$line; done; [ -n "$current" ] && kill -9 -"$current"; exit 0'
)
#: pids of the handler processes this process started and that are running
SPAWNED: set[int] = set()
_SWEEPS = 50


def adopt_orphans() -> bool:
    """Make this process a child subreaper; ``False`` where the system has none."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def tree(proc: subprocess.Popen[bytes], since: float) -> list[psutil.Process]:
    """The running descendants of ``proc``, and orphans adopted here that were created
    since ``since`` (psutil's ``create_time`` of ``proc``) and are not handlers started
    here, with their descendants."""
    import psutil

    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        found.update((p.pid, p) for p in psutil.Process(proc.pid).children(recursive=True))
    with contextlib.suppress(psutil.Error):
        for child in psutil.Process().children():
            if child.pid in SPAWNED or child.pid == proc.pid or not _created_after(child, since):
                continue
            found[child.pid] = child
            with contextlib.suppress(psutil.Error):
                found.update((p.pid, p) for p in child.children(recursive=True))
    return [p for p in found.values() if _running(p)]


def kill_tree(proc: subprocess.Popen[bytes], grace: float) -> tuple[int, ...]:
    """Stop ``proc`` and everything it started: SIGTERM, then SIGKILL sweeps after ``grace``.

    ``proc`` itself is reaped through ``proc`` (its status is kept); adopted orphans are
    reaped here. Must be called before ``proc`` is reaped. :returns: every pid
    signalled, ``proc`` first
    """
    import signal
    import subprocess

    import psutil

    try:  # the same clock as the orphans' create_time (it may differ from time.time())
        since = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        since = float("inf")  # gone already: adopt nothing
    signalled = {proc.pid}
    victims = tree(proc, since)
    signalled.update(p.pid for p in victims)
    _signal_group(proc.pid, signal.SIGTERM)
    _signal_each(victims, signal.SIGTERM)
    ends = time.monotonic() + grace
    with contextlib.suppress(subprocess.TimeoutExpired):
        proc.wait(timeout=grace)
    _wait_gone(victims, max(0.0, ends - time.monotonic()))
    for _ in range(_SWEEPS):
        _signal_group(proc.pid, signal.SIGKILL)
        if proc.poll() is None:
            proc.kill()
        victims = tree(proc, since)
        if not victims:
            break
        signalled.update(p.pid for p in victims)
        _signal_each(victims, signal.SIGKILL)
        _wait_gone(victims, 0.05)
    proc.wait()
    _reap(signalled - {proc.pid})
    return (proc.pid, *sorted(signalled - {proc.pid}))


def _created_after(process: psutil.Process, since: float) -> bool:
    import psutil

    try:
        return process.create_time() >= since
    except psutil.Error:
        return False


def _running(process: psutil.Process) -> bool:
    """Alive and not a zombie (a zombie runs no code; an orphaned one may never be reaped
    where PID 1 does not reap, as in some containers)."""
    import psutil

    try:
        return process.status() != psutil.STATUS_ZOMBIE
    except psutil.Error:
        return False


def _wait_gone(processes: list[psutil.Process], timeout: float) -> list[psutil.Process]:
    """Wait until every process has ended or is a zombie; return those still running."""
    ends = time.monotonic() + timeout
    alive = processes
    while True:
        alive = [p for p in alive if _running(p)]
        if not alive or time.monotonic() >= ends:
            return alive
        time.sleep(0.01)


def _reap(pids: set[int]) -> None:
    """Collect the exit status of those ``pids`` that are our (adopted) children."""
    for pid in pids:
        with contextlib.suppress(ChildProcessError, OSError):
            os.waitpid(pid, os.WNOHANG)


def _signal_each(processes: list[psutil.Process], sig: int) -> None:
    import psutil

    for process in processes:
        with contextlib.suppress(psutil.Error):
            process.send_signal(sig)


def _signal_group(pgid: int, sig: int) -> None:
    with contextlib.suppress(ProcessLookupError, PermissionError):
        os.killpg(pgid, sig)


class Guardian:
    """Kills the running handler's process group if this process dies mid-handler.

    Started on first use; :meth:`close` ends it. Writing to it never fails the call: a
    guardian that is gone only means less protection, and is logged by the caller.
    """

    def __init__(self) -> None:
        self._proc: subprocess.Popen[bytes] | None = None

    def watch(self, pgid: int) -> bool:
        """Guard process group ``pgid`` from now on; ``False`` if the guardian is gone."""
        return self._send(f"{pgid}\n")

    def release(self) -> bool:
        """Nothing to guard now (the handler ended and was dealt with)."""
        return self._send("\n")

    def close(self) -> None:
        if self._proc is None or self._proc.stdin is None:
            return  # never started: nothing to end (and no subprocess import at all)
        import subprocess

        self.release()
        with contextlib.suppress(OSError):
            self._proc.stdin.close()
        with contextlib.suppress(subprocess.TimeoutExpired):
            self._proc.wait(timeout=1)
        self._proc = None

    def _send(self, line: str) -> bool:
        import subprocess

        if self._proc is None:
            self._proc = subprocess.Popen(
                ["/bin/sh", "-c", _GUARDIAN],
                bufsize=0,  # one write(2) a line, nothing to flush
                stdin=subprocess.PIPE,
                stdout=subprocess.DEVNULL,
                stderr=subprocess.DEVNULL,
                start_new_session=True,  # terminal signals aimed at us do not reach it
                close_fds=True,
            )
        assert self._proc.stdin is not None
        try:
            self._proc.stdin.write(line.encode())
        except (BrokenPipeError, OSError):
            return False
        return True
