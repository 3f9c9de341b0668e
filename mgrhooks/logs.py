"""The panel-style log, ``var/<mgr>.log``, and mgrhooks' records to the standard library's logging.

Line shape, after the panel's: ``Nov 21 08:45:16 [1234:1] external INFO Executing: ...``
(date, ``[pid:thread]``, module, level, message). Modules are the last part of the logger
name: ``action`` (registration, calls) and ``external`` (handler runs). A record is one
line whatever the values in it: the formatter escapes control characters in the whole
line (:mod:`mgrhooks.printable`), so a newline in a value cannot forge a line of its own
and an ANSI escape is shown, not run by the terminal that reads the log.

The file is opened without following a link and created with mode 600; a log that is a
FIFO, a device or a link, or whose folder leads out of the root, is refused as a log that
cannot be opened is: one line on stderr, the call goes on (:func:`open_log`).

Levels come from ``etc/debug.conf`` as on the panel: lines ``PRODUCT.MODULE LEVEL`` where
PRODUCT is the ``--mgr`` name or ``*`` and MODULE a module or ``*`` (``*.external 9``);
later lines win. Panel levels map onto ours (our choice): 0 nothing, 1 ERROR, 2 WARNING,
3 INFO, 4 EXTINFO (the default), 5 to 8 DEBUG (handler environments' names and stdin
sizes), 9 TRACE (also every handler's environment and the first 4 KiB of its stdin and
stdout, the call's secret values hidden: :mod:`mgrhooks.secret`).

Inside :func:`to_file` the panel's lines are made and written by its target, without the
``logging`` package (with ``traceback`` and friends, several milliseconds to import; every
call writes at least its request line). Outside :func:`to_file` (mgrhooks used as a
library), records go to the ``mgrhooks.*`` loggers for the application's own logging set-up
to handle, and only then is ``logging`` imported.

The file a record goes to belongs to the call writing it, not to the process: :func:`to_file`
sets it in a :class:`contextvars.ContextVar`, so two panels' calls in two threads (or
nested in one) each write to their own ``var/<mgr>.log``, and the ``mgrhooks`` loggers'
own set-up is never changed.
"""

from __future__ import annotations

import errno
import os
import stat
import sys
import threading
import time
from collections.abc import Iterator
from contextlib import contextmanager, suppress
from contextvars import ContextVar
from pathlib import Path
from types import ModuleType
from typing import TYPE_CHECKING, Any

from .files import require_regular
from .printable import printable

if TYPE_CHECKING:
    import logging

#: levels, as the logging package numbers them; EXTINFO is the panel's, TRACE below DEBUG
ERROR, WARNING, INFO, EXTINFO, DEBUG, TRACE = 40, 30, 20, 15, 10, 5
OFF = 60
#: bytes of a handler's stdin and stdout written at TRACE
DUMP_BYTES = 4096
DEFAULT_LEVEL = 4
_PANEL_LEVELS = {0: OFF, 1: ERROR, 2: WARNING, 3: INFO, 4: EXTINFO, 9: TRACE}
#: the date at the start of each line, as the panel writes it
_DATES = "%b %d %H:%M:%S"


#: the name each level shows in a line
_NAMES = {ERROR: "ERROR", WARNING: "WARNING", INFO: "INFO", EXTINFO: "EXTINFO", DEBUG: "DEBUG", TRACE: "TRACE"}


class _Target:
    """Where one :func:`to_file` block writes: ``path`` (and stderr with ``echo``) at the
    module ``levels``.

    Lines are made and written here, not through the logging package: a call that writes
    one line (every call writes its request line) would otherwise import it, ~6 ms of the
    cold start (bench row "cold start"). Each line is appended with one ``write(2)`` on an
    ``O_APPEND`` descriptor (:func:`open_log`, at the first line), so it is in the file
    before the call goes on (before the next handler starts), with no buffer to flush. The
    whole line goes through :func:`mgrhooks.printable.printable`, so no record can forget
    it: a newline or an ANSI escape in a function name, a user name, a value or a handler's
    stderr is shown as ``\\n`` or ``\\x1b`` and never starts a line of its own.

    A log that cannot be opened or written (a directory, a FIFO, a link, a full disk, no
    permission) never fails or stops the call: one line on stderr per target names the file
    and the reason, and opening is tried again with each line (our choice)."""

    def __init__(self, path: Path, levels: dict[str, int], echo: bool, root: Path | None) -> None:
        self.path = path
        self.root = root
        self.levels = levels
        self.echo = echo
        self.closed = False
        self._fd = -1
        self._complained = False
        self._second = -1  # the date is made once a second
        self._date = ""
        self._lock = threading.Lock()  # threads a call starts share its target

    def write(self, level: int, module: str, message: str, args: tuple[Any, ...]) -> None:
        """Write one line: ``message % args`` at ``level`` (:data:`INFO`, ...) of ``module``
        (``action``, ``external``); the caller checked the level. Never raises."""
        line = printable(self._head(level, module) + _text(message, args))  # the line's own end is ours
        with self._lock:
            if self.closed:
                return
            if self._fd < 0:
                self._fd = self._open()
            if self._fd >= 0:
                try:
                    os.write(self._fd, (line + "\n").encode("utf-8", "backslashreplace"))
                except OSError as exc:
                    self._complain(exc)
        if self.echo:
            _to_stderr(line)

    def close(self) -> None:
        """Close the file; later lines of threads still running are dropped."""
        with self._lock:
            self.closed = True
            if self._fd >= 0:
                os.close(self._fd)
                self._fd = -1

    def _head(self, level: int, module: str) -> str:
        """``date [pid:thread] module LEVEL `` (thread 1 is the main one, as on the panel)."""
        second = int(time.time())
        if second != self._second:
            self._second, self._date = second, time.strftime(_DATES, time.localtime(second))
        ident = threading.get_ident()
        thread = 1 if ident == threading.main_thread().ident else ident % 10000
        return f"{self._date} [{os.getpid()}:{thread}] {module} {_NAMES.get(level, f'Level {level}')} "

    def _open(self) -> int:
        try:
            return open_log(self.path, self.root)
        except OSError as exc:
            self._complain(exc)
            return -1

    def _complain(self, exc: OSError) -> None:
        if not self._complained:
            self._complained = True
            _to_stderr(f"mgrhooks: cannot write the log {self.path}: {exc.strerror}; its records are lost")


def _text(message: str, args: tuple[Any, ...]) -> str:
    """``message % args`` as logging makes it (no ``%`` with no ``args``); a message its
    arguments do not fit is shown with them, never raised (logging's own policy)."""
    if not args:
        return message
    try:
        return message % args
    except (TypeError, ValueError, KeyError):
        return f"{message} {args!r}"


def _to_stderr(line: str) -> None:
    with suppress(AttributeError, OSError, ValueError):  # stderr closed, or none
        sys.stderr.write(printable(line) + "\n")
        sys.stderr.flush()


#: the target of the call running in this context (None: the application's logging)
_target: ContextVar[_Target | None] = ContextVar("mgrhooks_log_target", default=None)


def panel_level(level: int) -> int:
    """The logging level for a panel debug level 0-9."""
    return _PANEL_LEVELS.get(level, DEBUG)


def read_debug_conf(text: str, mgr: str) -> dict[str, int]:
    """Module → logging level from a ``debug.conf`` text (``"*"`` for every other module).

    Lines that do not parse, or name another product, are skipped.
    """
    levels = {"*": panel_level(DEFAULT_LEVEL)}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) != 2 or not fields[1].isdigit() or "." not in fields[0]:
            continue
        product, module = fields[0].split(".", 1)
        if product in ("*", mgr):
            if module == "*":
                levels = {key: panel_level(int(fields[1])) for key in levels}
            else:
                levels[module] = panel_level(int(fields[1]))
    return levels


def level_of(levels: dict[str, int], module: str) -> int:
    """The logging level (``logging``'s numbers) of ``module`` in ``levels`` (from
    :func:`read_debug_conf`), else the level of ``"*"``."""
    return levels.get(module, levels["*"])


class Channel:
    """One panel log module (``action``, ``external``), with the logger methods in use."""

    def __init__(self, module: str) -> None:
        self.module = module
        self._logger: logging.Logger | None = None

    def enabled(self, level: int) -> bool:
        """Whether a record at ``level`` would be written (to skip building costly arguments):
        by the levels of :func:`to_file`, else by the application's own logging set-up."""
        target = _target.get()
        if target is not None and not target.closed:
            return level >= level_of(target.levels, self.module)
        return bool(self._logger_of().isEnabledFor(level))

    def log(self, level: int, message: str, *args: Any) -> None:  # noqa: ANN401 (format arguments)
        """Write ``message % args`` at ``level`` (``logging``'s numbers, :data:`EXTINFO` and
        :data:`TRACE` included) to the panel log of this call's context (:func:`to_file`),
        else through the application's ``mgrhooks.<module>`` logger. Never raises for a
        log that cannot be written (its writer says so on stderr, once)."""
        target = _target.get()
        if target is not None and not target.closed:
            if level < level_of(target.levels, self.module):
                return
            target.write(level, self.module, message, args)
            return
        self._logger_of().log(level, message, *args)

    def _logger_of(self) -> logging.Logger:
        if self._logger is None:
            self._logger = _logging().getLogger(f"mgrhooks.{self.module}")
        return self._logger

    def error(self, message: str, *args: Any) -> None:  # noqa: ANN401
        """:meth:`log` at :data:`ERROR`."""
        self.log(ERROR, message, *args)

    def warning(self, message: str, *args: Any) -> None:  # noqa: ANN401
        """:meth:`log` at :data:`WARNING`."""
        self.log(WARNING, message, *args)

    def info(self, message: str, *args: Any) -> None:  # noqa: ANN401
        """:meth:`log` at :data:`INFO`."""
        self.log(INFO, message, *args)

    def debug(self, message: str, *args: Any) -> None:  # noqa: ANN401
        """:meth:`log` at :data:`DEBUG`."""
        self.log(DEBUG, message, *args)


ACTION = Channel("action")
EXTERNAL = Channel("external")


def _logging() -> ModuleType:
    """The logging package, with the panel's level names registered."""
    import logging

    if logging.getLevelName(EXTINFO) != "EXTINFO":
        logging.addLevelName(EXTINFO, "EXTINFO")
        logging.addLevelName(TRACE, "TRACE")
    return logging


#: the mode a new log is created with (less the umask): the log holds user names, values
#: and handlers' stderr, so only its owner reads it (our choice; an existing log keeps its own)
LOG_MODE = 0o600


def open_log(path: Path, root: Path | None = None) -> int:
    """A descriptor appending to the log ``path`` (created with :data:`LOG_MODE`), when it
    is a regular file, or none yet: never through a symbolic link in its last name
    (``O_NOFOLLOW``), and never waiting on a FIFO or touching a device (``O_NONBLOCK``,
    then ``fstat``: the file opened is the file checked).

    :param root: the root directory the log must stay in: a folder on the
        way that is a link leading out of it is refused (``None``: not checked)
    :raises OSError: its ``strerror`` says why (``"not a regular file but a FIFO"``,
        ``"a symbolic link leading out of the root (to /tmp/x)"``, ``"Permission denied"``)
    """
    if root is not None:
        folder, top = os.path.realpath(path.parent), os.path.realpath(root)
        if os.path.commonpath((folder, top)) != top:
            raise OSError(errno.EACCES, f"a symbolic link leading out of the root (to {folder})")
    with suppress(FileNotFoundError):
        info = os.lstat(path)
        if stat.S_ISLNK(info.st_mode):
            raise OSError(errno.ELOOP, "not a regular file but a symbolic link (never followed)")
        if not stat.S_ISDIR(info.st_mode):  # (a folder: open says "Is a directory")
            require_regular(info)
    flags = os.O_WRONLY | os.O_APPEND | os.O_CREAT | os.O_CLOEXEC | os.O_NOFOLLOW | os.O_NONBLOCK
    fd = os.open(path, flags, LOG_MODE)
    try:
        require_regular(os.fstat(fd))  # replaced between the lstat and the open
    except OSError:
        os.close(fd)
        raise
    return fd


@contextmanager
def to_file(path: Path, levels: dict[str, int], echo: bool = False, root: Path | None = None) -> Iterator[None]:
    """Write mgrhooks' records made in this context to ``path`` (and stderr with ``echo``)
    meanwhile; other threads, and contexts not copied from this one, keep their own.

    The file is opened, and logging imported, at the first record to write. Threads
    started with a copy of this context (see :mod:`mgrhooks.observers`) write here too
    until the block ends; afterwards their records go to the ``mgrhooks.*`` loggers.

    :param levels: per-module levels, from :func:`read_debug_conf`
    :param root: the root directory the log must stay in (see :func:`open_log`)
    """
    target = _Target(path, levels, echo, root)
    token = _target.set(target)
    try:
        yield
    finally:
        _target.reset(token)
        target.close()
