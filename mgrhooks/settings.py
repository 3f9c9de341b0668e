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

    [serve]               ; mgrhooks serve (mgrhooks.http), read when it starts
    listen = 0.0.0.0:1500 ; HOST:PORT (--listen overrides)
    cert = etc/mgrhooks.crt   ; the TLS certificate and key (PEM, relative to the root);
    key = etc/mgrhooks.key    ; default: a self-signed pair made on first start there
    max_body = 10M        ; bytes of a request body accepted (413 beyond)
    concurrency = 16      ; calls run at once
    queue_wait = 5        ; seconds a call beyond them waits for a turn (then 503)
    retry_after = 1       ; seconds the 503 tells the client to wait (Retry-After)
    read_timeout = 30     ; seconds to read a request body (408 beyond)
    grace = 30            ; seconds running calls get to finish on SIGTERM
    trusted_proxies = 127.0.0.1   ; whose X-Forwarded-For is believed (default: nobody's)
    session_idle = 3600   ; seconds a session lives without requests

    [spool]               ; the event records' spool (mgrhooks.spool)
    days = 7              ; days a delivered (or dropped) delivery is kept, then purged

    [relay]               ; central delivery on Celery (mgrhooks.relay, mgrhooks.central)
    engine = celery       ; the only engine
    broker_url = amqp://mgrhooks:secret@mq.example.com:5672/mgrhooks   ; or redis://HOST:6379/0
    notifiers = crm       ; [notify.NAME] sections relayed to the broker (the others stay local)
    queue = mgrhooks      ; the broker's queue (its dead letters: QUEUE.dead)
    delivery_limit = 10   ; RabbitMQ: deliveries of one message before it is dead-lettered

    [notify.audit]        ; an event notifier (see mgrhooks.notify): one section each
    driver = log          ; log | http | script
    path = var/events.jsonl
    events = user.*       ; which functions (shell patterns; default: every change)

    [notify.crm]
    driver = http
    url = http://127.0.0.1:8080/hook
    timeout = 2           ; seconds the whole attempt may take
    attempts = 5          ; before the record goes to the dead letters
    backoff = 1           ; seconds before the second attempt, doubled after each failure
    max_backoff = 3600    ; the longest wait between attempts (default: a day)
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
    records go. ``events`` are shell patterns of functions; ``timeout`` is the seconds a
    whole attempt may take, ``backoff`` seconds before the second attempt (doubled after each failure),
    ``attempts`` how many before the dead letters, ``max_backoff`` the longest wait
    between two attempts, in seconds."""

    name: str
    driver: str
    events: tuple[str, ...] = ("*",)
    path: str = ""
    url: str = ""
    program: str = ""
    timeout: float = 2.0
    attempts: int = 5
    backoff: float = 1.0
    max_backoff: float = MAX_SECONDS
    user: str = ""
    password: str = ""


class Record(NamedTuple):
    """The ``[record]`` section: the handlers recorded on every call (names), and how
    many recorded calls are kept (``keep``, the newest) for how long (``days``)."""

    handlers: tuple[str, ...] = ()
    keep: int = 50
    days: float = 30.0


class Serve(NamedTuple):
    """The ``[serve]`` section (``mgrhooks serve``, :mod:`mgrhooks.http`). Times in
    seconds, sizes in bytes; ``cert``/``key`` relative to the root (``""``: the
    self-signed pair under ``etc/``); ``trusted_proxies`` addresses or networks (and
    ``unix`` for peers on the unix socket) whose ``X-Forwarded-For`` is believed.
    Defaults are our choice (docs/http.md)."""

    listen: str = "0.0.0.0:1500"
    cert: str = ""
    key: str = ""
    max_body: int = 10 * 1024 * 1024
    concurrency: int = 16
    queue_wait: float = 5.0
    retry_after: float = 1.0
    read_timeout: float = 30.0
    grace: float = 30.0
    trusted_proxies: tuple[str, ...] = ()
    session_idle: float = 3600.0


class Relay(NamedTuple):
    """The ``[relay]`` section: ``engine`` (``celery``; empty: no relay), the broker
    (``broker_url``: ``amqp://``, ``pyamqp://`` or ``redis://``/``rediss://``), the names of
    the notifiers whose deliveries go to it, the ``queue`` (its dead letters in
    ``QUEUE.dead``) and, on RabbitMQ, the ``delivery_limit`` after which a message that
    keeps coming back (workers dying on it) is dead-lettered by the broker. On a panel the
    relayed ``[notify.NAME]`` sections choose the ``events``; on the central root they say
    where and how records are delivered (docs/notifications.md)."""

    engine: str = ""
    broker_url: str = ""
    notifiers: tuple[str, ...] = ()
    queue: str = "mgrhooks"
    delivery_limit: int = 10


class Settings(NamedTuple):
    """Limits for handler runs: ``timeout``, ``kill_grace`` and ``drain_grace`` in
    seconds, ``output_limit`` in bytes, ``pass_env`` the runner's variables handed on;
    the event notifiers, in file order; what is recorded (:class:`Record`); how
    ``mgrhooks serve`` serves (:class:`Serve`); the days a delivered or dropped delivery
    is kept in the spool (``[spool] days``; our choice: a week, to look at and to drop
    duplicates by)."""

    timeout: float = DEFAULT_TIMEOUT
    kill_grace: float = KILL_GRACE
    drain_grace: float = DRAIN_GRACE
    output_limit: int = OUTPUT_LIMIT
    pass_env: tuple[str, ...] = ()
    notifiers: tuple[Notifier, ...] = ()
    record: Record = Record()
    serve: Serve = Serve()
    spool_days: float = 7.0
    relay: Relay = Relay()


_HANDLER_KEYS = {"timeout", "kill_grace", "drain_grace", "output_limit", "pass_env"}
_DRIVER_KEYS = {
    "log": {"path"},
    "http": {"url", "timeout", "attempts", "backoff", "max_backoff", "user", "password"},
    "script": {"program", "timeout", "attempts", "backoff", "max_backoff"},
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
        if name not in ("handlers", "record", "relay", "serve", "spool") and not name.startswith("notify."):
            known = "[handlers], [notify.NAME], [record], [relay], [serve], [spool]"
            raise _Bad(name, "", f"unknown section [{name}]; known: {known}")
    section = parser["handlers"] if parser.has_section("handlers") else {}
    _known_keys("handlers", section, _HANDLER_KEYS)
    values: dict[str, object] = {key: _value(key, text) for key, text in section.items()}
    notifiers = tuple(
        _notifier(name[len("notify.") :], parser[name]) for name in parser.sections() if name.startswith("notify.")
    )
    record = _record(parser["record"]) if parser.has_section("record") else Record()
    serve = _serve(parser["serve"]) if parser.has_section("serve") else Serve()
    spool = parser["spool"] if parser.has_section("spool") else {}
    _known_keys("spool", spool, {"days"})
    values["spool_days"] = _days("spool", spool.get("days", str(Settings().spool_days)))
    relay = _relay(parser["relay"], {n.name for n in notifiers}) if parser.has_section("relay") else Relay()
    return Settings(**values, notifiers=notifiers, record=record, serve=serve, relay=relay)  # type: ignore[arg-type]


_BROKERS = ("amqp", "pyamqp", "redis", "rediss")


def _relay(section: Mapping[str, str], names: set[str]) -> Relay:
    """The ``[relay]`` section (see :class:`Relay`)."""
    _known_keys("relay", section, set(Relay._fields))
    engine = section.get("engine", "").strip()
    if engine != "celery":
        raise _Bad("relay", "engine", f"[relay] engine: expected celery, got {engine!r}")
    url = section.get("broker_url", "").strip()
    if url.partition("://")[0] not in _BROKERS or not url.partition("://")[2]:
        schemes = ", ".join(f"{scheme}://" for scheme in _BROKERS)
        raise _Bad("relay", "broker_url", f"[relay] broker_url: expected a URL starting {schemes}, got {url!r}")
    relayed = tuple(section.get("notifiers", "").split())
    unknown = [name for name in relayed if name not in names]
    if unknown:
        reason = f"[relay] notifiers: no [notify.{unknown[0]}] section (relayed notifiers need one for their events)"
        raise _Bad("relay", "notifiers", reason)
    queue = section.get("queue", Relay().queue).strip()
    if not re.fullmatch(r"[A-Za-z0-9_.:-]{1,200}", queue):
        raise _Bad("relay", "queue", f"[relay] queue: expected letters, digits and _.:- (at most 200), got {queue!r}")
    limit = section.get("delivery_limit", str(Relay().delivery_limit)).strip()
    if not limit.isdigit() or int(limit) < 1:
        raise _Bad("relay", "delivery_limit", f"[relay] delivery_limit: expected a whole number >= 1, got {limit!r}")
    return Relay(engine, url, relayed, queue, int(limit))


def _serve(section: Mapping[str, str]) -> Serve:
    """The ``[serve]`` section (see :class:`Serve`)."""
    _known_keys("serve", section, set(Serve._fields))
    values: dict[str, object] = {}
    for key, text in section.items():
        if key == "listen":
            values[key] = _listen(text)
        elif key in ("cert", "key"):
            values[key] = text.strip()
        elif key == "max_body":
            values[key] = _size("serve", key, text)
        elif key == "concurrency":
            if not text.strip().isdigit() or not 1 <= int(text) <= 1024:
                raise _Bad("serve", key, f"[serve] concurrency: expected a whole number from 1 to 1024, got {text!r}")
            values[key] = int(text)
        elif key == "trusted_proxies":
            values[key] = _proxies(text)
        else:
            values[key] = _value(key, text, "serve")
    if bool(values.get("cert")) != bool(values.get("key")):
        missing = "key" if values.get("cert") else "cert"
        raise _Bad("serve", missing, f"[serve] {missing}: cert and key go together (give both, or neither)")
    return Serve(**values)  # type: ignore[arg-type]


def listen_address(text: str) -> tuple[str, int]:
    """``HOST:PORT`` (``[::1]:1500`` for IPv6) as ``(host, port)``.

    :raises ValueError: why not (``expected HOST:PORT with a port 0-65535, got 'x'``)
    """
    host, colon, port = text.strip().rpartition(":")
    host = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    if not colon or not host or not port.isdigit() or int(port) > 65535:
        raise ValueError(f"expected HOST:PORT with a port 0-65535, got {text!r}")
    return host, int(port)


def _listen(text: str) -> str:
    try:
        listen_address(text)
    except ValueError as exc:
        raise _Bad("serve", "listen", f"[serve] listen: {exc}") from None
    return text.strip()


def _proxies(text: str) -> tuple[str, ...]:
    """Addresses or networks (``10.0.0.0/8``), or ``unix``. :raises _Bad: one is neither"""
    import ipaddress

    for item in text.split():
        if item != "unix":
            try:
                ipaddress.ip_network(item, strict=False)
            except ValueError:
                reason = f"[serve] trusted_proxies: expected addresses or networks (or unix), got {item!r}"
                raise _Bad("serve", "trusted_proxies", reason) from None
    return tuple(text.split())


def _record(section: Mapping[str, str]) -> Record:
    """The ``[record]`` section (see :class:`Record`)."""
    _known_keys("record", section, {"handlers", "keep", "days"})
    keep = section.get("keep", str(Record().keep)).strip()
    if not keep.isdigit() or int(keep) < 1:
        raise _Bad("record", "keep", f"[record] keep: expected a whole number >= 1, got {keep!r}")
    days = _days("record", section.get("days", str(Record().days)))
    return Record(tuple(section.get("handlers", "").split()), int(keep), days)


def _days(section: str, text: str) -> float:
    """``[section] days``: a number of days above 0."""
    try:
        number = float(text.strip())
    except ValueError:
        number = math.nan
    if not number > 0:
        raise _Bad(section, "days", f"[{section}] days: expected a number of days > 0, got {text.strip()!r}")
    return number


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
        elif key in ("timeout", "backoff", "max_backoff"):
            values[key] = _value(key, text, where)
        elif key == "attempts":
            if not text.strip().isdigit() or int(text) < 1:
                raise _Bad(where, key, f"[{where}] attempts: expected a whole number >= 1, got {text!r}")
            values[key] = int(text)
        elif key != "driver":
            values[key] = text.strip()
    return Notifier(**values)  # type: ignore[arg-type]


def _size(section: str, key: str, text: str) -> int:
    """Bytes, with a K, M or G suffix. :raises _Bad: not a size above 0"""
    match = re.fullmatch(_SIZE, text.strip(), re.IGNORECASE)
    if match and int(match[1]) > 0:
        return int(match[1]) * _UNITS[match[2].upper()]
    raise _Bad(section, key, f"[{section}] {key}: expected bytes > 0 (like 64M), got {text!r}")


def _value(key: str, text: str, section: str = "handlers") -> object:
    if key == "pass_env":
        return tuple(text.split())
    if key == "output_limit":
        return _size(section, key, text)
    try:
        return seconds(text)
    except ValueError as exc:
        raise _Bad(section, key, f"[{section}] {key}: {exc}") from None
