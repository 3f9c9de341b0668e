"""Exceptions and exit statuses.

Handler misbehaviour is never an exception: it is a :class:`mgrhooks.process.runner.RunOutcome`
that the dispatcher turns into an ``<error>`` document. Exceptions here are for input the
caller can fix (a bad parameter, an unknown function, an unusable root) and carry the exit
status the CLI returns.
"""

from __future__ import annotations

import enum
import errno
from typing import ClassVar


class ExitStatus(enum.IntEnum):
    """Every exit status of the ``mgrhooks`` command, in one place (our choice)."""

    OK = 0
    #: the response document holds an ``<error>``, or ``check`` found errors
    ERROR = 1
    #: click's own status for a usage error (bad option, missing argument), and
    #: :class:`UsageError`
    USAGE = 2
    #: the root cannot be used (missing directory, unreadable database)
    ROOT = 3
    #: a bug in mgrhooks itself (``MGRHOOKS_DEBUG=1`` shows the traceback)
    INTERNAL = 4
    #: the system refused a resource: descriptors, memory or disk (:func:`out_of_resources`),
    #: as sysexits.h's ``EX_OSERR``
    OSERR = 71
    #: a running ``mgrhooks serve`` took the call (local socket) and gave no answer: it
    #: stopped mid-call, and the call may have run in part; as sysexits.h's EX_TEMPFAIL
    UNANSWERED = 75
    #: the local socket's server refuses the caller's uid (only root and the root's owner
    #: may use it); as sysexits.h's EX_NOPERM
    REFUSED = 77
    #: the response could not be written to stdout (full, or an error), as Python's own
    #: exit status when stdout cannot be flushed; the call itself ran
    OUTPUT = 120
    #: stopped with Ctrl-C (SIGINT)
    INTERRUPTED = 130


class MgrhooksError(Exception):
    """Base class: a one-line message and the exit status the CLI maps it to."""

    exit_status: ClassVar[ExitStatus] = ExitStatus.ERROR


class UsageError(MgrhooksError):
    """The caller gave a value no call can take (a control character in a user name):
    exit status 2, as click's own usage errors."""

    exit_status = ExitStatus.USAGE


class RootError(MgrhooksError):
    """The root directory is missing or cannot be used."""

    exit_status = ExitStatus.ROOT


class PanelError(MgrhooksError):
    """A typed panel error (PROTOCOL §5): becomes ``<error type= object= value=>``.

    :param type: the error type, e.g. ``exists``, ``missed``, ``value``, ``access``
    :param object: what the error is about (``user``, ``func``, a parameter name)
    :param value: the offending value, or ``""``
    :param msg: the human sentence shown to the caller
    """

    def __init__(self, type: str, object: str, value: str, msg: str) -> None:  # noqa: A002
        super().__init__(msg)
        self.type = type
        self.object = object
        self.value = value
        self.msg = msg


#: errno values that mean the system ran out of something, not that mgrhooks went wrong
_EXHAUSTED = frozenset({errno.EMFILE, errno.ENFILE, errno.ENOMEM, errno.ENOSPC, errno.EDQUOT, errno.EFBIG})


def out_of_resources(exc: BaseException) -> str | None:
    """What ran out, as one line (``Too many open files: '/usr/lib/python3.11/decimal.py'``),
    when ``exc`` is the system refusing descriptors, memory or disk (EMFILE, ENFILE, ENOMEM,
    ENOSPC, EDQUOT, EFBIG, or :class:`MemoryError`); else ``None``. (Our choice: such a failure is
    the machine's state, reported as :attr:`ExitStatus.OSERR`, not a bug.)"""
    if isinstance(exc, MemoryError):
        return "out of memory"
    if isinstance(exc, OSError) and exc.errno in _EXHAUSTED:
        return f"{exc.strerror}: {exc.filename!r}" if exc.filename else str(exc.strerror)
    return None
