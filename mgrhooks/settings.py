"""Root settings: ``etc/mgrhooks.conf``, an INI file read with the standard library.

.. code-block:: ini

    [handlers]
    timeout = 60          ; seconds a handler may run (a handler's timeout= overrides)
    kill_grace = 1        ; seconds between SIGTERM and SIGKILL
    drain_grace = 0.5     ; seconds to read stdout after the handler exited
    output_limit = 64M    ; bytes of stdout accepted (K, M, G suffixes)
    pass_env = HTTP_PROXY NO_PROXY   ; runner variables handed on to handlers

Every key is optional; a missing file means the defaults. A file that does not parse or
holds a bad value is a :class:`~mgrhooks.errors.RootError` naming the file, the line or
key, and what was expected.
"""

from __future__ import annotations

import math
import re
from pathlib import Path
from typing import NamedTuple

from .errors import RootError

#: seconds a handler may run (our choice; a handler's timeout= and exec --timeout override)
DEFAULT_TIMEOUT = 60.0
#: seconds between SIGTERM and SIGKILL when a handler is stopped
KILL_GRACE = 1.0
#: seconds to keep reading stdout after the handler exited while a child of it holds it open
DRAIN_GRACE = 0.5
#: bytes of stdout accepted from one handler (64 MiB)
OUTPUT_LIMIT = 64 * 1024 * 1024
_SIZE = re.compile(r"(\d+)\s*([KMG]?)B?", re.IGNORECASE)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class Settings(NamedTuple):
    """Limits for handler runs; seconds and bytes."""

    timeout: float = DEFAULT_TIMEOUT
    kill_grace: float = KILL_GRACE
    drain_grace: float = DRAIN_GRACE
    output_limit: int = OUTPUT_LIMIT
    pass_env: tuple[str, ...] = ()


def load_settings(path: Path) -> Settings:
    """The settings in ``path`` (the defaults where it does not exist).

    :raises RootError: the file cannot be read or parsed, or a value is bad
    """
    try:
        text = path.read_text(encoding="utf-8")
    except FileNotFoundError:
        return Settings()
    except (OSError, UnicodeDecodeError) as exc:
        raise RootError(f"{path}: {exc}") from None
    import configparser  # only for roots that have the file

    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text, str(path))
    except configparser.Error as exc:
        raise RootError(f"{path}: {exc}") from None
    section = parser["handlers"] if parser.has_section("handlers") else {}
    known = set(Settings._fields)
    unknown = sorted(set(section) - known)
    if unknown:
        raise RootError(f"{path}: [handlers] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")
    values: dict[str, object] = {}
    for key, text in section.items():
        values[key] = _value(path, key, text)
    return Settings(**values)  # type: ignore[arg-type]


def _value(path: Path, key: str, text: str) -> object:
    if key == "pass_env":
        return tuple(text.split())
    if key == "output_limit":
        match = _SIZE.fullmatch(text.strip())
        if match and int(match[1]) > 0:
            return int(match[1]) * _UNITS[match[2].upper()]
        raise RootError(f"{path}: [handlers] output_limit: expected bytes > 0 (like 64M), got {text!r}")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise RootError(f"{path}: [handlers] {key}: expected seconds > 0, got {text!r}")
    return seconds
