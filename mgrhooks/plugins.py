"""Loading plugin descriptions (``etc/xml/<mgr>_mod_*.xml``) into a :class:`Registry`.

:func:`parse_plugin` is pure (bytes in, records and problems out); :func:`load_registry`
reads the files. A broken file becomes a :class:`Problem` naming its path, line and reason,
and the other files still load (PROTOCOL §2).
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Sequence
from pathlib import Path
from typing import TypeVar

from .model import Base, Event, FuncDecl, Handler, HandlerType, Placement, Problem, Registry, Source, Stage
from .xmldoc import DocumentError, Element, parse

#: attributes mgrhooks understands, per element; others are warnings (forward compatible)
KNOWN_ATTRIBUTES = {
    "handler": {"name", "type", "ignore_errors", "timeout", "minlevel"},
    "event": {"name", "before", "after", "final", "postdata", "sessiondata", "proirity", "base", "priority"},
    "func": {"name", "minlevel"},
}
#: children of <mgrdata> that belong to the panel's interface, not to handlers: ignored quietly
INTERFACE_ELEMENTS = {"metadata", "mainmenu", "lang", "plugin", "messages", "toolbar", "menu", "feature"}
_STAGE_ATTRIBUTES = (("before", Stage.BEFORE), ("after", Stage.AFTER), ("final", Stage.FINAL))


class _File:
    """Collects problems for one plugin file."""

    def __init__(self, path: str) -> None:
        self.path = path
        self.problems: list[Problem] = []

    def at(self, elem: Element) -> Source:
        return Source(self.path, elem.sourceline or 0)

    def report(self, severity: str, elem: Element, message: str) -> None:
        self.problems.append(Problem(severity, self.at(elem), message))


def parse_plugin(data: bytes, path: str) -> tuple[list[Event], list[FuncDecl], list[Problem]]:
    """Parse one plugin description.

    :param data: the file's bytes
    :param path: the file's path as shown in messages (also names the plugin)
    :returns: events and funcs in document order, and every problem found
    """
    file = _File(path)
    try:
        root = parse(data, root_tag="mgrdata")
    except DocumentError as exc:
        return [], [], [Problem("error", Source(path, exc.line), exc.reason)]
    events: list[Event] = []
    funcs: list[FuncDecl] = []
    index = 0
    for child in root:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        if child.tag != "handler":
            if child.tag not in INTERFACE_ELEMENTS:
                file.report("warning", child, f"unknown element <{child.tag}> ignored")
            continue
        handler = _handler(child, file)
        if handler is None:
            continue
        for item in child:
            if item.tag == "event":
                index += 1
                events.extend(_events(item, handler, index, file))
            elif item.tag == "func":
                func = _func(item, handler, file)
                if func is not None:
                    funcs.append(func)
            elif isinstance(item.tag, str):
                file.report("warning", item, f"handler '{handler.name}': unknown element <{item.tag}> ignored")
    return events, funcs, file.problems


def _warn_unknown_attributes(elem: Element, file: _File, context: str) -> None:
    for attr in elem.attrib:
        if attr not in KNOWN_ATTRIBUTES[str(elem.tag)]:
            file.report("warning", elem, f"{context}unknown attribute '{attr}' ignored")


def _handler(elem: Element, file: _File) -> Handler | None:
    name = (elem.get("name") or "").strip()
    if not name:
        file.report("error", elem, "<handler> without a name: skipped")
        return None
    context = f"handler '{name}': "
    _warn_unknown_attributes(elem, file, context)
    type_text = elem.get("type")
    if type_text is None:
        file.report("warning", elem, f"{context}no 'type' attribute: xml assumed")
        type_text = "xml"
    if type_text not in ("cgi", "xml"):
        file.report("error", elem, f"{context}attribute 'type': expected one of cgi, xml, got '{type_text}': skipped")
        return None
    timeout = _timeout(elem, file, context)
    return Handler(
        name=name,
        type=HandlerType(type_text),
        plugin=Path(file.path).name,
        source=file.at(elem),
        ignore_errors=elem.get("ignore_errors") == "yes",
        timeout=timeout,
    )


def _timeout(elem: Element, file: _File, context: str) -> float | None:
    text = elem.get("timeout")
    if text is None:
        return None
    try:
        value = float(text)
    except ValueError:
        value = math.nan
    if not (value > 0 and math.isfinite(value)):
        file.report("warning", elem, f"{context}attribute 'timeout': expected seconds > 0, got '{text}': default used")
        return None
    return value


def _events(elem: Element, handler: Handler, index: int, file: _File) -> list[Event]:
    context = f"handler '{handler.name}': "
    _warn_unknown_attributes(elem, file, context)
    func = (elem.get("name") or elem.text or "").strip()
    if not func:
        file.report("error", elem, f"{context}<event> without a function name: skipped")
        return []
    stages = [stage for attr, stage in _STAGE_ATTRIBUTES if elem.get(attr) == "yes"]
    if not stages:
        file.report("error", elem, f"{context}event '{func}' has no stage (before, after or final=\"yes\"): skipped")
        return []
    base, placement = _anchor(elem, file, context)
    return [
        Event(
            func=func,
            stage=stage,
            handler=handler,
            source=file.at(elem),
            index=index,
            postdata=elem.get("postdata") == "yes",
            sessiondata=elem.get("sessiondata") == "yes",
            hi=elem.get("priority") == "hi",
            base=base,
            placement=placement,
        )
        for stage in stages
    ]


def _anchor(elem: Element, file: _File, context: str) -> tuple[Base, Placement]:
    base = _choice(elem, "base", Base.CORE, file, context)
    placement = _choice(elem, "proirity", Placement.AFTER, file, context)
    return base, placement


E = TypeVar("E", Base, Placement)


def _choice(elem: Element, attr: str, default: E, file: _File, context: str) -> E:
    """The enum value of attribute ``attr``; an unknown value is a warning and ``default``."""
    text = elem.get(attr, default.value)
    try:
        return type(default)(text)
    except ValueError:
        expected = " or ".join(member.value for member in type(default))
        message = f"{context}attribute '{attr}': expected {expected}, got '{text}': {default.value} used"
        file.report("warning", elem, message)
        return default


def _func(elem: Element, handler: Handler, file: _File) -> FuncDecl | None:
    _warn_unknown_attributes(elem, file, f"handler '{handler.name}': ")
    name = (elem.get("name") or elem.text or "").strip()
    if not name:
        file.report("error", elem, f"handler '{handler.name}': <func> without a name: skipped")
        return None
    return FuncDecl(name=name, handler=handler, source=file.at(elem))


def plugin_files(plugin_dir: Path, mgr: str) -> list[Path]:
    """The plugin descriptions of ``mgr`` in ``plugin_dir``, in file-name byte order."""
    files = [p for p in plugin_dir.glob(f"{mgr}_mod_*.xml") if p.is_file()]
    return sorted(files, key=lambda p: p.name.encode())


def build_registry(parsed: Iterable[tuple[str, bytes]]) -> Registry:
    """Combine parsed files (``(path, bytes)`` in load order) into one registry."""
    events: list[Event] = []
    funcs: list[FuncDecl] = []
    problems: list[Problem] = []
    files: list[str] = []
    for path, data in parsed:
        file_events, file_funcs, file_problems = parse_plugin(data, path)
        events += file_events
        funcs += file_funcs
        problems += file_problems
        files.append(path)
    problems += _duplicate_funcs(funcs)
    return Registry(tuple(events), tuple(funcs), tuple(problems), tuple(files))


def _duplicate_funcs(funcs: Sequence[FuncDecl]) -> list[Problem]:
    seen: dict[str, FuncDecl] = {}
    problems = []
    for func in funcs:
        if func.name in seen:
            first = seen[func.name]
            message = f"function '{func.name}' is already declared at {first.source}: ignored"
            problems.append(Problem("warning", func.source, message))
        else:
            seen[func.name] = func
    return problems


def load_registry(plugin_dir: Path, mgr: str, display_base: Path | None = None) -> Registry:
    """Read and parse every plugin description of ``mgr``.

    :param display_base: paths in records and problems are shown relative to this
        directory (the root), when given.
    """

    def shown(path: Path) -> str:
        if display_base is not None and path.is_relative_to(display_base):
            return str(path.relative_to(display_base))
        return str(path)

    parsed = []
    unreadable = []
    for path in plugin_files(plugin_dir, mgr):
        try:
            parsed.append((shown(path), path.read_bytes()))
        except OSError as exc:
            unreadable.append(Problem("error", Source(shown(path)), f"cannot read: {exc.strerror}"))
    registry = build_registry(parsed)
    return Registry(registry.events, registry.funcs, registry.problems + tuple(unreadable), registry.files)
