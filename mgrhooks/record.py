"""Record and replay: each handler run of a call kept under ``var/runs/<call id>/``, listed,
and run again with exactly its recorded input. I/O.

A :class:`Recorder` is a monitor subscriber (:mod:`mgrhooks.monitor`): at each step's end
that started a program it writes the run's :class:`~mgrhooks.process.runner.RunRequest`
and :class:`~mgrhooks.process.runner.RunOutcome`::

    var/runs/<call id>/call.json             {"call", "func", "user", "time"}
    var/runs/<call id>/<NN>-<handler>/run.json
        {"handler", "stage", "argv", "cwd", "timeout", "returncode", "failure", "reason",
         "started", "duration", "killed"}       (times: seconds since the epoch, seconds)
    var/runs/<call id>/<NN>-<handler>/env.json  the environment, as given
    var/runs/<call id>/<NN>-<handler>/stdin, stdout, stderr   the bytes, as given and read

Directories are mode 700, files mode 600 (umask aside): the environment and stdin hold
the call's parameters, passwords among them, unmasked, since a replay needs them as they
were (our choice; ``runs`` masks them in its listing). At the first run a call records,
the recorded calls beyond the newest ``keep`` and those older than ``days`` go
(:class:`mgrhooks.settings.Record`).
"""

from __future__ import annotations

import json
import os
import shutil
import time
from collections.abc import Collection, Mapping
from pathlib import Path
from typing import Any, NamedTuple

from .monitor import Monitor, StepEnd
from .process.runner import RunOutcome, RunRequest

#: where recorded calls are kept, under the root
RUNS = "var/runs"


class Recorder(Monitor):
    """Records the program runs of a call (see the module docstring).

    :param runs: the directory recorded calls go in (``<root>/var/runs``)
    :param handlers: the names of the handlers recorded; ``None``: every one
    :param keep: recorded calls kept (the newest); :param days: days one is kept
    """

    def __init__(self, runs: Path, handlers: Collection[str] | None = None, keep: int = 50, days: float = 30) -> None:
        self.runs, self.handlers, self.keep, self.days = runs, handlers, keep, days
        self.call = ""  # the call being recorded, and its runs so far
        self.count = 0

    def after(self, end: StepEnd) -> None:
        """Write the run of ``end`` when a program ran and its handler is recorded."""
        outcome, handler = end.outcome, end.start.handler
        if outcome is None or handler is None:
            return
        if self.handlers is not None and handler.name not in self.handlers:
            return
        request = outcome.request
        call_dir = self.runs / _safe(request.env.get("MGRHOOKS_CALL_ID", "call"))
        if call_dir.name != self.call:  # the first run of a call (one recorder may see several)
            self.call, self.count = call_dir.name, 0
            _private_dir(self.runs)
            prune(self.runs, self.keep - 1, self.days)
            _private_dir(call_dir)
            call = {
                "call": call_dir.name,
                "func": request.env.get("ACTION_NAME", ""),
                "user": request.env.get("AUTH_USER", ""),
                "time": time.time() - outcome.duration,
            }
            _write(call_dir / "call.json", json.dumps(call).encode())
        self.count += 1
        run_dir = call_dir / f"{self.count:02d}-{_safe(handler.name)}"
        _private_dir(run_dir)
        _write_run(run_dir, handler.name, request.env.get("HANDLER_STAGE", ""), outcome)


def _write_run(run_dir: Path, handler: str, stage: str, outcome: RunOutcome) -> None:
    request = outcome.request
    run = {
        "handler": handler,
        "stage": stage,
        "argv": list(request.argv),
        "cwd": request.cwd,
        "timeout": request.timeout,
        "returncode": outcome.returncode,
        "failure": outcome.failure.value if outcome.failure else None,
        "reason": outcome.reason,
        "started": time.time() - outcome.duration,
        "duration": outcome.duration,
        "killed": list(outcome.killed),
    }
    _write(run_dir / "env.json", json.dumps(dict(request.env), ensure_ascii=False).encode("utf-8", "surrogateescape"))
    _write(run_dir / "stdin", request.stdin)
    _write(run_dir / "stdout", outcome.stdout)
    _write(run_dir / "stderr", outcome.stderr)
    _write(run_dir / "run.json", json.dumps(run, ensure_ascii=False).encode("utf-8", "surrogateescape"))


def prune(runs: Path, keep: int, days: float) -> None:
    """Remove the recorded calls in ``runs`` beyond the newest ``keep`` and those older
    than ``days`` (by their directory's modification time)."""
    if not runs.is_dir():
        return
    calls = sorted((p for p in runs.iterdir() if p.is_dir()), key=lambda p: p.stat().st_mtime, reverse=True)
    oldest = time.time() - days * 86400
    for number, path in enumerate(calls):
        if number >= keep or path.stat().st_mtime < oldest:
            shutil.rmtree(path, ignore_errors=True)


class Run(NamedTuple):
    """One recorded handler run: its directory's name (``01-samba.pl``), ``run.json``'s
    fields, and the input it was given."""

    name: str
    meta: Mapping[str, Any]
    env: Mapping[str, str]
    stdin: bytes
    stdout: bytes

    @property
    def status(self) -> str:
        """``ok``, or why it failed (``exit``, ``timeout``, ...)."""
        return str(self.meta.get("failure") or "ok")

    def request(self, program: str | None = None) -> RunRequest:
        """The recorded input as a request; ``program`` in place of ``argv[0]`` if given."""
        argv = list(self.meta["argv"])
        if program is not None:
            argv[0] = os.path.abspath(program)
        return RunRequest(
            tuple(argv), self.meta["cwd"], self.env, self.stdin, float(self.meta["timeout"]), f"replay of {self.name}"
        )


class Recording(NamedTuple):
    """One recorded call: ``call.json``'s fields and its runs in order."""

    call: str
    func: str
    user: str
    time: float
    runs: tuple[Run, ...]


def recordings(runs: Path) -> list[Recording]:
    """Every recorded call in ``runs``, the oldest first (none: an empty list)."""
    if not runs.is_dir():
        return []
    found = [load(runs, path.name) for path in runs.iterdir() if (path / "call.json").is_file()]
    return sorted(found, key=lambda r: r.time)


def load(runs: Path, call: str) -> Recording:
    """The recorded call ``call``. :raises KeyError: there is none of that id"""
    path = runs / _safe(call)
    try:
        meta = json.loads((path / "call.json").read_bytes())
    except (OSError, ValueError):
        raise KeyError(call) from None
    taken = tuple(_run(p) for p in sorted(path.iterdir()) if (p / "run.json").is_file())
    return Recording(meta["call"], meta["func"], meta["user"], float(meta["time"]), taken)


def _run(path: Path) -> Run:
    meta = json.loads((path / "run.json").read_bytes().decode("utf-8", "surrogateescape"))
    env = json.loads((path / "env.json").read_bytes().decode("utf-8", "surrogateescape"))
    return Run(path.name, meta, env, (path / "stdin").read_bytes(), (path / "stdout").read_bytes())


def replay(run: Run, program: str | None = None) -> RunOutcome:
    """Run ``run``'s handler again with exactly its recorded argv, environment, stdin and
    working directory (``program`` in place of its own, when given), through a
    :class:`~mgrhooks.process.Processes` of its own."""
    from .process import Processes

    with Processes() as processes:
        return processes.run(run.request(program))


def document_diff(recorded: bytes, new: bytes, label: str) -> list[str]:
    """A unified diff (lines with their ends) of a handler's recorded and new output, each
    pretty-printed as XML when it parses (one element a line), else as text; empty when
    they are the same document."""
    import difflib

    return list(difflib.unified_diff(pretty(recorded), pretty(new), f"{label} (recorded)", f"{label} (replayed)"))


def pretty(output: bytes) -> list[str]:
    """``output`` as lines: a document (after any CGI header lines) pretty-printed, one
    element a line; text that is no document, as it is."""
    from lxml import etree

    from .xmldoc import parser

    start = output.find(b"<")
    if start >= 0:
        try:
            tree = etree.fromstring(output[start:], parser(remove_blank_text=True))
        except etree.XMLSyntaxError:
            pass
        else:
            text = etree.tostring(tree, pretty_print=True, encoding="unicode")
            return [line + "\n" for line in text.splitlines()]
    return [line + "\n" for line in output.decode("utf-8", "replace").splitlines()]


def _safe(name: str) -> str:
    """``name`` as one path component (no ``/``, not ``.`` or ``..``)."""
    cleaned = name.replace("/", "_").replace("\0", "_")
    return cleaned if cleaned not in ("", ".", "..") else "_"


def _private_dir(path: Path) -> None:
    path.mkdir(mode=0o700, parents=True, exist_ok=True)
    os.chmod(path, 0o700)


def _write(path: Path, data: bytes) -> None:
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_TRUNC | os.O_NOFOLLOW, 0o600)
    try:
        os.fchmod(fd, 0o600)
        view = memoryview(data)
        while view:
            view = view[os.write(fd, view) :]
    finally:
        os.close(fd)
