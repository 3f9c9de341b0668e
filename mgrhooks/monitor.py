"""The monitor seam: what a call tells its subscribers as it walks its plan (after
pluggy's ``add_hookcall_monitoring``).

A call tells its monitor before and after each step of its plan (handlers, internal
handlers, the main logic; final handlers too), and once its response is decided
(:meth:`Monitor.committed`: after the main logic and the after-handlers, before the final
stage). The panel log's lines about handler runs (:mod:`mgrhooks.runlog`) and the event
notifications (:class:`mgrhooks.delivery.Notifications`, which collects the handlers'
run records) are subscribers; an application adds its own with ``Options.monitors``.

A subscriber is called in the call's thread, in order, and should not raise: an
exception from it propagates as the call's own.
"""

from __future__ import annotations

from collections.abc import Callable, Sequence
from typing import TYPE_CHECKING, NamedTuple

if TYPE_CHECKING:
    import sqlite3
    from pathlib import Path

    from .document import Document
    from .model import Handler, Request, Step
    from .process.runner import RunOutcome, RunRequest
    from .root import Root
    from .settings import Settings
    from .step import StepResult
    from .xmldoc import Element

#: work a subscriber leaves for the final stage, after the response is out
Later = Callable[[], None]


class StepStart(NamedTuple):
    """A step about to run.

    :param handler: the handler it runs (a plugin's, an observer's, an addon's ``<func>``);
        ``None`` for an internal handler and the core's own action
    :param program: the program as the log names it (``addon/NAME``); ``""`` when none
    :param warnings: what :func:`mgrhooks.programs.inspect` says about the program
    :param request: the process to start; ``None`` when none starts (an observer, a
        refused program, a step of the core)
    """

    step: Step
    handler: Handler | None = None
    program: str = ""
    warnings: tuple[str, ...] = ()
    request: RunRequest | None = None


class StepEnd(NamedTuple):
    """A step that ran: its start, its result, and the process's outcome when one ran."""

    start: StepStart
    result: StepResult
    outcome: RunOutcome | None = None


class Monitor:
    """A subscriber to a call's progress; each method does nothing here (override those
    you need)."""

    def before(self, start: StepStart) -> None:
        """A step is about to run."""

    def after(self, end: StepEnd) -> None:
        """A step ran (also one whose program was refused: ``end.outcome`` is ``None``)."""

    def committing(self, request: Request, conn: sqlite3.Connection, path: Path, doc: Element) -> None:
        """The built-in core's action is about to commit its change of ``request`` in
        ``conn``'s transaction (the database ``path``; ``doc`` the response so far): write
        there what must commit with the change, or raise to roll it back."""

    def committed(self, request: Request, document: Document) -> Later | None:
        """The response of ``request`` is decided (it may hold an ``<error>``); the core's
        change, if any, is committed. Not called when the call raised. :returns: work for
        the start of the final stage, or ``None``"""
        return None

    def failed(self, request: Request, error: BaseException) -> None:
        """The call of ``request`` raised ``error`` (instead of :meth:`committed`); a change
        of the core may have committed before."""


class Monitors(Monitor):
    """Several subscribers, told in order."""

    def __init__(self, subscribers: Sequence[Monitor]) -> None:
        self.subscribers = tuple(subscribers)

    def before(self, start: StepStart) -> None:
        """Tell every subscriber, in order."""
        for subscriber in self.subscribers:
            subscriber.before(start)

    def after(self, end: StepEnd) -> None:
        """Tell every subscriber, in order."""
        for subscriber in self.subscribers:
            subscriber.after(end)

    def committing(self, request: Request, conn: sqlite3.Connection, path: Path, doc: Element) -> None:
        """Tell every subscriber, in order."""
        for subscriber in self.subscribers:
            subscriber.committing(request, conn, path, doc)

    def failed(self, request: Request, error: BaseException) -> None:
        """Tell every subscriber, in order."""
        for subscriber in self.subscribers:
            subscriber.failed(request, error)

    def committed(self, request: Request, document: Document) -> Later | None:
        """Tell every subscriber, in order; their work for later, in the same order."""
        work = [later for s in self.subscribers if (later := s.committed(request, document)) is not None]
        if not work:
            return None

        def run_all() -> None:
            for later in work:
                later()

        return run_all


def standard(root: Root, settings: Settings, request: Request, extra: Sequence[Monitor] = ()) -> Monitor:
    """A call's subscribers: the panel log (hiding the secrets of ``request``'s
    parameters), event notifications when the root's ``etc/mgrhooks.conf`` configures
    notifiers, then ``extra``, then the recorder of the handlers ``[record]`` names unless
    ``extra`` holds a recorder (the panel log alone when there are no others: no fan-out
    per step)."""
    from .runlog import PanelLog

    subscribers: list[Monitor] = [PanelLog(request.params)]
    if settings.notifiers:
        from .delivery import Notifications

        subscribers.append(Notifications(root, settings.notifiers, request, settings.relay.notifiers))
    subscribers += extra
    subscribers += _recorder(root, settings, extra)
    return subscribers[0] if len(subscribers) == 1 else Monitors(subscribers)


def _recorder(root: Root, settings: Settings, extra: Sequence[Monitor]) -> list[Monitor]:
    """The recorder of the handlers the root's ``[record]`` names (:mod:`mgrhooks.record`),
    when it names any and ``extra`` holds no recorder (``exec --record``: every handler)."""
    if not settings.record.handlers:
        return []
    from .record import RUNS, Recorder

    if any(isinstance(monitor, Recorder) for monitor in extra):
        return []
    record = settings.record
    return [Recorder(root.path / RUNS, frozenset(record.handlers), record.keep, record.days)]
