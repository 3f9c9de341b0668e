"""Replacing a small file of the root at once (the registry cache, the list of disabled
plugins): written beside it, then renamed over it, so that a reader sees the old file or
the new one, never part of one. I/O."""

from __future__ import annotations

import os
from contextlib import suppress
from pathlib import Path


def replace(path: Path, data: bytes, mode: int = 0o666) -> None:
    """Make ``data`` the content of ``path`` at once: written to ``<name>.tmp<pid>`` in the
    same directory (created with ``mode``, less the umask), then renamed over ``path``.

    :raises OSError: ``path`` is as it was, and no temporary file is left
    """
    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, mode)
        with os.fdopen(descriptor, "wb") as file:  # closes the descriptor whatever happens
            file.write(data)
        temporary.replace(path)
    except OSError:
        with suppress(OSError):  # e.g. a directory that cannot be searched: nothing to remove
            temporary.unlink(missing_ok=True)
        raise
