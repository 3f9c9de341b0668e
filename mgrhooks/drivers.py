"""The notification drivers: one attempt to deliver one record. I/O.

Drivers (``driver =`` in a ``[notify.NAME]`` section):

* ``log``: appends the record as one JSON line to ``path`` (relative to the root; default
  ``var/<mgr>.events.jsonl``), like Dovecot's debug-log driver.
* ``http``: POSTs the record (``application/json``) to ``url`` (``http://`` or
  ``https://``, the certificate checked against the system's authorities), HTTP basic
  authentication when ``user`` is set, and the headers ``X-Mgrhooks-Event`` and
  ``X-Mgrhooks-Id`` (the record id: receivers use it to drop duplicates, as delivery is at
  least once). Any 2xx status is success. A 3xx is a failure naming its ``Location``:
  redirects are not followed, so the record and the credentials go to ``url`` alone
  (our choice, as Stripe's and GitHub's webhooks do). ``timeout`` bounds the whole
  attempt (connecting, sending, the answer's status line and headers, and its body when
  it is read to keep the connection; the status alone decides): a receiver that
  answers a byte at a time is cut off when it runs out (name resolution is the system's
  and not bounded). Given :class:`Connections` (a worker's pass, a central worker's
  thread), the connection to an endpoint is kept alive for the next attempt, as HTTP/1.1
  allows; a kept connection that turns out closed by the receiver (a reset, or closed
  before any answer) is replaced by a new one within the same attempt, sending the record
  again (our choice, as at least once allows).
* ``script``: runs ``program`` from ``addon/`` (vetted as handler programs are) with the
  record on stdin, for at most ``timeout`` seconds; exit status 0 is success.

Whatever goes wrong in a driver (a refused connection, an answer that is not HTTP, a TLS
failure, a reset, a bug) is a failed attempt, returned as one line (:func:`attempt`):
never an exception for the worker or the call.
"""

from __future__ import annotations

import contextlib
import os
import time
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:  # the http driver's modules load when it is used, not with the log driver
    import http.client

    from .root import Root
    from .settings import Notifier
    from .spool import Delivery


#: the longest answer body read to keep a connection alive (a longer one: the connection is closed)
KEPT_BODY = 65536
_Endpoint = tuple[str, str, "int | None"]


class Connections:
    """Keep-alive HTTP connections for a series of attempts, one per endpoint (scheme, host,
    port), each taken by an attempt and given back once its answer was read whole, and the
    watchdog of their deadlines; closed with :meth:`close` (or the ``with`` block). Not for
    sharing between threads: one per thread."""

    def __init__(self) -> None:
        self.kept: dict[_Endpoint, http.client.HTTPConnection] = {}
        self.watchdog = _Watchdog()

    def take(self, endpoint: _Endpoint) -> http.client.HTTPConnection | None:
        return self.kept.pop(endpoint, None)

    def give_back(self, endpoint: _Endpoint, connection: http.client.HTTPConnection) -> None:
        self.kept[endpoint] = connection  # (the attempt took the one kept: at most one each)

    def close(self) -> None:
        for connection in self.kept.values():
            connection.close()
        self.kept.clear()
        self.watchdog.close()

    def __enter__(self) -> Connections:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()


def attempt(
    root: Root, notifier: Notifier, delivery: Delivery, timeout: float, connections: Connections | None = None
) -> str | None:
    """Try to deliver ``delivery.body`` once through ``notifier``'s driver (see the module
    docstring), for at most ``timeout`` seconds (the http and script drivers; the log
    driver writes one line and does not wait); ``connections``: the http driver's kept
    connections (default: a connection for this attempt alone).

    :returns: ``None`` on success, else why not as one line (``HTTP 500 from URL``,
        ``cannot reach URL: ...``, ``cannot write PATH: ...``, the script's failure, an
        exception of the driver by its type and text); never raises (but for
        ``BaseException`` that is not an ``Exception``: an interrupt)
    """
    try:
        if notifier.driver == "log":
            error = _to_log(root, notifier, delivery)
        elif notifier.driver == "http":
            error = _to_http(notifier, delivery, timeout, connections)
        else:
            error = _to_script(root, notifier, delivery, timeout)
    except Exception as exc:  # noqa: BLE001 (any failure of a driver is a failed attempt)
        error = f"{notifier.driver} driver failed: {type(exc).__name__}: {exc}"
    return None if error is None else " ".join(error.split())  # one line, whatever a receiver sent


def _to_log(root: Root, notifier: Notifier, delivery: Delivery) -> str | None:
    path = root.path / (notifier.path or f"var/{root.mgr}.events.jsonl")
    try:
        path.parent.mkdir(parents=True, exist_ok=True)
        descriptor = os.open(path, os.O_WRONLY | os.O_APPEND | os.O_CREAT, 0o640)
        try:
            os.write(descriptor, delivery.body.encode() + b"\n")  # one write: lines never interleave
        finally:
            os.close(descriptor)
    except OSError as exc:
        return f"cannot write {path}: {exc.strerror}"
    return None


def _to_http(notifier: Notifier, delivery: Delivery, timeout: float, connections: Connections | None) -> str | None:
    import base64
    from urllib.parse import urlsplit

    url = notifier.url
    parts = urlsplit(url)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        return f"cannot deliver to {url}: not an http:// or https:// URL"
    headers = {
        "Content-Type": "application/json",
        "X-Mgrhooks-Event": delivery.event,
        "X-Mgrhooks-Id": delivery.record,
    }
    if notifier.user:
        token = base64.b64encode(f"{notifier.user}:{notifier.password}".encode()).decode()
        headers["Authorization"] = f"Basic {token}"
    target = (parts.path or "/") + (f"?{parts.query}" if parts.query else "")
    endpoint = (parts.scheme, parts.hostname, parts.port)
    with Connections() if connections is None else contextlib.nullcontext(connections) as using:
        return _post(using, url, endpoint, target, delivery.body.encode(), headers, timeout)


def _post(
    connections: Connections,
    url: str,
    endpoint: _Endpoint,
    target: str,
    body: bytes,
    headers: dict[str, str],
    timeout: float,
) -> str | None:
    """POST ``body`` to ``url`` (at ``endpoint``: scheme, host, port) on a kept connection
    (or a new one, also when the receiver had closed the kept one), within ``timeout``
    seconds; :returns: the failure, if any."""
    deadline = time.monotonic() + timeout
    kept = connections.take(endpoint)
    if kept is not None:
        answer = _exchange(connections.watchdog, kept, target, body, headers, deadline)
        if not (isinstance(answer, Exception) and _closed_by_peer(answer)):
            return _outcome(answer, url, timeout, endpoint, kept, connections)
        kept.close()  # the receiver had closed it: a new one, within the same deadline
    connection = _connection(*endpoint, max(0.0, deadline - time.monotonic()))
    answer = _exchange(connections.watchdog, connection, target, body, headers, deadline)
    return _outcome(answer, url, timeout, endpoint, connection, connections)


class _Answer(NamedTuple):
    status: int
    location: str
    reusable: bool


def _exchange(
    watchdog: _Watchdog,
    connection: http.client.HTTPConnection,
    target: str,
    body: bytes,
    headers: dict[str, str],
    deadline: float,
) -> _Answer | Exception:
    """POST ``body`` on ``connection`` and read the answer, by ``deadline`` (monotonic
    seconds); :returns: the answer, or the exception that ended the exchange
    (:class:`_Late`: the deadline ran out)."""
    left = deadline - time.monotonic()
    if left <= 0:
        return _Late()
    connection.timeout = left
    if connection.sock is not None:
        connection.sock.settimeout(left)
    watchdog.arm(connection, deadline)
    try:
        try:
            if connection.sock is None:
                connection.connect()
                _no_delay(connection)
            connection.request("POST", target, body, headers)
            response = connection.getresponse()
        except Exception as exc:  # noqa: BLE001 (any failure is the attempt's)
            late = watchdog.disarm() or time.monotonic() >= deadline
            return _Late() if late else exc
        reusable = not response.will_close and _drained(response)
    finally:
        fired = watchdog.disarm()
    return _Answer(response.status, response.getheader("Location", "") or "", reusable and not fired)


def _drained(response: http.client.HTTPResponse) -> bool:
    """Whether the answer's body was read whole (at most :data:`KEPT_BODY`), so that its
    connection can take the next request. The status decided the attempt: a body that
    cannot be read costs the connection, not the attempt."""
    try:
        answered = response.read(KEPT_BODY + 1)
    except Exception:  # noqa: BLE001 (the connection is closed instead of kept)
        return False
    return response.isclosed() and len(answered) <= KEPT_BODY


def _no_delay(connection: http.client.HTTPConnection) -> None:
    """Send each write at once (``TCP_NODELAY``, as urllib3 does): http.client writes a
    request's head and body apart, and on a kept connection Nagle's algorithm would hold
    the body until the receiver acknowledged the head, which it may delay."""
    import socket

    connection.sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)


class _Late(Exception):
    """The attempt's deadline ran out."""


def _closed_by_peer(exc: Exception) -> bool:
    """Whether ``exc`` is what a kept connection the receiver had closed gives: a reset, a
    broken pipe, or the connection closed before an answer (``RemoteDisconnected``, a
    :class:`ConnectionResetError`; TLS's end of file)."""
    import ssl

    return isinstance(exc, ConnectionResetError | BrokenPipeError | ConnectionAbortedError | ssl.SSLEOFError)


def _outcome(
    answer: _Answer | Exception,
    url: str,
    timeout: float,
    endpoint: _Endpoint,
    connection: http.client.HTTPConnection,
    connections: Connections,
) -> str | None:
    """The attempt's failure (``None``: delivered); the connection kept when it can be."""
    if isinstance(answer, _Answer) and answer.reusable:
        connections.give_back(endpoint, connection)
    else:
        connection.close()
    if isinstance(answer, _Late):
        return f"no answer from {url} within {timeout:g}s (the attempt's timeout)"
    if isinstance(answer, Exception):
        return f"cannot reach {url}: {_reason(answer)}"
    if 200 <= answer.status < 300:
        return None
    if 300 <= answer.status < 400:
        return f"HTTP {answer.status} from {url}: redirect to {answer.location or '(no Location)'} not followed"
    return f"HTTP {answer.status} from {url}"


def _connection(scheme: str, host: str, port: int | None, timeout: float) -> http.client.HTTPConnection:
    import http.client

    if scheme == "https":
        import ssl

        return http.client.HTTPSConnection(host, port, timeout=timeout, context=ssl.create_default_context())
    return http.client.HTTPConnection(host, port, timeout=timeout)


def _reason(exc: Exception) -> str:
    text = str(getattr(exc, "reason", "") or exc) or type(exc).__name__
    return text if type(exc).__name__ in text else f"{type(exc).__name__}: {text}"


class _Watchdog:
    """Shuts the socket of the connection it watches down when that attempt's deadline
    passes, so that a read or write blocked on a slow receiver returns at once (a socket
    timeout bounds each read alone). One thread for a series of attempts (those of a
    :class:`Connections`), watching one at a time: it sleeps until the deadline it was
    given and is woken only for an earlier one (arming it costs no thread, nor a wake-up
    for attempts of one timeout)."""

    def __init__(self) -> None:
        import threading

        self.condition = threading.Condition()
        self.watched: tuple[http.client.HTTPConnection, float] | None = None  # (connection, deadline)
        self.fired = False
        self.waking: float | None = None  # when the thread wakes next; None: when armed
        self.closed = False
        self.thread: threading.Thread | None = None

    def arm(self, connection: http.client.HTTPConnection, deadline: float) -> None:
        """Watch ``connection`` until ``deadline`` (:func:`time.monotonic` seconds)."""
        import threading

        with self.condition:
            self.watched, self.fired = (connection, deadline), False
            if self.thread is None:
                self.thread = threading.Thread(target=self._run, name="mgrhooks-watchdog", daemon=True)
                self.thread.start()
            elif self.waking is None or deadline < self.waking:
                self.condition.notify()

    def disarm(self) -> bool:
        """Stop watching; :returns: whether the deadline had passed (the socket was shut)."""
        with self.condition:
            self.watched = None
            return self.fired

    def _run(self) -> None:
        with self.condition:
            while not self.closed:
                if self.watched is None:
                    self.waking = None
                    self.condition.wait()
                    continue
                connection, deadline = self.watched
                left = deadline - time.monotonic()
                if left > 0:
                    self.waking = deadline
                    self.condition.wait(left)
                    continue
                self.watched, self.fired = None, True
                _shut(connection)

    def close(self) -> None:
        with self.condition:
            self.closed = True
            self.condition.notify()
        if self.thread is not None:
            self.thread.join()


def _shut(connection: http.client.HTTPConnection) -> None:
    import socket

    sock = connection.sock
    if sock is not None:
        try:
            socket.socket.shutdown(sock, socket.SHUT_RDWR)  # (the plain socket's: TLS state is left alone)
        except OSError:
            pass


def _to_script(root: Root, notifier: Notifier, delivery: Delivery, timeout: float) -> str | None:
    from .env import DEFAULT_PATH
    from .process import Processes
    from .process.runner import RunRequest
    from .programs import inspect

    program = inspect(root.addon_dir, notifier.program)
    if program.path is None:
        return "; ".join(program.errors)
    env = {
        "PATH": os.environ.get("PATH", DEFAULT_PATH),
        "MGR": root.mgr,
        "MGRHOOKS_ROOT": str(root.path),
        "MGRHOOKS_EVENT": delivery.event,
        "MGRHOOKS_EVENT_ID": delivery.record,
    }
    request = RunRequest((str(program.path),), str(root.path), env, delivery.body.encode(), timeout)
    with Processes(guard=False) as processes:
        outcome = processes.run(request)
    return None if outcome.ok else f"{program.shown}: {outcome.reason}"
