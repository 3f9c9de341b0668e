"""Running one handler program: a subprocess in its own session. I/O.

:func:`run` never raises because a handler misbehaved: a program that cannot start,
exits non-zero, times out or floods stdout gives a :class:`RunOutcome` with a reason.
"""

from __future__ import annotations

import contextlib
import os
import time
from collections.abc import Iterator, Mapping
from typing import TYPE_CHECKING, NamedTuple

from .containment import SPAWNED, Guardian, kill_tree
from .settings import DEFAULT_TIMEOUT, DRAIN_GRACE, KILL_GRACE, OUTPUT_LIMIT

if TYPE_CHECKING:  # subprocess and selectors load when a handler runs, not at start-up
    import subprocess

    from _typeshed import FileDescriptorLike

#: bytes of stderr kept (the last ones) for the log
STDERR_KEEP = 64 * 1024
_CHUNK = 65536


class RunRequest(NamedTuple):
    """What to run: ``argv[0]`` is an absolute program path; ``timeout`` in seconds."""

    argv: tuple[str, ...]
    cwd: str
    env: Mapping[str, str]
    stdin: bytes
    timeout: float = DEFAULT_TIMEOUT
    description: str = ""
    output_limit: int = OUTPUT_LIMIT
    kill_grace: float = KILL_GRACE
    drain_grace: float = DRAIN_GRACE


class RunOutcome(NamedTuple):
    """What happened. ``returncode`` is negative for a signal, ``None`` if never started.

    ``failure`` is ``None`` for success, else one of ``spawn``, ``timeout``, ``output``
    (stdout over the limit) or ``exit`` (non-zero status); ``reason`` says it in words.
    """

    request: RunRequest
    returncode: int | None
    stdout: bytes
    stderr: bytes
    duration: float
    pid: int | None = None
    failure: str | None = None
    reason: str = ""
    killed: tuple[int, ...] = ()

    @property
    def ok(self) -> bool:
        return self.failure is None


def run(request: RunRequest, guardian: Guardian | None = None) -> RunOutcome:
    """Run ``request`` with its stdin complete before it starts; collect stdout and stderr.

    stdin is an in-memory file already holding all of ``request.stdin`` (a memfd, or an
    unlinked temporary file where there is none): a handler may read it to EOF, in
    one non-blocking read, or not at all, and can never block mgrhooks by not reading.

    On timeout or output overflow the handler's whole process tree (its session, plus
    any descendant that left it) gets SIGTERM, then SIGKILL after ``kill_grace``. When the
    handler exits while a background child still holds stdout, reading stops after
    ``drain_grace`` and the child is left running (real addons start daemons that way).

    :param guardian: told the handler's process group while it runs (see
        :mod:`mgrhooks.containment`)
    """
    import subprocess

    started = time.monotonic()
    try:
        with _stdin_file(request.stdin) as stdin:
            proc = subprocess.Popen(
                request.argv,
                stdin=stdin,
                stdout=subprocess.PIPE,
                stderr=subprocess.PIPE,
                cwd=request.cwd,
                env=request.env,
                start_new_session=True,  # keeps CPython's vfork fast path, unlike preexec_fn
                close_fds=True,
            )
    except OSError as exc:
        reason = f"cannot start {request.argv[0]}: {exc.strerror or exc}"
        return RunOutcome(request, None, b"", b"", time.monotonic() - started, failure="spawn", reason=reason)
    SPAWNED.add(proc.pid)
    if guardian is not None:
        guardian.watch(proc.pid)
    try:
        with proc:
            return _Session(proc, request, started).collect()
    finally:
        SPAWNED.discard(proc.pid)
        if guardian is not None:
            guardian.release()


class _Session:
    """The I/O loop of one running handler."""

    def __init__(self, proc: subprocess.Popen[bytes], request: RunRequest, started: float) -> None:
        self.proc = proc
        self.request = request
        self.started = started
        self.deadline = started + request.timeout
        self.stdout: list[bytes] = []
        self.stdout_size = 0
        self.stderr = bytearray()
        import selectors

        self.selector: selectors.BaseSelector = selectors.DefaultSelector()
        self.pidfd = _pidfd(proc.pid)

    def collect(self) -> RunOutcome:
        failure = None
        try:
            failure = self._loop()
        except BaseException:  # KeyboardInterrupt, or a bug: the handler must not outlive us
            kill_tree(self.proc, self.request.kill_grace)
            raise
        finally:
            self.selector.close()
            if self.pidfd is not None:
                os.close(self.pidfd)
        killed: tuple[int, ...] = ()
        if failure is not None:
            killed = kill_tree(self.proc, self.request.kill_grace)
        returncode = self.proc.wait()
        if failure is None and returncode != 0:
            failure = "exit"
        return RunOutcome(
            self.request,
            returncode,
            b"".join(self.stdout),
            bytes(self.stderr),
            time.monotonic() - self.started,
            pid=self.proc.pid,
            failure=failure,
            reason=_reason(failure, returncode, self.request),
            killed=killed,
        )

    def _loop(self) -> str | None:
        """Pump the pipes until the handler exited and both outputs hit EOF (or the
        drain grace ran out); return a failure kind or ``None``."""
        assert self.proc.stdout and self.proc.stderr
        for stream in (self.proc.stdout, self.proc.stderr):
            os.set_blocking(stream.fileno(), False)

        from selectors import EVENT_READ

        for watched in (self.proc.stdout, self.proc.stderr, self.pidfd):
            if watched is not None:
                self.selector.register(watched, EVENT_READ)
        drain_until: float | None = None
        while True:
            exited = self.proc.poll() is not None
            if exited and not self._outputs_open():
                return None
            now = time.monotonic()
            if now >= self.deadline:
                return "timeout"
            if exited and drain_until is None:
                drain_until = now + self.request.drain_grace
            if drain_until is not None and now >= drain_until:
                return None
            wait = min(self.deadline, drain_until or self.deadline) - now
            if self.pidfd is None:
                wait = min(wait, 0.05)
            for key, _ in self.selector.select(wait):
                if key.fileobj == self.pidfd:
                    self.selector.unregister(self.pidfd)
                elif self._read(key.fileobj) and self.stdout_size > self.request.output_limit:
                    return "output"

    def _outputs_open(self) -> bool:
        registered = self.selector.get_map()
        return any(s in registered for s in (self.proc.stdout, self.proc.stderr))

    def _read(self, stream: FileDescriptorLike) -> bool:
        """Read one chunk; return whether it was stdout data."""
        assert self.proc.stdout and self.proc.stderr
        is_stdout = stream is self.proc.stdout
        fd = self.proc.stdout.fileno() if is_stdout else self.proc.stderr.fileno()
        try:
            data = os.read(fd, _CHUNK)
        except BlockingIOError:
            return False
        if not data:
            self.selector.unregister(stream)
            return False
        if is_stdout:
            self.stdout.append(data)
            self.stdout_size += len(data)
        else:
            self.stderr += data
            del self.stderr[:-STDERR_KEEP]
        return is_stdout


@contextlib.contextmanager
def _stdin_file(data: bytes) -> Iterator[int]:
    """A descriptor of an in-memory file holding ``data``, positioned at its start."""
    try:
        fd = os.memfd_create("mgrhooks-stdin", os.MFD_CLOEXEC)
    except (AttributeError, OSError):
        import tempfile

        fd = os.dup(tempfile.TemporaryFile().fileno())
    try:
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
        os.lseek(fd, 0, os.SEEK_SET)
        yield fd
    finally:
        os.close(fd)


def _pidfd(pid: int) -> int | None:
    """A descriptor that becomes readable when ``pid`` exits (Linux ≥ 5.3), else ``None``."""
    try:
        return os.pidfd_open(pid)
    except (AttributeError, OSError):
        return None


def _reason(failure: str | None, returncode: int, request: RunRequest) -> str:
    if failure == "timeout":
        return f"timed out after {request.timeout:g}s"
    if failure == "output":
        return f"output exceeded {request.output_limit} bytes"
    if failure == "exit":
        if returncode < 0:
            import signal

            return f"killed by signal {signal.Signals(-returncode).name}"
        return f"exit status {returncode}"
    return ""
