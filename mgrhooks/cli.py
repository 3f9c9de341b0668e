"""The ``mgrhooks`` command: a thin click layer over the Python API
(:class:`mgrhooks.api.Panel`), which it uses and nothing else. ``exec`` is defined here,
the other commands in :mod:`mgrhooks.commands` (imported when one of them runs), the root's
``sbin/mgrctl`` in :mod:`mgrhooks.mgrctlcli` (a call of ``exec`` defines neither: bench row
"cold start | ratio")."""

from __future__ import annotations

import contextlib
import functools
import os
import sys
from collections.abc import Callable
from pathlib import Path
from typing import TYPE_CHECKING, Any, NoReturn, TypeVar

import click

from .errors import ExitStatus, MgrhooksError, out_of_resources
from .model import Level
from .printable import printable
from .root import DEFAULT_MGR
from .settings import MAX_SECONDS
from .version import __version__

if TYPE_CHECKING:
    from .api import Panel

F = TypeVar("F", bound=Callable[..., Any])
FORMATS = ["xml", "devel", "json", "sjson", "text"]


def _open(root_dir: str, mgr: str) -> Panel:
    """The panel of ``root_dir``; in the command's own process, the modules a call needs are
    imported the way the command's are (:func:`mgrhooks.__main__.import_also_frozen`: the
    collector's walks over them were ~1.7 M instructions of a call, bench row "cold start |
    ratio")."""
    from .__main__ import import_also_frozen

    import_also_frozen("mgrhooks.api", "mgrhooks.render", "mgrhooks.process")
    from .api import Panel

    return Panel(root_dir, mgr)


def _root_names(command: F) -> F:
    """``--root`` and ``--mgr``, shared by every command, as they are given (``root_dir``,
    ``mgr``): for a command that opens the panel only when it needs it (``exec``)."""
    command = click.option("--mgr", default=DEFAULT_MGR, show_default=True, help="The product (billmgr, ispmgr, ...).")(
        command
    )
    return click.option(
        "--root",
        "root_dir",
        envvar="MGRHOOKS_ROOT",
        default=".",
        show_default="$MGRHOOKS_ROOT, else .",
        help="The panel root directory.",
    )(command)


def _root_options(command: F) -> F:
    """``--root`` and ``--mgr``, shared by every command; they become a ``panel`` argument."""

    @_root_names
    @functools.wraps(command)
    def wrapper(root_dir: str, mgr: str, **kwargs: Any) -> Any:  # noqa: ANN401 (click passes options through)
        return command(panel=_open(root_dir, mgr), **kwargs)

    return wrapper  # type: ignore[return-value]


#: ``--level`` of the commands that call or plan a call
_level_option = click.option(
    "--level",
    default=Level.SUPER_USER.value,
    show_default=True,
    type=click.IntRange(0, 31),
    help="The caller's access level (AUTH_LEVEL).",
)


def _print_version(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    # click's own version_option looks up a gettext catalogue at import: a cost every start pays
    if value:
        click.echo(f"mgrhooks, version {__version__}")
        ctx.exit()


def _show_help(ctx: click.Context, _: click.Parameter, value: bool) -> None:
    if value and not ctx.resilient_parsing:
        if ctx.obj is not _PARSE_ONLY:
            click.echo(ctx.get_help(), color=ctx.color)
        ctx.exit()


#: ``obj`` of a context made only to parse a command line for another process (the local
#: socket's server: :func:`mgrhooks.mgrctlcli.parse_mgrctl`): help is not printed there
_PARSE_ONLY = object()


class _Command(click.Command):
    """A command with a help option of our own: click's looks up a gettext catalogue
    (importing ``locale``) every time a command line is parsed, ~1 ms of every call. It is
    made when a command line is parsed for this command (making one for each of the
    twenty commands at import cost ~0.5 ms of every start)."""

    _own_help: click.Option | None = None

    def get_help_option(self, ctx: click.Context) -> click.Option | None:
        """The help option (one object, made once: click orders eager options by identity)."""
        names = self.get_help_option_names(ctx)
        if not names or not self.add_help_option:
            return None
        if self._own_help is None:
            self._own_help = click.Option(
                names,
                is_flag=True,
                expose_value=False,
                is_eager=True,
                callback=_show_help,
                help="Show this message and exit.",
            )
        return self._own_help


def _say(message: str) -> None:
    """One line on stderr, its control characters escaped (:mod:`mgrhooks.printable`): the
    values in it (a function, a user, a file name) cannot add lines or drive the terminal."""
    click.echo(printable(message), err=True)


def _escaped(exc: click.ClickException) -> click.ClickException:
    """``exc`` as click will show it, its message escaped (a caller's value in it)."""
    message = printable(exc.format_message())  # (the exit status goes with the class: 2 for usage, else 1)
    return click.UsageError(message, exc.ctx) if isinstance(exc, click.UsageError) else click.ClickException(message)


class _Handled(_Command):
    """Maps what no command handled to an exit status (STYLE: pre-commit's error_handler):
    a MgrhooksError to ``Error: ...`` on stderr and its own status, the system refusing a
    resource to 71, anything else to 4 (a bug). Every message goes out escaped
    (:func:`_say`; click's usage errors too)."""

    def make_context(self, *args: Any, **kwargs: Any) -> click.Context:  # noqa: ANN401 (click's own signature)
        try:
            return super().make_context(*args, **kwargs)
        except click.ClickException as exc:  # an unknown option, a bad value: shown by click
            raise _escaped(exc) from None

    def invoke(self, ctx: click.Context) -> Any:  # noqa: ANN401 (whatever the command returns)
        try:
            return super().invoke(ctx)
        except KeyboardInterrupt:
            _say("Interrupted")
            sys.exit(ExitStatus.INTERRUPTED)
        except click.ClickException as exc:
            raise _escaped(exc) from None
        except (click.exceptions.Exit, click.Abort):
            raise
        except MgrhooksError as exc:
            _say(f"Error: {exc}")
            sys.exit(exc.exit_status)
        except Exception as exc:
            if os.environ.get("MGRHOOKS_DEBUG"):
                raise
            exhausted = out_of_resources(exc)
            if exhausted:
                _say(f"mgrhooks: the system refused a resource: {exhausted}")
                sys.exit(ExitStatus.OSERR)
            _say(f"mgrhooks: internal error: {type(exc).__name__}: {exc}")
            _say("This is a bug in mgrhooks; MGRHOOKS_DEBUG=1 shows where it happened.")
            sys.exit(ExitStatus.INTERNAL)


class _Group(_Handled, click.Group):
    """A group whose commands other than ``exec`` are defined in :mod:`mgrhooks.commands`,
    imported when one of them is asked for or the commands are listed (our choice: every
    call's start defined twenty commands it does not run, ~1.5 ms)."""

    command_class = _Command
    group_class = type  # subgroups are _Group too

    def get_command(self, ctx: click.Context, cmd_name: str) -> click.Command | None:
        """The command ``cmd_name``, from :mod:`mgrhooks.commands` unless defined here."""
        command = super().get_command(ctx, cmd_name)
        if command is None:
            from . import commands  # noqa: F401 (defines its commands on ``main``)

            command = super().get_command(ctx, cmd_name)
        return command

    def list_commands(self, ctx: click.Context) -> list[str]:
        """Every command's name, sorted (those of :mod:`mgrhooks.commands` included)."""
        from . import commands  # noqa: F401 (ditto)

        return super().list_commands(ctx)


@click.group(cls=_Group)
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
    later value of a key replaces an earlier one. Bytes that are not percent-encoded count
    as they are: UTF-8, and any other byte kept as the command line keeps it (a lone
    surrogate, given back to handlers as the same byte)."""
    params: dict[str, str] = {}
    if body:
        from urllib.parse import parse_qsl

        text = body.decode("utf-8", "surrogateescape")
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
    panel: Panel,
    func: str,
    params: tuple[tuple[str, str], ...],
    fmt: str,
    *,
    user: str = "root",
    level: int = Level.SUPER_USER,
    lang: str = "en",
    timeout: float | None = None,
    core_doc: Path | None = None,
    verbose: bool = False,
    record: bool = False,
) -> None:
    """Run the call, print the response, run final handlers after stdout is released, exit."""
    from .dispatch import Options
    from .process import Processes
    from .render import render_bytes

    # adopt_orphans: daemons a handler starts stay findable, so a timeout can stop them;
    # seal: with no descriptor to pass on, handlers can start through posix_spawn (see
    # mgrhooks.process.spawn.seal_descriptors)
    processes = Processes(adopt_orphans=True, seal=True)
    monitors = (panel.recorder(),) if record else ()
    options = Options(timeout=timeout, core_doc=core_doc, defer_final=True, processes=processes, monitors=monitors)
    with processes, panel.logging(echo=verbose):
        response = panel.call(func, params, user=user, level=level, lang=lang, options=options)
        doc = None if response.serialised is not None else response.doc  # no tree built for nothing
        written = _write(render_bytes(doc, fmt, (("func", func), *params), response.serialised, plain=response.plain))
        if response.finish is not None:  # the call ran: its final handlers run, written or not
            _release_stdout()
            response.finish()
    if not written:
        sys.exit(ExitStatus.OUTPUT)
    sys.exit(ExitStatus.ERROR if response.error else ExitStatus.OK)


def _write(response: bytes) -> bool:
    """Print the response; ``False`` when stdout cannot take it (said on stderr, except to
    a reader that went away)."""
    try:
        click.echo(response, nl=False)
    except OSError as exc:
        if not isinstance(exc, BrokenPipeError):
            _say(f"mgrhooks: cannot write the response: {exc.strerror or exc}")
        return False
    return True


def _release_stdout() -> None:
    """Point stdout at /dev/null, so whoever reads our output sees its end now (final
    handlers run afterwards, as background handlers on the panel)."""
    with contextlib.suppress(AttributeError, OSError, ValueError):  # none, or it cannot take it
        sys.stdout.flush()
    try:
        descriptor = sys.stdout.fileno()
    except (AttributeError, OSError, ValueError):
        return  # not a file (the command run in-process): nobody is waiting for its end
    devnull = os.open(os.devnull, os.O_WRONLY)
    os.dup2(devnull, descriptor)
    os.close(devnull)


def _number(_: click.Context, param: click.Parameter, value: float | None) -> float | None:
    """Refuse NaN, which passes every click range (each comparison with it is false)."""
    if value is not None and value != value:
        raise click.BadParameter("nan is not a number", param=param)
    return value


def _timeout_option(help: str) -> Callable[[F], F]:  # noqa: A002 (click's own name)
    """``--timeout SECONDS``: above 0, at most :data:`~mgrhooks.settings.MAX_SECONDS`, not NaN."""
    return click.option(
        "--timeout",
        type=click.FloatRange(min=0, min_open=True, max=MAX_SECONDS),
        callback=_number,
        help=help,
    )


def _panel_path_option(command: F) -> F:
    """``--panel-path PATH``, for the commands that run handlers (``exec``, ``module``)."""
    return click.option(
        "--panel-path",
        metavar="PATH",
        help="Run the handlers in a private mount namespace where the root is also at PATH "
        "(e.g. /usr/local/mgr5), for addons that hard-code the panel's path. Needs root or "
        "unprivileged user namespaces; the host is not changed.",
    )(command)


def _at_panel_path(panel: Panel, panel_path: str | None) -> Panel:
    """``panel``, or, with ``--panel-path``, the same root opened at that path once this
    process sees it there (:func:`mgrhooks.panelpath.enter`): handlers then run there, as
    on the panel. :raises UsageError, RootError: see ``enter``"""
    if panel_path is None:
        return panel
    from .panelpath import enter

    if not enter(panel.root.path, panel_path):
        return panel
    return _open(panel_path, panel.root.mgr)


@main.command("exec")
@_root_names
@click.argument("func")
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE]...")
@click.option("-p", "--param", "options", multiple=True, metavar="KEY=VALUE", help="A request parameter (repeatable).")
@click.option("--elid", help="The selected object id(s); a group joined by ', '.")
@click.option("--plid", help="The parent object id.")
@click.option("--sok", help="Set to submit a form (usually 'ok').")
@click.option("--user", default="root", show_default=True, help="The calling user (AUTH_USER).")
@_level_option
@click.option("--lang", default="en", show_default=True, help="The request language.")
@click.option("--out", "fmt", type=click.Choice(FORMATS), default="xml", show_default=True)
@_timeout_option("Seconds each handler may run (at most a day).")
@click.option(
    "--body",
    metavar="FILE",
    help="Read parameters from FILE ('-': stdin) as a urlencoded POST body, for values too large "
    "or odd for the command line (a NUL byte, over 128 KiB).",
)
@click.option(
    "--stdin",
    "stdin_keys",
    multiple=True,
    metavar="KEY",
    help="Read the value of parameter KEY from stdin, one line per --stdin (with a hidden prompt on a "
    "terminal): for passwords, which a command line shows to every local user.",
)
@click.option(
    "--core-doc",
    metavar="FILE",
    help="A <doc> file that is the main logic's result (for functions of other products).",
)
@_panel_path_option
@click.option("-v", "--verbose", is_flag=True, help="Also print the log lines of this call on stderr.")
@click.option(
    "--dry-run",
    is_flag=True,
    help="Print what each step would start (program, argv, environment with secrets masked, stdin, "
    "timeout, why); run nothing, write nothing.",
)
@click.option("--record", is_flag=True, help="Keep each handler run of this call under var/runs/ (see 'runs').")
def exec_command(
    root_dir: str,
    mgr: str,
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
    stdin_keys: tuple[str, ...],
    core_doc: str | None,
    panel_path: str | None,
    verbose: bool,
    dry_run: bool,
    record: bool,
) -> None:
    """Call FUNC with mgrctl-style KEY=VALUE parameters and print the response.

    Exit status 0 when the response holds no <error>, 1 when it does. With a 'mgrhooks serve'
    of the root running, the call runs there (see docs/local.md), unless
    --dry-run, --record, --core-doc, --panel-path or --verbose asks for this process.
    """
    local = not (dry_run or record or core_doc or panel_path or verbose) and _serve_runs(root_dir)
    panel = None if local else _at_panel_path(_open(root_dir, mgr), panel_path)
    if stdin_keys and body == "-":
        raise click.BadParameter("standard input cannot carry both --body - and --stdin", param_hint="'--stdin'")
    named: dict[str, str | None] = {"elid": elid, "plid": plid, "sok": sok, **_read_stdin(stdin_keys)}
    params = _params(pairs, options, named, _read_body(body))
    if panel is None:
        _exec_served(root_dir, mgr, func, params, user=user, level=level, lang=lang, out=fmt, timeout=timeout)
        panel = _open(root_dir, mgr)  # the serve did not take it: run it here
    document = Path(core_doc).absolute() if core_doc else None
    if dry_run:
        _print_dry_run(panel, func, params, user, level, lang, timeout, document)
        return
    _call_and_print(
        panel,
        func,
        params,
        fmt,
        user=user,
        level=level,
        lang=lang,
        timeout=timeout,
        core_doc=document,
        verbose=verbose,
        record=record,
    )


def _serve_runs(root_dir: str) -> bool:
    """Whether the root has the local socket of a ``mgrhooks serve`` (maybe a stale one)."""
    from .client import SOCKET

    return os.path.exists(os.path.join(root_dir, SOCKET))


def _exec_served(
    root_dir: str,
    mgr: str,
    func: str,
    params: tuple[tuple[str, str], ...],
    *,
    user: str,
    level: int,
    lang: str,
    out: str,
    timeout: float | None,
) -> None:
    """Run the call through the root's serve and exit with its status, having printed
    what the call in this process would; return when no serve takes it."""
    from . import client

    request = client.call_request(
        root_dir, mgr, func, params, user=user, level=level, lang=lang, out=out, timeout=timeout, environ=os.environ
    )
    status = client.served(root_dir, request, "mgrhooks")
    if status is not None:
        sys.exit(status)


def _print_dry_run(
    panel: Panel,
    func: str,
    params: tuple[tuple[str, str], ...],
    user: str,
    level: int,
    lang: str,
    timeout: float | None,
    core_doc: Path | None,
) -> None:
    """``exec --dry-run``: each step of the plan and what it would start (see
    :mod:`mgrhooks.dryrun`); an unknown function is an error as for ``plan``."""
    import shlex

    from .dispatch import Options
    from .dryrun import shown_environment, shown_stdin
    from .secret import Hider

    options = Options(timeout=timeout, core_doc=core_doc)  # no panel log: a dry run writes nothing
    _, planned = panel.dry_run(func, params, user=user, level=level, lang=lang, options=options)
    hider = Hider(params)  # the secrets of the call's parameters, hidden wherever they appear
    click.echo(f"dry run of {func}: nothing is run or written")
    for number, entry in enumerate(planned, 1):
        step = entry.step
        stage = step.stage.value if step.stage is not None else "action"
        click.echo(f"{number:>3}. {stage:<7} {step.kind.value:<9} {step.name}")
        click.echo(f"     why: {step.why}")
        request = entry.request
        if request is not None:
            click.echo(f"     program: {request.argv[0]}")
            click.echo(f"     argv: {' '.join(shlex.quote(a) for a in request.argv)}")
            click.echo(f"     cwd: {request.cwd}")
            click.echo(f"     timeout: {request.timeout:g} s, from {entry.timeout_from}")
            click.echo(f"     source: {request.description}")
            click.echo("     environment:")
            for name, value in shown_environment(request, hider):
                click.echo(f"       {name}={value}")
            click.echo(f"     stdin: {len(request.stdin)} bytes")
            for line in shown_stdin(request, hider):
                click.echo(f"       | {line}")
        for note in entry.notes:
            click.echo(f"     note: {note}")


def _read_stdin(keys: tuple[str, ...]) -> dict[str, str]:
    """The value of each parameter in ``keys`` (``--stdin``): one line of standard input
    each, in order, without its line end; from a terminal, asked for with a prompt that
    does not echo (getpass). Bytes as on the command line: UTF-8, others kept."""
    values: dict[str, str] = {}
    for key in keys:
        if not key or "=" in key:
            raise click.BadParameter(f"expected a parameter name, got {key!r}", param_hint="'--stdin'")
        if sys.stdin is None:
            raise click.BadParameter("standard input is closed", param_hint="'--stdin'")
        if sys.stdin.isatty():
            import getpass

            values[key] = getpass.getpass(f"{key}: ")
            continue
        line = sys.stdin.buffer.readline()
        if not line:
            raise click.BadParameter(f"standard input ended before the line of {key!r}", param_hint="'--stdin'")
        values[key] = line.removesuffix(b"\n").removesuffix(b"\r").decode("utf-8", "surrogateescape")
    return values


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


def run(command: click.Command = main, prog_name: str | None = None) -> NoReturn:
    """The commands' run (``mgrhooks`` and ``python -m mgrhooks`` through
    :mod:`mgrhooks.__main__`, ``sbin/mgrctl``'s :mod:`mgrhooks.mgrctlcli` through
    :mod:`mgrhooks.mgrctl`):
    ``command`` in click's standalone mode (``prog_name`` names it in usage lines), then
    the process ends without tearing the interpreter down.

    Freeing every module's objects at exit took ~10 ms, a fifth of a call with no handlers
    (docs/performance.md; our choice). What an exit does that matters is still done: the
    ``atexit`` functions run (logging's flush and close among them), then stdout and
    stderr are flushed. The exit status is that of the ``SystemExit`` click raised; a
    flush that fails makes it 120 (``ExitStatus.OUTPUT``), as in Python's own exit.
    """
    try:
        command.main(prog_name=prog_name)
        code: object = 0
    except SystemExit as exc:
        code = exc.code
    if code is None:
        status = 0
    elif isinstance(code, int):
        status = code
    else:
        print(code, file=sys.stderr)
        status = 1
    import atexit

    atexit._run_exitfuncs()
    for stream in (sys.stdout, sys.stderr):
        try:
            if stream is not None:  # (None: started with the descriptor closed)
                stream.flush()
        except (OSError, ValueError):
            status = status or ExitStatus.OUTPUT
    os._exit(status)
