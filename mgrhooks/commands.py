"""The ``mgrhooks`` commands other than ``exec``: the rest of :mod:`mgrhooks.cli`, whose
``mgrhooks`` group imports this module when one of these commands is asked for or the
commands are listed (``--help``). A call does not define them: their options and commands
were ~1.5 ms of every start (bench row "cold start"; docs/performance.md)."""

from __future__ import annotations

import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, TypeVar

import click

from .cli import (
    FORMATS,
    _at_panel_path,
    _level_option,
    _number,
    _panel_path_option,
    _params,
    _root_options,
    _timeout_option,
    _write,
    main,
)
from .errors import ExitStatus, MgrhooksError
from .model import Severity
from .printable import printable
from .settings import MAX_SECONDS

if TYPE_CHECKING:
    from .api import Panel


@main.command("module")
@_root_options
@click.argument("program")
@click.argument("extra", nargs=-1, metavar="[-- ARG]...")
@click.option("--command", "command", required=True, help="The module's command (open, suspend, pmvalidate, ...).")
@click.option("--item", help="The service id (processing modules: --item N).")
@click.option("--payment", help="The payment id (payment modules: --payment N).")
@click.option("--out", "fmt", type=click.Choice(FORMATS), default="xml", show_default=True)
@_timeout_option("Seconds the module may run (at most a day).")
@_panel_path_option
@click.option("-v", "--verbose", is_flag=True, help="Also print the log lines of this run on stderr.")
def module_command(
    panel: Panel,
    program: str,
    extra: tuple[str, ...],
    command: str,
    item: str | None,
    payment: str | None,
    fmt: str,
    timeout: float | None,
    panel_path: str | None,
    verbose: bool,
) -> None:
    """Run a BILLmanager processing or payment module as the panel starts it:
    PROGRAM --command CMD [--item N] [--payment N] [ARG]..., with stdin (when it is not a
    terminal) as its input document, and print its answer.

    PROGRAM is relative to the root (processing/pmX, paymethods/pmX). Exit status 0 when
    the answer holds no <error>, 1 when it does or the module failed.
    """
    from .modules import ModuleCall
    from .process import Processes
    from .render import render_bytes

    stdin = b"" if sys.stdin is None or sys.stdin.isatty() else sys.stdin.buffer.read()
    panel = _at_panel_path(panel, panel_path)
    call = ModuleCall(program, command, item, payment, extra, stdin, timeout)
    with Processes(adopt_orphans=True, seal=True) as processes, panel.logging(echo=verbose):
        answer = panel.module(call, processes)
    if not _write(render_bytes(answer.doc, fmt, (("command", command),))):
        sys.exit(ExitStatus.OUTPUT)
    sys.exit(ExitStatus.ERROR if answer.error else ExitStatus.OK)


@main.command("plan")
@_root_options
@click.argument("func")
@_level_option
@click.option(
    "--core-doc",
    metavar="FILE",
    help="A <doc> file that is the main logic's result, as exec --core-doc takes it.",
)
def plan_command(panel: Panel, func: str, level: int, core_doc: str | None) -> None:
    """Print the steps a call of FUNC runs, in order, and why each is where it is.

    A function known only through the handlers registered for it is planned with its
    main logic skipped.
    """
    from .model import HandlerStep, Stage

    document = Path(core_doc).absolute() if core_doc else None
    with panel.logging():  # an unknown function: a PanelError, reported as every MgrhooksError
        steps = panel.plan(func, level, document).steps
    for number, step in enumerate(steps, 1):
        stage = step.stage.value if isinstance(step.stage, Stage) else "action"
        label = f"{step.name} ({step.event.handler.type.value})" if isinstance(step, HandlerStep) else step.name
        skipped = f"  [skipped: {step.skipped}]" if step.skipped else ""
        click.echo(f"{number:>3}. {stage:<7} {step.kind.value:<9} {label}{skipped}")
        click.echo(f"     why: {step.why}")


@main.command("runs")
@_root_options
def runs_command(panel: Panel) -> None:
    """List the recorded calls (exec --record, [record] handlers=): id, time, function,
    user, and each handler run with its status, the oldest first."""
    import time

    for recording in panel.recordings():
        when = time.strftime("%Y-%m-%d %H:%M:%S", time.localtime(recording.time))
        runs = " ".join(f"{run.name}:{run.status}" for run in recording.runs)
        click.echo(f"{recording.call} {when} {recording.func} user={recording.user} {runs}")


@main.command("replay")
@_root_options
@click.argument("call")
@click.argument("handler", required=False)
@click.option(
    "--handler", "program", metavar="PATH", help="Run this program (an edited copy) instead of the recorded one."
)
def replay_command(panel: Panel, call: str, handler: str | None, program: str | None) -> None:
    """Run the handler runs of recorded call CALL again (only HANDLER's: its name, or
    its run's as 'runs' lists it), with exactly the recorded argv, environment, stdin
    and directory, and print how the output differs from the recorded one (a unified
    diff of the documents). Exit status 0 when no output differs, 1 when one does.
    """
    from .record import document_diff, replay

    try:
        recording = panel.recording(call)
    except KeyError:
        raise click.BadParameter(f"no recorded call {call!r} (see 'mgrhooks runs')", param_hint="'CALL'") from None
    runs = [run for run in recording.runs if handler in (None, run.name, run.meta.get("handler"))]
    if not runs:
        names = ", ".join(run.name for run in recording.runs) or "none"
        raise click.BadParameter(f"no run of {handler!r} in call {call} (there are: {names})", param_hint="'HANDLER'")
    differs = False
    for run in runs:
        outcome = replay(run, program)
        diff = document_diff(run.stdout, outcome.stdout, run.name)
        status = outcome.failure.value if outcome.failure else "ok"
        changed = " (recorded: " + run.status + ")" if status != run.status else ""
        click.echo(f"{run.name}: {status}{changed}, {'output differs' if diff else 'same output'}")
        click.echo("".join(diff), nl=False)
        differs = differs or bool(diff) or bool(changed)
    sys.exit(ExitStatus.ERROR if differs else ExitStatus.OK)


@main.command("bench")
@_root_options
@click.argument("func")
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("-n", "runs", default=20, show_default=True, type=click.IntRange(1, 100000), help="Calls to make.")
@click.option("--user", default="root", show_default=True, help="The calling user (AUTH_USER).")
@_level_option
def bench_command(panel: Panel, func: str, pairs: tuple[str, ...], runs: int, user: str, level: int) -> None:
    """Call FUNC N times in this process and print, per step, p50 and p95 times and the
    share spent starting processes, in the handler, and parsing and merging in mgrhooks.

    The calls are real: handlers run, the core's changes are made, the log is written.
    """
    from .benchmark import bench

    costs = bench(panel, func, _params(pairs), runs, user, level)
    click.echo(
        f"{func}: {costs.runs} call(s), {costs.errors} with an <error>; p50 {costs.p50 * 1000:.2f} ms, "
        f"p95 {costs.p95 * 1000:.2f} ms a call"
    )
    click.echo(f"{'step':<40} {'runs':>5} {'p50 ms':>9} {'p95 ms':>9} {'start':>6} {'handler':>8} {'parse+merge':>12}")
    for step in costs.steps:
        click.echo(
            f"{step.label:<40} {step.runs:>5} {step.p50 * 1000:>9.2f} {step.p95 * 1000:>9.2f} {step.start:>6.0%} "
            f"{step.handler:>8.0%} {step.other:>12.0%}"
        )


@main.command("check")
@_root_options
def check_command(panel: Panel) -> None:
    """Report every problem in the plugin files and handler programs (exit 1 on errors)."""
    problems = panel.check()
    for problem in problems:
        click.echo(str(problem))
    errors = sum(p.severity is Severity.ERROR for p in problems)
    click.echo(f"{errors} error(s), {len(problems) - errors} warning(s)", err=True)
    sys.exit(ExitStatus.ERROR if errors else ExitStatus.OK)


@main.group("plugin")
def plugin_group() -> None:
    """List plugins (plugin description files) and switch them on or off.

    The state is kept in the root's etc/mgrhooks.disabled; a disabled plugin's handlers
    are skipped (plan shows them as such) and its functions are not offered.
    """


@plugin_group.command("list")
@_root_options
def plugin_list(panel: Panel) -> None:
    """One line per plugin: name, state, handlers, functions, file; the counts are what
    calls use of it, and its first error follows in brackets (see 'mgrhooks check')."""
    for plugin in panel.plugins():
        state = "enabled" if plugin.enabled else "disabled"
        counts = f"handlers={plugin.handlers} functions={plugin.functions}"
        problem = f" [{plugin.problem}]" if plugin.problem else ""
        click.echo(f"{plugin.name:<20} {state:<8} {counts} {plugin.shown}{problem}")


@plugin_group.command("enable")
@_root_options
@click.argument("name")
def plugin_enable(panel: Panel, name: str) -> None:
    """Switch plugin NAME on again."""
    _switch(panel, name, enabled=True)


@plugin_group.command("disable")
@_root_options
@click.argument("name")
def plugin_disable(panel: Panel, name: str) -> None:
    """Switch plugin NAME off, without deleting its files."""
    _switch(panel, name, enabled=False)


def _switch(panel: Panel, name: str, enabled: bool) -> None:
    try:
        plugin, changed = panel.set_plugin_enabled(name, enabled)
    except KeyError:
        where = f"{panel.root.path} for {panel.root.mgr}"
        raise click.BadParameter(f"no plugin {name!r} in {where} (see 'mgrhooks plugin list')") from None
    state = "enabled" if enabled else "disabled"
    click.echo(f"{plugin.name}: {state}" + ("" if changed else " (already)"))


@main.command("worker", context_settings={"ignore_unknown_options": True})
@_root_options
@click.option("--once", is_flag=True, help="One pass over the due deliveries, then exit (for cron).")
@click.option(
    "--interval",
    default=1.0,
    show_default=True,
    type=click.FloatRange(min=0.05, max=MAX_SECONDS),
    callback=_number,
    help="Seconds between passes.",
)
@click.option(
    "--central",
    is_flag=True,
    help="Run a Celery worker delivering what panels relayed to the broker of [relay] (options after --).",
)
@click.argument("celery_options", nargs=-1, type=click.UNPROCESSED)
def worker_command(panel: Panel, once: bool, interval: float, central: bool, celery_options: tuple[str, ...]) -> None:
    """Deliver spooled event records, try failed ones again when due, and relay those of
    [relay] notifiers to its broker.

    Runs until stopped (a killed worker loses nothing: what it was sending is sent again).
    With --central: a Celery worker for this root's [notify.NAME] sections
    ('mgrhooks worker --central -- -c 4'; docs/notifications.md).
    """
    import time

    if celery_options and not central:
        raise click.UsageError(f"unexpected argument(s) {' '.join(celery_options)} (options for Celery need --central)")
    if central:
        from .central import run

        with panel.logging():
            run(panel.root, panel.root.settings(), celery_options)
        return
    while True:
        done = panel.deliver()
        relayed = panel.relay()
        if once:
            line = f"delivered {done.delivered}, to retry {done.retried}, dead {done.dead}"
            if panel.root.settings().relay.notifiers:
                line += f", relayed {relayed.relayed}" + (f" ({relayed.error})" if relayed.error else "")
            click.echo(line)
            return
        time.sleep(interval)


@main.command("serve")
@_root_options
@click.option(
    "--listen",
    metavar="HOST:PORT",
    help="Where to listen (default: [serve] listen in etc/mgrhooks.conf, else 0.0.0.0:1500; port 0: a free one).",
)
@click.option("--http", "plain", is_flag=True, help="Plain HTTP instead of HTTPS (behind nginx, or on loopback).")
@click.option("--uds", metavar="PATH", help="Listen on this unix socket instead of HOST:PORT.")
@click.option("-v", "--verbose", is_flag=True, help="Also print the log lines (and the access log) on stderr.")
def serve_command(panel: Panel, listen: str | None, plain: bool, uds: str | None, verbose: bool) -> None:
    """Serve the panel's HTTP API: https://HOST:1500/<mgr>?func=...&out=json (docs/http.md).

    HTTPS with the certificate of etc/mgrhooks.conf [serve], else a self-signed one made
    under etc/ on first start. Callers log in as the core's users (authinfo=USER:PASS,
    func=auth sessions; root's password: 'mgrhooks passwd root'). SIGTERM: running calls
    get [serve] grace seconds (30), then their handlers are killed. SIGHUP (or 'mgrctl
    exit') reloads: [serve] read anew, kept handler processes dropped.
    """
    from .http import server

    server.run(panel, listen=listen, plain=plain, uds=uds, echo=verbose)


@main.group("queue")
def queue_group() -> None:
    """The spooled event records that are not delivered yet, and the dead letters."""


_CENTRAL = click.option(
    "--central", is_flag=True, help="The dead letters of central delivery, at the broker of [relay] (QUEUE.dead)."
)


@queue_group.command("list")
@_root_options
@click.option("--dead", "only_dead", is_flag=True, help="Only the dead letters.")
@_CENTRAL
def queue_list(panel: Panel, only_dead: bool, central: bool) -> None:
    """One line per delivery: record, notifier, state, attempts, event, last error."""
    if central:
        for letter in _at_broker(panel.central_queue):
            last = f"  {letter.error}" if letter.error else ""
            click.echo(f"{letter.record} {letter.notifier} dead attempts={letter.attempts} {letter.event}{last}")
        return
    for queued in panel.queue(only_dead):
        last = f"  {queued.error}" if queued.error else ""
        click.echo(f"{queued.record} {queued.notifier} {queued.state} attempts={queued.attempts} {queued.event}{last}")


@queue_group.command("retry")
@_root_options
@_CENTRAL
@click.argument("records", nargs=-1)
def queue_retry(panel: Panel, central: bool, records: tuple[str, ...]) -> None:
    """Send dead letters again (RECORDS, or every one), with their attempts counted anew."""
    count = _at_broker(lambda: panel.central_retry(records)) if central else panel.retry(records)
    click.echo(f"{count} delivery(ies) pending again")


@queue_group.command("drop")
@_root_options
@_CENTRAL
@click.argument("records", nargs=-1)
def queue_drop(panel: Panel, central: bool, records: tuple[str, ...]) -> None:
    """Forget dead letters (RECORDS, or every one)."""
    count = _at_broker(lambda: panel.central_drop(records)) if central else panel.drop(records)
    click.echo(f"{count} delivery(ies) dropped")


_T = TypeVar("_T")


def _at_broker(action: Callable[[], _T]) -> _T:
    """``action()``, the broker's failures (it is down, refuses) as a clean error (exit 1)."""
    try:
        return action()
    except MgrhooksError:
        raise
    except Exception as exc:  # noqa: BLE001 (kombu's and the transport's errors have no common base)
        raise click.ClickException(f"the broker cannot be used: {type(exc).__name__}: {exc}") from None


@main.command("init")
@click.argument("directory")
def init_command(directory: str) -> None:
    """Lay out a new root in DIRECTORY: etc/xml, etc/core, addon, var, sbin/mgrctl."""
    from .root import init_root

    for path in init_root(Path(directory), sys.executable):
        click.echo(f"created {path}")


@main.command("passwd")
@_root_options
@click.option("--stdin", "from_stdin", is_flag=True, help="Read the password from stdin's first line, not a prompt.")
@click.argument("user")
def passwd_command(panel: Panel, from_stdin: bool, user: str) -> None:
    """Set USER's password for the HTTP API (root: the super user's).

    The password is asked twice without echo, or read from stdin with --stdin; it is
    never taken from the command line. Root's lives in var/<mgr>.sessions.db (without
    one, root cannot log in over HTTP); any other user's is changed in the core
    (user.edit). USER's sessions and one-time keys end.
    """
    from .http.auth import set_password

    if from_stdin:
        line = sys.stdin.buffer.readline() if sys.stdin is not None else b""
        password = line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "surrogateescape")
    elif sys.stdin is not None and sys.stdin.isatty():
        password = click.prompt("New password", hide_input=True, confirmation_prompt="Retype new password")
    else:
        raise click.UsageError("no terminal to ask the password on: give it on stdin with --stdin")
    set_password(panel, user, password)
    click.echo(f"password of {printable(user)} changed", err=True)
