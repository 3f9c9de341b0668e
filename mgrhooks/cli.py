"""The ``mgrhooks`` command and the root's ``sbin/mgrctl``: a thin click layer over
:mod:`mgrhooks.dispatch`."""

from __future__ import annotations

import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import Any, TypeVar

import click

from . import __version__
from .errors import ExitStatus, MgrhooksError
from .model import Request, Stage
from .root import DEFAULT_MGR, Root

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ["xml", "devel", "json", "sjson", "text"]


def _open_root(root_dir: str, mgr: str) -> Root:
    try:
        return Root.open(root_dir, mgr)
    except MgrhooksError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_status)


def _root_options(command: F) -> F:
    """``--root`` and ``--mgr``, shared by every command; they become a ``root`` argument."""

    @click.option(
        "--root",
        "root_dir",
        envvar="MGRHOOKS_ROOT",
        default=".",
        show_default="$MGRHOOKS_ROOT, else .",
        help="The panel root directory.",
    )
    @click.option("--mgr", default=DEFAULT_MGR, show_default=True, help="The product (billmgr, ispmgr, ...).")
    @functools.wraps(command)
    def wrapper(root_dir: str, mgr: str, **kwargs: Any) -> Any:  # noqa: ANN401 (click passes options through)
        return command(root=_open_root(root_dir, mgr), **kwargs)

    return wrapper  # type: ignore[return-value]


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    # click's own version_option looks up a gettext catalogue at import: a cost every start pays
    if value:
        click.echo(f"mgrhooks, version {__version__}")
        ctx.exit()


@click.group()
@click.option(
    "--version",
    is_flag=True,
    expose_value=False,
    is_eager=True,
    callback=_print_version,
    help="Show the version and exit.",
)
def main() -> None:
    """Run COREmanager-style addons around panel functions."""


def _params(
    pairs: tuple[str, ...],
    options: tuple[str, ...] = (),
    named: dict[str, str | None] | None = None,
    body: bytes = b"",
) -> tuple[tuple[str, str], ...]:
    """Parameters from a urlencoded ``body``, then mgrctl's ``key=value`` arguments; a
    later value of a key replaces an earlier one."""
    params: dict[str, str] = {}
    if body:
        from urllib.parse import parse_qsl

        text = body.decode("ascii", "replace")
        params.update(parse_qsl(text, keep_blank_values=True, encoding="utf-8", errors="surrogateescape"))
    for item in (*pairs, *options):
        key, found, value = item.partition("=")
        if not found or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}")
        params[key] = value
    params.update({k: v for k, v in (named or {}).items() if v is not None})
    params.pop("func", None)
    return tuple(params.items())


def _call_and_print(
    root: Root,
    request: Request,
    fmt: str,
    *,
    timeout: float | None = None,
    core_doc: Path | None = None,
    verbose: bool = False,
) -> None:
    """Run the call, print the response, run final handlers after stdout is released, exit."""
    from .dispatch import Options, call, nesting
    from .render import render

    depth, chain = nesting(os.environ)
    # adopt_orphans: daemons a handler starts stay findable, so a timeout can stop them
    options = Options(
        timeout=timeout, depth=depth, chain=chain, core_doc=core_doc, defer_final=True, adopt_orphans=True
    )
    with root.logging(echo=verbose):
        try:
            response = call(root, request, options=options)
        except MgrhooksError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_status)
        click.echo(render(response.doc, fmt, request.all_params, response.serialised), nl=False)
        if response.finish is not None:
            _release_stdout()
            response.finish()
    sys.exit(ExitStatus.ERROR if response.error else ExitStatus.OK)


def _release_stdout() -> None:
    """Point stdout at /dev/null, so whoever reads our output sees its end now (final
    handlers run afterwards, as background handlers on the panel)."""
    sys.stdout.flush()
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (the command run in-process): nobody is waiting for its end
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


@main.command("exec")
@_root_options
@click.argument("func")
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("-p", "--param", "options", multiple=True, metavar="KEY=VALUE", help="A request parameter (repeatable).")
@click.option("--elid", help="The selected object id(s); a group joined by ', '.")
@click.option("--plid", help="The parent object id.")
@click.option("--sok", help="Set to submit a form (usually 'ok').")
@click.option("--user", default="root", show_default=True, help="The calling user (AUTH_USER).")
@click.option("--level", default=30, show_default=True, type=click.IntRange(0, 31), help="The caller's access level.")
@click.option("--lang", default="en", show_default=True, help="The request language.")
@click.option("--out", "fmt", type=click.Choice(FORMATS), default="xml", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds each handler may run.")
@click.option(
    "--body",
    metavar="FILE",
    help="Read parameters from FILE ('-': stdin) as a urlencoded POST body, for values too large "
    "or odd for the command line (a NUL byte, over 128 KiB).",
)
@click.option(
    "--core-doc",
    metavar="FILE",
    help="A <doc> file that is the main logic's result (for functions of other products).",
)
@click.option("-v", "--verbose", is_flag=True, help="Also print the log lines of this call on stderr.")
def exec_command(
    root: Root,
    func: str,
    pairs: tuple[str, ...],
    options: tuple[str, ...],
    elid: str | None,
    plid: str | None,
    sok: str | None,
    user: str,
    level: int,
    lang: str,
    fmt: str,
    timeout: float | None,
    body: str | None,
    core_doc: str | None,
    verbose: bool,
) -> None:
    """Call FUNC with mgrctl-style KEY=VALUE parameters and print the response.

    Exit status 0 when the response holds no <error>, 1 when it does.
    """
    params = _params(pairs, options, {"elid": elid, "plid": plid, "sok": sok}, _read_body(body))
    request = Request(func, params, user=user, level=level, lang=lang)
    _call_and_print(root, request, fmt, timeout=timeout, core_doc=Path(core_doc) if core_doc else None, verbose=verbose)


def _read_body(name: str | None) -> bytes:
    """The bytes of ``--body`` (``-``: standard input). Plain option types, not click's
    File or Path: those look up gettext catalogues when the command module is imported."""
    if name is None:
        return b""
    if name == "-":
        return sys.stdin.buffer.read()
    try:
        with open(name, "rb") as file:
            return file.read()
    except OSError as exc:
        raise click.BadParameter(f"cannot read {name}: {exc.strerror}", param_hint="'--body'") from None


@main.command("plan")
@_root_options
@click.argument("func")
@click.option("--level", default=30, show_default=True, type=click.IntRange(0, 31), help="The caller's access level.")
def plan_command(root: Root, func: str, level: int) -> None:
    """Print the steps a call of FUNC runs, in order, and why each is where it is."""
    from .dispatch import reachable
    from .errors import PanelError
    from .plan import plan

    with root.logging():
        registry, functions = reachable(root, func)
    try:
        steps = plan(registry, Request(func, level=level), functions.catalogue(), root.disabled_plugins()).steps
    except PanelError as exc:
        click.echo(f"Error: {exc.msg}", err=True)
        sys.exit(ExitStatus.ERROR)
    for number, step in enumerate(steps, 1):
        stage = step.stage.value if isinstance(step.stage, Stage) else "action"
        label = f"{step.name} ({step.event.handler.type.value})" if step.event else step.name
        skipped = f"  [skipped: {step.skipped}]" if step.skipped else ""
        click.echo(f"{number:>3}. {stage:<7} {step.kind.value:<9} {label}{skipped}")
        click.echo(f"     why: {step.why}")


@main.command("check")
@_root_options
def check_command(root: Root) -> None:
    """Report every problem in the plugin files and handler programs (exit 1 on errors)."""
    from .check import check
    from .plugins import load_registry

    problems = check(root, load_registry(root.path, root.mgr))
    for problem in problems:
        click.echo(str(problem))
    errors = sum(p.severity == "error" for p in problems)
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
def plugin_list(root: Root) -> None:
    """One line per plugin: name, state, handlers, functions, file."""
    from .plugins import load_registry, plugin_files

    registry = load_registry(root.path, root.mgr)
    disabled = root.disabled_plugins()
    for shown, _, _ in plugin_files(root.path, root.mgr):
        file = shown.rsplit("/", 1)[-1]
        handlers = {e.handler.name for e in registry.events if e.handler.plugin == file}
        funcs = [f.name for f in registry.funcs if f.handler.plugin == file]
        state = "disabled" if file in disabled else "enabled"
        click.echo(
            f"{_plugin_name(file, root.mgr):<20} {state:<8} handlers={len(handlers)} functions={len(funcs)} {shown}"
        )


def _plugin_name(file: str, mgr: str) -> str:
    return file.removeprefix(f"{mgr}_mod_").removesuffix(".xml")


def _plugin_file(root: Root, name: str) -> str:
    """The plugin file a name given on the command line means (``samba`` or its file name)."""
    from .plugins import plugin_files

    files = {shown.rsplit("/", 1)[-1] for shown, _, _ in plugin_files(root.path, root.mgr)}
    for candidate in (name, f"{root.mgr}_mod_{name}.xml"):
        if candidate in files:
            return candidate
    raise click.BadParameter(f"no plugin {name!r} in {root.path} for {root.mgr} (see 'mgrhooks plugin list')")


@plugin_group.command("enable")
@_root_options
@click.argument("name")
def plugin_enable(root: Root, name: str) -> None:
    """Switch plugin NAME on again."""
    _switch(root, name, enabled=True)


@plugin_group.command("disable")
@_root_options
@click.argument("name")
def plugin_disable(root: Root, name: str) -> None:
    """Switch plugin NAME off, without deleting its files."""
    _switch(root, name, enabled=False)


def _switch(root: Root, name: str, enabled: bool) -> None:
    file = _plugin_file(root, name)
    try:
        changed = root.set_plugin_enabled(file, enabled)
    except MgrhooksError as exc:
        click.echo(f"Error: {exc}", err=True)
        sys.exit(exc.exit_status)
    state = "enabled" if enabled else "disabled"
    click.echo(f"{_plugin_name(file, root.mgr)}: {state}" + ("" if changed else " (already)"))
    with root.logging():
        from . import logs

        logs.ACTION.info("plugin %s %s", file, state)


@main.command("worker")
@_root_options
@click.option("--once", is_flag=True, help="One pass over the due deliveries, then exit (for cron).")
@click.option(
    "--interval", default=1.0, show_default=True, type=click.FloatRange(min=0.05), help="Seconds between passes."
)
def worker_command(root: Root, once: bool, interval: float) -> None:
    """Deliver spooled event records, and try failed ones again when due.

    Runs until stopped (a killed worker loses nothing: what it was sending is sent again).
    """
    import time

    from .delivery import work

    with root.logging():
        notifiers = root.settings().notifiers
        while True:
            done = work(root, notifiers)
            if once:
                click.echo(f"delivered {done.delivered}, to retry {done.retried}, dead {done.dead}")
                return
            time.sleep(interval)


@main.group("queue")
def queue_group() -> None:
    """The spooled event records that are not delivered yet, and the dead letters."""


@queue_group.command("list")
@_root_options
@click.option("--dead", "only_dead", is_flag=True, help="Only the dead letters.")
def queue_list(root: Root, only_dead: bool) -> None:
    """One line per delivery: record, notifier, state, attempts, event, last error."""
    from .delivery import spool_of

    for d in spool_of(root).list(("dead",) if only_dead else ("pending", "dead")):
        error = f"  {d.error}" if d.error else ""
        click.echo(f"{d.record} {d.notifier} {d.state} attempts={d.attempts} {d.event}{error}")


@queue_group.command("retry")
@_root_options
@click.argument("records", nargs=-1)
def queue_retry(root: Root, records: tuple[str, ...]) -> None:
    """Send dead letters again (RECORDS, or every one), with their attempts counted anew."""
    from .delivery import spool_of

    click.echo(f"{spool_of(root).retry(records)} delivery(ies) pending again")


@queue_group.command("drop")
@_root_options
@click.argument("records", nargs=-1)
def queue_drop(root: Root, records: tuple[str, ...]) -> None:
    """Forget dead letters (RECORDS, or every one)."""
    from .delivery import spool_of

    click.echo(f"{spool_of(root).drop(records)} delivery(ies) dropped")


@main.command("init")
@click.argument("directory")
def init_command(directory: str) -> None:
    """Lay out a new root in DIRECTORY: etc/xml, etc/core, addon, var, sbin/mgrctl."""
    from .root import init_root

    created = init_root(Path(directory), sys.executable)
    for path in created:
        click.echo(f"created {path}")


@click.command("mgrctl", context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", "root_dir", envvar="MGRHOOKS_ROOT", default=".")
@click.option("-m", "mgr", envvar="MGR", default=DEFAULT_MGR, show_default=True, help="The product.")
@click.option("-o", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="Output format.")
@click.option("-i", "info", is_flag=True, help="List the functions, or FUNC's parameters.")
@click.argument("func", required=False)
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE]...")
def mgrctl(root_dir: str, mgr: str, fmt: str, info: bool, func: str | None, pairs: tuple[str, ...]) -> None:
    """The panel's mgrctl: call FUNC as the super user, through mgrhooks.

    Calls made from inside a handler are nested calls of the same root.
    """
    root = _open_root(root_dir, mgr)
    if info or func is None:
        from .dispatch import reachable

        registry, functions = reachable(root, func or "")
        names = functions.parameters(func) if func else sorted({*functions.catalogue(), *registry.function_names})
        for name in names:
            click.echo(name)
        return
    _call_and_print(root, Request(func, _params(pairs)), fmt)
