"""Root settings: ``etc/mgrhooks.conf``, an INI file read with the standard library.

.. code-block:: ini

    [handlers]
    timeout = 60          ; seconds a handler may run (a handler's timeout= overrides)
    kill_grace = 1        ; seconds between SIGTERM and SIGKILL
    drain_grace = 0.5     ; seconds to read stdout after the handler exited
    output_limit = 64M    ; bytes of stdout accepted (K, M, G suffixes)
    pass_env = HTTP_PROXY NO_PROXY   ; runner variables handed on to handlers

    [notify.audit]        ; an event notifier (see mgrhooks.notify): one section each
    driver = log          ; log | http | script
    path = var/events.jsonl
    events = user.*       ; which functions (shell patterns; default: every change)

    [notify.crm]
    driver = http
    url = http://127.0.0.1:8080/hook
    timeout = 2           ; seconds per attempt
    attempts = 5          ; before the record goes to the dead letters
    backoff = 1           ; seconds before the second attempt, doubled after each failure
    user = crm            ; HTTP basic authentication, optional
    password = secret

    [notify.sync]
    driver = script
    program = sync.sh     ; in addon/, vetted as handler programs are; record on stdin

Every key is optional; a missing file means the defaults. A file that does not parse or
holds a bad value is a :class:`~mgrhooks.errors.RootError` naming the file, the line or
key, and what was expected.

Annotations are evaluated, not postponed: see :mod:`mgrhooks.model`.
"""

import math
import re
from collections.abc import Iterable, Mapping
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
_SIZE = r"(\d+)\s*([KMG]?)B?"  # compiled on first use (re caches it)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class Notifier(NamedTuple):
    """One ``[notify.NAME]`` section (keys as in the module docstring): where event
    records go. ``events`` are shell patterns of functions; ``timeout`` is seconds per
    attempt, ``backoff`` seconds before the second attempt (doubled after each failure),
    ``attempts`` how many before the dead letters."""

    name: str
    driver: str
    events: tuple[str, ...] = ("*",)
    path: str = ""
    url: str = ""
    program: str = ""
    timeout: float = 2.0
    attempts: int = 5
    backoff: float = 1.0
    user: str = ""
    password: str = ""


class Settings(NamedTuple):
    """Limits for handler runs: ``timeout``, ``kill_grace`` and ``drain_grace`` in
    seconds, ``output_limit`` in bytes, ``pass_env`` the runner's variables handed on;
    and the event notifiers, in file order."""

    timeout: float = DEFAULT_TIMEOUT
    kill_grace: float = KILL_GRACE
    drain_grace: float = DRAIN_GRACE
    output_limit: int = OUTPUT_LIMIT
    pass_env: tuple[str, ...] = ()
    notifiers: tuple[Notifier, ...] = ()


_HANDLER_KEYS = {"timeout", "kill_grace", "drain_grace", "output_limit", "pass_env"}
_DRIVER_KEYS = {
    "log": {"path"},
    "http": {"url", "timeout", "attempts", "backoff", "user", "password"},
    "script": {"program", "timeout", "attempts", "backoff"},
}


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
    for name in parser.sections():
        if name != "handlers" and not name.startswith("notify."):
            raise RootError(f"{path}: unknown section [{name}]; known: [handlers], [notify.NAME]")
    section = parser["handlers"] if parser.has_section("handlers") else {}
    _known_keys(path, "handlers", section, _HANDLER_KEYS)
    values: dict[str, object] = {key: _value(path, key, text) for key, text in section.items()}
    notifiers = tuple(
        _notifier(path, name[len("notify.") :], parser[name]) for name in parser.sections() if name != "handlers"
    )
    return Settings(**values, notifiers=notifiers)  # type: ignore[arg-type]


def _known_keys(path: Path, section: str, keys: Iterable[str], known: set[str]) -> None:
    unknown = sorted(set(keys) - known)
    if unknown:
        raise RootError(f"{path}: [{section}] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}")


def _notifier(path: Path, name: str, section: Mapping[str, str]) -> Notifier:
    where = f"notify.{name}"
    driver = section.get("driver", "")
    if driver not in _DRIVER_KEYS:
        raise RootError(f"{path}: [{where}] driver: expected one of {', '.join(_DRIVER_KEYS)}, got {driver!r}")
    _known_keys(path, where, section, {"driver", "events"} | _DRIVER_KEYS[driver])
    required = {"log": "path", "http": "url", "script": "program"}[driver]
    if not section.get(required, "").strip() and driver != "log":
        raise RootError(f"{path}: [{where}] {required}: required for the {driver} driver")
    values: dict[str, object] = {"name": name, "driver": driver}
    for key, text in section.items():
        if key == "events":
            values[key] = tuple(text.split()) or ("*",)
        elif key in ("timeout", "backoff"):
            values[key] = _value(path, key, text, where)
        elif key == "attempts":
            if not text.strip().isdigit() or int(text) < 1:
                raise RootError(f"{path}: [{where}] attempts: expected a whole number >= 1, got {text!r}")
            values[key] = int(text)
        elif key != "driver":
            values[key] = text.strip()
    return Notifier(**values)  # type: ignore[arg-type]


def _value(path: Path, key: str, text: str, section: str = "handlers") -> object:
    if key == "pass_env":
        return tuple(text.split())
    if key == "output_limit":
        match = re.fullmatch(_SIZE, text.strip(), re.IGNORECASE)
        if match and int(match[1]) > 0:
            return int(match[1]) * _UNITS[match[2].upper()]
        raise RootError(f"{path}: [{section}] output_limit: expected bytes > 0 (like 64M), got {text!r}")
    try:
        seconds = float(text)
    except ValueError:
        seconds = math.nan
    if not (seconds > 0 and math.isfinite(seconds)):
        raise RootError(f"{path}: [{section}] {key}: expected seconds > 0, got {text!r}")
    return seconds
