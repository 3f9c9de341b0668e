"""BILLmanager's processing and payment modules, run as the panel starts them (the
``--command`` protocol; docs/protocol.md, *Processing and payment modules*).

A module is a program in the root (``processing/pmX``: services; ``paymethods/pmX``:
payment methods) that BILLmanager runs as ``PROGRAM --command CMD [--item N]
[--payment N] ...``, an XML document on stdin for some commands (``pmvalidate``,
``check_connection``, ``tune_connection``), and whose answer is an XML ``<doc>`` on
stdout, or nothing. mgrhooks does not reproduce BILLmanager's billing logic: it runs one
module with the panel's environment, timeout, containment and logging, and judges its
answer, so that authors can run their modules the way the panel does.

Pure: :func:`module_argv`, :func:`module_environment`, :func:`judge`; I/O:
:func:`vet`, :func:`run_module`.
"""

from __future__ import annotations

import os
import stat
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from . import logs, trust
from .env import Facts, call_environment
from .model import Request
from .xmldoc import DocumentError, Element, error_doc, find_error, parse

if TYPE_CHECKING:
    from .process import Processes
    from .process.runner import RunOutcome
    from .root import Root

#: the variables of a request, which a module (started by the panel, not by a request)
#: does not get
_REQUEST_VARIABLES = frozenset(
    {
        "QUERY_STRING",
        "ACTION_NAME",
        "AUTH_USER",
        "AUTH_LEVEL",
        "REMOTE_USER",
        "AUTHID",
        "SESSION_LEVEL",
        "SESSION_LANG",
        "GATEWAY_INTERFACE",
        "SERVER_PROTOCOL",
        "SCRIPT_NAME",
    }
)


class ModuleCall(NamedTuple):
    """One run of a module: ``program`` as given (relative to the root, or an absolute
    path inside it), ``command`` (``open``, ``pmvalidate``, ...), ``item`` (a service id)
    or ``payment`` (a payment id) when given, ``extra`` arguments passed on after them,
    ``stdin`` the document given to it, ``timeout`` in seconds (``None``: the root's
    ``[handlers] timeout``)."""

    program: str
    command: str
    item: str | None = None
    payment: str | None = None
    extra: tuple[str, ...] = ()
    stdin: bytes = b""
    timeout: float | None = None


class ModuleAnswer(NamedTuple):
    """What a run gave: ``doc`` the module's answer (an empty ``<doc>`` for none) or an
    ``<error type="module">`` naming the module and the reason; ``error`` whether ``doc``
    holds an ``<error>``; ``outcome`` the run (``None`` when the module was refused)."""

    doc: Element
    error: bool
    outcome: RunOutcome | None = None


def module_argv(path: str, call: ModuleCall) -> tuple[str, ...]:
    """The command line the panel gives a module: ``PATH --command CMD``, then ``--item N``
    and ``--payment N`` when given, then ``call.extra``."""
    argv = [path, "--command", call.command]
    if call.item is not None:
        argv += ["--item", call.item]
    if call.payment is not None:
        argv += ["--payment", call.payment]
    return (*argv, *call.extra)


def module_environment(base: Mapping[str, str], facts: Facts, passed: Collection[str] = ()) -> dict[str, str]:
    """A handler's environment (:func:`mgrhooks.env.call_environment`: the allow-listed
    runner variables, ``MGR``, ``MGR_VERSION``, ..., ``MGRHOOKS_ROOT`` and
    ``MGRHOOKS_PYTHON``, so that ``sbin/mgrctl`` reaches the root), without the variables
    of a request (``PARAM_*``, ``QUERY_STRING``, ``AUTH_*``, ...): the panel starts a
    module itself, for no request (our choice)."""
    env = call_environment(base, Request("module", call_id=os.urandom(16).hex()), facts, passed=passed)
    return {k: v for k, v in env.items() if not k.startswith("PARAM_") and k not in _REQUEST_VARIABLES}


def judge(call: ModuleCall, shown: str, outcome: RunOutcome) -> ModuleAnswer:
    """The answer of a finished run. Nothing printed (blanks only) is an empty ``<doc>``, a
    success (``pmvalidate`` answers so). Otherwise stdout must be one XML ``<doc>``; the
    module's own ``<error>`` stands, whatever its exit status. A run that failed (could not
    start, timed out, over the output limit, a non-zero exit) without an ``<error>`` of
    its own, or printed something that is not a ``<doc>``, is ``<error type="module"
    object=PROGRAM value=COMMAND>`` saying why."""
    func = f"{shown} --command {call.command}"
    doc = None
    reason = ""
    if outcome.stdout.strip():
        try:
            doc = parse(outcome.stdout)
        except DocumentError as exc:
            reason = f"invalid answer: {exc.reason}" + (f" (line {exc.line})" if exc.line else "")
    else:
        doc = parse(b"<doc/>")
    if doc is not None and find_error(doc) is not None:
        return ModuleAnswer(doc, True, outcome)
    if not outcome.ok:
        reason = outcome.reason + (f"; {reason}" if reason else "")
    if reason:
        message = f"Module '{func}' failed: {reason}"
        return ModuleAnswer(error_doc(func, "module", shown, call.command, message), True, outcome)
    assert doc is not None
    return ModuleAnswer(doc, False, outcome)


def vet(root: Path, program: str) -> tuple[str, str | None, tuple[str, ...]]:
    """Find ``program`` in ``root`` and check it as a handler's program is checked (a
    regular executable file, not writable by group or others, not set-user-ID or
    set-group-ID, believed by :mod:`mgrhooks.trust`). Links are followed, and may lead
    anywhere the trust rule believes (public install instructions link
    ``paymethods/pmX`` to a script elsewhere in the root).

    :returns: the name shown (relative to the root), its real path when it may run
        (else ``None``), and the reasons it may not
    """
    path = Path(program) if os.path.isabs(program) else root / program
    try:
        relative = str(Path(os.path.abspath(path)).relative_to(root))
    except ValueError:
        return program, None, (f"Module '{program}' is not inside the root {root}",)
    try:
        examined = trust.examine(str(root), relative)
    except OSError as exc:
        return relative, None, (f"Module '{relative}' cannot be run: {exc.strerror}",)
    info = examined.info
    errors = []
    if not stat.S_ISREG(info.st_mode):
        errors.append(f"Module '{relative}' is not a regular file")
    elif not info.st_mode & (stat.S_IXUSR | stat.S_IXGRP | stat.S_IXOTH):
        errors.append(f"Module '{relative}' is not executable")
    mode = stat.S_IMODE(info.st_mode)
    if info.st_mode & (stat.S_ISUID | stat.S_ISGID):
        errors.append(f"Module '{relative}' is set-user-ID or set-group-ID (mode {mode:o})")
    owner = examined.owner_problem()
    found = f"it {owner}" if owner is not None else examined.file_finding() or examined.folder_finding()
    if found is not None:
        errors.append(f"Module '{relative}' is not trusted: {found}; {trust.RULE}")
    return relative, None if errors else examined.real, tuple(errors)


def run_module(root: Root, call: ModuleCall, processes: Processes, facts: Facts) -> ModuleAnswer:
    """Run one module in ``root`` (its working directory) through ``processes``, as a
    handler is run: the root's timeout (or ``call.timeout``), kill grace and output limit,
    its whole process tree stopped on timeout, stderr and the end logged under
    ``external`` in ``var/<mgr>.log``. Never raises for a module that misbehaves."""
    from .process.runner import RunRequest

    shown, path, errors = vet(root.path, call.program)
    func = f"{shown} --command {call.command}"
    if path is None:
        message = "; ".join(errors)
        logs.EXTERNAL.warning("%s", message)
        return ModuleAnswer(error_doc(func, "module", shown, call.command, message), True)
    settings = root.settings()
    argv = module_argv(path, call)
    request = RunRequest(
        argv,
        str(root.path),
        module_environment(os.environ, facts, settings.pass_env),
        call.stdin,
        call.timeout or settings.timeout,
        description=f"module '{shown}'",
        output_limit=settings.output_limit,
        kill_grace=settings.kill_grace,
        drain_grace=settings.drain_grace,
    )
    import shlex

    logs.EXTERNAL.info("Executing: %s", shlex.join((shown, *argv[1:])))
    outcome = processes.run(request)
    for line in outcome.stderr.decode("utf-8", "backslashreplace").splitlines():
        logs.EXTERNAL.info("%s: %s", shown, line)
    status = "ok" if outcome.ok else outcome.reason
    level = logs.INFO if outcome.ok else logs.WARNING
    end = "'%s' pid %s: %s (exit %s) in %.3fs"
    logs.EXTERNAL.log(level, end, shown, outcome.pid, status, outcome.returncode, outcome.duration)
    return judge(call, shown, outcome)
