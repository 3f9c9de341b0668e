"""Running one handler program: a subprocess in its own session. I/O.

:func:`run` never raises because a handler misbehaved: a program that cannot start,
exits non-zero, times out or floods stdout gives a :class:`RunOutcome` with a reason.
Starting and stopping the process is left to its :class:`Owner` (a
:class:`mgrhooks.process.Processes`), which keeps what the runs have in common.
"""

from __future__ import annotations

import math
import os
import select
import signal
import time
from collections.abc import Mapping
from enum import StrEnum
from typing import NamedTuple, Protocol

from ..settings import DEFAULT_TIMEOUT, DRAIN_GRACE, KILL_GRACE, OUTPUT_LIMIT
from .spawn import Child, Handover, memory_file, pidfd

#: bytes of stderr kept (the last ones) for the log
STDERR_KEEP = 64 * 1024
#: bytes read at a time, and the pipe size asked for once a read fills the default one
_CHUNK = 65536
_WIDE = 1024 * 1024


class RunRequest(NamedTuple):
    """What to run: ``argv[0]`` is an absolute program path, run in directory ``cwd`` with
    exactly ``env`` and ``stdin`` (bytes) as its input; ``timeout``, ``kill_grace`` and
    ``drain_grace`` in seconds, ``output_limit`` in bytes of stdout; ``description``
    names it in messages."""

    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    stdin: bytes
    timeout: float = DEFAULT_TIMEOUT
    description: str = ""
    output_limit: int = OUTPUT_LIMIT
    kill_grace: float = KILL_GRACE
    drain_grace: float = DRAIN_GRACE


class Failure(StrEnum):
    """Why a handler run failed. The values are what the log and the event records show."""

    #: the program could not be started (or was refused before it was)
    SPAWN = "spawn"
    #: it ran past its timeout
    TIMEOUT = "timeout"
    #: its stdout went past the output limit
    OUTPUT = "output"
    #: it exited with a non-zero status, or was killed by a signal
    EXIT = "exit"


class RunOutcome(NamedTuple):
    """What happened. ``returncode`` is negative for a signal, ``None`` if never started;
    ``duration`` in seconds.

    ``failure`` is ``None`` for success, else a :class:`Failure`; ``reason`` says it in
    words. ``killed``: the pids signalled to stop the handler and what it started (after a
    timeout or an overflow, the handler first), or, when it exited by itself, the
    processes that still held its output after the drain window. ``stdout`` that is the
    run's stdin, byte for byte, is the request's own ``stdin`` object (an xml handler
    printing its document back: read a chunk at a time and compared, never held twice;
    docs/performance.md).
    """

    request: RunRequest
    returncode: int | None
    stdout: bytes
    stderr: bytes
    duration: float
    pid: int | None = None
    failure: Failure | None = None
    reason: str = ""
    killed: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        """Whether the handler ran and exited with status 0 in time, within the output limit."""
        return self.failure is None


class Owner(Protocol):
    """What starts and stops the processes of :func:`run`: a :class:`mgrhooks.process.Processes`."""

    def start(self, request: RunRequest, stdin: int, stdout: int, stderr: int) -> Child:
        """Start ``request``'s program with these descriptors. :raises OSError:"""
        ...

    def kill(self, child: Child, grace: float) -> tuple[int, ...]:
        """Stop ``child`` and what it started (SIGKILL after ``grace`` seconds); return the
        pids signalled. Called before ``child`` is reaped."""
        ...

    def stdin(self, data: bytes) -> int | None:
        """A new read-only descriptor, at offset 0, of an in-memory file holding ``data``
        that the owner keeps, or ``None`` (the run writes a new one). :raises OSError:"""
        ...


def run(request: RunRequest, owner: Owner) -> RunOutcome:
    """Run ``request`` with its stdin complete before it starts; collect stdout and stderr.

    stdin is an in-memory file already holding all of ``request.stdin`` (a memfd, or an
    unlinked temporary file where there is none): a handler may read it to EOF, in
    one non-blocking read, or not at all, and can never block mgrhooks by not reading.

    On timeout or output overflow the handler's whole process tree is stopped by
    ``owner.kill`` (SIGTERM, then SIGKILL after ``kill_grace`` seconds). When the handler
    exits while other processes still hold its stdout or stderr, reading goes on for
    ``drain_grace`` seconds; then those processes are part of the handler and are stopped
    the same way (:func:`~mgrhooks.process.containment.kill_holders`); the run's outcome is
    still the handler's own, with their pids in ``killed``. A daemon that detached (its
    standard streams closed or redirected) holds neither and is left alone (our choice).

    :param owner: starts the program and stops its tree (see :class:`Owner`)
    """
    started = time.monotonic()
    try:
        child, stdout, stderr = _start(request, owner)
    except OSError as exc:
        reason = f"cannot start {request.argv[0]}: {exc.strerror or exc}"
        return RunOutcome(request, None, b"", b"", time.monotonic() - started, failure=Failure.SPAWN, reason=reason)
    try:
        return _Session(child, stdout, stderr, request, started, owner).collect()
    finally:
        os.close(stdout)
        os.close(stderr)


def _start(request: RunRequest, owner: Owner) -> tuple[Child, int, int]:
    """Start the handler (through ``owner``), stdin a memfd holding ``request.stdin``;
    return it and the read ends of its stdout and stderr pipes. :raises OSError: nothing
    opened here is left open then (:class:`~mgrhooks.process.spawn.Handover`)"""
    with Handover() as fds:
        kept = owner.stdin(request.stdin)  # a large document handed on unchanged: not written again
        stdin = memory_file("mgrhooks-stdin") if kept is None else kept
        fds.given.append(stdin)
        if kept is None:
            _fill(stdin, request.stdin)
        for _ in range(2):
            read, write = os.pipe()
            fds.kept.append(read)
            fds.given.append(write)
        stdin, stdout, stderr = fds.given
        child = owner.start(request, stdin, stdout, stderr)
    return child, fds.kept[0], fds.kept[1]


class _Session:
    """The I/O loop of one running handler: ``stdout`` and ``stderr`` are the read ends
    of its pipes (descriptors)."""

    def __init__(
        self, proc: Child, stdout: int, stderr: int, request: RunRequest, started: float, owner: Owner
    ) -> None:
        self.proc = proc
        self.owner = owner
        self.out = stdout
        self.err = stderr
        self.request = request
        self.started = started
        self.deadline = started + request.timeout
        self.stdout: list[bytes] = []
        self.stdout_size = 0
        #: stdout read so far while it is stdin's beginning, not kept (-1: not that, or not known)
        self.echoed = -1
        self.scratch: memoryview | None = None  # what an echo is read into, one chunk
        self.stderr = bytearray()
        self.chunk = _CHUNK
        self.widened = False
        self.poller = select.poll()  # poll(2): one call a wait, where epoll needs five more a handler
        self.open = {stdout, stderr}
        self.pidfd = pidfd(proc.pid)

    def collect(self) -> RunOutcome:
        failure = None
        try:
            failure = self._loop()
        except BaseException:  # KeyboardInterrupt, or a bug: the handler must not outlive us
            self.owner.kill(self.proc, self.request.kill_grace)
            raise
        finally:
            if self.pidfd is not None:
                os.close(self.pidfd)
        killed: tuple[int, ...] = ()
        if failure is not None:
            killed = self.owner.kill(self.proc, self.request.kill_grace)
        elif self.open:  # exited, and the drain window is over: what holds its output is its
            from .containment import kill_holders

            killed = kill_holders(tuple(self.open), self.request.kill_grace)
        returncode = self.proc.wait()
        if failure is None and returncode != 0:
            failure = Failure.EXIT
        return RunOutcome(
            self.request,
            returncode,
            self._stdout(),
            bytes(self.stderr),
            time.monotonic() - self.started,
            pid=self.proc.pid,
            failure=failure,
            reason=_reason(failure, returncode, self.request),
            killed=killed,
        )

    def _loop(self) -> Failure | None:
        """Pump the pipes until the handler exited and both outputs hit EOF (or the
        drain grace ran out); return a failure kind or ``None``."""
        for fd in (self.out, self.err):  # read only when poll(2) says so: never blocks
            self.poller.register(fd, select.POLLIN)
        if self.pidfd is not None:
            self.poller.register(self.pidfd, select.POLLIN)
        drain_until: float | None = None
        exited = False
        ended = self.pidfd is None  # with a pidfd, waitpid only once it says the handler ended
        while True:
            exited = exited or (ended and self.proc.poll() is not None)
            if exited and not self.open:
                return None
            now = time.monotonic()
            if now >= self.deadline:
                return Failure.TIMEOUT
            if exited and drain_until is None:
                drain_until = now + self.request.drain_grace
            if drain_until is not None and now >= drain_until:
                return None
            wait = min(self.deadline, drain_until or self.deadline) - now
            if self.pidfd is None:
                wait = min(wait, 0.05)
            for fd, _ in self.poller.poll(math.ceil(wait * 1000)):
                if fd == self.pidfd:
                    self.poller.unregister(fd)
                    ended = True
                elif self._read(fd) and self.stdout_size > self.request.output_limit:
                    return Failure.OUTPUT

    def _read(self, fd: int) -> bool:
        """Read one chunk (of stdout, never more than one byte past the limit); return
        whether it was stdout data."""
        size = self.chunk if fd != self.out else min(self.chunk, self.request.output_limit - self.stdout_size + 1)
        if fd == self.out and self.scratch is not None:
            return self._echo(fd, size)
        data = os.read(fd, size)
        if len(data) == self.chunk and not self.widened:  # a large output: fewer, larger reads
            self.widened = True
            self.chunk = _widen(fd)
        if not data:
            self.poller.unregister(fd)
            self.open.discard(fd)
            return False
        if fd == self.out:
            self.stdout_size += len(data)
            if not self.stdout and len(data) >= _CHUNK and self.request.stdin.startswith(data):
                self.echoed = len(data)  # a large output starting as its input: compared as read
                self.scratch = memoryview(bytearray(self.chunk))
            else:
                self.stdout.append(data)
            return True
        self.stderr += data
        del self.stderr[:-STDERR_KEEP]
        return False

    def _echo(self, fd: int, size: int) -> bool:
        """Read one chunk of an output that has been its input so far into the scratch
        buffer, and compare it there: as long as it is still the input, nothing is kept."""
        assert self.scratch is not None
        read = os.readv(fd, [self.scratch[:size]])
        if not read:
            self.poller.unregister(fd)
            self.open.discard(fd)
            return False
        self.stdout_size += read
        if self.request.stdin.startswith(self.scratch[:read], self.echoed):
            self.echoed += read
        else:  # it differs: kept from here on as any output is
            self.stdout = [self.request.stdin[: self.echoed], bytes(self.scratch[:read])]
            self.echoed, self.scratch = -1, None
        return True

    def _stdout(self) -> bytes:
        """All the handler printed: its stdin itself when it printed exactly that."""
        stdin = self.request.stdin
        if self.echoed < 0:
            return b"".join(self.stdout)
        return stdin if self.echoed == len(stdin) else stdin[: self.echoed]


def _fill(fd: int, data: bytes) -> None:
    """Write all of ``data`` into the in-memory file ``fd``, its offset left at the start
    (where the handler reads from). :raises OSError:"""
    written = os.pwrite(fd, data, 0) if data else 0  # pwrite leaves the offset where it is
    if written < len(data):  # written in parts: slices of a view copy nothing
        view = memoryview(data)
        while written < len(view):
            written += os.pwrite(fd, view[written:], written)


def _widen(fd: int) -> int:
    """Ask for a larger pipe behind ``fd`` (Linux); return the bytes to read at a time."""
    try:
        import fcntl

        return int(fcntl.fcntl(fd, fcntl.F_SETPIPE_SZ, _WIDE))
    except (ImportError, AttributeError, OSError):  # not Linux, or over the user's pipe quota
        return _CHUNK


def _reason(failure: Failure | None, returncode: int, request: RunRequest) -> str:
    if failure is Failure.TIMEOUT:
        return f"timed out after {request.timeout:g}s"
    if failure is Failure.OUTPUT:
        return f"output exceeded {request.output_limit} bytes"
    if failure is Failure.EXIT:
        if returncode < 0:
            return f"killed by signal {signal.Signals(-returncode).name}"
        return f"exit status {returncode}"
    return ""
