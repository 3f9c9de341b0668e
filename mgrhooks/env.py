"""The environment and stdin of a handler process (PROTOCOL §4). Pure.

Handlers get an environment built from an allow-list of the runner's variables plus
the protocol's variables, never the runner's whole environment (our choice: secrets in
the runner's environment do not leak into addons).
"""

from __future__ import annotations

import os
import sys
from collections.abc import Collection, Mapping
from typing import NamedTuple

from .model import Request

#: a parameter value longer than this (bytes) or holding NUL is not put in the environment
SPILL_BYTES = 64 * 1024
#: bytes the parameters may take in the environment (PARAM_* and QUERY_STRING together);
#: beyond it the largest values are spilled too (Linux refuses an exec past ~2 MiB)
ENV_BUDGET = 512 * 1024
#: runner variables handed on to handlers
ALLOWED = ("PATH", "HOME", "LANG", "LANGUAGE", "TZ", "TMPDIR", "USER", "LOGNAME", "SHELL", "TERM")
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

    params = [(k, v) for k, v in request.all_params if k not in leave_out]
    return urlencode(params, encoding="utf-8", errors="surrogateescape")


def _size(value: str) -> int:
    return len(value.encode("utf-8", "surrogateescape"))


def spilled(request: Request) -> list[str]:
    """Keys whose values go to files instead of the environment (``PARAM_<key>_FILE``).

    A value holding NUL, or longer than :data:`SPILL_BYTES`, cannot or should not be an
    environment variable; past :data:`ENV_BUDGET` in total the largest values follow.
    """
    sizes = {key: _size(value) for key, value in request.params}
    spill = [key for key, value in request.params if "\0" in value or sizes[key] > SPILL_BYTES]
    total = 2 * sum(size for key, size in sizes.items() if key not in spill)  # PARAM_ and QUERY_STRING
    for key in sorted(sizes, key=lambda k: sizes[k], reverse=True):
        if total <= ENV_BUDGET:
            break
        if key not in spill:
            spill.append(key)
            total -= 2 * sizes[key]
    return spill


def is_env_name(key: str) -> bool:
    """Whether ``PARAM_<key>`` can be an environment variable (no ``=`` and no NUL)."""
    return "=" not in key and "\0" not in key


def handler_environment(
    base: Mapping[str, str],
    request: Request,
    facts: Facts,
    *,
    stage: str,
    post_length: int | None = None,
    files: Mapping[str, str] | None = None,
    passed: Collection[str] = (),
) -> dict[str, str]:
    """Build a handler's environment: :func:`call_environment` then :func:`stage_environment`.

    Both handler types get the same variables (PROTOCOL §4: QUERY_STRING for both).
    """
    common = call_environment(base, request, facts, files=files, passed=passed)
    return stage_environment(common, stage, post_length)


def call_environment(
    base: Mapping[str, str],
    request: Request,
    facts: Facts,
    *,
    files: Mapping[str, str] | None = None,
    passed: Collection[str] = (),
) -> dict[str, str]:
    """The variables every handler of one call gets (built once per call).

    :param base: the runner's environment; only :data:`ALLOWED` names pass
    :param files: spilled parameters (see :func:`spilled`): key → the file holding its
        value, given as ``PARAM_<key>_FILE`` and left out of ``PARAM_<key>`` and
        ``QUERY_STRING``
    :param passed: further runner variables to hand on (``pass_env`` in the settings)
    :returns: a new mapping; parameters whose key holds ``=`` or NUL are left out of
        ``PARAM_*`` (they still reach the handler in ``QUERY_STRING``)
    """
    files = files or {}
    env = {k: v for k, v in base.items() if k in ALLOWED or k in passed or k.startswith(ALLOWED_PREFIXES)}
    env.setdefault("PATH", DEFAULT_PATH)
    env.update(
        {f"PARAM_{key}": value for key, value in request.all_params if is_env_name(key) and key not in files},
    )
    env.update({f"PARAM_{key}_FILE": path for key, path in files.items() if is_env_name(key)})
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
        QUERY_STRING=query_string(request, leave_out=files),
    )
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
