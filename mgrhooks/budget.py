"""The spill rule: what a handler's exec takes, measured as the kernel measures it, and
which parameters go elsewhere than the environment so that it fits (docs/protocol.md,
"Starting a handler"). Pure; loaded when a call starts its first handler.
"""

from __future__ import annotations

import errno
from collections.abc import Mapping
from typing import NamedTuple

from .env import is_env_name, query_string
from .model import Request

#: a parameter value longer than this (bytes) or holding NUL is not put in the environment
SPILL_BYTES = 64 * 1024
#: bytes the parameters may take in the environment: ``PARAM_*`` and ``QUERY_STRING``
#: together, measured as the kernel measures (:func:`exec_size`); beyond it values are spilled
ENV_BUDGET = 512 * 1024
#: the kernel's limit on one ``NAME=value`` string, its NUL included (Linux's MAX_ARG_STRLEN,
#: 32 pages of 4 KiB; an exec with a longer one fails with E2BIG)
STRING_MAX = 32 * 4096
#: bytes kept free of the environment for what differs between the handlers of one call:
#: argv (the program's path, which the kernel copies twice, a script's ``#!`` line and path,
#: the old generation's stage) and the stage variables
RESERVE = 16 * 1024
#: bytes of one pointer in argv and envp, which the kernel counts too
POINTER = 8


class Limits(NamedTuple):
    """What the kernel lets one exec take, in bytes: one ``NAME=value`` string (NUL
    included), and all strings of argv and the environment with their pointers
    (:func:`mgrhooks.spill.limits` reads them from the system; these are Linux's with the
    usual 8 MiB stack)."""

    string: int = STRING_MAX
    total: int = 2 * 1024 * 1024


class SpillPlan(NamedTuple):
    """Where :func:`spill_plan` puts each key that is not all in the environment (see
    :class:`~mgrhooks.env.Spilled`); ``files`` in the order they are numbered."""

    files: tuple[str, ...] = ()
    unqueried: frozenset[str] = frozenset()
    left_out: frozenset[str] = frozenset()

    @property
    def any(self) -> bool:
        """Whether anything leaves the environment (a file, a pair out of ``QUERY_STRING``,
        a variable left out): then the call writes parameter files."""
        return bool(self.files or self.unqueried or self.left_out)


#: Linux's limits with the usual 8 MiB stack
LINUX = Limits()


class EnvironmentTooLarge(OSError):
    """Not even the variables that are not parameters fit in what the kernel takes (E2BIG)."""


def _bytes(text: str) -> int:
    """Bytes of ``text`` in an exec (as ``os.fsencode`` makes them: UTF-8, undecodable bytes as they came)."""
    return len(text) if text.isascii() else len(text.encode("utf-8", "surrogateescape"))


def exec_size(name: str, value: str) -> int:
    """Bytes the variable ``name=value`` takes in an exec: the string with its NUL, and its pointer."""
    return _bytes(name) + 1 + _bytes(value) + 1 + POINTER


#: bytes ``urlencode`` leaves as they are (a space becomes ``+``); every other one is ``%XX``
_UNQUOTED = b"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789_.-~ "


def _encoded(text: str) -> int:
    """Bytes of ``text`` in a query string (UTF-8, percent-encoded as ``urlencode`` does),
    counted without encoding it (quoting goes byte by byte in Python: 50 ms for 280 KB)."""
    data = text.encode("utf-8", "surrogateescape")
    quoted = len(data.translate(None, _UNQUOTED))
    return len(data) + 2 * quoted


def spill_plan(request: Request, fixed: Mapping[str, str], path_bytes: int, limits: Limits = LINUX) -> SpillPlan:
    """The spill rule: which parameters reach handlers other than in both ``PARAM_<key>``
    and ``QUERY_STRING``, so that no handler fails to start with E2BIG (our choice,
    docs/protocol.md). Sizes are bytes as the kernel counts them (:func:`exec_size`).

    1. A value holding NUL, longer than :data:`SPILL_BYTES`, or whose ``PARAM_<key>``
       would pass ``limits.string``, goes to a file.
    2. While ``QUERY_STRING`` would pass ``limits.string``, the parameter that takes most
       of it leaves it: to a file, or, when a file's path is longer than its value, kept
       in ``PARAM_<key>`` alone.
    3. While ``PARAM_*`` and ``QUERY_STRING`` take more than :data:`ENV_BUDGET`, or the
       whole environment more than ``limits.total`` less :data:`RESERVE`, the largest
       values go to files (those longer than a file's path).
    4. If that is not enough (many keys), the last parameters get no variable at all.

    A key that cannot be a variable name (:func:`is_env_name`), or whose
    ``PARAM_<key>_FILE`` would pass ``limits.string``, gets no variable instead of a file.

    :param fixed: every variable of the environment but the parameters (``PARAM_func``
        and ``QUERY_STRING`` with ``func`` alone included), as :func:`call_environment`
        builds it for a request without parameters
    :param path_bytes: the length of the longest path a spilled value's file may have
    :raises EnvironmentTooLarge: ``fixed`` alone does not fit (a variable or all of them)
    """
    too_long = [name for name, value in fixed.items() if exec_size(name, value) - POINTER > limits.string]
    fixed_size = sum(exec_size(name, value) for name, value in fixed.items())
    fixed_size += exec_size("QUERY_STRING_FILE", "x" * path_bytes) + RESERVE
    if too_long or fixed_size > limits.total:
        what = f"{too_long[0]} alone is over {limits.string} bytes" if too_long else f"it needs {fixed_size} bytes"
        raise EnvironmentTooLarge(errno.E2BIG, f"its environment does not fit in what the system takes: {what}")
    budget = min(ENV_BUDGET, limits.total - fixed_size)
    if _surely_fits(request, min(budget, SPILL_BYTES, limits.string - _bytes(fixed["QUERY_STRING"]) - 16)):
        return SpillPlan()
    costs = _Costs(request, path_bytes, limits.string)
    state = {key: _FILE if costs.forced(key) else _ENV for key in costs.keys}
    query = costs.query_base + sum(costs.query[k] for k in costs.keys if state[k] == _ENV)  # its string's bytes
    for key in sorted((k for k in costs.keys if state[k] == _ENV), key=costs.query.__getitem__, reverse=True):
        if query <= limits.string:
            break
        state[key] = _FILE if costs.size(key, _FILE) < costs.size(key, _VAR) else _VAR
        query -= costs.query[key]
    used = sum(costs.size(key, state[key]) for key in costs.keys)
    movable = (k for k in costs.keys if state[k] in (_ENV, _VAR))
    for key in sorted(movable, key=lambda k: costs.size(k, state[k]), reverse=True):
        if used <= budget:
            break
        if costs.size(key, _FILE) < costs.size(key, state[key]):  # (a file for a short value would take more)
            used -= costs.size(key, state[key]) - costs.size(key, _FILE)
            state[key] = _FILE
    for key in reversed(costs.keys):
        if used <= budget:
            break
        used -= costs.size(key, state[key])
        state[key] = _OUT
    for key in costs.keys:  # a file no variable can name
        if state[key] == _FILE and not costs.nameable(key):
            state[key] = _OUT
    return SpillPlan(
        tuple(k for k in costs.keys if state[k] == _FILE),
        frozenset(k for k in costs.keys if state[k] == _VAR),
        frozenset(k for k in costs.keys if state[k] == _OUT),
    )


def _surely_fits(request: Request, room: int) -> bool:
    """Whether the parameters take at most ``room`` bytes in the environment, told without
    measuring each (the usual call: a few short values). A character is at most 4 bytes
    in UTF-8, 12 percent-encoded; each parameter adds a name, separators and a pointer."""
    chars = 0
    for key, value in request.params:
        if "\0" in value:
            return False
        chars += len(key) + len(value)
    return 16 * chars + 32 * len(request.params) <= room


#: where a parameter is given: PARAM_<key> and QUERY_STRING; PARAM_<key> only; a file; nowhere
_ENV, _VAR, _FILE, _OUT = "env", "var", "file", "out"


class _Costs:
    """Bytes each parameter key takes in a handler's exec in each place it may be given."""

    def __init__(self, request: Request, path_bytes: int, string: int) -> None:
        last: dict[str, str] = {}
        query: dict[str, int] = {}
        for key, value in request.params:
            last[key] = value
            query[key] = query.get(key, 0) + _encoded(key) + 1 + _encoded(value) + 1  # key=value&
        self.keys = list(last)  # in the order they first came
        self.last = last
        self.query = query
        self.query_base = exec_size("QUERY_STRING", query_string(request._replace(params=()))) - POINTER
        self.string = string
        path = "x" * path_bytes
        self._var = {key: exec_size(f"PARAM_{key}", value) if is_env_name(key) else 0 for key, value in last.items()}
        self._file = {key: exec_size(f"PARAM_{key}_FILE", path) if is_env_name(key) else 0 for key in last}

    def size(self, key: str, state: str) -> int:
        if state == _ENV:
            return self._var[key] + self.query[key]
        if state == _VAR:
            return self._var[key]
        return self._file[key] if state == _FILE else 0

    def forced(self, key: str) -> bool:
        """Whether ``key``'s value cannot, or should not, be an environment variable."""
        value = self.last[key]
        return "\0" in value or _bytes(value) > SPILL_BYTES or self._var[key] - POINTER > self.string

    def nameable(self, key: str) -> bool:
        """Whether ``PARAM_<key>_FILE`` can be a variable."""
        return is_env_name(key) and self._file[key] - POINTER <= self.string
