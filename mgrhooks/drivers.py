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
  attempt (connecting, sending, the answer's status line and headers): a receiver that
  answers a byte at a time is cut off when it runs out (name resolution is the system's
  and not bounded).
* ``script``: runs ``program`` from ``addon/`` (vetted as handler programs are) with the
  record on stdin, for at most ``timeout`` seconds; exit status 0 is success.

Whatever goes wrong in a driver (a refused connection, an answer that is not HTTP, a TLS
failure, a reset, a bug) is a failed attempt, returned as one line (:func:`attempt`):
never an exception for the worker or the call.
"""

from __future__ import annotations

import os
import time
from typing import TYPE_CHECKING

if TYPE_CHECKING:  # the http driver's modules load when it is used, not with the log driver
    import http.client

    from .root import Root
    from .settings import Notifier
    from .spool import Delivery


def attempt(root: Root, notifier: Notifier, delivery: Delivery, timeout: float) -> str | None:
    """Try to deliver ``delivery.body`` once through ``notifier``'s driver (see the module
    docstring), for at most ``timeout`` seconds (the http and script drivers; the log
    driver writes one line and does not wait).

    :returns: ``None`` on success, else why not as one line (``HTTP 500 from URL``,
        ``cannot reach URL: ...``, ``cannot write PATH: ...``, the script's failure, an
        exception of the driver by its type and text); never raises (but for
        ``BaseException`` that is not an ``Exception``: an interrupt)
    """
    try:
        if notifier.driver == "log":
            error = _to_log(root, notifier, delivery)
        elif notifier.driver == "http":
            error = _to_http(notifier, delivery, timeout)
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


def _to_http(notifier: Notifier, delivery: Delivery, timeout: float) -> str | None:
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
    connection = _connection(parts.scheme, parts.hostname, parts.port, timeout)
    watchdog = _Watchdog(connection, timeout)
    try:
        connection.request("POST", target, delivery.body.encode(), headers)
        response = connection.getresponse()
        status, location = response.status, response.getheader("Location", "")
    except Exception as exc:  # noqa: BLE001 (any failure is the attempt's)
        if watchdog.fired:
            return f"no answer from {url} within {timeout:g}s (the attempt's timeout)"
        return f"cannot reach {url}: {_reason(exc)}"
    finally:
        watchdog.cancel()
        connection.close()
    if 200 <= status < 300:
        return None
    if 300 <= status < 400:
        return f"HTTP {status} from {url}: redirect to {location or '(no Location)'} not followed"
    return f"HTTP {status} from {url}"


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
    """Shuts the connection's socket down when the attempt's ``timeout`` runs out, so that a
    read or write blocked on a slow receiver returns at once (a socket timeout bounds each
    read alone). One timer thread per attempt; nothing shared between attempts."""

    def __init__(self, connection: http.client.HTTPConnection, timeout: float) -> None:
        import threading

        self.connection = connection
        self.fired = False
        self.deadline = time.monotonic() + timeout
        self.timer = threading.Timer(timeout, self._fire)
        self.timer.daemon = True
        self.timer.start()

    def _fire(self) -> None:
        import socket

        self.fired = True
        sock = self.connection.sock
        if sock is not None:
            try:
                socket.socket.shutdown(sock, socket.SHUT_RDWR)  # (the plain socket's: TLS state is left alone)
            except OSError:
                pass

    def cancel(self) -> None:
        self.timer.cancel()
        self.fired = self.fired or time.monotonic() >= self.deadline


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
