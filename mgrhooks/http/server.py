"""``mgrhooks serve``: uvicorn serving the panel's ASGI app. I/O.

HTTPS on ``[serve] listen`` (``0.0.0.0:1500``) by default, with the certificate of
:mod:`~mgrhooks.http.tls`; ``plain``: HTTP (behind nginx, or on loopback); ``uds``: a unix
socket instead of TCP. uvicorn (h11) parses HTTP, does TLS and keeps connections. Slow
clients cannot hold the server: a connection idle for 5 s between requests is closed
(``timeout_keep_alive``), one that has not sent a whole request head within ``[serve]
read_timeout`` seconds of opening or of its last answer too (:class:`_Protocol`), and the
app reads a body within the same time (408 beyond); none of them holds a call's turn. The
startup line names the URL, on stderr, once the socket listens.

SIGTERM (or SIGINT): the listening socket is closed and idle connections with it;
running calls get ``[serve] grace`` seconds to finish and answer (their final stages
too); then their handler trees are killed and the process exits 0 with nothing left
running (:meth:`mgrhooks.http.resident.Resident.stop`).

SIGHUP, ``mgrctl exit`` and ``mgrctl -R`` (the local socket) reload the serve
(:func:`reload`): the ``[serve]`` settings read anew, the kept handler processes dropped;
logged in the panel log.
"""

from __future__ import annotations

import asyncio
import contextlib
import math
import os
import signal
import sys
from collections.abc import Awaitable, Callable, Iterator
from typing import TYPE_CHECKING

import uvicorn
from uvicorn.protocols.http.h11_impl import H11Protocol

from .. import logs
from ..errors import MgrhooksError
from ..printable import printable
from ..settings import listen_address
from .app import App, Decider, Settings
from .local import serve_local
from .resident import AFTER_KILL, Busy, Resident

if TYPE_CHECKING:
    from ..api import Panel
    from ..settings import Serve

#: seconds a connection may stay idle between two requests (uvicorn's timeout_keep_alive)
KEEP_ALIVE = 5


def default_gate(panel: Panel, serve: Serve, https: bool) -> Decider:
    """The :class:`~mgrhooks.http.auth.Gate` of ``panel``'s root on the built-in core's
    users, sessions lapsing after ``[serve] session_idle`` seconds, the session cookie
    ``Secure`` over ``https``."""
    from ..functions import builtin_core
    from .auth import CoreUsers, Gate

    users = CoreUsers(builtin_core(panel.root))
    return Gate(panel.root, users, session_idle=serve.session_idle, secure_cookies=https)


def run(
    panel: Panel,
    gate: Decider | None = None,
    *,
    listen: str | None = None,
    plain: bool = False,
    uds: str | None = None,
    echo: bool = False,
) -> None:
    """Serve ``panel`` until SIGTERM or SIGINT, ``gate`` deciding who calls (``None``:
    :func:`default_gate`; an application may give its own).

    :param listen: ``HOST:PORT`` (``None``: ``[serve] listen``); port 0 takes a free one
        (the startup line names it)
    :param plain: HTTP instead of HTTPS
    :param uds: a unix socket's path instead of ``listen``
    :param echo: also write the log lines (the access lines among them) on stderr
    :raises RootError: the root's settings are broken, the certificate cannot be had
    :raises UsageError: ``listen`` is not ``HOST:PORT``
    """
    serve = panel.root.settings().serve
    host, port = _address(listen or serve.listen)
    cert = key = None
    if not plain:
        from .tls import pair

        cert_path, key_path = pair(panel.root, serve)
        cert, key = str(cert_path), str(key_path)
    if gate is None:
        gate = default_gate(panel, serve, https=not plain)
    with panel.logging(echo):  # the access lines' target (each call opens its own)
        asyncio.run(_serve(panel, gate, serve, host, port, uds, cert, key))


def _address(listen: str) -> tuple[str, int]:
    from ..errors import UsageError

    try:
        return listen_address(listen)
    except ValueError as exc:
        raise UsageError(f"--listen: {exc}") from None


async def _serve(
    panel: Panel,
    gate: Decider,
    serve: Serve,
    host: str,
    port: int,
    uds: str | None,
    cert: str | None,
    key: str | None,
) -> None:
    resident = Resident(panel, serve)
    settings = Settings(serve.max_body, serve.read_timeout, serve.trusted_proxies)
    app = App(resident, gate, settings, panel.root.mgr, https=cert is not None)
    config = uvicorn.Config(
        app,
        host=host,
        port=port,
        uds=uds,
        ssl_certfile=cert,
        ssl_keyfile=key,
        http=type("Protocol", (_Protocol,), {"head_timeout": serve.read_timeout}),
        loop="asyncio",
        lifespan="off",
        log_config=None,
        access_log=False,
        proxy_headers=False,  # X-Forwarded-For from trusted proxies only: mgrhooks.http.contract
        server_header=False,
        timeout_keep_alive=KEEP_ALIVE,
        timeout_graceful_shutdown=math.ceil(serve.grace + AFTER_KILL),
    )
    server = _Server(config, resident, serve.grace, panel.root.mgr)

    async def reloading() -> None:
        await reload(resident, app, server)

    server.reload = reloading
    # the local socket of sbin/mgrctl and `mgrhooks exec`, beside uvicorn in this event
    # loop until serve() returns (a call it takes while the resident stops runs in-process)
    async with serve_local(panel.root, resident, reload=reloading, busy=(Busy,)):
        await server.serve()


async def reload(resident: Resident, app: App, server: _Server) -> None:
    """Reload the serve (:meth:`Resident.reload <mgrhooks.http.resident.Resident.reload>`)
    and give the front and the stop the settings now in force (``max_body``,
    ``trusted_proxies``, ``grace``). :raises RootError: ``etc/mgrhooks.conf`` is broken"""
    serve = (await resident.reload()).serve
    app.settings = app.settings._replace(max_body=serve.max_body, trusted_proxies=serve.trusted_proxies)
    server.grace = serve.grace


class _Protocol(H11Protocol):
    """uvicorn's h11 protocol with a deadline on each request head: a connection that has
    not sent a whole request head ``head_timeout`` seconds after it opened (or after its
    last answer) is closed (a slowloris client holds nothing for long)."""

    head_timeout = 30.0
    _head_timer: asyncio.TimerHandle | None = None

    def connection_made(self, transport: asyncio.Transport) -> None:  # type: ignore[override]
        super().connection_made(transport)
        self._arm(None)

    def connection_lost(self, exc: Exception | None) -> None:
        super().connection_lost(exc)
        self._arm(None, again=False)

    def on_response_complete(self) -> None:
        answered = self.cycle
        super().on_response_complete()
        self._arm(answered)

    def _arm(self, cycle: object, again: bool = True) -> None:
        # one deadline a connection: the previous one is cancelled (which drops the answered
        # request it held); left to run out, each request's was kept 30 s, and with it its
        # request cycle: ~12,000 of them at 400 requests/s (bench row "serve peak memory")
        if self._head_timer is not None:
            self._head_timer.cancel()
        self._head_timer = self.loop.call_later(self.head_timeout, self._head_due, cycle) if again else None

    def _head_due(self, cycle: object) -> None:
        if self.cycle is cycle and not self.transport.is_closing():  # no request head came since
            self.transport.close()


class _Server(uvicorn.Server):
    """uvicorn's server with the startup line, the resident's stop in its shutdown, and
    signals that end the process with status 0 (uvicorn raises a caught SIGTERM again)."""

    def __init__(self, config: uvicorn.Config, resident: Resident, grace: float, mgr: str) -> None:
        super().__init__(config)
        self.resident = resident
        self.grace = grace
        self.mgr = mgr
        #: what SIGHUP runs (:func:`reload`); ``None``: SIGHUP is ignored
        self.reload: Callable[[], Awaitable[None]] | None = None
        self._reloads: set[asyncio.Task[None]] = set()

    async def startup(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        await super().startup(sockets)  # type: ignore[arg-type]
        if self.started:
            _say(f"mgrhooks serve: {self._url()}/{self.mgr} (SIGTERM stops it, {self.grace:g}s grace)")

    def _url(self) -> str:
        config = self.config
        scheme = "https" if config.ssl else "http"
        if config.uds is not None:
            return f"{scheme}+unix://{config.uds}:"
        port = self.servers[0].sockets[0].getsockname()[1] if config.port == 0 else config.port
        host = f"[{config.host}]" if ":" in config.host else config.host
        return f"{scheme}://{host}:{port}"

    async def shutdown(self, sockets: list[object] | None = None) -> None:  # type: ignore[override]
        # the resident's grace runs beside uvicorn's wait for the open requests, which lasts
        # longer (timeout_graceful_shutdown): a call whose handlers were killed still answers
        # (its error document) instead of being cancelled into a bare 500
        stopping = asyncio.ensure_future(self.resident.stop(self.grace))
        await super().shutdown(sockets)  # type: ignore[arg-type]
        await stopping

    @contextlib.contextmanager
    def capture_signals(self) -> Iterator[None]:
        """SIGTERM and SIGINT start the shutdown (a second SIGINT forces it); SIGHUP
        reloads (what operators expect of a daemon; our choice, docs/http.md)."""
        original = {sig: signal.signal(sig, self.handle_exit) for sig in (signal.SIGINT, signal.SIGTERM)}
        loop = asyncio.get_running_loop()
        loop.add_signal_handler(signal.SIGHUP, self._hangup)
        try:
            yield
        finally:
            loop.remove_signal_handler(signal.SIGHUP)
            for sig, handler in original.items():
                signal.signal(sig, handler)

    def _hangup(self) -> None:
        if self.reload is None or self.should_exit:
            return
        task = asyncio.ensure_future(self._reload(self.reload))
        self._reloads.add(task)
        task.add_done_callback(self._reloads.discard)

    async def _reload(self, reload: Callable[[], Awaitable[None]]) -> None:
        try:
            await reload()
        except MgrhooksError as exc:
            logs.ACTION.error("SIGHUP: resident panel (pid %d): not reloaded: %s", os.getpid(), exc)
        else:
            logs.ACTION.info("SIGHUP: resident panel (pid %d): reloaded", os.getpid())


def _say(line: str) -> None:
    sys.stderr.write(printable(line) + "\n")
    sys.stderr.flush()
