"""The environment and stdin of a handler process (PROTOCOL §4). Pure.

Handlers get an environment built from an allow-list of the runner's variables plus
the protocol's variables, never the runner's whole environment (our choice: secrets in
the runner's environment do not leak into addons).
"""

from __future__ import annotations

import platform
import sys
from collections.abc import Mapping
from dataclasses import dataclass
from urllib.parse import urlencode

from .model import Request

#: runner variables handed on to handlers
ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM")
ALLOWED_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


@dataclass(frozen=True)
class Panel:
    """Facts about the panel every handler is told: ``MGR``, ``MGR_VERSION``, ..."""

    mgr: str
    root: str
    version: str
    osname: str = platform.system()
    #: nesting of the call whose handlers run (1: called from outside) and its chain
    depth: int = 1
    chain: tuple[str, ...] = ()
    #: the Python running mgrhooks, so that sbin/mgrctl finds it from inside a handler
    python: str = sys.executable


def query_string(request: Request) -> str:
    """All request parameters urlencoded, ``func`` first (QUERY_STRING and POST body)."""
    return urlencode(request.all_params)


def is_env_name(key: str) -> bool:
    """Whether ``PARAM_<key>`` can be an environment variable (no ``=`` and no NUL)."""
    return "=" not in key and "\0" not in key


def handler_environment(
    base: Mapping[str, str],
    request: Request,
    panel: Panel,
    *,
    stage: str,
    post_length: int | None = None,
) -> dict[str, str]:
    """Build a handler's environment.

    Both handler types get the same variables (PROTOCOL §4: QUERY_STRING for both).

    :param base: the runner's environment; only :data:`ALLOWED` names pass
    :param stage: ``before``, ``after``, ``final``, or ``action`` for a function addon
        (both ``HANDLER_STAGE`` and ``EVENT_TYPE``)
    :param post_length: length in bytes of the POST body on stdin (cgi with
        ``postdata="yes"``), ``None`` for a GET-style call
    :returns: a new mapping; parameters whose key holds ``=`` or NUL are left out of
        ``PARAM_*`` (they still reach the handler in ``QUERY_STRING``)
    """
    env = {k: v for k, v in base.items() if k in ALLOWED or k.startswith(ALLOWED_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(
        {f"PARAM_{key}": value for key, value in request.all_params if is_env_name(key)},
    )
    level = str(request.level)
    env.update(
        AUTH_USER=request.user,
        AUTH_LEVEL=level,
        REMOTE_USER=request.user,
        AUTHID=request.call_id,
        SESSION_LEVEL=level,
        SESSION_LANG=request.lang,
        MGR=panel.mgr,
        MGR_VERSION=panel.version,
        MGR_DISTRIBUTION="mgrhooks",
        MGR_OSNAME=panel.osname,
        LICID="0",
        RECORDLIMIT="0",
        HANDLER_STAGE=stage,
        EVENT_TYPE=stage,
        ACTION_NAME=request.func,
        MGRHOOKS_ROOT=panel.root,
        MGRHOOKS_CALL_ID=request.call_id,
        MGRHOOKS_DEPTH=str(panel.depth),
        MGRHOOKS_CHAIN=" > ".join(panel.chain),
        MGRHOOKS_PYTHON=panel.python,
        GATEWAY_INTERFACE="CGI/1.1",
        SERVER_PROTOCOL="HTTP/1.1",
        SERVER_SOFTWARE=f"mgrhooks/{panel.version}",
        SCRIPT_NAME=f"/{panel.mgr}",
        QUERY_STRING=query_string(request),
        REQUEST_METHOD="GET" if post_length is None else "POST",
    )
    if post_length is not None:
        env.update(CONTENT_TYPE=FORM_CONTENT_TYPE, CONTENT_LENGTH=str(post_length))
    return env
