"""The panel log's lines about a call's steps: a monitor subscriber (:mod:`mgrhooks.monitor`).

Written to the ``external`` module of the panel log (:mod:`mgrhooks.logs`), as the panel
writes them:

* before a program starts: the warnings about it (EXTINFO), ``Executing: addon/NAME
  [STAGE]`` (INFO); at DEBUG the size of its stdin and the names of its environment, at
  TRACE the first :data:`~mgrhooks.logs.DUMP_BYTES` of its stdin;
* after it ran: at TRACE the start of its stdout; each line of its stderr (INFO, ``NAME:
  line``); a WARNING naming what still held its output after it exited and was killed
  (:func:`mgrhooks.process.containment.kill_holders`); its end (pid, status, seconds) at
  EXTINFO when it failed or took :data:`SLOW` seconds or more, else at DEBUG (our choice:
  one record per quick run that went well);
* what the step's result notes (:class:`mgrhooks.step.Note`: a failure naming the
  handler, an answered error, a typed error of the core or an observer), to its module.
"""

from __future__ import annotations

from . import logs
from .monitor import Monitor, StepEnd, StepStart

#: seconds a handler runs before its end is logged at the default level (our choice: one
#: record per handler that went well and quickly, the ``Executing:`` line, as the panel)
SLOW = 1.0
_CHANNELS = {channel.module: channel for channel in (logs.ACTION, logs.EXTERNAL)}


class PanelLog(Monitor):
    """Writes the panel log's lines about handler runs and step results."""

    def before(self, start: StepStart) -> None:
        """The program's warnings, then ``Executing:`` and the debug dumps of its input."""
        log = logs.EXTERNAL
        for warning in start.warnings:
            log.log(logs.EXTINFO, "%s", warning)
        request, handler = start.request, start.handler
        if request is None or handler is None:
            return
        import shlex

        log.info("Executing: %s", shlex.join((start.program, *request.argv[1:])))
        if log.enabled(logs.DEBUG):
            names = " ".join(sorted(request.env))
            log.debug("'%s': %d bytes on stdin, environment %s", handler.name, len(request.stdin), names)
        if log.enabled(logs.TRACE):
            log.log(logs.TRACE, "'%s' stdin: %s", handler.name, request.stdin[: logs.DUMP_BYTES])

    def after(self, end: StepEnd) -> None:
        """The run's stdout dump, stderr lines and end; then the result's notes."""
        outcome, handler = end.outcome, end.start.handler
        if outcome is not None and handler is not None:
            log = logs.EXTERNAL
            if log.enabled(logs.TRACE):
                log.log(logs.TRACE, "'%s' stdout: %s", handler.name, outcome.stdout[: logs.DUMP_BYTES])
            for line in outcome.stderr.decode("utf-8", "backslashreplace").splitlines():
                log.info("%s: %s", handler.name, line)
            if outcome.ok and outcome.killed:  # mgrhooks.process.containment.kill_holders
                message, drain = (
                    "'%s' exited; killed what still held its output %gs later: %s",
                    outcome.request.drain_grace,
                )
                log.warning(message, handler.name, drain, " ".join(map(str, outcome.killed)))
            level = logs.EXTINFO if not outcome.ok or outcome.duration >= SLOW else logs.DEBUG
            if log.enabled(level):
                status = "ok" if outcome.ok else outcome.reason
                pid, code, seconds = outcome.pid, outcome.returncode, outcome.duration
                log.log(level, "'%s' pid %s: %s (exit %s) in %.3fs", handler.name, pid, status, code, seconds)
        for note in end.result.notes:
            _CHANNELS[note.module].log(note.level, "%s", note.text)
