"""The panel log's lines about a call's steps: a monitor subscriber (:mod:`mgrhooks.monitor`).

Written to the ``external`` module of the panel log (:mod:`mgrhooks.logs`), as the panel
writes them:

* before a program starts: the warnings about it (EXTINFO), ``Executing: addon/NAME
  [STAGE]`` (INFO); at DEBUG the size of its stdin and the names of its environment, at
  TRACE its environment and the first :data:`~mgrhooks.logs.DUMP_BYTES` of its stdin;
* after it ran: at TRACE the start of its stdout; each line of its stderr (INFO, ``NAME:
  line``; split at newlines only, so a carriage return is shown as ``\\r``); a WARNING
  naming what still held its output after it exited and was killed
  (:func:`mgrhooks.process.containment.kill_holders`); its end (pid, status, seconds) at
  EXTINFO when it failed or took :data:`SLOW` seconds or more, else at DEBUG (our choice:
  one record per quick run that went well);
* what the step's result notes (:class:`mgrhooks.step.Note`: a failure naming the
  handler, an answered error, a typed error of the core or an observer), to its module.

The call's secret values (:mod:`mgrhooks.secret`) are hidden in what comes from its
parameters or its handlers: the environment and stdin dumps, the stdout dump, the stderr
lines.
"""

from __future__ import annotations

from collections.abc import Sequence

from . import logs
from .model import Request
from .monitor import Monitor, StepEnd, StepStart
from .secret import Hider, masked

#: seconds a handler runs before its end is logged at the default level (our choice: one
#: record per handler that went well and quickly, the ``Executing:`` line, as the panel)
SLOW = 1.0
_CHANNELS = {channel.module: channel for channel in (logs.ACTION, logs.EXTERNAL)}
#: characters of the query a request line shows at most (our choice: a 64 KiB value is not logged whole)
REQUEST_SHOWN = 1000


def log_request(request: Request) -> None:
    """The request line every call gets in the panel log, handlers or not, at INFO in
    ``action`` (written at the default level), as the panel logs each request:
    ``Request [USER][LEVEL] 'func=F&key=value...'``. Values of keys that look secret
    (``passwd``, ``token``, ...: :func:`mgrhooks.secret.masked`, as in event records) are
    ``***``; a query over :data:`REQUEST_SHOWN` characters is cut there and ends in ``...``
    (our choice)."""
    if not logs.ACTION.enabled(logs.INFO):
        return
    from urllib.parse import urlencode

    shown = dict(masked((("func", request.func), *request.params)))
    query = urlencode(list(shown.items()), safe="*", encoding="utf-8", errors="surrogateescape")
    if len(query) > REQUEST_SHOWN:
        query = query[:REQUEST_SHOWN] + "..."
    logs.ACTION.info("Request [%s][%s] '%s'", request.user, request.level, query)


class PanelLog(Monitor):
    """Writes the panel log's lines about handler runs and step results; what comes from
    a handler or holds the call's parameters (the dumps, stderr lines) with the call's
    secret values hidden (:class:`mgrhooks.secret.Hider`).

    :param params: the call's parameters (``func`` first or not)
    """

    def __init__(self, params: Sequence[tuple[str, str]] = ()) -> None:
        self._params = params
        self._hider: Hider | None = None  # made when a record needs it

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
            shown = shlex.join(f"{name}={value}" for name, value in self.hider().environment(request.env))
            log.log(logs.TRACE, "'%s' environment: %s", handler.name, shown)
            log.log(logs.TRACE, "'%s' stdin: %s", handler.name, self._dump(request.stdin))

    def after(self, end: StepEnd) -> None:
        """The run's stdout dump, stderr lines and end; then the result's notes."""
        outcome, handler = end.outcome, end.start.handler
        if outcome is not None and handler is not None:
            log = logs.EXTERNAL
            if log.enabled(logs.TRACE):
                log.log(logs.TRACE, "'%s' stdout: %s", handler.name, self._dump(outcome.stdout))
            if outcome.stderr and log.enabled(logs.INFO):
                for line in self.hider().hide(outcome.stderr.decode("utf-8", "surrogateescape")).split("\n"):
                    if line:  # (the end of the last line; a CR of a CRLF end dropped, any other shown)
                        log.info("%s: %s", handler.name, line.removesuffix("\r"))
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

    def hider(self) -> Hider:
        """What hides the call's secret values (made at its first use)."""
        if self._hider is None:
            self._hider = Hider(self._params)
        return self._hider

    def _dump(self, data: bytes) -> bytes:
        """The first :data:`~mgrhooks.logs.DUMP_BYTES` of ``data``, its secrets hidden
        first (none shows in part at the cut)."""
        hider = self.hider()
        text = data[: logs.DUMP_BYTES + hider.longest].decode("utf-8", "surrogateescape")
        return hider.hide(text).encode("utf-8", "surrogateescape")[: logs.DUMP_BYTES]
