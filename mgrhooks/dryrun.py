"""A dry run: what each step of a call would start, built by the handler protocols'
own adapters, nothing started. Pure but for reading the root (plugin files, addons,
settings; the registry cache is refreshed when a plugin file changed, as for ``plan``).

Each step of the plan (:func:`mgrhooks.plan.plan`, as a real call plans it) is shown with
the :class:`~mgrhooks.process.runner.RunRequest` its protocol makes
(:func:`mgrhooks.protocol.adapter`), given the document the call starts from. What a dry
run cannot know is said, not guessed (our choice): the main logic does not run, so an
after-handler's stdin is shown with the starting document, not the main logic's result;
parameter files (``PARAM_<key>_FILE``) are named but not written (``<call dir>`` stands
for the directory a real call makes); the call id is a fresh one.
"""

from __future__ import annotations

import os
from collections.abc import Mapping
from typing import NamedTuple

from . import protocol
from .core import Core
from .dispatch import Options, reachable
from .document import Document
from .env import Facts, Spilled, call_environment
from .model import ActionStep, HandlerStep, Plan, Request, Stage, Step
from .plan import plan
from .process.runner import RunRequest
from .programs import inspect
from .root import Root
from .secret import Hider
from .shape import initial_document
from .version import __version__


class Planned(NamedTuple):
    """One step of a dry run: the process it would start (``None``: none), notes on what
    the dry run cannot show or why nothing starts, and where the timeout comes from."""

    step: Step
    request: RunRequest | None = None
    notes: tuple[str, ...] = ()
    #: where its timeout comes from
    timeout_from: str = ""


def dry_run(
    root: Root, request: Request, options: Options, core: Core | None = None
) -> tuple[Plan, tuple[Planned, ...]]:
    """The plan of ``request`` and, for each step, what it would start.

    :raises PanelError: the function is unknown, or out of the caller's reach
    """
    request = request if request.call_id else request._replace(call_id=os.urandom(16).hex())
    registry, functions = reachable(root, request.func, core, options.core_doc)
    observed = options.observers.events() if options.observers is not None else ()
    steps = plan(registry, request, functions.catalogue(), root.disabled_plugins(), observed)
    settings = root.settings()
    environ = options.environ if options.environ is not None else os.environ
    facts = Facts(root.mgr, str(root.path), __version__, depth=options.depth, chain=(*options.chain, request.func))
    spilled = _spill_names(request, environ, facts, settings.pass_env)
    environment = call_environment(environ, request, facts, spilled=spilled, passed=settings.pass_env)
    call = protocol.Call(request, str(root.path), settings, options.timeout, environment)
    start = Document.of(initial_document(request, root.mgr, registry))
    planned = tuple(_planned(step, root, call, start) for step in steps.steps)
    return steps, planned


def _planned(step: Step, root: Root, call: protocol.Call, document: Document) -> Planned:
    """What ``step`` would start, or why nothing."""
    if step.skipped:
        return Planned(step, notes=(f"skipped: {step.skipped}",))
    if not (isinstance(step, HandlerStep) or (isinstance(step, ActionStep) and step.func is not None)):
        return Planned(step, notes=("runs inside mgrhooks (the core): not run in a dry run",))
    turn = protocol.turn(step)
    adapter = protocol.adapter(turn.handler)
    if isinstance(adapter, protocol.InProcess):
        return Planned(step, notes=("a Python observer, called in-process: not called in a dry run",))
    program = inspect(str(root.addon_dir), turn.handler.name)
    if program.path is None:
        return Planned(step, notes=("refused: " + "; ".join(program.errors),))
    notes = tuple(program.warnings)
    if adapter is protocol.CGI:
        pass  # its stdin is the parameters (postdata), whatever the main logic did
    elif turn.stage == Stage.AFTER:
        notes += ("stdin: a real call gives the main logic's result; shown with the starting document",)
    if turn.stage == Stage.FINAL:
        notes += ("stdin: a real call gives the response (sessiondata) or the starting document",)
    return Planned(step, adapter.request(turn, program.path, call, document), notes, _timeout_from(turn, call))


def _timeout_from(turn: protocol.Turn, call: protocol.Call) -> str:
    """Where a handler's timeout comes from (as :func:`mgrhooks.protocol.base.run_request`
    picks it)."""
    if call.timeout:
        return "the call's --timeout"
    if turn.handler.timeout:
        return f"the handler's timeout= ({turn.why})"
    return "the root's default (etc/mgrhooks.conf, else built in)"


def _spill_names(request: Request, environ: Mapping[str, str], facts: Facts, passed: tuple[str, ...]) -> Spilled:
    """Which values a real call would put in files (:func:`mgrhooks.spill.write`'s rule),
    with placeholder paths: nothing is written."""
    from .spill import QUERY_FILE, directory_parent
    from .spill import rule as spill_rule

    parent = directory_parent()
    rule = spill_rule(request, environ, facts, passed, parent)
    if not rule.any:
        return Spilled()
    where = f"{parent}/<call dir>"
    files = tuple((key, f"{where}/{n}") for n, key in enumerate(rule.files))
    return Spilled(files, rule.unqueried, rule.left_out, f"{where}/{QUERY_FILE}")


def shown_environment(request: RunRequest, hider: Hider) -> list[tuple[str, str]]:
    """``request``'s environment sorted by name, secrets hidden (the project's one rule:
    :meth:`mgrhooks.secret.Hider.environment`)."""
    return hider.environment(request.env)


def shown_stdin(request: RunRequest, hider: Hider, lines: int = 5, width: int = 200) -> list[str]:
    """The first ``lines`` lines of ``request``'s stdin, secret values hidden
    (:meth:`mgrhooks.secret.Hider.hide`), each cut at ``width`` characters."""
    text = hider.hide(request.stdin.decode("utf-8", "surrogateescape"))
    return [
        line if len(line) <= width else f"{line[:width]}... ({len(line) - width} more characters)"
        for line in text.splitlines()[:lines]
    ]
