"""Starting a handler process: in-memory files, sealing the descriptors, handing the
child its descriptors, and the started child. I/O.

Every handler runs in its own session (process group) and its own working directory,
started by :func:`start`: through glibc's ``posix_spawn`` (:class:`PosixSpawn`) once
:func:`seal_descriptors` made this process's descriptors close-on-exec (the CLI), else
``subprocess.Popen`` with ``close_fds``. Neither changes this process's own directory.
"""

from __future__ import annotations

import array
import contextlib
import operator
import os
import select
import signal
import time
from collections.abc import Callable, Iterable, Mapping
from itertools import accumulate, repeat
from types import ModuleType
from typing import TYPE_CHECKING, Protocol

if TYPE_CHECKING:
    import ctypes


class Child(Protocol):
    """A started handler process: what :func:`mgrhooks.process.containment.kill_tree`
    needs of it. ``subprocess.Popen`` is one; :class:`Spawned` (``os.posix_spawn``) another.
    ``wait(timeout)`` raises ``subprocess.TimeoutExpired`` when the time (seconds) runs out."""

    @property
    def pid(self) -> int:
        """The process id (also its process group and session: it leads both)."""
        ...

    def poll(self) -> int | None:
        """The exit status once it ended (negative: the signal), else ``None``; never waits."""
        ...

    def wait(self, timeout: float | None = None) -> int:
        """Wait (at most ``timeout`` seconds) and return the exit status.
        :raises subprocess.TimeoutExpired: the time ran out first"""
        ...

    def kill(self) -> None:
        """SIGKILL the process itself (not its group), unless it was reaped already."""
        ...


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
#: glibc's posix_spawn flags (spawn.h)
_SETSIGDEF, _SETSID = 0x04, 0x80
#: argvs whose C form a PosixSpawn keeps (each a few hundred bytes)
_KEEP_ARGUMENTS = 256
#: bytes reserved for glibc's posix_spawnattr_t (336 on x86-64), file actions (80) and
#: sigset_t (128): more than any of its ports uses
_ATTR_BYTES, _ACTIONS_BYTES, _SIGSET_BYTES = 1024, 512, 256


class PosixSpawn:
    """glibc's ``posix_spawn`` through ``ctypes``, for its ``chdir`` file action
    (``posix_spawn_file_actions_addchdir_np``, glibc 2.29), which Python 3.11's
    ``os.posix_spawn`` lacks: a child starts in its own directory and this process's stays
    where it is, so calls for different roots can run side by side.

    Why not ``subprocess.Popen``: its Python machinery costs ~90 us of our CPU a handler
    more (docs/performance.md, "Calls side by side"; bench row "per handler | slope:
    mgrhooks"). For the same row, the C form of the last environment and of the last file
    actions is kept and used again while they stay the same (consecutive handlers of a
    stage get equal ones): building them anew took ~15 us a handler more; so is the C form
    of the last :data:`_KEEP_ARGUMENTS` argvs. Made by
    :func:`posix_spawner`, one for each :class:`mgrhooks.process.Processes`; not for two
    threads at once.
    """

    def __init__(self, libc: ctypes.CDLL, close_from: bool = False) -> None:
        import ctypes

        self._ctypes = ctypes
        void_p = ctypes.c_void_p
        self._spawn = libc.posix_spawn  # no argtypes: given ctypes objects only, nothing to convert
        self._init = libc.posix_spawn_file_actions_init
        self._dup2 = libc.posix_spawn_file_actions_adddup2
        self._chdir = libc.posix_spawn_file_actions_addchdir_np
        self._destroy = libc.posix_spawn_file_actions_destroy
        self._init.argtypes = self._destroy.argtypes = [void_p]
        self._dup2.argtypes = [void_p, ctypes.c_int, ctypes.c_int]
        self._chdir.argtypes = [void_p, ctypes.c_char_p]
        # with close_from, the child closes every descriptor from 3 up itself (glibc 2.34's
        # posix_spawn_file_actions_addclosefrom_np, close_range(2) in the child), so this
        # process's need not be sealed first: a server's sockets and databases stay as they
        # are, and its handlers still start here (bench row "served | 5 sh handlers: slope
        # ratio"; through subprocess.Popen it was 1.8-2.2x run-parts' CPU a handler)
        self._close_from: Callable[..., int] | None = None
        if close_from:
            self._close_from = libc.posix_spawn_file_actions_addclosefrom_np  # AttributeError: none
            self._close_from.argtypes = [void_p, ctypes.c_int]
        self._attr = ctypes.create_string_buffer(_ATTR_BYTES)
        signals = ctypes.create_string_buffer(_SIGSET_BYTES)
        libc.sigemptyset(signals)
        for number in _RESET_SIGNALS:
            libc.sigaddset(signals, int(number))
        if (
            libc.posix_spawnattr_init(self._attr)
            or libc.posix_spawnattr_setsigdefault(self._attr, signals)
            or libc.posix_spawnattr_setflags(self._attr, ctypes.c_short(_SETSID | _SETSIGDEF))
        ):
            raise OSError("posix_spawnattr refused its settings")
        self._environment: tuple[dict[str, str], _Strings] | None = None
        #: the C form of recent argvs: a resident server runs the same programs call after
        #: call (bench row "served | slope ratio": ~20 us of our CPU a handler to build anew)
        self._arguments: dict[tuple[str, ...], _Strings] = {}
        self._actions: tuple[tuple[int, int, int, str], ctypes.Array[ctypes.c_char]] | None = None

    def __call__(
        self, argv: tuple[str, ...], cwd: str, env: Mapping[str, str], stdin: int, stdout: int, stderr: int
    ) -> int:
        """Start ``argv`` (``argv[0]`` a path) in ``cwd`` and a new session, with exactly
        ``env``, the three descriptors as 0, 1 and 2, SIGPIPE and SIGXFSZ at their defaults.

        :returns: the child's pid
        :raises OSError: the program cannot start (glibc reports a failed ``exec`` too)
        :raises ValueError: a NUL byte in ``argv``, ``env`` or ``cwd``, as ``os.posix_spawn``
        """
        arguments = self._arguments.get(argv)
        if arguments is None:
            arguments = self._arguments[argv] = _Strings(self._ctypes, list(argv))
            if len(self._arguments) > _KEEP_ARGUMENTS:  # the oldest goes
                del self._arguments[next(iter(self._arguments))]
        if self._environment is None or self._environment[0] != env:
            self._environment = dict(env), _Strings(self._ctypes, list(map("=".join, env.items())))
        pid = self._ctypes.c_int()
        error = self._spawn(
            self._ctypes.byref(pid),
            arguments.first,
            self._file_actions((stdin, stdout, stderr), cwd),
            self._attr,
            arguments.pointers,
            self._environment[1].pointers,
        )
        if error:
            raise OSError(error, os.strerror(error), argv[0])
        return pid.value

    def _file_actions(self, fds: tuple[int, int, int], cwd: str) -> ctypes.Array[ctypes.c_char]:
        """The file actions that make ``fds`` the child's 0, 1 and 2 and enter ``cwd``.
        :raises OSError: glibc refused one (out of memory) :raises ValueError: NUL in ``cwd``"""
        key = (*fds, cwd)
        if self._actions is not None and self._actions[0] == key:
            return self._actions[1]
        if "\0" in cwd:
            raise ValueError("embedded null byte")
        if self._actions is not None:
            self._destroy(self._actions[1])
            self._actions = None
        actions = self._ctypes.create_string_buffer(_ACTIONS_BYTES)
        if self._init(actions):
            raise OSError(12, os.strerror(12))
        error = (
            self._dup2(actions, fds[0], 0)
            or self._dup2(actions, fds[1], 1)
            or self._dup2(actions, fds[2], 2)
            or self._chdir(actions, cwd.encode("utf-8", "surrogateescape"))
            or (self._close_from is not None and self._close_from(actions, 3))
        )
        if error:
            self._destroy(actions)
            raise OSError(error, os.strerror(error))
        self._actions = key, actions
        return actions


class _Strings:
    """``texts`` as C strings in one buffer, and the NULL-terminated array of pointers to
    them that ``execve`` takes (``pointers``; ``first``, the first string; both
    ``c_void_p``). One encoding and a few C-level passes: a list of ``c_char_p`` built per
    string took twice as long (bench row "per handler | slope: mgrhooks").

    :raises ValueError: a text holds a NUL byte
    """

    def __init__(self, ctypes: ModuleType, texts: list[str]) -> None:
        joined = "\0".join(texts) + "\0" if texts else ""
        data = joined.encode("utf-8", "surrogateescape")
        if len(data) == len(joined):  # one byte a character: the texts' lengths are their sizes
            sizes: Iterable[int] = map(len, texts)
        else:
            sizes = [len(t.encode("utf-8", "surrogateescape")) for t in texts]
        if data.count(0) != len(texts):
            raise ValueError("embedded null byte")
        self.buffer = ctypes.create_string_buffer(data, len(data))
        first = ctypes.addressof(self.buffer)
        # "L": unsigned long, the size of a pointer on Linux (LP64 and ILP32 alike)
        self.array = array.array("L", accumulate(map(operator.add, sizes, repeat(1)), initial=first))
        self.array[-1] = 0
        self.first = ctypes.c_void_p(first)
        self.pointers = ctypes.c_void_p(self.array.buffer_info()[0])


def posix_spawner(close_from: bool = False) -> PosixSpawn | None:
    """A :class:`PosixSpawn` where the C library has what it needs (Linux with glibc 2.29
    or later; with ``close_from``, 2.34 or later: the child closes every descriptor above 2
    itself, and nothing need be sealed), else ``None``: children then start through
    ``subprocess.Popen``."""
    try:
        import ctypes

        if not (os.confstr("CS_GNU_LIBC_VERSION") or "").startswith("glibc"):
            return None
        return PosixSpawn(ctypes.CDLL(None, use_errno=True), close_from)
    except (ImportError, ValueError, OSError, AttributeError):  # no such name or symbol
        return None


def start(
    argv: tuple[str, ...],
    cwd: str,
    env: Mapping[str, str],
    stdin: int,
    stdout: int,
    stderr: int,
    fast: PosixSpawn | None = None,
) -> Child:
    """Start ``argv`` (``argv[0]`` a path) in ``cwd`` and a new session, with exactly ``env``
    and the three descriptors. Through ``fast`` when given (only once
    :func:`seal_descriptors` ran, or made with ``close_from``: else it passes on whatever
    is inheritable), else
    ``subprocess.Popen`` (``close_fds``, on CPython's vfork path).
    :raises OSError: the program cannot start"""
    if fast is not None:
        return Spawned(fast(argv, cwd, env, stdin, stdout, stderr))
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
    """A child started by ``posix_spawn``, with the part of ``subprocess.Popen``'s
    interface that :class:`Child` names (times in seconds)."""

    def __init__(self, pid: int) -> None:
        self.pid = pid
        self.returncode: int | None = None

    def poll(self) -> int | None:
        """The exit status (negative: the signal) if the child ended, reaping it; else ``None``."""
        return self._reap(os.WNOHANG)

    def wait(self, timeout: float | None = None) -> int:
        """Wait for the child to end (at most ``timeout`` seconds) and return its status.
        :raises subprocess.TimeoutExpired: it still runs after ``timeout`` seconds"""
        if timeout is None:
            code = self._reap(0)
            assert code is not None
            return code
        code = wait_ended(self, timeout)
        if code is None:
            import subprocess

            raise subprocess.TimeoutExpired(str(self.pid), timeout)
        return code

    def kill(self) -> None:
        """SIGKILL the child, unless it was reaped already (its number may be reused)."""
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


def pidfd(pid: int) -> int | None:
    """A descriptor (close-on-exec) that becomes readable when ``pid``, a child not yet
    reaped, exits (Linux 5.3 and later), else ``None``."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def wait_ended(child: Child, timeout: float) -> int | None:
    """``child``'s exit status once it ended (reaped), waiting at most ``timeout``
    seconds: woken by its pidfd where Linux has one (a guardian's end took a 1-ms sleep
    at the end of every call with handlers), else looking every millisecond; ``None``
    when it still runs then. Raises nothing."""
    ends = time.monotonic() + timeout
    ended = pidfd(child.pid) if child.poll() is None else None
    try:
        while (code := child.poll()) is None:
            left = ends - time.monotonic()
            if left <= 0:
                return None
            if ended is None:
                time.sleep(min(left, 0.001))
            else:
                waiter = select.poll()
                waiter.register(ended, select.POLLIN)
                waiter.poll(max(1, int(left * 1000)))
        return code
    finally:
        if ended is not None:
            os.close(ended)


def sealed_file(name: str, data: bytes) -> int | None:
    """A descriptor (close-on-exec) of a new memfd holding ``data``, sealed against any
    change (write, shrink, grow, further seals), or ``None`` where Linux has no such file.
    :raises OSError: it cannot be written"""
    try:
        import fcntl

        fd = os.memfd_create(name, os.MFD_CLOEXEC | os.MFD_ALLOW_SEALING)
        seals = fcntl.F_SEAL_WRITE | fcntl.F_SEAL_SHRINK | fcntl.F_SEAL_GROW | fcntl.F_SEAL_SEAL
    except (ImportError, AttributeError, OSError):
        return None
    try:
        view, written = memoryview(data), 0
        while written < len(view):
            written += os.pwrite(fd, view[written:], written)
        fcntl.fcntl(fd, fcntl.F_ADD_SEALS, seals)
    except BaseException:
        os.close(fd)
        raise
    return fd


def reopened(fd: int) -> int | None:
    """A new read-only open of the file behind ``fd`` (close-on-exec, its own offset, at
    0), through ``/proc/self/fd``; ``None`` where that cannot be done."""
    try:
        return os.open(f"/proc/self/fd/{fd}", os.O_RDONLY | os.O_CLOEXEC)
    except OSError:
        return None


def memory_file(name: str) -> int:
    """A descriptor (close-on-exec) of a new in-memory file: a memfd, or an unlinked
    temporary file where there is none."""
    try:
        return os.memfd_create(name, os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        import tempfile

        with tempfile.TemporaryFile() as file:
            return os.dup(file.fileno())
