"""One function call through the whole pipeline (PROTOCOL §3): the walk. I/O orchestration.

before-handlers → main logic (core action or an addon's ``<func>``) → after-handlers and
internal handlers → final-handlers. The order comes from :func:`mgrhooks.plan.plan`;
this module only walks it and decides when to stop. What a handler gets and what its
answer does is its protocol's (:mod:`mgrhooks.protocol`); the response between steps is
a :class:`~mgrhooks.document.Document`; the panel log and event notifications follow the
walk through its monitor (:mod:`mgrhooks.monitor`).
"""

import os
from collections.abc import Callable, Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from . import logs, spill
from .core import Core
from .document import Document
from .errors import PanelError, RootError
from .functions import EVENTLIST, Functions, core_docs, for_call
from .model import ActionStep, HandlerStep, HandlerType, InternalStep, Plan, Registry, Request, Stage, Step
from .monitor import Later, Monitor, StepEnd, StepStart, standard
from .observers import Observers
from .plan import plan
from .root import Root
from .runlog import log_request
from .shape import initial_document, panel_attributes
from .step import StepResult, panel_error
from .xmldoc import Element, error_doc

if TYPE_CHECKING:
    import sqlite3

    from .handlers import Handlers
    from .process import Processes
    from .process.runner import RunOutcome, RunRequest
    from .xmldoc import Rows

#: runs one handler: :meth:`mgrhooks.process.Processes.run` unless a test or an application swaps it
Runner = Callable[["RunRequest"], "RunOutcome"]
#: how deep calls made from handlers (``sbin/mgrctl``) may nest (our choice)
MAX_DEPTH = 8


class Response:
    """The result of a call.

    ``doc`` is the lxml ``<doc>`` (built on first use when the call ended on text an xml
    handler printed), the caller's to change: the response's bytes are forgotten then.
    ``serialised`` holds the document's bytes when they are known without serialising
    it; ``error`` whether the document holds an ``<error>``; ``finish`` runs the
    final-stage handlers when the call deferred them (else ``None``); ``plan`` is the
    plan the call walked (``None`` when it stopped before planning).
    """

    __slots__ = ("_document", "plan", "finish")

    def __init__(self, document: Document, plan: Plan | None, finish: Callable[[], None] | None = None) -> None:
        self._document = document
        self.plan = plan
        self.finish = finish

    @property
    def doc(self) -> Element:
        """The response document (a tree; see the class docstring)."""
        return self._document.edit()

    @property
    def serialised(self) -> bytes | None:
        """The response's bytes (UTF-8, with the declaration) when known without
        serialising it, else ``None``."""
        return self._document.known()

    @property
    def plain(self) -> bool:
        """Whether ``serialised`` is known to hold no interface part (printed as it is for
        ``--out xml``, not searched: :meth:`mgrhooks.document.Document.plain`)."""
        return self._document.plain

    @property
    def error(self) -> bool:
        """Whether the response holds an ``<error>`` (typed or numeric)."""
        return self._document.has_error()


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
    :param monitors: subscribers told of each step and of the committed response, after
        the panel log and event notifications (:class:`mgrhooks.monitor.Monitor`)
    :param request_env: the CGI variables of the HTTP request the call came with, for its
        handlers (:func:`mgrhooks.env.call_environment`); ``None`` for calls from elsewhere
    """

    timeout: float | None = None
    environ: Mapping[str, str] | None = None
    depth: int = 1
    chain: tuple[str, ...] = ()
    core_doc: Path | None = None
    defer_final: bool = False
    processes: "Processes | None" = None
    observers: Observers | None = None
    monitors: tuple[Monitor, ...] = ()
    request_env: Mapping[str, str] | None = None


def call(
    root: Root, request: Request, core: Core | None = None, options: Options | None = None, runner: Runner | None = None
) -> Response:
    """Run ``request`` against ``root`` and return the response document.

    Never raises for bad input, unknown functions or failing handlers: those come back
    as ``<error>`` documents (typed; handler failures have ``type="handler"``, a nesting
    deeper than :data:`MAX_DEPTH` ``type="nesting"``).

    :param runner: runs each handler program instead of this call's own processes
    :raises RootError: the root's ``etc/mgrhooks.conf`` is broken, or the built-in core's
        database cannot be used (:func:`mgrhooks.db.transaction`); the handlers that ran
        before stay run, the core's change is not made, final handlers do not run
    """
    options = options if options is not None else Options()
    request = request if request.call_id else request._replace(call_id=os.urandom(16).hex())
    log_request(request)
    if options.depth > MAX_DEPTH:
        message = f"Calls nested deeper than {MAX_DEPTH}: {' > '.join((*options.chain, request.func))}"
        logs.ACTION.error("%s", message)
        error = Document.of(error_doc(request.func, "nesting", "func", request.func, message))
        return Response(error.with_attributes(panel_attributes(request, root.mgr)), None)
    try:
        walk = _Walk(root, request, core, options, runner)
    except PanelError as exc:  # an unknown function, or one out of the caller's reach
        logs.ACTION.info("'%s' failed: %s", request.func, exc.msg)
        return Response(panel_error(request, exc).document.with_attributes(panel_attributes(request, root.mgr)), None)
    return walk.run()


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


class _Walk:
    """Walks one plan; owns the stop/continue policy."""

    def __init__(
        self, root: Root, request: Request, core: Core | None, options: Options, runner: Runner | None
    ) -> None:
        """Plan the call. :raises PanelError: the function is unknown, or out of the caller's reach"""
        self.root, self.request, self.options = root, request, options
        self.registry, self.core = reachable(root, request.func, core, options.core_doc)
        observed = options.observers.events() if options.observers is not None else ()
        self.plan = plan(self.registry, request, self.core.catalogue(), root.disabled_plugins(), observed)
        self.settings = root.settings()
        self.monitor = standard(root, self.settings, request, options.monitors)
        self.runner = runner
        self.handlers: Handlers | None = None  # made at the first handler step
        self.attributes = panel_attributes(request, root.mgr)

    def run(self) -> Response:
        """Walk the plan: the response, final handlers run or deferred to ``finish``."""
        try:
            document = self._main(Document.of(self._initial()))
        except BaseException as exc:
            if isinstance(exc, RootError):  # e.g. the core's database: named in the panel log too
                logs.ACTION.error("'%s' failed: %s", self.request.func, exc)
            try:
                self.monitor.failed(self.request, exc)
            finally:
                self._end()
            raise
        later = self.monitor.committed(self.request, document)
        if self.options.defer_final and (self.plan.stage(Stage.FINAL) or later):
            return Response(document, self.plan, finish=lambda: self._final(document, later))
        self._final(document, later)
        return Response(document, self.plan)

    def _initial(self) -> Element:
        """The document a call starts from (a new one each time: steps may change it)."""
        return initial_document(self.request, self.root.mgr, self.registry)

    def _main(self, document: Document) -> Document:
        """The before stage, the main logic, the after stage; where the call stops."""
        for step in self.plan.stage(Stage.BEFORE):
            result = self._step(step, document)
            if result.stop:
                return result.document
            if result.skip:
                logs.ACTION.info("'%s' answered skipaction: main logic and after-handlers skipped", step.name)
                return result.document
            document = result.document
        document = self._step(self.plan.action, document).document
        if document.has_error():
            return document
        for step in self.plan.stage(Stage.AFTER):
            result = self._step(step, document)
            if result.stop:
                return result.document
            document = result.document
        return document

    def _final(self, document: Document, later: Later | None) -> None:
        """The final stage: the subscribers' work (event delivery), then final handlers,
        none of which can change the response; then the call's resources are released."""
        try:
            if later is not None:
                later()
            for step in self.plan.stage(Stage.FINAL):
                self._step(step, document)
        finally:
            self._end()

    def _end(self) -> None:
        """Release what the call's handlers held (:meth:`~mgrhooks.handlers.Handlers.close`);
        a call without handlers still removes what killed calls left (:func:`mgrhooks.spill.release`)."""
        if self.handlers is not None:
            self.handlers.close()
        else:
            spill.release(None)

    def _handlers(self) -> "Handlers":
        """The call's handlers, made at the first handler step (a call without handlers
        imports none of what running them needs)."""
        if self.handlers is None:
            from .handlers import Handlers

            self.handlers = Handlers(
                self.root, self.request, self.settings, self.options, self.monitor, self.runner, self._initial
            )
        return self.handlers

    def _programs_after(self) -> bool:
        """Whether a handler's program may run after the main logic."""
        return any(
            isinstance(step, HandlerStep) and step.event.handler.type is not HandlerType.PYTHON
            for step in self.plan.stage(Stage.AFTER)
        )

    def _listed(self, current: Document, ahead: list[Document]) -> Callable[["Rows"], None]:
        """What the walk does while libxml2 checks a supplied list, where the main thread
        waited ~30 ms: it builds the listed document into ``ahead`` (``current`` left as it
        was: the list may yet be refused) and gets the handlers ready, the first one's stdin
        written when it reads the document (:meth:`~mgrhooks.handlers.Handlers.ready`).
        ~6 ms of the bench's "big document / ratio to that" row (docs/performance.md, "Big
        documents, fifth round": the join holds the GIL, which the check then waits for)."""

        def meanwhile(rows: "Rows") -> None:
            ahead.append(Document.listed(current.tree(), rows))
            if self._programs_after():
                after = self.plan.stage(Stage.AFTER)
                self._handlers().ready(after[0], ahead[0])

        return meanwhile

    def _step(self, step: Step, document: Document) -> StepResult:
        """Run one step (:meth:`_run`); the response after it keeps the panel's own
        ``<doc>`` attributes (:func:`~mgrhooks.shape.panel_attributes`: put back when an
        xml handler's answer or an error document lacks one)."""
        result = self._run(step, document)
        kept = result.document.with_attributes(self.attributes)
        return result if kept is result.document else result._replace(document=kept)

    def _run(self, step: Step, document: Document) -> StepResult:
        """Run one step, telling the monitor before and after it."""
        if isinstance(step, HandlerStep) or (isinstance(step, ActionStep) and step.func is not None):
            return self._handlers().run(step, document)
        start = StepStart(step)
        self.monitor.before(start)
        if isinstance(step, InternalStep):  # one of the final stage sees a copy: it cannot change the response
            tree = document.copy() if step.stage is Stage.FINAL else document.edit()
            self.core.internal(step.internal, self.request, tree)
            result = StepResult(document)
        else:
            result = self._action(document)
        self.monitor.after(StepEnd(start, result))
        return result

    def _action(self, document: Document) -> StepResult:
        """The core's function: a supplied list appended as text, or its action on the tree."""
        ahead: list[Document] = []
        rows = self.core.rows(self.request.func, self._listed(document, ahead))
        if rows is not None:  # a supplied list: merged as text, no tree of its rows
            return StepResult(ahead[0] if ahead else Document.listed(document.tree(), rows))

        def within(conn: "sqlite3.Connection", path: Path, doc: Element) -> None:
            self.monitor.committing(self.request, conn, path, doc)

        try:
            self.core.action(self.request, document.edit(), within)
        except PanelError as exc:
            return panel_error(self.request, exc)
        return StepResult(document)
