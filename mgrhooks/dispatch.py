"""One function call through the whole pipeline (PROTOCOL §3). I/O orchestration.

before-handlers → main logic (core action or an addon's ``<func>``) → after-handlers and
internal handlers → final-handlers. The order comes from :func:`mgrhooks.plan.plan`; this
module only walks it and decides when to stop.
"""

from __future__ import annotations

import functools
import os
import time
from collections.abc import Callable, Iterable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from lxml import etree

from . import logs, spill
from .core import Core
from .env import Facts, Spilled, call_environment, query_string, stage_environment
from .errors import PanelError, RootError
from .functions import EVENTLIST, Functions, core_docs, for_call
from .model import (
    ActionStep,
    Event,
    FuncDecl,
    Handler,
    HandlerRun,
    HandlerStep,
    HandlerType,
    InternalStep,
    Plan,
    Registry,
    Request,
    RunStatus,
    Stage,
)
from .observers import Observers
from .plan import plan
from .root import Root
from .shape import initial_document, old_generation_input, without_old_generation
from .version import __version__
from .xmldoc import (
    DECLARATION,
    Checked,
    DocumentError,
    Element,
    checked,
    error_doc,
    find_error,
    is_empty_doc,
    parse,
    serialise,
)

if TYPE_CHECKING:  # imported where used: a call without handlers needs none of them
    from .merge import Merged
    from .process import Processes
    from .process.runner import RunOutcome, RunRequest
    from .programs import Program

#: runs one handler: :meth:`mgrhooks.process.Processes.run` unless a test or an application swaps it
Runner = Callable[["RunRequest"], "RunOutcome"]
#: the response document while a call runs: a tree, or the text an xml handler printed
#: when no step needed a tree since (:func:`mgrhooks.xmldoc.checked`)
Doc = Element | Checked


class _Handling:
    """What running a handler needs: imported with the first handler run in a process (a
    call without handlers needs none of it), then kept (an import statement in each run
    cost ~20 µs a handler, docs/performance.md). A plain class: a ``NamedTuple`` compiles
    its annotations at import, a cost of every call."""

    __slots__ = ("inspect", "request", "outcome", "processes", "join", "changes_nothing", "apply")
    inspect: Callable[[str, str], Program]
    request: type[RunRequest]
    outcome: type[RunOutcome]
    processes: type[Processes]
    join: Callable[[Iterable[str]], str]
    changes_nothing: Callable[[Element, HandlerType], bool]
    apply: Callable[[Element | None, Element, HandlerType], Merged]

    def __init__(self) -> None:
        import shlex

        from .merge import apply, changes_nothing
        from .process import Processes
        from .process.runner import RunOutcome, RunRequest
        from .programs import inspect

        self.inspect, self.request, self.outcome, self.processes = inspect, RunRequest, RunOutcome, Processes
        self.join, self.changes_nothing, self.apply = shlex.join, changes_nothing, apply


@functools.cache
def _handling() -> _Handling:
    return _Handling()


#: how deep calls made from handlers (``sbin/mgrctl``) may nest (our choice)
MAX_DEPTH = 8
#: seconds a handler runs before its end is logged at the default level (our choice: one
#: record per handler that went well and quickly, the ``Executing:`` line, as the panel)
SLOW = 1.0


class Response:
    """The result of a call (read-only).

    ``doc`` is the lxml ``<doc>``; when the call ended on a document an xml handler printed
    and nothing needed a tree since, the tree is built on first use. ``serialised`` holds
    the document's bytes when they are known without serialising it; ``error`` whether
    the document holds an ``<error>``; ``finish`` runs the final-stage handlers when the
    call deferred them (else ``None``); ``plan`` is the plan the call walked.
    """

    __slots__ = ("_doc", "plan", "finish", "serialised")

    def __init__(
        self,
        doc: Doc,
        plan: Plan | None,
        finish: Callable[[], None] | None = None,
        serialised: bytes | None = None,
    ) -> None:
        self._doc = doc
        self.plan = plan
        self.finish = finish
        self.serialised = doc.data if isinstance(doc, Checked) else serialised

    @property
    def doc(self) -> Element:
        if isinstance(self._doc, Checked):
            self._doc = parse(self._doc.data)
        return self._doc

    @property
    def error(self) -> bool:
        return _has_error(self._doc)


class Options(NamedTuple):
    """Per-call settings.

    :param timeout: seconds every handler of this call may run (overrides their own)
    :param environ: the runner environment handlers' allow-listed variables come from
    :param depth: 1 for a call from outside; a call from a handler's ``sbin/mgrctl`` is
        one deeper than the call running that handler
    :param chain: the functions of the enclosing calls, outermost first
    :param core_doc: a document file that is the main logic's result for this function
    :param defer_final: leave final-stage handlers to ``Response.finish``
    :param processes: runs the handlers (:class:`mgrhooks.process.Processes`: guardian,
        orphans, sealing); owned and closed by the caller. ``None``: the call makes a
        default one and closes it at its end
    :param observers: Python observers taking part in the call (mgrhooks.observers)
    """

    timeout: float | None = None
    environ: Mapping[str, str] | None = None
    depth: int = 1
    chain: tuple[str, ...] = ()
    core_doc: Path | None = None
    defer_final: bool = False
    processes: Processes | None = None
    observers: Observers | None = None


def call(
    root: Root, request: Request, core: Core | None = None, options: Options | None = None, runner: Runner | None = None
) -> Response:
    """Run ``request`` against ``root`` and return the response document.

    Never raises for bad input, unknown functions or failing handlers: those come back
    as ``<error>`` documents (typed; handler failures have ``type="handler"``, a nesting
    deeper than :data:`MAX_DEPTH` ``type="nesting"``).

    :raises RootError: the root's ``etc/mgrhooks.conf`` is broken, or the built-in core's
        database cannot be used (:func:`mgrhooks.db.transaction`); the handlers that ran
        before stay run, the core's change is not made, final handlers do not run
    """
    options = options if options is not None else Options()
    request = request if request.call_id else request._replace(call_id=os.urandom(16).hex())
    chain = (*options.chain, request.func)
    if options.depth > MAX_DEPTH:
        message = f"Calls nested deeper than {MAX_DEPTH}: {' > '.join(chain)}"
        logs.ACTION.error("%s", message)
        return Response(error_doc(request.func, "nesting", "func", request.func, message), None)
    registry, functions = reachable(root, request.func, core, options.core_doc)
    try:
        observed = options.observers.events() if options.observers is not None else ()
        steps = plan(registry, request, functions.catalogue(), root.disabled_plugins(), observed)
    except PanelError as exc:
        return Response(_panel_error(request, exc), None)
    facts = Facts(root.mgr, str(root.path), __version__, depth=options.depth, chain=chain)
    return _Call(root, request, functions, registry, steps, facts, options, runner).run()


def reachable(
    root: Root, func: str, core: Core | None = None, core_doc: Path | None = None
) -> tuple[Registry, Functions]:
    """The root's registry (with the events of ``func``; all of them for ``eventlist``)
    and every function a call of ``func`` can reach besides addons."""
    registry = root.registry(None if func == EVENTLIST else func)
    docs = core_docs(root.path, root.mgr, func, core_doc)
    return registry, for_call(root, core, registry, docs)


def nesting(environ: Mapping[str, str]) -> tuple[int, tuple[str, ...]]:
    """``(depth, chain)`` for a call started from ``environ``: one deeper than the call
    whose handler set ``MGRHOOKS_DEPTH`` and ``MGRHOOKS_CHAIN`` there, else ``(1, ())``."""
    depth = environ.get("MGRHOOKS_DEPTH", "0")
    chain = tuple(f for f in environ.get("MGRHOOKS_CHAIN", "").split(" > ") if f)
    return (int(depth) + 1 if depth.isdigit() else 1), chain


class _Call:
    """Walks one plan; owns the stop/continue policy."""

    def __init__(
        self,
        root: Root,
        request: Request,
        core: Functions,
        registry: Registry,
        steps: Plan,
        facts: Facts,
        options: Options,
        runner: Runner | None,
    ) -> None:
        self.root = root
        self.request = request
        self.core = core
        self.registry = registry
        self.plan = steps
        self.facts = facts
        self.options = options
        self.runner = runner
        self.environ = options.environ if options.environ is not None else os.environ
        self._processes: Processes | None = None  # made at the first handler if options have none
        self.settings = root.settings()
        self._cwd = str(root.path)
        self._addon_dir = str(root.addon_dir)
        self._spilled: Spilled | None = None  # written with the first handler that starts
        self._environment: dict[str, str] | None = None
        #: the serialised form of a document that has not changed since (see _serialised)
        self._known: tuple[Element, bytes] | None = None
        self._runs: list[HandlerRun] = []
        self._record_id: str | None = None

    def run(self) -> Response:
        try:
            doc = self._main(self._initial())
        except BaseException as exc:
            if isinstance(exc, RootError):  # e.g. the core's database: named in the panel log too
                logs.ACTION.error("'%s' failed: %s", self.request.func, exc)
            self._end()
            raise
        self._record(doc)
        known = self._known[1] if self._known is not None and self._known[0] is doc else None
        if self.options.defer_final and (self.plan.stage(Stage.FINAL) or self._record_id):
            return Response(doc, self.plan, finish=lambda: self._final(doc), serialised=known)
        self._final(doc)
        return Response(doc, self.plan, serialised=known)

    def _initial(self) -> Element:
        """The document a call starts from (a new one each time: steps may change it)."""
        return initial_document(self.request, self.root.mgr, self.registry)

    def _main(self, doc: Doc) -> Doc:
        for step in self.plan.stage(Stage.BEFORE):
            doc, stop, skip = self._handler(step, doc)
            if stop:
                return doc
            if skip:
                logs.ACTION.info("'%s' answered skipaction: main logic and after-handlers skipped", step.name)
                return doc
        doc = self._action(self.plan.action, doc)
        if _has_error(doc):
            return doc
        for step in self.plan.stage(Stage.AFTER):
            if isinstance(step, InternalStep):
                doc = _tree(doc)
                self.core.internal(step.internal, self.request, doc)
                self._known = None
                continue
            doc, stop, _ = self._handler(step, doc)
            if stop:
                return doc
        return doc

    def _action(self, step: ActionStep, doc: Doc) -> Doc:
        if step.func is None:
            self._known = None
            rows = self.core.rows(self.request.func)
            if rows is not None:  # a supplied list: merged as text, no tree of its rows
                from .merge import append_rows

                return Checked(append_rows(_tree(doc), rows))
            doc = _tree(doc)
            try:
                self.core.action(self.request, doc)
            except PanelError as exc:
                return _panel_error(self.request, exc)
            return doc
        func: FuncDecl = step.func
        outcome = self._spawn(func.handler, "action", doc, postdata=False, why=str(func.source))
        return self._apply(func.handler, "action", doc, outcome)[0]

    def _handler(self, step: HandlerStep | InternalStep, doc: Doc) -> tuple[Doc, bool, bool]:
        """Run one before/after handler step: (new doc, stop the call?, skipaction?)."""
        assert isinstance(step, HandlerStep)
        event = step.event
        if event.handler.type is HandlerType.PYTHON:
            return self._observe(event, _tree(doc))
        outcome = self._spawn(event.handler, event.stage.value, doc, event.postdata, str(event.source))
        return self._apply(event.handler, event.stage.value, doc, outcome)

    def _record(self, doc: Doc) -> None:
        """Spool the event record of a successful change for the notifiers that want it."""
        if not self.settings.notifiers or _has_error(doc):
            return
        from .delivery import spool_of
        from .notify import is_change, record, wanted

        if not is_change(self.request):
            return
        names = [n.name for n in self.settings.notifiers if wanted(n.events, self.request.func)]
        if not names:
            return
        import json
        from datetime import UTC, datetime

        record_id = os.urandom(16).hex()
        body = record(self.request, self.root.mgr, _tree(doc), self._runs, record_id, datetime.now(UTC))
        try:
            spool_of(self.root).add(record_id, self.request.func, json.dumps(body), names, time.time())
        except Exception as exc:  # noqa: BLE001 (the call has committed: report, do not fail it)
            logs.ACTION.error("event record of '%s' could not be spooled, so it is lost: %s", self.request.func, exc)
            return
        self._record_id = record_id

    def _observe(self, event: Event, doc: Element) -> tuple[Doc, bool, bool]:
        """Call a Python observer as a handler: it may change ``doc`` in place, return a new
        ``<doc>``, or raise PanelError; anything else it raises is a handler failure."""
        stage = event.stage.value
        callback = self.options.observers.callback(event.handler) if self.options.observers else None
        started = time.monotonic()
        try:
            answer = callback(self.request, doc) if callback is not None else None
        except PanelError as exc:
            self._ran(event.handler, stage, time.monotonic() - started, RunStatus.ERROR)
            return _panel_error(self.request, exc), True, False
        except Exception as exc:  # noqa: BLE001 (an observer's failure is a handler's failure)
            self._ran(event.handler, stage, time.monotonic() - started, RunStatus.EXCEPTION)
            return self._failed(event.handler, stage, doc, f"raised {type(exc).__name__}: {exc}")
        self._ran(event.handler, stage, time.monotonic() - started, RunStatus.OK)
        self._known = None
        if answer is not None and not (isinstance(answer, etree._Element) and answer.tag == "doc"):
            return self._failed(event.handler, stage, doc, f"returned {type(answer).__name__}, not a <doc> or None")
        from .merge import apply

        merged = apply(doc, answer if answer is not None else doc, HandlerType.XML)
        return merged.doc, merged.error, merged.skipaction and event.stage is Stage.BEFORE

    def _ran(self, handler: Handler, stage: str, seconds: float, status: RunStatus) -> None:
        """Note a handler's part in the call, for the event record."""
        self._runs.append(HandlerRun(handler.name, stage, round(seconds * 1000, 1), status))

    def _final(self, result: Doc) -> None:
        try:
            if self._record_id is not None:  # inline, when quick; the worker does the rest
                from .delivery import INLINE_TIMEOUT, work

                work(self.root, self.settings.notifiers, only=self._record_id, cap=INLINE_TIMEOUT)
            for step in self.plan.stage(Stage.FINAL):
                assert isinstance(step, HandlerStep)
                handler = step.event.handler
                if handler.type is HandlerType.PYTHON:  # a copy: it cannot change the response
                    import copy

                    self._observe(
                        step.event, parse(result.data) if isinstance(result, Checked) else copy.deepcopy(result)
                    )
                    continue
                stdin_doc = result if step.event.sessiondata else self._initial()
                outcome = self._spawn(handler, "final", stdin_doc, step.event.postdata, str(step.event.source))
                if not outcome.ok:
                    logs.EXTERNAL.warning("final handler '%s' failed: %s", handler.name, outcome.reason)
        finally:
            self._end()

    def _end(self) -> None:
        """Release what the call held: its own Processes, spilled parameter files."""
        if self._processes is not None:
            self._processes.close()
        spill.release(self._spilled)  # and what killed calls left

    def _spawn(self, handler: Handler, stage: str, doc: Doc, postdata: bool, why: str) -> RunOutcome:
        tools = _handling()
        program = tools.inspect(self._addon_dir, handler.name)
        for warning in program.warnings:
            logs.EXTERNAL.log(logs.EXTINFO, "%s", warning)
        if program.path is None:
            return self._refused(program.shown, why, "; ".join(program.errors))
        try:
            self._spill_files()  # written once, for the first handler that starts
        except OSError as exc:  # a full /tmp
            return self._refused(program.shown, why, spill.failure(exc))
        request = self._run_request(handler, program.path, stage, doc, postdata, why)
        logs.EXTERNAL.info("Executing: %s", tools.join((program.shown, *request.argv[1:])))
        if logs.EXTERNAL.enabled(logs.DEBUG):
            names = " ".join(sorted(request.env))
            logs.EXTERNAL.debug("'%s': %d bytes on stdin, environment %s", handler.name, len(request.stdin), names)
        if logs.EXTERNAL.enabled(logs.TRACE):
            logs.EXTERNAL.log(logs.TRACE, "'%s' stdin: %s", handler.name, request.stdin[: logs.DUMP_BYTES])
        outcome = (self.runner or self._prepare())(request)
        if logs.EXTERNAL.enabled(logs.TRACE):
            logs.EXTERNAL.log(logs.TRACE, "'%s' stdout: %s", handler.name, outcome.stdout[: logs.DUMP_BYTES])
        self._log_outcome(handler, outcome)
        self._ran(handler, stage, outcome.duration, RunStatus(outcome.failure or RunStatus.OK))
        return outcome

    def _refused(self, shown: str, why: str, message: str) -> RunOutcome:
        """The outcome of a handler that was not started: a spawn failure saying why."""
        from .process.runner import Failure

        logs.EXTERNAL.warning("%s", message)
        tools = _handling()
        refused = tools.request((shown,), self._cwd, {}, b"", description=why)
        return tools.outcome(refused, None, b"", b"", 0.0, failure=Failure.SPAWN, reason=message)

    def _prepare(self) -> Runner:
        """The runner, at the first handler: the caller's Processes, else one of the call's own."""
        processes = self.options.processes
        if processes is None:
            processes = self._processes = _handling().processes()
        self.runner = processes.run
        return self.runner

    def _run_request(
        self, handler: Handler, program: str, stage: str, doc: Doc, postdata: bool, why: str
    ) -> RunRequest:
        """What to run for one handler: argv, environment and stdin by PROTOCOL §4."""
        cgi_post = handler.type is HandlerType.CGI and postdata
        if handler.generation == 4:
            doc = old_generation_input(_tree(doc), self.request)  # a copy: never "known"
        stdin = query_string(self.request).encode() if cgi_post else self._serialised(doc)
        if self._environment is None:
            self._environment = call_environment(
                self.environ, self.request, self.facts, spilled=self._spill_files(), passed=self.settings.pass_env
            )
        env = stage_environment(self._environment, stage, len(stdin) if cgi_post else None)
        limits = self.settings
        return _handling().request(
            (program, stage) if handler.generation == 4 else (program,),
            self._cwd,
            env,
            stdin,
            self.options.timeout or handler.timeout or limits.timeout,
            description=f"handler '{handler.name}' ({stage} {self.request.func}, {why})",
            output_limit=limits.output_limit,
            kill_grace=limits.kill_grace,
            drain_grace=limits.drain_grace,
        )

    def _serialised(self, doc: Doc) -> bytes:
        """``doc`` as bytes: the last handler's own output when it is what ``doc`` was
        parsed from, or kept as, and nothing changed it since (a 10 MB list passed from
        ``cat`` to ``cat`` is not serialised anew each time)."""
        if isinstance(doc, Checked):
            return doc.data
        if self._known is not None and self._known[0] is doc:
            return self._known[1]
        data = serialise(doc)
        self._known = (doc, data)
        return data

    def _spill_files(self) -> Spilled:
        """Write the call's spilled parameter values to files, once (:func:`mgrhooks.spill.write`).
        :raises OSError: nothing is kept then, so the next handler tries again"""
        if self._spilled is None:
            self._spilled = spill.write(self.request, self.environ, self.facts, self.settings.pass_env)
        return self._spilled

    def _log_outcome(self, handler: Handler, outcome: RunOutcome) -> None:
        """Each stderr line at INFO; the end of the run (pid, status, seconds) at the
        default level when it failed or took :data:`SLOW` seconds or more, else at DEBUG."""
        for line in outcome.stderr.decode("utf-8", "backslashreplace").splitlines():
            logs.EXTERNAL.info("%s: %s", handler.name, line)
        if outcome.ok and outcome.killed:  # mgrhooks.process.containment.kill_holders
            message, drain = "'%s' exited; killed what still held its output %gs later: %s", outcome.request.drain_grace
            logs.EXTERNAL.warning(message, handler.name, drain, " ".join(map(str, outcome.killed)))
        level = logs.EXTINFO if not outcome.ok or outcome.duration >= SLOW else logs.DEBUG
        if not logs.EXTERNAL.enabled(level):
            return
        status = "ok" if outcome.ok else outcome.reason
        logs.EXTERNAL.log(
            level,
            "'%s' pid %s: %s (exit %s) in %.3fs",
            handler.name,
            outcome.pid,
            status,
            outcome.returncode,
            outcome.duration,
        )

    def _apply(self, handler: Handler, stage: str, doc: Doc, outcome: RunOutcome) -> tuple[Doc, bool, bool]:
        reason = outcome.reason if not outcome.ok else ""
        output = None
        if not reason and handler.type is HandlerType.XML and handler.generation == 5:
            if outcome.stdout == outcome.request.stdin:  # stdin is the document's own bytes
                return doc, False, False  # printed the document it was given: it stays as it is
            try:  # the usual xml handler: its text is the new document, no tree needed
                if checked(outcome.stdout):
                    self._known = None
                    return Checked(outcome.stdout), False, False
            except DocumentError as exc:
                reason = _invalid(exc)
        if not reason:
            stdout = _strip_cgi_headers(outcome.stdout) if handler.type is HandlerType.CGI else outcome.stdout
            if handler.type is HandlerType.CGI and is_empty_doc(stdout):
                return doc, False, False  # the usual answer: nothing to parse, nothing changes
            try:
                output = parse(stdout)
            except DocumentError as exc:
                reason = _invalid(exc)
        if output is None:
            return self._failed(handler, stage, doc, reason)
        if handler.generation == 4:
            output = without_old_generation(output)
        tools = _handling()
        if tools.changes_nothing(output, handler.type):  # the document (tree or text) and its bytes stay
            return doc, False, False
        merged = tools.apply(_tree(doc) if handler.type is HandlerType.CGI else None, output, handler.type)
        self._known = (merged.doc, outcome.stdout) if _reusable(handler, merged, outcome.stdout) else None
        if merged.error:
            logs.EXTERNAL.info("'%s' (%s) answered an error: the call stops", handler.name, stage)
        return merged.doc, merged.error, merged.skipaction and stage == Stage.BEFORE.value

    def _failed(self, handler: Handler, stage: str, doc: Doc, reason: str) -> tuple[Doc, bool, bool]:
        message = f"Handler '{handler.name}' ({stage} {self.request.func}, {handler.source}) failed: {reason}"
        if handler.ignore_errors:
            logs.EXTERNAL.warning('%s; ignored (ignore_errors="yes")', message)
            return doc, False, False
        logs.EXTERNAL.error("%s", message)
        return error_doc(self.request.func, "handler", handler.name, stage, message), True, False


def _tree(doc: Doc) -> Element:
    """``doc`` as a tree (parsed from a kept text: it was checked well-formed before)."""
    return parse(doc.data) if isinstance(doc, Checked) else doc


def _has_error(doc: Doc) -> bool:
    """Whether ``doc`` holds an ``<error>`` (kept text never does: see ``checked``)."""
    return not isinstance(doc, Checked) and find_error(doc) is not None


def _invalid(exc: DocumentError) -> str:
    return f"invalid output: {exc.reason}" + (f" (line {exc.line})" if exc.line else "")


def _reusable(handler: Handler, merged: Merged, stdout: bytes) -> bool:
    """Whether an xml handler's output bytes can stand for the document parsed from them:
    nothing was taken out of it, and it has our declaration and ``</doc>`` line."""
    return (
        handler.type is HandlerType.XML
        and handler.generation == 5
        and not merged.skipaction
        and stdout.startswith(DECLARATION)
        and stdout.endswith(b"\n</doc>\n")
    )


def _panel_error(request: Request, exc: PanelError) -> Element:
    logs.ACTION.info("'%s' failed: %s", request.func, exc.msg)
    return error_doc(request.func, exc.type, exc.object, exc.value, exc.msg)


def _strip_cgi_headers(output: bytes) -> bytes:
    """Drop a CGI header block (``Content-Type: ...`` then a blank line) before the XML.

    The protocol wants bare XML, but scripts written with stock CGI libraries often print
    a header first; the panel's users expect them to work (our choice).
    """
    head = output.lstrip()[:1]
    if head in (b"<", b""):
        return output
    for separator in (b"\r\n\r\n", b"\n\n"):
        header, found, body = output.partition(separator)
        if found and all(b":" in line for line in header.splitlines()):
            return body
    return output
