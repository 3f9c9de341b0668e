"""The ``mgrhooks`` command: a thin click layer over :mod:`mgrhooks.dispatch`."""

from __future__ import annotations

import functools
import logging
import sys
from collections.abc import Callable
from typing import Any, TypeVar

import click

from .errors import ExitStatus, MgrhooksError
from .model import Request, Stage
from .root import DEFAULT_MGR, Root

F = TypeVar("F", bound=Callable[..., Any])


def _root_options(command: F) -> F:
    """``--root`` and ``--mgr``, shared by every command; they become a ``root`` argument."""

    @click.option(
        "--root",
        "root_dir",
        envvar="MGRHOOKS_ROOT",
        default=".",
        show_default="$MGRHOOKS_ROOT, else .",
        type=click.Path(file_okay=False),
        help="The panel root directory.",
    )
    @click.option("--mgr", default=DEFAULT_MGR, show_default=True, help="The product (billmgr, ispmgr, ...).")
    @functools.wraps(command)
    def wrapper(root_dir: str, mgr: str, **kwargs: Any) -> Any:  # noqa: ANN401 (click passes options through)
        try:
            root = Root.open(root_dir, mgr)
        except MgrhooksError as exc:
            click.echo(f"Error: {exc}", err=True)
            sys.exit(exc.exit_status)
        return command(root=root, **kwargs)

    return wrapper  # type: ignore[return-value]


@click.group()
@click.version_option(package_name="mgrhooks")
def main() -> None:
    """Run COREmanager-style addons around panel functions."""


def _params(
    pairs: tuple[str, ...], options: tuple[str, ...], named: dict[str, str | None]
) -> tuple[tuple[str, str], ...]:
    """Parameters in mgrctl's ``key=value`` form; a later value of a key replaces an earlier one."""
    params: dict[str, str] = {}
    for item in (*pairs, *options):
        key, found, value = item.partition("=")
        if not found or not key:
            raise click.BadParameter(f"expected key=value, got {item!r}")
        params[key] = value
    params.update({k: v for k, v in named.items() if v is not None})
    params.pop("func", None)
    return tuple(params.items())


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
@click.option("--out", "fmt", type=click.Choice(["xml", "json", "text"]), default="xml", show_default=True)
@click.option("--timeout", type=click.FloatRange(min=0, min_open=True), help="Seconds each handler may run.")
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
    verbose: bool,
) -> None:
    """Call FUNC with mgrctl-style KEY=VALUE parameters and print the response.

    Exit status 0 when the response holds no <error>, 1 when it does.
    """
    from .dispatch import Options, call
    from .render import render

    params = _params(pairs, options, {"elid": elid, "plid": plid, "sok": sok})
    request = Request(func, params, user=user, level=level, lang=lang)
    echo = logging.StreamHandler(sys.stderr) if verbose else None
    with root.logging(echo):
        response = call(root, request, options=Options(timeout=timeout))
    click.echo(render(response.doc, fmt), nl=False)
    sys.exit(ExitStatus.ERROR if response.error else ExitStatus.OK)


@main.command("plan")
@_root_options
@click.argument("func")
def plan_command(root: Root, func: str) -> None:
    """Print the steps a call of FUNC runs, in order, and why each is where it is."""
    from .core import BuiltinCore
    from .errors import PanelError
    from .plan import plan

    with root.logging():
        registry = root.registry()
    try:
        steps = plan(registry, Request(func), BuiltinCore(root.db_file).catalogue()).steps
    except PanelError as exc:
        click.echo(f"Error: {exc.msg}", err=True)
        sys.exit(ExitStatus.ERROR)
    for number, step in enumerate(steps, 1):
        stage = step.stage.value if isinstance(step.stage, Stage) else "action"
        label = f"{step.name} ({step.event.handler.type.value})" if step.event else step.name
        click.echo(f"{number:>3}. {stage:<7} {step.kind.value:<9} {label}")
        click.echo(f"     why: {step.why}")


@main.command("check")
@_root_options
def check_command(root: Root) -> None:
    """Report every problem in the plugin files and handler programs (exit 1 on errors)."""
    from .check import check
    from .plugins import load_registry

    problems = check(root, load_registry(root.plugin_dir, root.mgr, display_base=root.path))
    for problem in problems:
        click.echo(str(problem))
    errors = sum(p.severity == "error" for p in problems)
    click.echo(f"{errors} error(s), {len(problems) - errors} warning(s)", err=True)
    sys.exit(ExitStatus.ERROR if errors else ExitStatus.OK)
