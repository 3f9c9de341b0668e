"""The environment and stdin of a handler process (PROTOCOL §4). Pure.

Handlers get an environment built from an allow-list of the runner's variables plus
the protocol's variables, never the runner's whole environment (our choice: secrets in
the runner's environment do not leak into addons).
"""

import os
import sys
from collections.abc import Collection, Mapping
from typing import NamedTuple

from .model import GROUP_ACTIONS as GROUP_ACTIONS  # (re-exported: the request's concern, see there)
from .model import Request
from .model import with_group_ids as with_group_ids  # (ditto)

#: the W3C trace context: a handler joins the trace of whoever runs it (mgrhooks.tracing sets it)
TRACE_CONTEXT = ("TRACEPARENT", "TRACESTATE")
#: runner variables handed on to handlers
ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM", *TRACE_CONTEXT)
ALLOWED_PREFIXES = ("LC_",)
DEFAULT_PATH = "/usr/local/sbin:/usr/local/bin:/usr/sbin:/usr/bin:/sbin:/bin"
FORM_CONTENT_TYPE = "application/x-www-form-urlencoded"


class Facts(NamedTuple):
    """Facts about the panel every handler is told: ``MGR``, ``MGR_VERSION``, ..."""

    mgr: str
    root: str
    version: str
    osname: str = os.uname().sysname
    #: nesting of the call whose handlers run (1: called from outside) and its chain
    depth: int = 1
    chain: tuple[str, ...] = ()
    #: the Python running mgrhooks, so that sbin/mgrctl finds it from inside a handler
    python: str = sys.executable


def query_string(request: Request, leave_out: Collection[str] = ()) -> str:
    """The request parameters urlencoded (UTF-8), ``func`` first, but those in ``leave_out``.

    Undecodable bytes from the command line are encoded back as they came.
    """

    from urllib.parse import urlencode

    params = [("func", request.func), *((k, v) for k, v in request.params if k not in leave_out)]
    return urlencode(params, encoding="utf-8", errors="surrogateescape")


class Spilled(NamedTuple):
    """Where the parameters that are not all in the environment went (the spill rule,
    :func:`mgrhooks.budget.spill_plan`).

    ``files``: key → the file holding its last value, given as ``PARAM_<key>_FILE``
    instead of ``PARAM_<key>``; ``unqueried``: keys given as ``PARAM_<key>`` only;
    ``left_out``: keys given by no variable at all. None of them is in ``QUERY_STRING``;
    ``query_file`` holds the whole query string (every parameter, ``func`` first), given
    as ``QUERY_STRING_FILE`` when any key is spilled.
    """

    files: tuple[tuple[str, str], ...] = ()
    unqueried: frozenset[str] = frozenset()
    left_out: frozenset[str] = frozenset()
    query_file: str | None = None
    #: the directory of the call's own holding the files (``None``: nothing was written)
    directory: str | None = None


#: no parameter spilled (every one in the environment)
NOTHING_SPILLED = Spilled()


def is_env_name(key: str) -> bool:
    """Whether ``PARAM_<key>`` can be an environment variable: no ``=``, no NUL, and not
    ending in ``_FILE`` (``PARAM_<key>_FILE`` names only the files mgrhooks writes, so a
    caller's parameter ``x_FILE`` cannot make a handler read a file of the caller's choice)."""
    return "=" not in key and "\0" not in key and not key.endswith("_FILE")


def handler_environment(
    base: Mapping[str, str],
    request: Request,
    facts: Facts,
    *,
    stage: str,
    post_length: int | None = None,
    spilled: Spilled = NOTHING_SPILLED,
    passed: Collection[str] = (),
) -> dict[str, str]:
    """Build a handler's environment: :func:`call_environment` then :func:`stage_environment`.

    Both handler types get the same variables (PROTOCOL §4: QUERY_STRING for both).
    """
    common = call_environment(base, request, facts, spilled=spilled, passed=passed)
    return stage_environment(common, stage, post_length)


def call_environment(
    base: Mapping[str, str],
    request: Request,
    facts: Facts,
    *,
    spilled: Spilled = NOTHING_SPILLED,
    passed: Collection[str] = (),
    request_env: Mapping[str, str] | None = None,
) -> dict[str, str]:
    """The variables every handler of one call gets (built once per call).

    :param base: the runner's environment; only :data:`ALLOWED` names pass
    :param spilled: the parameters that are not all in the environment (:class:`Spilled`,
        as :func:`mgrhooks.spill.write` wrote them)
    :param passed: further runner variables to hand on (``pass_env`` in the settings)
    :param request_env: the CGI variables of the HTTP request the call came with
        (``REMOTE_ADDR``, ``HTTP_COOKIE``, ...: :mod:`mgrhooks.http`), added after the
        protocol's own; never replacing one of them (``AUTH_USER``, ``QUERY_STRING``, a
        ``PARAM_*``: our choice, the protocol's variables say how the handler gets its call)
    :returns: a new mapping; parameters whose key cannot be a variable name
        (:func:`is_env_name`) are left out of ``PARAM_*`` (they still reach the handler in
        ``QUERY_STRING``)
    """
    files = dict(spilled.files)
    no_param = files.keys() | spilled.left_out
    env = {k: v for k, v in base.items() if k in ALLOWED or k in passed or k.startswith(ALLOWED_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    env["PARAM_func"] = request.func
    env.update({f"PARAM_{key}": value for key, value in request.params if is_env_name(key) and key not in no_param})
    env.update({f"PARAM_{key}_FILE": path for key, path in files.items() if is_env_name(key)})
    if spilled.query_file is not None:
        env["QUERY_STRING_FILE"] = spilled.query_file
    level = str(request.level)
    env.update(
        AUTH_USER=request.user,
        AUTH_LEVEL=level,
        REMOTE_USER=request.user,
        AUTHID=request.call_id,
        SESSION_LEVEL=level,
        SESSION_LANG=request.lang,
        MGR=facts.mgr,
        MGR_VERSION=facts.version,
        MGR_DISTRIBUTION="mgrhooks",
        MGR_OSNAME=facts.osname,
        LICID="0",
        RECORDLIMIT="0",
        ACTION_NAME=request.func,
        MGRHOOKS_ROOT=facts.root,
        MGRHOOKS_CALL_ID=request.call_id,
        MGRHOOKS_DEPTH=str(facts.depth),
        MGRHOOKS_CHAIN=" > ".join(facts.chain),
        MGRHOOKS_PYTHON=facts.python,
        GATEWAY_INTERFACE="CGI/1.1",
        SERVER_PROTOCOL="HTTP/1.1",
        SERVER_SOFTWARE=f"mgrhooks/{facts.version}",
        SCRIPT_NAME=f"/{facts.mgr}",
        QUERY_STRING=query_string(request, leave_out=no_param | spilled.unqueried),
    )
    for name, value in (request_env or {}).items():
        env.setdefault(name, value)
    return env


def stage_environment(common: Mapping[str, str], stage: str, post_length: int | None = None) -> dict[str, str]:
    """``common`` plus what depends on the handler.

    :param stage: ``before``, ``after``, ``final``, or ``action`` for a function addon
        (both ``HANDLER_STAGE`` and ``EVENT_TYPE``)
    :param post_length: length in bytes of the POST body on stdin (cgi with
        ``postdata="yes"``), ``None`` for a GET-style call
    """
    env = dict(common)
    env.update(HANDLER_STAGE=stage, EVENT_TYPE=stage, REQUEST_METHOD="GET" if post_length is None else "POST")
    if post_length is not None:
        env.update(CONTENT_TYPE=FORM_CONTENT_TYPE, CONTENT_LENGTH=str(post_length))
    return env
