"""Keeping handler processes contained: finding and stopping a handler's whole process
tree, and not leaving it behind when mgrhooks itself is killed. I/O.

* Every handler runs in its own session (process group), started by
  :func:`mgrhooks.process.spawn.start`.
* :func:`adopt_orphans` makes this process a child subreaper (Linux): a daemon that a
  handler double-forks, or that calls ``setsid``, is re-parented here instead of to PID 1,
  so it can still be found and stopped. Being a subreaper is a property of the whole
  process, so the orphans of every handler it runs, in any thread, come here: the
  environment of each handler carries the :data:`RUN_ID` of the
  :class:`~mgrhooks.process.Processes` that started it, and an orphan is taken as a
  handler's only when it carries that mark and was created while the handler ran (our
  choice, after Jenkins' ``BUILD_ID`` cookie: the kernel keeps no record of where an
  orphan came from).
* :func:`kill_tree` stops a handler: SIGTERM to its group and every descendant, then,
  after a grace period, SIGKILL in repeated sweeps until nothing of it runs (a process
  bomb keeps forking while it is being killed).
* :func:`kill_holders` stops what still holds a handler's stdout or stderr once the
  handler exited and the drain window is over: such a process is part of the handler. A
  daemon that detached properly (its standard streams closed or redirected) is not.
* :class:`Guardian` is a tiny ``sh`` process, in a session of its own, that holds the
  process group of the handler running now (in a memfd it shares) and a pipe from us. If
  mgrhooks dies mid-handler (even by SIGKILL) the pipe ends and the guardian kills that
  group, if the handler was not reaped yet.

Nothing here is kept between calls: what is running belongs to the caller's
:class:`mgrhooks.process.Processes`.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from typing import TYPE_CHECKING

from .spawn import Child, Handover, PosixSpawn, memory_file, start, wait_ended

if TYPE_CHECKING:  # psutil and mmap load when needed, not at start-up
    import mmap

    import psutil


_PR_SET_CHILD_SUBREAPER = 36
#: the guardian: waits for the end of its stdin (a pipe nobody writes to, so: our death or
#: close()), then reads the handler's pid written to its stdout (a memfd, read from offset
#: 0). If that handler still runs (and leads its session, as every handler does), it
#: stops (SIGSTOP: no more forks) every process in the handler's session, every
#: descendant of one found (a ``setsid`` child too), and every process in a session one
#: of them leads, scanning ``/proc/*/stat`` until a pass finds no more; then SIGKILLs
#: them all and the handler's group. Plain ``sh``: it starts in a millisecond, and it
#: only works when mgrhooks is gone.
_GUARDIAN = """\
read -r _
current=
read -r current <&1
[ -n "$current" ] && kill -0 "$current" 2>/dev/null || exit 0
line=
{ read -r line < /proc/"$current"/stat; } 2>/dev/null
set -- ${line##*) }
[ "$4" = "$current" ] || { kill -9 -"$current" 2>/dev/null; exit 0; }
sessions=" $current "
found=" "
grew=1
rounds=0
while [ "$grew" = 1 ] && [ "$rounds" -lt 50 ]; do
    grew=0
    rounds=$((rounds + 1))
    for stat in /proc/[0-9]*/stat; do
        line=
        { read -r line < "$stat"; } 2>/dev/null
        [ -n "$line" ] || continue
        pid=${line%% *}
        case "$found" in *" $pid "*) continue ;; esac
        set -- ${line##*) }
        case "$sessions$found" in
            *" $4 "* | *" $2 "*) ;;
            *) continue ;;
        esac
        kill -STOP "$pid" 2>/dev/null
        found="$found$pid "
        grew=1
        [ "$4" = "$pid" ] && sessions="$sessions$pid "
    done
done
kill -9 -"$current" 2>/dev/null
for pid in $found; do kill -9 "$pid" 2>/dev/null; done
exit 0
"""
#: bytes of the guardian's record: a process group, padded (a shorter number overwrites all)
_RECORD = 24
#: the record while no handler runs
_NOTHING = b" " * (_RECORD - 1) + b"\n"
#: the environment variable that marks the processes of one Processes' handlers (when
#: orphans are adopted)
RUN_ID = "MGRHOOKS_RUN_ID"
_SWEEPS = 50


def adopt_orphans() -> bool:
    """Make this process a child subreaper; ``False`` where the system has none."""
    import ctypes

    try:
        libc = ctypes.CDLL(None, use_errno=True)
        return int(libc.prctl(_PR_SET_CHILD_SUBREAPER, 1, 0, 0, 0)) == 0
    except (OSError, AttributeError):
        return False


def tree(proc: Child, run_id: str | None = None, since: float = 0.0) -> list[psutil.Process]:
    """The running descendants of ``proc``; with ``run_id``, also the orphans adopted here
    whose environment holds ``RUN_ID=run_id`` (see :func:`adopt_orphans`) and that were
    created since ``since`` (psutil's ``create_time`` of ``proc``), with their
    descendants. Other children of this process (other calls' handlers, guardians, the
    application's own) are never taken."""
    import psutil

    found: dict[int, psutil.Process] = {}
    with contextlib.suppress(psutil.Error):
        found.update((p.pid, p) for p in psutil.Process(proc.pid).children(recursive=True))
    if run_id is not None:
        with contextlib.suppress(psutil.Error):
            for child in psutil.Process().children():
                if child.pid != proc.pid and _created_after(child, since) and _marked(child, run_id):
                    found[child.pid] = child
                    with contextlib.suppress(psutil.Error):
                        found.update((p.pid, p) for p in child.children(recursive=True))
    return [p for p in found.values() if _running(p)]


def kill_tree(proc: Child, grace: float, run_id: str | None = None) -> tuple[int, ...]:
    """Stop ``proc`` and everything it started: SIGTERM, then SIGKILL sweeps after
    ``grace`` seconds.

    ``proc`` itself is reaped through ``proc`` (its status is kept); adopted orphans are
    reaped here. Must be called before ``proc`` is reaped.

    :param run_id: the mark of the handlers' processes, when orphans are adopted (see :func:`tree`)
    :returns: every pid signalled, ``proc`` first
    """
    import subprocess

    import psutil

    try:  # the same clock as the orphans' create_time (it may differ from time.time())
        since = psutil.Process(proc.pid).create_time()
    except psutil.Error:
        since = float("inf")  # gone already: adopt nothing
    signalled = {proc.pid}
    victims = tree(proc, run_id, since)
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
        found = tree(proc, run_id, since)  # once the handler is gone its children are no longer
        signalled.update(p.pid for p in found)  # below it: those seen before count too
        victims = list({p.pid: p for p in (*victims, *found)}.values())
        _signal_each(victims, signal.SIGKILL)
        victims = _wait_gone(victims, 0.05)
        if not found and not victims:
            break
    proc.wait()
    _reap(signalled - {proc.pid})
    return (proc.pid, *sorted(signalled - {proc.pid}))


def kill_holders(pipes: tuple[int, ...], grace: float) -> tuple[int, ...]:
    """Stop every other process that holds the write end of one of ``pipes`` (our read
    ends of an exited handler's stdout and stderr): SIGTERM, then SIGKILL sweeps after
    ``grace`` seconds until none holds one. Adopted ones are reaped here.

    :returns: the pids signalled, in order
    """
    inodes = {os.fstat(fd).st_ino for fd in pipes}
    victims = _processes(holders(inodes))
    signalled = {p.pid for p in victims}
    _signal_each(victims, signal.SIGTERM)
    _wait_gone(victims, grace)
    for _ in range(_SWEEPS):
        found = _processes(holders(inodes))
        if not found:
            break
        signalled.update(p.pid for p in found)
        _signal_each(found, signal.SIGKILL)
        _wait_gone(found, 0.05)
    _reap(signalled)
    return tuple(sorted(signalled))


def holders(inodes: set[int]) -> list[int]:
    """The pids of the processes, other than this one, that hold one of the pipes
    ``inodes`` open for writing (found in ``/proc/*/fd``; none without ``/proc``). Costs a
    look at every descriptor of every process this user may see: only done when a
    handler left something behind."""
    links = {f"pipe:[{inode}]" for inode in inodes}
    found = []
    me = str(os.getpid())
    with contextlib.suppress(OSError), os.scandir("/proc") as processes:
        for process in processes:
            if process.name.isdigit() and process.name != me and _holds(process.path, links):
                found.append(int(process.name))
    return found


def _holds(path: str, links: set[str]) -> bool:
    """Whether the process at ``path`` (``/proc/PID``) has one of ``links`` open for writing."""
    try:
        with os.scandir(f"{path}/fd") as fds:
            return any(_link(fd.path) in links and _writes(f"{path}/fdinfo/{fd.name}") for fd in fds)
    except OSError:  # gone, or not ours to look at
        return False


def _link(path: str) -> str:
    """What the descriptor ``path`` (``/proc/PID/fd/N``) points to; ``""`` once it is closed."""
    try:
        return os.readlink(path)
    except OSError:
        return ""


def _writes(fdinfo: str) -> bool:
    """Whether the descriptor described by ``fdinfo`` is open for writing (O_WRONLY or O_RDWR)."""
    try:
        with open(fdinfo) as file:
            for line in file:
                if line.startswith("flags:"):
                    return int(line.split()[1], 8) & (os.O_WRONLY | os.O_RDWR) != 0
    except (OSError, ValueError):
        pass
    return False


def _processes(pids: list[int]) -> list[psutil.Process]:
    import psutil

    found = []
    for pid in pids:
        with contextlib.suppress(psutil.Error):
            found.append(psutil.Process(pid))
    return found


def _created_after(process: psutil.Process, since: float) -> bool:
    import psutil

    try:
        return process.create_time() >= since
    except psutil.Error:
        return False


def _marked(process: psutil.Process, run_id: str) -> bool:
    """Whether ``process``'s environment (as it was at its exec) holds ``RUN_ID=run_id``."""
    import psutil

    try:
        return process.environ().get(RUN_ID) == run_id
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
    """Kills the running handler, its session and its descendants (a ``setsid`` child
    too) if this process dies mid-handler.

    :param fast: start it through ``posix_spawn`` (see :func:`mgrhooks.process.spawn.start`)

    Started on first use; :meth:`close` ends it. The running handler's group is written to
    a small in-memory file the guardian holds, mapped into this process (a store to memory,
    no system call and no wake-up of the guardian per handler; ``pwrite`` where it cannot
    be mapped); the guardian only wakes when its stdin pipe ends: when :meth:`close` shuts
    it, or when this process dies, by any signal, and reads the file then (a page it shares
    with the mapping). Writing never fails the call: a guardian that is gone only means less
    protection.
    """

    def __init__(self, fast: PosixSpawn | None = None) -> None:
        self._fast = fast
        self._proc: Child | None = None
        self._pipe = -1  # the write end of the guardian's stdin
        self._record = -1
        #: the record mapped (bench row "per handler | slope ratio": two pwrite calls a
        #: handler cost ~20 us of our CPU, cold); None: written with pwrite
        self._shared: mmap.mmap | None = None
        self._failed = False

    def start(self) -> None:
        """Start now rather than at the first :meth:`watch` (for a caller with time to spare)."""
        if self._proc is None:
            self._start()

    def watch(self, pgid: int) -> None:
        """Guard process group ``pgid`` from now on (a store to the mapped record)."""
        self._send(pgid)

    def release(self) -> None:
        """Nothing to guard now: written after each handler, so that a
        process that reuses a reaped handler's number is never taken for it. Starts
        nothing: a guardian that never watched has nothing to forget."""
        if self._proc is not None:
            self._send(None)

    def close(self) -> None:
        """End the guardian: it finds nothing to kill and exits (waited for up to 1 s)."""
        if self._proc is None:
            return  # never started: nothing to end
        self.release()
        os.close(self._pipe)
        wait_ended(self._proc, 1)
        if self._shared is not None:
            self._shared.close()
            self._shared = None
        os.close(self._record)
        self._proc = None

    def _send(self, pgid: int | None) -> None:
        if self._proc is None and not self._start():
            return
        line = _NOTHING if pgid is None else b"%-*d\n" % (_RECORD - 1, pgid)
        if self._shared is not None:
            self._shared[:] = line  # what the guardian reads at its end: the file's own page
            return
        with contextlib.suppress(OSError):
            os.pwrite(self._record, line, 0)

    def _start(self) -> bool:
        """Start the guardian (through :func:`start`: a session of its own, so that
        terminal signals aimed at us do not reach it); ``False`` if it cannot start (tried
        once: the call goes on without it)."""
        if self._failed:
            return False
        try:
            with Handover() as fds:
                fds.kept.append(memory_file("mgrhooks-guardian"))
                stdin, pipe = os.pipe()
                fds.given.append(stdin)
                fds.kept.append(pipe)
                devnull = os.open(os.devnull, os.O_WRONLY | os.O_CLOEXEC)
                fds.given.append(devnull)
                record = fds.kept[0]
                os.pwrite(record, _NOTHING, 0)
                argv = ("/bin/sh", "-c", _GUARDIAN)
                self._proc = start(argv, "/", os.environ, stdin, record, devnull, self._fast)
        except OSError:
            self._failed = True
            return False
        self._record, self._pipe = fds.kept
        try:
            import mmap

            self._shared = mmap.mmap(self._record, _RECORD)
        except (ImportError, OSError, ValueError):  # no mmap here: written with pwrite
            self._shared = None
        return True
