"""The registry cache, ``var/<mgr>.registry``: the parsed plugin descriptions, reused
while no plugin file changed. I/O.

The key is every plugin file's name, generation, size, inode and modification and change
times in nanoseconds, plus mgrhooks' version: adding, removing, editing or replacing a
file, or upgrading mgrhooks, makes the cache stale, and a stale cache is never used.

The cache is a pickle, and loading a pickle can run code; so it is only trusted when it
is a regular file owned by the user running mgrhooks and writable by nobody else (as
sshd's StrictModes), and it is written with mode 600. Anything else is ignored and
rebuilt.
"""

from __future__ import annotations

import os
import stat
from pathlib import Path

from . import __version__
from .model import Registry


def fingerprint(files: list[tuple[Path, int]]) -> str:
    """The cache key for plugin files ``(path, generation)``; raises nothing: a file that
    vanished meanwhile simply gives another key."""
    parts = [__version__]
    for path, generation in files:
        try:
            info = path.stat()
        except OSError:
            parts.append(f"{path.name} {generation} gone")
            continue
        parts.append(f"{path.name} {generation} {info.st_size} {info.st_ino} {info.st_mtime_ns} {info.st_ctime_ns}")
    return "\n".join(parts)


def load(path: Path, key: str) -> Registry | None:
    """The cached registry when ``path`` is trustworthy and holds ``key``, else ``None``."""
    import pickle

    try:
        with path.open("rb") as file:
            info = os.fstat(file.fileno())
            if not stat.S_ISREG(info.st_mode) or info.st_uid != os.getuid() or info.st_mode & 0o022:
                return None
            stored_key, registry = pickle.load(file)
    except (OSError, EOFError, pickle.UnpicklingError, ValueError, TypeError, AttributeError, ImportError):
        return None
    return registry if stored_key == key and isinstance(registry, Registry) else None


def store(path: Path, key: str, registry: Registry) -> bool:
    """Write the cache atomically (mode 600); ``False`` when it cannot be written."""
    import pickle

    temporary = path.with_name(f"{path.name}.tmp{os.getpid()}")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(temporary, os.O_WRONLY | os.O_CREAT | os.O_TRUNC, 0o600)
        with os.fdopen(descriptor, "wb") as file:
            pickle.dump((key, registry), file, protocol=pickle.HIGHEST_PROTOCOL)
        temporary.replace(path)
    except (OSError, pickle.PicklingError, TypeError):  # TypeError: something unpicklable
        temporary.unlink(missing_ok=True)
        return False
    return True
