"""Running one handler's step: its program vetted, the call's environment and parameter
files, its protocol's request and answer, the run itself, each told to the monitor. I/O.

The walk (:mod:`mgrhooks.dispatch`) decides which steps run and when the call stops; a
handler's protocol (:mod:`mgrhooks.protocol`) what it gets and what its answer does; this
module runs it. A handler whose program is refused (:func:`mgrhooks.programs.inspect`) or
whose parameter files cannot be written fails without starting.

Imported by the walk at its first handler step: a call without handlers needs none of
this (nor the runner, the protocols, ``merge``, ``programs``: bench/run.py's cold start).
"""

from __future__ import annotations

import contextlib
import os
from collections.abc import Callable
from typing import TYPE_CHECKING

from . import protocol, spill
from .document import Document
from .env import Facts, Spilled, call_environment
from .model import ActionStep, HandlerStep, Request, Stage, Step
from .monitor import Monitor, StepEnd, StepStart
from .process import Processes
from .programs import Inspector
from .protocol import Call, InProcess, Spawned, Turn
from .version import __version__

if TYPE_CHECKING:
    from .dispatch import Options, Runner
    from .process.runner import RunOutcome, RunRequest
    from .root import Root
    from .settings import Settings
    from .step import StepResult
    from .xmldoc import Element


class Handlers:
    """The handlers of one call.

    :param runner: runs each program instead of ``options.processes`` (or the call's own
        :class:`~mgrhooks.process.Processes`)
    :param initial: makes the document a call starts from
    """

    def __init__(
        self,
        root: Root,
        request: Request,
        settings: Settings,
        options: Options,
        monitor: Monitor,
        runner: Runner | None,
        initial: Callable[[], Element],
    ) -> None:
        self.request, self.settings, self.options = request, settings, options
        self.monitor, self.initial = monitor, initial
        self.root, self.cwd, self.addon_dir = root, str(root.path), str(root.addon_dir)
        self.runner = runner  # else set at the first program (see _run)
        self.processes: Processes | None = None  # the call's own, when the options bring none
        self.spilled: Spilled | None = None  # written with the first program that starts
        self.call = Call(request, self.cwd, settings, options.timeout)  # the environment added at the first program
        self.programs = Inspector(self.addon_dir)  # what the call's programs share is looked at once

    def close(self) -> None:
        """Release what the call's handlers held: the call's own Processes, its spilled
        parameter files, and those calls that were killed left (:func:`mgrhooks.spill.release`)."""
        if self.processes is not None:
            self.processes.close()
        spill.release(self.spilled)

    def ready(self, step: Step | None = None, document: Document | None = None) -> None:
        """Set up what the first program needs without starting one: the call's
        environment, and the caller's ``options.processes`` with their guardian (a call's
        own Processes are still made at its first program). For a walk that waits on
        something else meanwhile (a supplied list's check: docs/performance.md).

        :param step: the step that runs next, given ``document``: when its program gets
            the document's bytes on stdin (:func:`~mgrhooks.protocol.reads_document`), they
            are written now to the sealed file its run will read (:meth:`Processes.keep
            <mgrhooks.process.Processes.keep>`: ~4 ms of an 11 MB list); when it cannot
            be written, the run tries again and reports it
        """
        self._prepare()
        if self.runner is not None or self.options.processes is None:
            return
        self.options.processes.prepare()
        if document is not None and isinstance(step, HandlerStep) and protocol.reads_document(step.event.handler):
            with contextlib.suppress(OSError):
                self.options.processes.keep(document.data())

    def run(self, step: HandlerStep | ActionStep, document: Document) -> StepResult:
        """Run the handler of ``step`` (a registered one, or an addon's ``<func>``) by its
        protocol, given ``document``. In the final stage a program gets the response
        (``sessiondata="yes"``) or the starting document, an observer a copy: neither can
        change the response."""
        turn = protocol.turn(step)
        adapter = protocol.adapter(turn.handler)
        final = turn.stage == Stage.FINAL
        if isinstance(adapter, protocol.InProcess):
            return self._observe(step, turn, adapter, Document.of(document.copy()) if final else document)
        if final and not (isinstance(step, HandlerStep) and step.event.sessiondata):
            document = Document.of(self.initial())
        return self._spawn(step, turn, adapter, document)

    def _observe(self, step: Step, turn: Turn, adapter: InProcess, document: Document) -> StepResult:
        """Call a Python observer as a handler."""
        start = StepStart(step, turn.handler)
        self.monitor.before(start)
        observers = self.options.observers
        answer = adapter.invoke(observers.callback(turn.handler) if observers else None, self.request, document)
        return self._ended(start, adapter.result(turn, self.call, answer, document))

    def _spawn(self, step: Step, turn: Turn, adapter: Spawned, document: Document) -> StepResult:
        """Run a handler's program, unless it is refused or its parameter files cannot be
        written (it fails then, not started)."""
        program = self.programs.inspect(turn.handler.name)
        refusal = "; ".join(program.errors) if program.path is None else self._prepare()
        if program.path is None or refusal:
            start = StepStart(step, turn.handler, program.shown, program.warnings)
            self.monitor.before(start)
            return self._ended(start, protocol.refused(turn, self.call, document, refusal))
        request = adapter.request(turn, program.path, self.call, document)
        start = StepStart(step, turn.handler, program.shown, program.warnings, request)
        self.monitor.before(start)
        outcome = self._run(request)
        if turn.stage == Stage.FINAL:  # its output is not read
            result = protocol.final(turn, outcome, document)
        else:
            result = adapter.result(turn, self.call, outcome, document)
        return self._ended(start, result, outcome)

    def _ended(self, start: StepStart, result: StepResult, outcome: RunOutcome | None = None) -> StepResult:
        """Tell the monitor a step ran; its result."""
        self.monitor.after(StepEnd(start, result, outcome))
        return result

    def _run(self, request: RunRequest) -> RunOutcome:
        """Run one program: the one place that says how. Through the runner the call was
        given, else the caller's ``options.processes``, else Processes of the call's own,
        made at its first program and closed at its end (:meth:`close`)."""
        if self.runner is None:
            processes = self.options.processes
            if processes is None:
                processes = self.processes = Processes()
            self.runner = processes.run
        return self.runner(request)

    def _prepare(self) -> str:
        """Make the call's environment for programs, once, its parameter files written
        first (:func:`mgrhooks.spill.write`): ``""``, or why it cannot be made (tried again
        for the next handler)."""
        if not self.call.environment:
            options = self.options
            environ = options.environ if options.environ is not None else os.environ
            chain = (*options.chain, self.request.func)
            facts = Facts(self.root.mgr, self.cwd, __version__, depth=options.depth, chain=chain)
            passed = self.settings.pass_env
            try:
                self.spilled = spill.write(self.request, environ, facts, passed, options.request_env)
            except OSError as exc:  # a full /tmp, an environment too large even without parameters
                return spill.failure(exc)
            environment = call_environment(
                environ, self.request, facts, spilled=self.spilled, passed=passed, request_env=options.request_env
            )
            self.call = self.call._replace(environment=environment)
        return ""
