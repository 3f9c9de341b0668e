"""``mgrhooks bench``: what a function's handlers cost a call, step by step. I/O.

A call is run N times in this process through the Python API
(:meth:`mgrhooks.api.Panel.call`), with a monitor subscriber (:mod:`mgrhooks.monitor`)
timing each step from its :class:`~mgrhooks.monitor.StepStart` to its
:class:`~mgrhooks.monitor.StepEnd`, and a :class:`~mgrhooks.process.Processes` timing
each program's start. A step's time splits into three parts (our choice of terms):

* *start*: starting the process (fork/exec or ``posix_spawn``, until it returns);
* *handler*: the rest of the run's :attr:`~mgrhooks.process.runner.RunOutcome.duration`
  (the program running, its output read, its exit waited for);
* *parse+merge*: everything else of the step in mgrhooks: the request built (environment,
  stdin), the answer parsed and merged into the response, the monitor's other work (the
  panel log). A step of the core (its action, an internal handler) is all this part.

The times are wall-clock seconds (``time.perf_counter``); percentiles are nearest-rank.
"""

from __future__ import annotations

import math
import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, NamedTuple

from .monitor import Monitor, StepEnd, StepStart
from .process import Processes

if TYPE_CHECKING:
    from .api import Panel
    from .process.runner import RunRequest
    from .process.spawn import Child


class Sample(NamedTuple):
    """One step of one call, in seconds: the whole step and its three parts."""

    total: float
    start: float
    handler: float
    other: float


class StepCost(NamedTuple):
    """One step over the calls: its label (``after handler greet.sh``), the calls that ran
    it (one that stopped early runs fewer steps), p50 and p95 of its time in seconds, and
    the shares (0-1) of start, handler, parse+merge in its total."""

    label: str
    runs: int
    p50: float
    p95: float
    start: float
    handler: float
    other: float


class Costs(NamedTuple):
    """What ``bench`` found: the calls' p50 and p95 in seconds, each step's cost in plan
    order, and the calls' error responses counted."""

    runs: int
    p50: float
    p95: float
    steps: tuple[StepCost, ...]
    errors: int


class _TimedProcesses(Processes):
    """Processes that note how long each program took to start."""

    def __init__(self) -> None:
        super().__init__()
        self.started: list[tuple[RunRequest, float]] = []

    def start(self, request: RunRequest, stdin: int, stdout: int, stderr: int) -> Child:
        """Start as :class:`Processes` does, timed."""
        began = time.perf_counter()
        child = super().start(request, stdin, stdout, stderr)
        self.started.append((request, time.perf_counter() - began))
        return child

    def took(self, request: RunRequest) -> float:
        """Seconds the start of ``request`` took (0: it did not start); forgotten then."""
        for number, (started, seconds) in enumerate(self.started):
            if started is request:
                del self.started[number]
                return seconds
        return 0.0


class _Timing(Monitor):
    """Times each step of the calls it is given to (see the module docstring)."""

    def __init__(self, processes: _TimedProcesses) -> None:
        self.processes = processes
        self.began = 0.0
        self.seen: dict[str, int] = {}  # the steps of the current call by label: how many
        self.samples: dict[tuple[str, int], list[Sample]] = {}  # (label, occurrence): in first-seen order

    def before(self, start: StepStart) -> None:
        """Note when the step began."""
        self.began = time.perf_counter()

    def after(self, end: StepEnd) -> None:
        """Note the step's time, split."""
        total = time.perf_counter() - self.began
        step = end.start.step
        stage = step.stage.value if step.stage is not None else "action"
        label = f"{stage} {step.kind.value} {step.name}"
        outcome = end.outcome
        started = self.processes.took(outcome.request) if outcome is not None else 0.0
        ran = outcome.duration if outcome is not None else 0.0
        occurrence = self.seen[label] = self.seen.get(label, 0) + 1
        sample = Sample(total, started, ran - started, max(total - ran, 0.0))
        self.samples.setdefault((label, occurrence), []).append(sample)


def bench(panel: Panel, func: str, params: Sequence[tuple[str, str]], runs: int, user: str, level: int) -> Costs:
    """Call ``func`` ``runs`` times and time each step (see the module docstring). The
    calls are real: the core's changes are made, handlers run, the panel log is written."""
    from .dispatch import Options

    processes = _TimedProcesses()
    timing = _Timing(processes)
    calls: list[float] = []
    errors = 0
    with processes, panel.logging():
        for _ in range(runs):
            timing.seen = {}
            began = time.perf_counter()
            response = panel.call(
                func, params, user=user, level=level, options=Options(processes=processes, monitors=(timing,))
            )
            calls.append(time.perf_counter() - began)
            errors += response.error
    steps = tuple(_cost(label, samples) for (label, _), samples in timing.samples.items())
    return Costs(runs, percentile(calls, 0.5), percentile(calls, 0.95), steps, errors)


def _cost(label: str, samples: Sequence[Sample]) -> StepCost:
    totals = [s.total for s in samples]
    whole = sum(totals) or 1.0
    return StepCost(
        label,
        len(samples),
        percentile(totals, 0.5),
        percentile(totals, 0.95),
        sum(s.start for s in samples) / whole,
        sum(s.handler for s in samples) / whole,
        sum(s.other for s in samples) / whole,
    )


def percentile(values: Sequence[float], fraction: float) -> float:
    """The nearest-rank percentile ``fraction`` (0-1) of ``values`` (0 for none)."""
    if not values:
        return 0.0
    ordered = sorted(values)
    return ordered[max(math.ceil(fraction * len(ordered)) - 1, 0)]
