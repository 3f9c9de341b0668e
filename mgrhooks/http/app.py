"""The ASGI application of ``mgrhooks serve`` (no framework). I/O.

One request: :func:`~mgrhooks.http.contract.refusal` on the path, method and headers;
the body read under the limit and the read timeout; :func:`~mgrhooks.http.contract.parse`;
the Gate (``decide``, in a worker thread: it hashes and reads SQLite) says who calls, or
answers itself (a login, a failed one after its delay); :meth:`Resident.answer
<mgrhooks.http.resident.Resident.answer>` runs the call. The answer is HTTP 200 with the
document, ``<error>`` documents included; only what is not a call gets another status
(docs/http.md). Each request writes one access line to the panel log (module ``http``):
the address, method, path, status, function, user, seconds and bytes; never a parameter's
value (secrets: :mod:`mgrhooks.secret`).
"""

from __future__ import annotations

import asyncio
import contextvars
import functools
import time
from collections.abc import Awaitable, Callable, MutableMapping
from typing import Any, NamedTuple, Protocol

from .. import logs
from ..errors import RootError, UsageError
from .auth import Allowed, Answered, Asked
from .contract import Origin, Parsed, Refused, cgi_environment, content_type, cookies, header_map, parse, refusal
from .resident import Answer, Busy, Call, Resident

Scope = MutableMapping[str, Any]
Message = MutableMapping[str, Any]
Receive = Callable[[], Awaitable[Message]]
Send = Callable[[Message], Awaitable[None]]

#: bytes sent to the server per ``send`` (a 10 MB answer goes out in pieces, each sent
#: when the transport has taken the last: uvicorn's flow control)
CHUNK = 64 * 1024
#: the access log's module in the panel log
ACCESS = logs.Channel("http")


class Decider(Protocol):
    """What the front asks who calls (:class:`mgrhooks.http.auth.Gate`)."""

    def decide(self, asked: Asked) -> Allowed | Answered: ...


class Settings(NamedTuple):
    """What the front needs of the ``[serve]`` settings: ``max_body`` bytes,
    ``read_timeout`` seconds, ``trusted_proxies``."""

    max_body: int
    read_timeout: float
    trusted_proxies: tuple[str, ...]


class _Done(NamedTuple):
    """How a request ended, for its access line."""

    status: int
    size: int
    func: str = "-"
    user: str = "-"


class App:
    """The ASGI application: ``resident`` runs the calls ``gate`` allows, for the product
    ``mgr``; ``https``: whether the server speaks TLS (``HTTPS=on`` for handlers)."""

    def __init__(self, resident: Resident, gate: Decider, settings: Settings, mgr: str, https: bool) -> None:
        self.resident = resident
        self.gate = gate
        self.settings = settings
        self.mgr = mgr
        self.https = https

    async def __call__(self, scope: Scope, receive: Receive, send: Send) -> None:
        if scope["type"] != "http":
            return
        started = time.monotonic()
        done = await self._request(scope, receive, send)
        client = scope.get("client")
        peer = client[0] if client else "unix"
        seconds = time.monotonic() - started
        path = scope.get("path", "")
        ACCESS.info(
            '%s "%s %s" %d func=%s user=%s %.3fs %d bytes',
            peer, scope["method"], path, done.status, done.func, done.user, seconds, done.size,
        )  # fmt: skip

    async def _request(self, scope: Scope, receive: Receive, send: Send) -> _Done:
        headers = header_map(scope["headers"])
        method = scope["method"]
        refused = refusal(method, scope["path"], self.mgr, headers, self.settings.max_body)
        if refused is not None:
            return await _refuse(send, refused, close=method == "POST")
        body = await _body(receive, self.settings.max_body, self.settings.read_timeout)
        if body is None:  # the client went away
            return _Done(499, 0)
        if isinstance(body, Refused):
            return await _refuse(send, body, close=True)
        parsed = parse(scope["query_string"], body)
        if isinstance(parsed, Refused):
            return await _refuse(send, parsed)
        client = scope.get("client")
        server = scope.get("server")
        origin = Origin(client[0] if client else "unix", server[1] if server and client else None, self.https)
        environ = cgi_environment(method, headers, origin, self.settings.trusted_proxies)
        asked = Asked(parsed.func, parsed.params, cookies(headers.get("cookie", "")), environ["REMOTE_ADDR"], self.mgr)
        loop = asyncio.get_running_loop()
        decide = functools.partial(contextvars.copy_context().run, self.gate.decide, asked)  # (its log lines)
        try:
            decision = await loop.run_in_executor(None, decide)
        except RootError as exc:  # the session store or the core's database
            logs.ACTION.error("'%s' cannot be authenticated: %s", parsed.func, exc)
            return await _refuse(send, Refused(500, f"the panel cannot answer: {exc}"))
        if isinstance(decision, Answered):
            return await self._answered(send, parsed, decision)
        caller = decision.caller
        call = Call(parsed.func, decision.params, caller.user, caller.level, parsed.lang, parsed.out, environ)
        try:
            answer = await self.resident.answer(call)
        except Busy as busy:
            retry = (("retry-after", f"{max(1, round(busy.retry_after))}"),)
            return await _refuse(send, Refused(503, "too many calls at once: try again later"), headers=retry)
        except UsageError as exc:
            return await _refuse(send, Refused(400, str(exc)))
        except RootError as exc:
            logs.ACTION.error("'%s' cannot be answered: %s", parsed.func, exc)
            return await _refuse(send, Refused(500, f"the panel cannot answer: {exc}"))
        status = await _respond(send, 200, answer)
        return _Done(status, len(answer.body), parsed.func or "-", caller.user)

    async def _answered(self, send: Send, parsed: Parsed, decision: Answered) -> _Done:
        """The Gate's own answer (a login, a logout, an ``<error type="auth">``), after its delay."""
        from ..render import render_bytes
        from ..xmldoc import find_error

        if decision.delay > 0:
            await asyncio.sleep(decision.delay)
        body = render_bytes(decision.doc, parsed.out, (("func", parsed.func), *parsed.params))
        answer = Answer(body, content_type(parsed.out), find_error(decision.doc) is not None)
        cookies = tuple(("set-cookie", value) for value in decision.set_cookies)
        status = await _respond(send, 200, answer, cookies)
        return _Done(status, len(body), parsed.func or "-")


async def _body(receive: Receive, limit: int, timeout: float) -> bytes | Refused | None:
    """The request body: at most ``limit`` bytes (413 beyond), read within ``timeout``
    seconds (408 beyond); ``None`` when the client went away."""
    chunks: list[bytes] = []
    size = 0
    try:
        async with asyncio.timeout(timeout):
            while True:
                message = await receive()
                if message["type"] == "http.disconnect":
                    return None
                chunk = message.get("body", b"")
                size += len(chunk)
                if size > limit:
                    return Refused(413, f"request body over {limit} bytes")
                chunks.append(chunk)
                if not message.get("more_body", False):
                    return b"".join(chunks)
    except TimeoutError:
        return Refused(408, f"the request body was not read within {timeout:g}s")


async def _respond(send: Send, status: int, answer: Answer, extra: tuple[tuple[str, str], ...] = ()) -> int:
    """Send ``answer`` (in :data:`CHUNK` pieces); ``status``."""
    body = answer.body
    headers = [
        (b"content-type", answer.content_type.encode()),
        (b"content-length", str(len(body)).encode()),
        (b"cache-control", b"no-store"),
        *((name.encode("latin-1"), value.encode("latin-1")) for name, value in extra),
    ]
    await send({"type": "http.response.start", "status": status, "headers": headers})
    view = memoryview(body)
    for at in range(0, max(len(body), 1), CHUNK):
        last = at + CHUNK >= len(body)
        await send({"type": "http.response.body", "body": bytes(view[at : at + CHUNK]), "more_body": not last})
    return status


async def _refuse(
    send: Send, refused: Refused, close: bool = False, headers: tuple[tuple[str, str], ...] = ()
) -> _Done:
    """Answer what is not a call: ``refused.status`` with its reason as plain text
    (``Allow`` with a 405; ``Connection: close`` when the body was left unread)."""
    extra = list(headers)
    if refused.status == 405:
        extra.append(("allow", "GET, POST"))
    if close:
        extra.append(("connection", "close"))
    body = (refused.reason + "\n").encode("utf-8", "backslashreplace")
    await _respond(send, refused.status, Answer(body, "text/plain; charset=UTF-8", True), tuple(extra))
    return _Done(refused.status, len(body))
