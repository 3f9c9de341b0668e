"""Spilled parameter values: their files, written once per call, and their removal. I/O.

The spill rule (:func:`mgrhooks.budget.spill_plan`) says which values reach handlers through
files (``PARAM_<key>_FILE``, ``QUERY_STRING_FILE``). They are written, mode 600, in a
directory of the call's own, ``$TMPDIR/mgrhooks-<uid>/<pid>-<start>-<random>`` (``/tmp``
without ``$TMPDIR``; both directories mode 700), and removed when the call ends.

The directory's name says which process made it: its pid and its start time as the kernel
counts it (``/proc/<pid>/stat``), so that a pid used again later is not taken for it. When
mgrhooks is killed before it removes its own (SIGKILL, a crash), the next call of the same
user with the same ``$TMPDIR`` removes it as it ends (:func:`release`): what a killed call
spilled, passwords included, stays in ``$TMPDIR`` until the next call ends, no longer (our
choice; a reboot clears a ``/tmp`` in memory too). Processes of another PID namespace
sharing the same ``$TMPDIR`` (containers sharing a host's /tmp) would look dead: give each
its own ``$TMPDIR``. ``mgrhooks-<uid>`` must be a directory of
that user's alone, as tmux wants of its ``/tmp/tmux-<uid>``: if another user made it first,
nothing is spilled there and the handlers that need it fail, naming it.
"""

from __future__ import annotations

import errno
import os
import stat
from collections.abc import Collection, Mapping
from typing import TYPE_CHECKING

from .model import Request

if TYPE_CHECKING:
    from .budget import Limits, SpillPlan
    from .env import Facts, Spilled

#: the most argv and environment may take whatever the stack limit (Linux: 3/4 of 8 MiB)
TOTAL_CAP = 6 * 1024 * 1024
#: the file holding the whole query string, in the call's directory
QUERY_FILE = "query"
#: the longest name of a call's directory: a pid (at most 2**22), a start time in clock
#: ticks (64 bits) and 8 random hexadecimal digits
_NAME_BYTES = 7 + 1 + 20 + 1 + 8


def limits() -> Limits:
    """The kernel's limits for the handlers this process starts: ``SC_ARG_MAX`` (a quarter
    of the stack limit) capped at :data:`TOTAL_CAP`, and 128 KiB a string."""
    from .budget import STRING_MAX, Limits

    try:
        arg_max = os.sysconf("SC_ARG_MAX")
    except (ValueError, OSError):
        arg_max = -1
    return Limits(STRING_MAX, min(arg_max, TOTAL_CAP)) if arg_max > 0 else Limits()


def write(
    request: Request,
    base: Mapping[str, str],
    facts: Facts,
    passed: Collection[str] = (),
    request_env: Mapping[str, str] | None = None,
) -> Spilled:
    """Write the values the spill rule takes out of the environment of ``request``'s
    handlers (``base``, ``facts``, ``passed`` and ``request_env`` as for
    :func:`mgrhooks.env.call_environment`).

    :raises mgrhooks.budget.EnvironmentTooLarge: not even the variables that are not
        parameters fit (an OSError, E2BIG)
    :raises OSError: the files cannot be written (a full disk, a ``mgrhooks-<uid>`` that
        is not ours); nothing is left then (no directory, no partial set of files)
    """
    from .env import NOTHING_SPILLED, Spilled, query_string  # (here: bench row "cold start" only releases)

    parent = _parent()
    plan = rule(request, base, facts, passed, parent, request_env)
    if not plan.any:
        return NOTHING_SPILLED
    directory = _make_directory(parent)
    try:
        files = tuple((key, _write(directory, str(n), request.get(key))) for n, key in enumerate(plan.files))
        query = _write(directory, QUERY_FILE, query_string(request))
    except OSError:
        _remove(directory)
        raise
    return Spilled(files, plan.unqueried, plan.left_out, query, directory)


def rule(
    request: Request,
    base: Mapping[str, str],
    facts: Facts,
    passed: Collection[str],
    parent: str | None = None,
    request_env: Mapping[str, str] | None = None,
) -> SpillPlan:
    """Which values of ``request`` :func:`write` puts in files under ``parent`` (``None``:
    ``$TMPDIR/mgrhooks-<uid>``), nothing written (:func:`mgrhooks.budget.spill_plan`)."""
    from .budget import spill_plan  # (with the first handler of a call only)
    from .env import call_environment

    parent = _parent() if parent is None else parent
    name_bytes = _NAME_BYTES + 1 + max(len(QUERY_FILE), len(str(len(request.params))))
    fixed = call_environment(base, request._replace(params=()), facts, passed=passed, request_env=request_env)
    return spill_plan(request, fixed, len(os.fsencode(parent)) + 1 + name_bytes, limits())


def directory_parent() -> str:
    """The directory the calls' own directories are made in (``$TMPDIR/mgrhooks-<uid>``)."""
    return _parent()


def failure(exc: OSError) -> str:
    """Why a handler was not started, for :func:`write`'s error ``exc``."""
    if exc.errno == errno.E2BIG:  # (EnvironmentTooLarge)
        return f"cannot start: {exc.strerror}"
    return f"cannot write its parameter files: {exc.strerror}"


def release(spilled: Spilled | None) -> None:
    """Remove what :func:`write` wrote (``spilled``), and what calls of processes that no
    longer run left (``mgrhooks-<uid>`` too, when that leaves it empty)."""
    if spilled is not None and spilled.directory is not None:
        _remove(spilled.directory)
    sweep(_parent())


def sweep(parent: str) -> None:
    """Remove the directories in ``parent`` whose process no longer runs (killed before
    it removed them), then ``parent`` if it is empty. Nothing is removed where ``/proc``
    cannot tell."""
    try:
        names = os.listdir(parent)
    except OSError:
        return
    if _started(os.getpid()) is None:
        return
    for name in names:
        pid, _, rest = name.partition("-")
        start, _, _ = rest.partition("-")
        if pid.isdigit() and start.isdigit() and _started(int(pid)) != start:
            _remove(os.path.join(parent, name))
    try:  # nothing of mgrhooks left in $TMPDIR when no call runs (another one makes it again)
        os.rmdir(parent)
    except OSError:
        pass


def _parent() -> str:
    return os.path.join(os.environ.get("TMPDIR") or "/tmp", f"mgrhooks-{os.geteuid()}")


def _make_directory(parent: str) -> str:
    """Make this call's directory in ``parent``, made too if need be. :raises OSError:"""
    name = f"{os.getpid()}-{_started(os.getpid()) or 0}-{os.urandom(4).hex()}"
    for _ in range(3):
        try:
            _own_directory(parent)
            os.mkdir(os.path.join(parent, name), 0o700)
            return os.path.join(parent, name)
        except FileNotFoundError:  # another call removed parent, empty, meanwhile
            continue
    raise OSError(errno.ENOENT, f"{parent} keeps vanishing")


def _own_directory(parent: str) -> None:
    """Make ``parent`` (mode 700), or check that it is a directory of this user's alone.
    :raises OSError:"""
    try:
        os.mkdir(parent, 0o700)
    except FileExistsError:
        pass
    info = os.lstat(parent)
    if not stat.S_ISDIR(info.st_mode) or info.st_uid != os.geteuid() or info.st_mode & 0o077:
        mode = stat.filemode(info.st_mode)
        message = f"{parent} is not a directory of this user's alone ({mode}, owner {info.st_uid})"
        raise OSError(errno.EPERM, message)


def _write(directory: str, name: str, value: str) -> str:
    path = os.path.join(directory, name)
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW | os.O_CLOEXEC, 0o600)
    with open(fd, "wb") as file:
        file.write(value.encode("utf-8", "surrogateescape"))
    return path


def _remove(directory: str) -> None:
    import shutil

    shutil.rmtree(directory, ignore_errors=True)


def _started(pid: int) -> str | None:
    """When process ``pid`` started, in clock ticks after boot (``/proc/<pid>/stat``), or
    ``None`` when it does not run (a zombie does not) or ``/proc`` cannot tell."""
    try:
        with open(f"/proc/{pid}/stat", "rb") as file:
            data = file.read()
        fields = data[data.rindex(b")") + 2 :].split()
    except (OSError, ValueError):
        return None
    return None if fields[0] in (b"Z", b"X") else fields[19].decode()
