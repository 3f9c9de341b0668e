"""The panel's HTTP contract: an HTTP request → the call it asks for, or the HTTP error
status of what is not a call; ``out`` → the answer's content type. Pure.

Sources: /work/shared/HTTP-API.md (what the vendor's API guides document and what public
clients send) and the vendor article on event handlers; the whole contract, with what is
our choice, is docs/http.md. In short:

* paths ``/<mgr>`` and ``/manager/<mgr>`` (a trailing ``/`` too) of the root's product;
  any other path is HTTP 404;
* ``GET`` with a query string, ``POST`` with an ``application/x-www-form-urlencoded``
  body (the query string counts too; a key given in both: the body's value, as a later
  value replaces an earlier one in ``mgrhooks exec``); another method is 405, another
  body type 400, a body over the limit 413;
* ``func``, ``out`` (:data:`CONTENT_TYPES`; default ``xml``), ``lang`` (default ``en``)
  are the call's; every other parameter (``sok``, ``elid``, ``plid``, ``su``,
  ``authinfo``, ...) goes on in order, as ``exec`` passes its own.
"""

from __future__ import annotations

import ipaddress
from collections.abc import Mapping, Sequence
from typing import NamedTuple

from ..model import Request
from ..render import FORMATS

#: the content type of each ``out`` (charset always UTF-8, as the renderers write)
CONTENT_TYPES = {
    "xml": "text/xml; charset=UTF-8",
    "devel": "text/xml; charset=UTF-8",
    "json": "application/json; charset=UTF-8",
    "sjson": "application/json; charset=UTF-8",
    "text": "text/plain; charset=UTF-8",
}
#: the methods a call comes with
METHODS = ("GET", "POST")
FORM = "application/x-www-form-urlencoded"
#: what a header of several ``Cookie`` lines or ``X-Forwarded-For`` entries is joined with
_JOINS = {"cookie": "; ", "x-forwarded-for": ", "}


class Refused(NamedTuple):
    """Not a call: answered with HTTP ``status`` and ``reason`` as plain text."""

    status: int
    reason: str


class Parsed(NamedTuple):
    """The call an HTTP request asks for, before anyone checked who asks.

    ``params``: every parameter but ``func``, ``out`` and ``lang``, in order, each key
    once (its last value).
    """

    func: str
    params: tuple[tuple[str, str], ...]
    out: str = "xml"
    lang: str = "en"


def refusal(method: str, path: str, mgr: str, headers: Mapping[str, str], max_body: int) -> Refused | None:
    """What is wrong before the body is read: an unknown path (404), a method other than
    ``GET``/``POST`` (405), a declared body over ``max_body`` bytes (413), a POST body that
    is not a form (400); ``None`` when nothing is.

    :param headers: lower-case name → value (:func:`header_map`)
    """
    if path.rstrip("/") not in (f"/{mgr}", f"/manager/{mgr}"):
        return Refused(404, f"no such path: the panel answers at /{mgr} and /manager/{mgr}")
    if method not in METHODS:
        return Refused(405, f"method {method} not allowed: GET or POST")
    length = headers.get("content-length", "")
    if length.isdigit() and int(length) > max_body:
        return Refused(413, f"request body over {max_body} bytes")
    kind = headers.get("content-type", "").split(";", 1)[0].strip().lower()
    if method == "POST" and kind not in ("", FORM):
        return Refused(400, f"a POST body must be {FORM}, not {kind}")
    return None


def parse(query: bytes, body: bytes) -> Parsed | Refused:
    """The call of a request whose query string is ``query`` and whose form body is
    ``body``: :class:`Parsed`, or 400 for an unknown ``out`` or a name no call can take
    (a control character or a byte that is not UTF-8 in ``func`` or ``lang``).

    Bytes that are not percent-encoded count as they are: UTF-8, any other byte kept as a
    lone surrogate (as ``exec --body`` reads a body)."""
    from urllib.parse import parse_qsl

    params: dict[str, str] = {}
    for part in (query, body):
        text = part.decode("utf-8", "surrogateescape")
        params.update(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"))
    func = params.pop("func", "")
    out = params.pop("out", "") or "xml"
    lang = params.pop("lang", "") or "en"
    if out not in FORMATS:
        return Refused(400, f"unknown out {out!r}: one of {', '.join(FORMATS)}")
    problem = Request(func, lang=lang).problem()
    if problem is not None:
        return Refused(400, problem)
    return Parsed(func, tuple(params.items()), out, lang)


def content_type(out: str) -> str:
    """The ``Content-Type`` of an answer in format ``out`` (one of :data:`CONTENT_TYPES`)."""
    return CONTENT_TYPES[out]


def header_map(headers: Sequence[tuple[bytes, bytes]]) -> dict[str, str]:
    """ASGI headers as lower-case name → value (Latin-1, as HTTP/1.1 carries them); a
    ``Cookie`` or ``X-Forwarded-For`` given on several lines joined, any other the last."""
    joined: dict[str, str] = {}
    for raw_name, raw_value in headers:
        name, value = raw_name.decode("latin-1").lower(), raw_value.decode("latin-1")
        if name in _JOINS and name in joined:
            joined[name] = joined[name] + _JOINS[name] + value
        else:
            joined[name] = value
    return joined


def cookies(header: str) -> dict[str, str]:
    """The cookies of a ``Cookie`` header (name → value; :mod:`http.cookies`); a header
    that does not parse gives none."""
    from http.cookies import CookieError, SimpleCookie

    jar: SimpleCookie = SimpleCookie()
    try:
        jar.load(header)
    except CookieError:
        return {}
    return {name: morsel.value for name, morsel in jar.items()}


def client(peer: str, forwarded: str, trusted: Sequence[str]) -> tuple[str, bool]:
    """The client's address, and whether ``forwarded`` (``X-Forwarded-For``) was
    believed: only when the ``peer`` is a trusted proxy (``trusted``: addresses,
    networks, ``unix`` for a peer on the unix socket). Then the client is the last address
    of the list that is not a trusted proxy (the first, if all are); a list with something
    not an address in it is not believed. ``peer`` is ``unix`` on the unix socket."""
    if not forwarded or not _trusted(peer, trusted):
        return peer, False
    hops = [hop.strip() for hop in forwarded.split(",")]
    try:
        for hop in hops:
            ipaddress.ip_address(hop)
    except ValueError:
        return peer, False
    for hop in reversed(hops):
        if not _trusted(hop, trusted):
            return hop, True
    return hops[0], True


def _trusted(address: str, trusted: Sequence[str]) -> bool:
    if address == "unix":
        return "unix" in trusted
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        return False
    return any(item != "unix" and ip in ipaddress.ip_network(item, strict=False) for item in trusted)


class Origin(NamedTuple):
    """Where an HTTP request came from and went to, as the ASGI scope says: the peer's
    address (``unix`` on the unix socket), the server's port (``None`` on a unix socket),
    whether it came over TLS."""

    peer: str
    port: int | None
    https: bool


def cgi_environment(method: str, headers: Mapping[str, str], origin: Origin, trusted: Sequence[str]) -> dict[str, str]:
    """The CGI variables a handler of this request gets (issue 12 item 4): ``REMOTE_ADDR``
    (:func:`client`), ``REQUEST_METHOD``, ``HTTP_COOKIE``, ``HTTP_USER_AGENT``,
    ``HTTP_X_FORWARDED_FOR`` (only from a trusted proxy), ``SERVER_NAME`` (the ``Host``
    header's name), ``SERVER_PORT``, ``HTTPS=on`` over TLS (or when a trusted proxy says
    ``X-Forwarded-Proto: https``). A header the request lacks gives no variable."""
    address, believed = client(origin.peer, headers.get("x-forwarded-for", ""), trusted)
    env = {"REMOTE_ADDR": address, "REQUEST_METHOD": method}
    for header, name in (("cookie", "HTTP_COOKIE"), ("user-agent", "HTTP_USER_AGENT")):
        if header in headers:
            env[name] = headers[header]
    if believed:
        env["HTTP_X_FORWARDED_FOR"] = headers["x-forwarded-for"]
    host = headers.get("host", "")
    name = host.rpartition("]")[0] + "]" if host.startswith("[") else host.partition(":")[0]
    if name:
        env["SERVER_NAME"] = name
    if origin.port is not None:
        env["SERVER_PORT"] = str(origin.port)
    proxied_https = _trusted(origin.peer, trusted) and headers.get("x-forwarded-proto", "").lower() == "https"
    if origin.https or proxied_https:
        env["HTTPS"] = "on"
    return {key: value for key, value in env.items() if "\0" not in value}
