"""The root's ``sbin/mgrctl`` command (run by :mod:`mgrhooks.mgrctl`), and its parse of a
command line for the local socket's server (:func:`parse_mgrctl`). Apart from
:mod:`mgrhooks.cli`, whose helpers it shares: ``mgrhooks exec`` does not define it (the
command and its options were ~1.7 M instructions of a call, 0.7%: bench row "cold start |
ratio").

Annotations are evaluated, not postponed: see :mod:`mgrhooks.model`.
"""

from collections.abc import Mapping
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

import click

from .cli import _PARSE_ONLY, FORMATS, _call_and_print, _Handled, _open, _params
from .root import DEFAULT_MGR

if TYPE_CHECKING:
    from .api import Panel

#: the functions ``mgrctl`` takes as a restart of the panel (``mgrctl -m ispmgr exit``)
RESTART_FUNCS = ("exit",)
#: what ``mgrctl`` says to an install script asking for a restart
RESTARTED = (
    "mgrctl: no resident panel to restart: mgrhooks reads plugin descriptions and addons anew "
    "on every call, so they are in force already"
)


class _Mgrctl(_Handled):
    """``mgrctl``'s own command: an unknown option is a usage error naming it and the
    options there are (click's says only ``No such option``)."""

    def parse_args(self, ctx: click.Context, args: list[str]) -> list[str]:
        try:
            return super().parse_args(ctx, args)
        except click.NoSuchOption as exc:
            known = "-m MGR, -o FORMAT, -i, -R/--restart, -h/--help"
            raise click.UsageError(f"unknown option '{exc.option_name}' (mgrctl takes {known})", ctx) from None


@click.command("mgrctl", cls=_Mgrctl, context_settings={"help_option_names": ["-h", "--help"]})
@click.option("--root", "root_dir", envvar="MGRHOOKS_ROOT", default=".")
@click.option("-m", "mgr", envvar="MGR", default=DEFAULT_MGR, show_default=True, help="The product.")
@click.option("-o", "fmt", type=click.Choice(FORMATS), default="text", show_default=True, help="Output format.")
@click.option("-i", "info", is_flag=True, help="List the functions, or FUNC's parameters.")
@click.option(
    "-R",
    "--restart",
    is_flag=True,
    help="Restart the panel: reloads a running 'mgrhooks serve' of the root, else does nothing (see 'exit').",
)
@click.argument("func", required=False)
@click.argument("pairs", nargs=-1, metavar="[KEY=VALUE]...")
def mgrctl(
    root_dir: str, mgr: str, fmt: str, info: bool, restart: bool, func: str | None, pairs: tuple[str, ...]
) -> None:
    """The panel's mgrctl: call FUNC as the super user, through mgrhooks.

    Without FUNC (or with -i), list the functions, one a line. Calls made from inside a
    handler are nested calls of the same root. With a 'mgrhooks serve' of the root running,
    calls run there (docs/local.md). 'mgrctl -m MGR exit' and 'mgrctl -R',
    which install instructions run to make the panel read new plugin files, reload a running
    serve, and else do nothing: mgrhooks reads them on every call.
    """
    panel = _open(root_dir, mgr)
    if restart or func in RESTART_FUNCS:
        _restart(panel, "-R" if restart else func or "")
        return
    if info or func is None:
        for name in panel.functions(func):
            click.echo(name)
        return
    _call_and_print(panel, func, _params(pairs), fmt)


def _restart(panel: "Panel", asked: str) -> None:
    """What ``mgrctl exit`` and ``mgrctl -R`` do: nothing but say so, on stderr and in the
    panel's log (docs/protocol.md, *Calls from handlers*)."""
    from . import logs

    click.echo(RESTARTED, err=True)
    with panel.logging():
        logs.ACTION.info("mgrctl %s: no resident panel to restart (nothing done)", asked)


class MgrctlLine(NamedTuple):
    """A ``mgrctl`` command line as the ``mgrctl`` command parses it (:func:`parse_mgrctl`).

    :param root: the root it names (relative to the caller's working directory if it is)
    :param restart: ``-R`` or the function (``exit``) asking for a restart, else ``None``
    :param listing: ``-i``, or no function: a list of functions or parameters
    :param params: the ``KEY=VALUE`` arguments, as the call takes them
    """

    root: Path
    mgr: str
    fmt: str
    func: str | None
    params: tuple[tuple[str, str], ...]
    restart: str | None
    listing: bool


def parse_mgrctl(argv: list[str], environ: Mapping[str, str], cwd: str) -> MgrctlLine | None:
    """``mgrctl ARGV``, as the ``mgrctl`` command run with ``environ`` in ``cwd`` parses it,
    nothing printed nor run: for the local socket's server, which answers calls of another
    process (:mod:`mgrhooks.http.local`). One parser decides both ways (our choice).

    The options' environment variables (``MGR``, ``MGRHOOKS_ROOT``) come from ``environ``,
    not from this process's. ``None`` for a line the command would answer with a message of
    click's (help, a usage error, a bad ``KEY=VALUE``): the caller runs it in-process, where
    the command prints it.
    """
    import copy

    command = copy.copy(mgrctl)
    command.params = []
    defaults: dict[str, str] = {}
    for param in mgrctl.params:
        own = copy.copy(param)
        if isinstance(param.envvar, str):
            own.envvar = None
            if environ.get(param.envvar) and param.name:  # click ignores an empty variable
                defaults[param.name] = environ[param.envvar]
        command.params.append(own)
    try:
        ctx = command.make_context("mgrctl", list(argv), default_map=defaults, obj=_PARSE_ONLY)
        given = ctx.params
        restart = "-R" if given["restart"] else given["func"] if given["func"] in RESTART_FUNCS else None
        listing = bool(given["info"]) or given["func"] is None
        params = () if restart or listing else _params(given["pairs"])
    except (click.ClickException, click.exceptions.Exit):
        return None
    root = Path(cwd, given["root_dir"])
    return MgrctlLine(root, given["mgr"], given["fmt"], given["func"], params, restart, listing)
