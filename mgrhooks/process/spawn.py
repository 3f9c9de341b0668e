"""Starting a handler process: in-memory files, sealing the descriptors, handing the
child its descriptors, and the started child. I/O.

Every handler runs in its own session (process group), started by :func:`start`:
through ``os.posix_spawn`` once :func:`seal_descriptors` made this process's descriptors
close-on-exec (the CLI), else ``subprocess.Popen`` with ``close_fds``.
"""

from __future__ import annotations

import contextlib
import os
import signal
import time
from collections.abc import Mapping
from typing import Protocol


class Child(Protocol):
    """A started handler process: what :func:`mgrhooks.process.containment.kill_tree`
    needs of it. ``subprocess.Popen`` is one; :class:`Spawned` (``os.posix_spawn``) another.
    ``wait(timeout)`` raises ``subprocess.TimeoutExpired`` when the time (seconds) runs out."""

    @property
    def pid(self) -> int: ...

    def poll(self) -> int | None: ...

    def wait(self, timeout: float | None = None) -> int: ...

    def kill(self) -> None: ...


def seal_descriptors() -> bool:
    """Make every open descriptor above 2 close on exec, so that children can start
    through ``posix_spawn`` (see :func:`start`) without inheriting any.

    ``posix_spawn`` cannot close inherited descriptors as ``close_fds=True`` does, so it is
    only used once nothing inheritable is left open (Python opens every descriptor
    non-inheritable; C libraries here do too). A process-wide action, done at the first
    handler of a :class:`mgrhooks.process.Processes` made with ``seal=True`` (the CLI's);
    an application embedding mgrhooks may ask for it if it passes no descriptors to its
    own children.

    :returns: whether it is done: ``False`` where the descriptors cannot be listed
        (no ``/proc``, or none left to open its directory with), and children must start
        with ``close_fds`` instead
    """
    try:
        names = os.listdir("/proc/self/fd")
    except OSError:
        return False
    for name in names:
        fd = int(name)
        if fd > 2:
            with contextlib.suppress(OSError):
                os.set_inheritable(fd, False)
    return True


#: signals Python ignores, which an ignored disposition would pass on through exec
_RESET_SIGNALS = tuple(getattr(signal, name) for name in ("SIGPIPE", "SIGXFSZ") if hasattr(signal, name))


def start(
    argv: tuple[str, ...], cwd: str, env: Mapping[str, str], stdin: int, stdout: int, stderr: int, sealed: bool = False
) -> Child:
    """Start ``argv`` (``argv[0]`` a path) in ``cwd`` and a new session, with exactly ``env``
    and the three descriptors. ``os.posix_spawn`` when ``sealed`` (:func:`seal_descriptors`
    ran) and ``cwd`` is the current directory, else ``subprocess.Popen`` (``close_fds``, on
    CPython's vfork path). :raises OSError: the program cannot start"""
    if sealed and hasattr(os, "posix_spawn") and os.getcwd() == cwd:
        dup2 = os.POSIX_SPAWN_DUP2
        pid = os.posix_spawn(
            argv[0],
            argv,
            env,
            file_actions=[(dup2, stdin, 0), (dup2, stdout, 1), (dup2, stderr, 2)],
            setsid=True,
            setsigdef=_RESET_SIGNALS,
        )
        return Spawned(pid)
    import subprocess

    return subprocess.Popen(
        argv,
        stdin=stdin,
        stdout=stdout,
        stderr=stderr,
        cwd=cwd,
        env=env,
        start_new_session=True,  # keeps CPython's vfork fast path, unlike preexec_fn
        close_fds=True,
    )


class Handover:
    """The descriptors opened to start one child, as a ``with`` block around the openings
    and :func:`start`: ``given`` are the child's (closed here on leaving the block: it has
    its copies), ``kept`` are ours (closed here only when the block fails). So a failure at
    any opening, e.g. EMFILE at the second pipe, leaves nothing open."""

    def __init__(self) -> None:
        self.given: list[int] = []
        self.kept: list[int] = []

    def __enter__(self) -> Handover:
        return self

    def __exit__(self, kind: type[BaseException] | None, *rest: object) -> None:
        for fd in self.given if kind is None else self.given + self.kept:
            os.close(fd)


class Spawned:
    """A child started by ``os.posix_spawn``, with the part of ``subprocess.Popen``'s
    interface that :class:`Child` names (times in seconds)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        if timeout is None:
            code = self._reap(0)
            assert code is not None
            return code
        ends = time.monotonic() + timeout
        while (code := self._reap(os.WNOHANG)) is None:
            if time.monotonic() >= ends:
                import subprocess

                raise subprocess.TimeoutExpired(str(self.pid), timeout)
            time.sleep(0.005)
        return code

    def kill(self) -> None:
        if self.returncode is None:
            with contextlib.suppress(ProcessLookupError):
                os.kill(self.pid, 9)

    def _reap(self, flags: int) -> int | None:
        if self.returncode is None:
            try:
                pid, status = os.waitpid(self.pid, flags)
            except ChildProcessError:  # reaped elsewhere (a SIGCHLD handler): status unknown
                pid, status = self.pid, 0
            if pid:
                self.returncode = os.waitstatus_to_exitcode(status)
        return self.returncode


def memory_file(name: str) -> int:
    """A descriptor (close-on-exec) of a new in-memory file: a memfd, or an unlinked
    temporary file where there is none."""
    try:
        return os.memfd_create(name, os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        import tempfile

        with tempfile.TemporaryFile() as file:
            return os.dup(file.fileno())
