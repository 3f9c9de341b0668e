"""Root settings: ``etc/mgrhooks.conf``, an INI file read with the standard library.

.. code-block:: ini

    [handlers]
    timeout = 60          ; seconds a handler may run (a handler's timeout= overrides)
    kill_grace = 1        ; seconds between SIGTERM and SIGKILL
    drain_grace = 0.5     ; seconds to read stdout after the handler exited
    output_limit = 64M    ; bytes of stdout accepted (K, M, G suffixes)
    pass_env = HTTP_PROXY NO_PROXY   ; runner variables handed on to handlers

    [record]              ; record and replay (mgrhooks.record)
    handlers = samba.pl   ; handlers whose runs are recorded on every call (exec --record: all)
    keep = 50             ; recorded calls kept, the newest
    days = 30             ; days a recorded call is kept

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
holds a bad value is a :class:`SettingsError` (a :class:`~mgrhooks.errors.RootError`)
naming the file, the line and key, and what was expected. Every time in seconds is above
0 and at most :data:`MAX_SECONDS`, a day.

Annotations are evaluated, not postponed: see :mod:`mgrhooks.model`.
"""

import math
import re
from collections.abc import Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .errors import RootError

if TYPE_CHECKING:  # loaded only for roots that have the file
    import configparser

#: seconds a handler may run (our choice; a handler's timeout= and exec --timeout override)
DEFAULT_TIMEOUT = 60.0
#: seconds between SIGTERM and SIGKILL when a handler is stopped
KILL_GRACE = 1.0
#: seconds to keep reading stdout after the handler exited while a child of it holds it open
DRAIN_GRACE = 0.5
#: bytes of stdout accepted from one handler (64 MiB)
OUTPUT_LIMIT = 64 * 1024 * 1024
#: the longest time any setting, handler ``timeout=`` or ``exec --timeout`` may give: a day
#: (our choice: far beyond any call a panel waits for, and far within what the system can
#: wait: poll(2) takes at most 2**31-1 ms, 24.8 days; a socket timeout a time_t)
MAX_SECONDS = 86400.0
_SIZE = r"(\d+)\s*([KMG]?)B?"  # compiled on first use (re caches it)
_UNITS = {"": 1, "K": 1024, "M": 1024**2, "G": 1024**3}


class SettingsError(RootError):
    """A bad ``etc/mgrhooks.conf``: ``path``, ``line`` (1-based; 0 when unknown) and
    ``reason`` (``[handlers] timeout: expected ...``)."""

    def __init__(self, path: Path, line: int, reason: str) -> None:
        super().__init__(f"{path}: line {line}: {reason}" if line else f"{path}: {reason}")
        self.path = path
        self.line = line
        self.reason = reason


def seconds(text: str) -> float:
    """``text`` as a time in seconds: a number above 0 and at most :data:`MAX_SECONDS`.

    :raises ValueError: why not (``expected seconds > 0, got 'soon'``)
    """
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not value > 0:  # (NaN too)
        raise ValueError(f"expected seconds > 0, got {text!r}")
    if value > MAX_SECONDS:
        raise ValueError(f"expected at most {MAX_SECONDS:g} seconds (a day), got {text!r}")
    return value


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


class Record(NamedTuple):
    """The ``[record]`` section: the handlers recorded on every call (names), and how
    many recorded calls are kept (``keep``, the newest) for how long (``days``)."""

    handlers: tuple[str, ...] = ()
    keep: int = 50
    days: float = 30.0


class Settings(NamedTuple):
    """Limits for handler runs: ``timeout``, ``kill_grace`` and ``drain_grace`` in
    seconds, ``output_limit`` in bytes, ``pass_env`` the runner's variables handed on;
    the event notifiers, in file order; what is recorded (:class:`Record`)."""

    timeout: float = DEFAULT_TIMEOUT
    kill_grace: float = KILL_GRACE
    drain_grace: float = DRAIN_GRACE
    output_limit: int = OUTPUT_LIMIT
    pass_env: tuple[str, ...] = ()
    notifiers: tuple[Notifier, ...] = ()
    record: Record = Record()


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
        raise SettingsError(path, 0, str(exc)) from None
    import configparser  # only for roots that have the file

    parser = configparser.ConfigParser(inline_comment_prefixes=(";", "#"))
    try:
        parser.read_string(text, str(path))
    except configparser.Error as exc:
        raise SettingsError(path, *_unparsable(exc)) from None
    try:
        return _settings(path, parser)
    except _Bad as exc:
        section, key, reason = exc.args
        raise SettingsError(path, _line(text, section, key), reason) from None


def _unparsable(exc: "configparser.Error") -> tuple[int, str]:
    """``(line, reason)`` of configparser's error, in one line and without the file's path."""
    import configparser

    if isinstance(exc, configparser.MissingSectionHeaderError):
        return exc.lineno, f"File contains no section headers ({exc.line.strip()!r} before any [section])"
    if isinstance(exc, configparser.ParsingError):
        line, text = exc.errors[0]
        return line, f"cannot parse {text}: expected KEY = VALUE"  # (text is a repr already)
    reason = re.sub(r"^While reading from .*?\[line +\d+\]: ", "", str(exc).splitlines()[0])
    return getattr(exc, "lineno", None) or 0, reason


class _Bad(Exception):
    """A bad section or key: ``(section, key or "", reason)``; :func:`load_settings` finds its line."""


def _settings(path: Path, parser: "configparser.ConfigParser") -> Settings:
    for name in parser.sections():
        if name not in ("handlers", "record") and not name.startswith("notify."):
            raise _Bad(name, "", f"unknown section [{name}]; known: [handlers], [notify.NAME], [record]")
    section = parser["handlers"] if parser.has_section("handlers") else {}
    _known_keys("handlers", section, _HANDLER_KEYS)
    values: dict[str, object] = {key: _value(key, text) for key, text in section.items()}
    notifiers = tuple(
        _notifier(name[len("notify.") :], parser[name]) for name in parser.sections() if name.startswith("notify.")
    )
    record = _record(parser["record"]) if parser.has_section("record") else Record()
    return Settings(**values, notifiers=notifiers, record=record)  # type: ignore[arg-type]


def _record(section: Mapping[str, str]) -> Record:
    """The ``[record]`` section (see :class:`Record`)."""
    _known_keys("record", section, {"handlers", "keep", "days"})
    keep = section.get("keep", str(Record().keep)).strip()
    if not keep.isdigit() or int(keep) < 1:
        raise _Bad("record", "keep", f"[record] keep: expected a whole number >= 1, got {keep!r}")
    days = section.get("days", str(Record().days)).strip()
    try:
        number = float(days)
    except ValueError:
        number = math.nan
    if not number > 0:
        raise _Bad("record", "days", f"[record] days: expected a number of days > 0, got {days!r}")
    return Record(tuple(section.get("handlers", "").split()), int(keep), number)


def _line(text: str, section: str, key: str) -> int:
    """The line of ``key`` in ``[section]`` (of the section's header when ``key`` is empty
    or not found there), 0 when neither is found."""
    current, header = "", 0
    for number, line in enumerate(text.splitlines(), 1):
        stripped = line.strip()
        if stripped.startswith("[") and "]" in stripped:
            current = stripped[1 : stripped.index("]")].strip()
            header = number if current == section else header
        elif key and current == section and re.match(rf"{re.escape(key)}\s*[=:]", stripped, re.IGNORECASE):
            return number
    return header


def _known_keys(section: str, keys: Iterable[str], known: set[str]) -> None:
    unknown = sorted(set(keys) - known)
    if unknown:
        reason = f"[{section}] unknown key(s) {', '.join(unknown)}; known: {', '.join(sorted(known))}"
        raise _Bad(section, unknown[0], reason)


def _notifier(name: str, section: Mapping[str, str]) -> Notifier:
    where = f"notify.{name}"
    driver = section.get("driver", "")
    if driver not in _DRIVER_KEYS:
        raise _Bad(where, "driver", f"[{where}] driver: expected one of {', '.join(_DRIVER_KEYS)}, got {driver!r}")
    _known_keys(where, section, {"driver", "events"} | _DRIVER_KEYS[driver])
    required = {"log": "path", "http": "url", "script": "program"}[driver]
    if not section.get(required, "").strip() and driver != "log":
        raise _Bad(where, required, f"[{where}] {required}: required for the {driver} driver")
    values: dict[str, object] = {"name": name, "driver": driver}
    for key, text in section.items():
        if key == "events":
            values[key] = tuple(text.split()) or ("*",)
        elif key in ("timeout", "backoff"):
            values[key] = _value(key, text, where)
        elif key == "attempts":
            if not text.strip().isdigit() or int(text) < 1:
                raise _Bad(where, key, f"[{where}] attempts: expected a whole number >= 1, got {text!r}")
            values[key] = int(text)
        elif key != "driver":
            values[key] = text.strip()
    return Notifier(**values)  # type: ignore[arg-type]


def _value(key: str, text: str, section: str = "handlers") -> object:
    if key == "pass_env":
        return tuple(text.split())
    if key == "output_limit":
        match = re.fullmatch(_SIZE, text.strip(), re.IGNORECASE)
        if match and int(match[1]) > 0:
            return int(match[1]) * _UNITS[match[2].upper()]
        raise _Bad(section, key, f"[{section}] output_limit: expected bytes > 0 (like 64M), got {text!r}")
    try:
        return seconds(text)
    except ValueError as exc:
        raise _Bad(section, key, f"[{section}] {key}: {exc}") from None
