"""Replacing a small file of the root at once (the registry cache, the list of disabled
plugins): written beside it, then renamed over it, so that a reader sees the old file or
the new one, never part of one. I/O. And naming what a file that should be a regular
one is instead."""

from __future__ import annotations

import errno
import os
import stat
import threading
from contextlib import suppress
from pathlib import Path


def replace(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Make ``data`` the content of ``path`` at once: written to ``<name>.tmp<pid>-<thread>``
    in the same directory (created with ``mode``, less the umask), then renamed over
    ``path``. Threads of one process (calls of ``mgrhooks serve``) each write their own.

    :raises OSError: ``path`` is as it was, and no temporary file is left
    """
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}-{threading.get_native_id()}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as file:  # closes the descriptor whatever happens
            file.write(data)
        temporary.replace(path)
    except OSError:
        with suppress(OSError):  # e.g. a directory that cannot be searched: nothing to remove
            temporary.unlink(missing_ok=True)
        raise


#: what a file that is not a regular one is, by its ``S_IFMT`` bits
_KINDS = {stat.S_IFIFO: "a FIFO", stat.S_IFCHR: "a character device", stat.S_IFBLK: "a block device"}
_KINDS |= {stat.S_IFDIR: "a directory", stat.S_IFSOCK: "a socket", stat.S_IFLNK: "a symbolic link"}


def require_regular(info: os.stat_result) -> None:
    """:raises OSError: ``info`` is not a regular file's; ``strerror`` says what it is
    (``"not a regular file but a FIFO"``)"""
    if not stat.S_ISREG(info.st_mode):
        kind = _KINDS.get(stat.S_IFMT(info.st_mode), "something else")
        raise OSError(errno.EINVAL, f"not a regular file but {kind}")
