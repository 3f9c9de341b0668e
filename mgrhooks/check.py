"""``mgrhooks check``: every problem of a root's plugin files and handler programs."""

from __future__ import annotations

from collections.abc import Callable

from .errors import RootError
from .model import Problem, Registry, Severity, Source
from .programs import inspect
from .root import Root
from .settings import SettingsError
from .trust import audit


def check(root: Root, registry: Registry, builtin: Callable[[str], bool] | None = None) -> list[Problem]:
    """The root's folders and files that are not believed (:func:`mgrhooks.trust.audit`),
    the problem of ``etc/mgrhooks.conf``, the registry's problems, then each handler
    program's, once per program (vetted as :func:`mgrhooks.programs.inspect` does:
    PROTOCOL §7), then the core documents in ``etc/core/<mgr>/`` of the functions
    ``builtin`` says are built in: whether each replaces its function or is not used
    (:func:`mgrhooks.functions.core_doc_problems`).

    Program problems are placed at the first ``<handler>`` that names the program, in
    file and line order, and read ``handler 'NAME': REASON``. Never raises.
    """
    problems = audit(str(root.path), root.mgr) + _settings_problems(root) + list(registry.problems)
    seen: set[str] = set()
    handlers = [e.handler for e in registry.events] + [f.handler for f in registry.funcs]
    for handler in sorted(handlers, key=lambda h: (h.source.path.encode(), h.source.line)):
        if handler.name in seen:
            continue
        seen.add(handler.name)
        program = inspect(root.addon_dir, handler.name)
        where, label = handler.source, f"handler '{handler.name}'"
        problems += [Problem(Severity.ERROR, where, f"{label}: {e}") for e in program.errors]
        problems += [Problem(Severity.WARNING, where, f"{label}: {w}") for w in program.warnings]
    from .functions import core_doc_problems

    return problems + core_doc_problems(root.path, root.mgr, builtin or _none)


def _none(func: str) -> bool:
    """No function is built in."""
    return False


def _settings_problems(root: Root) -> list[Problem]:
    """The first bad value of ``etc/mgrhooks.conf`` (a timeout beyond a day, ...), at its
    line: an error, since every call refuses the root until it is fixed. A file that is
    not believed is not read (the trust audit reports it)."""
    try:
        root.settings()
    except SettingsError as exc:
        shown = exc.path.relative_to(root.path) if exc.path.is_relative_to(root.path) else exc.path
        return [Problem(Severity.ERROR, Source(str(shown), exc.line), exc.reason)]
    except RootError:
        return []
    return []
