"""The registry cache, ``var/<mgr>.registry``: the parsed plugin descriptions, reused
while no plugin file changed. I/O.

The key is every plugin file's name, generation, size, inode and modification and change
times in nanoseconds, plus mgrhooks' version and the fields (names and types) of its
records: adding, removing, editing or replacing a file, or upgrading mgrhooks, makes the
cache stale, and a stale cache is never used.

Besides the whole registry, the cache holds each function's events pickled apart, so a
call loads only the events of its own function and of ``*`` (5,000 events would take
longer to load than the call takes).

After them, in a second pickle that a call does not read, it keeps each plugin file's
last good version (its bytes, by shown path): a rebuild uses it for a file that cannot be
used at the moment (see :func:`mgrhooks.plugins.load_keeping`).

The cache is a pickle, and loading a pickle can run code; so it is only trusted when it
is a regular file owned by the user running mgrhooks and writable by nobody else (as
sshd's StrictModes), and it is written with mode 600. Anything else is ignored and
rebuilt.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, BinaryIO

from .model import Event, FuncDecl, Handler, Problem, Registry, Source
from .version import __version__

try:  # loading needs the C unpickler alone: importing pickle.py was ~4 M instructions (~1 ms) of every
    # call on a root with plugin files (bench row "per handler | 1 handlers"); writing imports pickle
    from _pickle import UnpicklingError
    from _pickle import load as _unpickle
    from _pickle import loads as _unpickle_bytes
except ImportError:  # no C unpickler (PyPy)
    from pickle import UnpicklingError
    from pickle import load as _unpickle
    from pickle import loads as _unpickle_bytes

if TYPE_CHECKING:
    from .root import PluginFile

#: the records' fields and their types: a cache written with other record shapes (a field
#: added, or a ``str`` that became an enum) is never read
_SHAPES = ";".join(
    ",".join(f"{name}:{kind}" for name, kind in record.__annotations__.items())
    for record in (Registry, Event, FuncDecl, Handler, Problem, Source)
)

#: what the records hold, where their shapes stay the same: raised when it changes (2: a
#: function's ``<metadata>`` form merges every plugin file's fields, not the first file's alone)
_MEANING = "2"


def fingerprint(files: list[PluginFile], stat_of: Callable[[str], os.stat_result] = os.stat) -> str:
    """The cache key for plugin files (see :func:`~mgrhooks.root.plugin_files`); raises
    nothing: a file that vanished meanwhile simply gives another key.

    :param stat_of: gives a file's ``stat`` by its path (one already known may be reused)
    """
    parts = [__version__, _SHAPES, _MEANING]
    for shown, path, _ in files:
        try:
            info = stat_of(path)
        except OSError:
            parts.append(f"{shown} gone")
            continue
        parts.append(f"{shown} {info.st_size} {info.st_ino} {info.st_mtime_ns} {info.st_ctime_ns}")
    return "\n".join(parts)


def load(path: Path, key: str, func: str | None = None) -> Registry | None:
    """The cached registry when ``path`` is trustworthy and holds ``key``, else ``None``.

    :param func: load only the events of this function and of ``*`` (``None``: all)
    """
    try:
        with path.open("rb") as file:
            if not _trusted(file):
                return None
            stored_key, base, by_func, everything = _unpickle(file)
            if stored_key != key or not isinstance(base, Registry):
                return None
            if func is None:
                events = _unpickle_bytes(everything)
            else:
                events = tuple(e for name in (func, "*") if name in by_func for e in _unpickle_bytes(by_func[name]))
    except (OSError, EOFError, UnpicklingError, ValueError, TypeError, AttributeError, ImportError, KeyError):
        return None
    return base._replace(events=events)


def _trusted(file: BinaryIO) -> bool:
    """Whether the open cache file is a regular file of ours that no one else may write."""
    info = os.fstat(file.fileno())
    return stat.S_ISREG(info.st_mode) and info.st_uid == os.getuid() and not info.st_mode & 0o022


def last_good(path: Path) -> dict[str, bytes]:
    """The plugin files' last good versions kept in the cache at ``path`` (stale or not):
    shown path → bytes; empty when there is no trustworthy cache or it keeps none."""
    try:
        with path.open("rb") as file:
            if not _trusted(file):
                return {}
            _unpickle(file)  # the registry
            kept = _unpickle(file)
    except (OSError, EOFError, UnpicklingError, ValueError, TypeError, AttributeError, ImportError, KeyError):
        return {}
    if not isinstance(kept, dict):
        return {}
    return {k: v for k, v in kept.items() if isinstance(k, str) and isinstance(v, bytes)}


def store(path: Path, key: str, registry: Registry, good: Mapping[str, bytes] | None = None) -> bool:
    """Write the cache atomically (mode 600), with the plugin files' last ``good``
    versions (shown path → bytes); ``False`` when it cannot be written (no temporary
    file or descriptor is left then)."""
    import pickle

    from . import files

    try:
        by_func: dict[str, list[Event]] = {}
        for event in registry.events:
            by_func.setdefault(event.func, []).append(event)
        blobs = {name: pickle.dumps(tuple(events), pickle.HIGHEST_PROTOCOL) for name, events in by_func.items()}
        everything = pickle.dumps(registry.events, pickle.HIGHEST_PROTOCOL)
        content = pickle.dumps((key, registry._replace(events=()), blobs, everything), pickle.HIGHEST_PROTOCOL)
        content += pickle.dumps(dict(good or {}), pickle.HIGHEST_PROTOCOL)
    except (pickle.PicklingError, TypeError):  # TypeError: something unpicklable
        return False
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        files.replace(path, content, 0o600)
    except OSError:
        return False
    return True
