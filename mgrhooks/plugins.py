"""Loading plugin descriptions (``etc/xml/<mgr>_mod_*.xml``) into a :class:`Registry`.

:func:`parse_plugin` is pure (bytes in, records and problems out); :func:`load_registry`
and :func:`load_keeping` read the files. A broken file becomes a :class:`Problem` naming
its path, line and reason, and the other files still load (PROTOCOL §2); with
:func:`load_keeping`, a broken file's last good version stays in force.
"""

from collections.abc import Collection, Iterable, Mapping, Sequence
from pathlib import Path
from typing import NamedTuple, TypeVar

from lxml import etree

from .model import (
    EMPTY,
    Base,
    Event,
    FuncDecl,
    Handler,
    HandlerType,
    Placement,
    Problem,
    Registry,
    Severity,
    Source,
    Stage,
)
from .root import PluginFile, plugin_files
from .settings import seconds
from .shape import is_form, merge_form
from .xmldoc import DocumentError, Element, parse

#: the priority of a handler without priority="hi" (Zotonic's default, too); "hi" is 0
DEFAULT_PRIORITY = 500
#: attributes mgrhooks understands, per element; others are warnings (forward compatible)
KNOWN_ATTRIBUTES = {
    "handler": {"name", "type", "ignore_errors", "timeout", "minlevel"},
    "event": {"name", "before", "after", "final", "postdata", "sessiondata", "proirity", "base", "priority"},
    "func": {"name", "minlevel"},
}
#: children of <mgrdata> that belong to the panel's interface, not to handlers: ignored quietly
#: (``metadata`` and ``lang`` are kept for function addons)
INTERFACE_ELEMENTS = {"metadata", "mainmenu", "lang", "plugin", "messages", "toolbar", "menu", "feature"}
_STAGE_ATTRIBUTES = (("before", Stage.BEFORE), ("after", Stage.AFTER), ("final", Stage.FINAL))


class _File:
    """Collects problems for one plugin file."""

    def __init__(self, path: str, generation: int) -> None:
        self.path = path
        self.generation = generation
        self.problems: list[Problem] = []

    def at(self, elem: Element) -> Source:
        return Source(self.path, elem.sourceline or 0)

    def error(self, elem: Element, message: str) -> None:
        """Report that ``elem`` (a handler, event or func) is not used, and why."""
        self.problems.append(Problem(Severity.ERROR, self.at(elem), message))

    def warning(self, elem: Element, message: str) -> None:
        """Report something odd about ``elem`` that is used all the same."""
        self.problems.append(Problem(Severity.WARNING, self.at(elem), message))


class ParsedFile(NamedTuple):
    """What one plugin description declares, in document order, and its problems."""

    events: list[Event]
    funcs: list[FuncDecl]
    problems: list[Problem]
    metadata: dict[str, bytes]
    messages: dict[tuple[str, str], list[bytes]]
    #: ``False`` when the file as a whole could not be used (not a well-formed
    #: ``<mgrdata>`` document): its one problem says why
    well_formed: bool = True
    #: the line of each ``<metadata>`` in ``metadata``, by function
    metadata_lines: Mapping[str, int] = EMPTY


def parse_plugin(data: bytes, path: str, generation: int = 5) -> ParsedFile:
    """Parse one plugin description.

    :param data: the file's bytes
    :param path: the file's path as shown in messages (its file name names the plugin)
    :param generation: 5 for ``etc/xml/`` files, 4 for old-generation ``etc/`` files
    :returns: events, funcs, interface data for function addons, and every problem found
    """
    file = _File(path, generation)
    lines: dict[str, int] = {}
    parsed = ParsedFile([], [], file.problems, {}, {}, metadata_lines=lines)
    try:
        root = parse(data, root_tag="mgrdata")
    except DocumentError as exc:
        file.problems.append(Problem(Severity.ERROR, Source(path, exc.line), exc.reason))
        return parsed._replace(well_formed=False)
    index = 0
    for child in root:
        if not isinstance(child.tag, str):
            continue  # comments, processing instructions
        if child.tag == "handler":
            index = _handler_block(child, file, parsed, index)
        elif child.tag == "metadata" and child.get("name") and child.get("name") not in parsed.metadata:
            parsed.metadata[child.get("name", "")] = etree.tostring(child)
            lines[child.get("name", "")] = child.sourceline or 0
        elif child.tag == "lang" and child.get("name"):
            for messages in child.iterchildren("messages"):
                key = (child.get("name", ""), messages.get("name", ""))
                parsed.messages.setdefault(key, []).append(etree.tostring(messages))
        elif child.tag not in INTERFACE_ELEMENTS:
            file.warning(child, f"unknown element <{child.tag}> ignored")
    return parsed


def _handler_block(elem: Element, file: _File, parsed: ParsedFile, index: int) -> int:
    """Add one ``<handler>``'s events and funcs to ``parsed``; return the event count so far."""
    handler = _handler(elem, file)
    if handler is None:
        return index
    for item in elem:
        if item.tag == "event":
            index += 1
            parsed.events.extend(_events(item, handler, index, file))
        elif item.tag == "func":
            func = _func(item, handler, file)
            if func is not None:
                parsed.funcs.append(func)
        elif isinstance(item.tag, str):
            file.warning(item, f"handler '{handler.name}': unknown element <{item.tag}> ignored")
    return index


def _warn_unknown_attributes(elem: Element, file: _File, context: str) -> None:
    for attr in elem.attrib:
        if attr not in KNOWN_ATTRIBUTES[str(elem.tag)]:
            file.warning(elem, f"{context}unknown attribute '{attr}' ignored")


def _handler(elem: Element, file: _File) -> Handler | None:
    name = (elem.get("name") or "").strip()
    if not name:
        file.error(elem, "<handler> without a name: skipped")
        return None
    context = f"handler '{name}': "
    _warn_unknown_attributes(elem, file, context)
    type_text = elem.get("type")
    if type_text is None:
        file.warning(elem, f"{context}no 'type' attribute: xml assumed")
        type_text = "xml"
    if type_text not in ("cgi", "xml"):
        file.error(elem, f"{context}attribute 'type': expected one of cgi, xml, got '{type_text}': skipped")
        return None
    return Handler(
        name=name,
        type=HandlerType(type_text),
        plugin=Path(file.path).name,
        source=file.at(elem),
        ignore_errors=elem.get("ignore_errors") == "yes",
        timeout=_timeout(elem, file, context),
        minlevel=_minlevel(elem, file, context),
        generation=file.generation,
    )


def _timeout(elem: Element, file: _File, context: str) -> float | None:
    """The handler's ``timeout=`` in seconds (see :func:`mgrhooks.settings.seconds`); a bad
    one is an error and the run default is used instead (our choice: the handler still runs)."""
    text = elem.get("timeout")
    if text is None:
        return None
    try:
        return seconds(text)
    except ValueError as exc:
        file.error(elem, f"{context}attribute 'timeout': {exc}: default used")
        return None


def _minlevel(elem: Element, file: _File, context: str) -> int:
    text = elem.get("minlevel", "0")
    if not text.isdigit():
        file.warning(elem, f"{context}attribute 'minlevel': expected a level 0-31, got '{text}': 0 used")
        return 0
    return int(text)


def _events(elem: Element, handler: Handler, index: int, file: _File) -> list[Event]:
    context = f"handler '{handler.name}': "
    _warn_unknown_attributes(elem, file, context)
    func = (elem.get("name") or elem.text or "").strip()
    if not func:
        file.error(elem, f"{context}<event> without a function name: skipped")
        return []
    stages = [stage for attr, stage in _STAGE_ATTRIBUTES if elem.get(attr) == "yes"]
    if not stages:
        file.error(elem, f"{context}event '{func}' has no stage (before, after or final=\"yes\"): skipped")
        return []
    base, placement = _anchor(elem, file, context)
    return [
        Event(
            func=func,
            stage=stage,
            handler=handler,
            source=file.at(elem),
            number=index,
            postdata=elem.get("postdata") == "yes",
            sessiondata=elem.get("sessiondata") == "yes",
            hi=elem.get("priority") == "hi",
            priority=0 if elem.get("priority") == "hi" else DEFAULT_PRIORITY,
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
        file.warning(elem, message)
        return default


def _func(elem: Element, handler: Handler, file: _File) -> FuncDecl | None:
    _warn_unknown_attributes(elem, file, f"handler '{handler.name}': ")
    name = (elem.get("name") or elem.text or "").strip()
    if not name:
        file.error(elem, f"handler '{handler.name}': <func> without a name: skipped")
        return None
    minlevel = _minlevel(elem, file, f"handler '{handler.name}': ")
    return FuncDecl(name=name, handler=handler, source=file.at(elem), minlevel=max(minlevel, handler.minlevel))


#: a plugin file: (path shown in messages, relative to the root; full path; generation)
def build_registry(parsed: Iterable[tuple[str, bytes, int]]) -> Registry:
    """Combine files (``(shown path, bytes, generation)`` in load order) into one registry,
    with every file's problems and a warning for each ``<func>`` declared again (the first
    declaration wins). Never raises: a broken file is an error problem (PROTOCOL §2)."""
    return combine((path, parse_plugin(data, path, generation)) for path, data, generation in parsed)


def combine(parsed: Iterable[tuple[str, ParsedFile]]) -> Registry:
    """Combine parsed files (``(shown path, parsed)`` in load order) into one registry."""
    events: list[Event] = []
    funcs: list[FuncDecl] = []
    problems: list[Problem] = []
    files: list[str] = []
    forms = _Forms()
    messages: dict[tuple[str, str], tuple[bytes, ...]] = {}
    for path, result in parsed:
        events += result.events
        funcs += result.funcs
        problems += result.problems
        files.append(path)
        for name, element in result.metadata.items():
            problems += forms.add(name, element, Source(path, result.metadata_lines.get(name, 0)))
        for key, elements in result.messages.items():
            messages[key] = messages.get(key, ()) + tuple(elements)
    problems += _duplicate_funcs(funcs)
    return Registry(tuple(events), tuple(funcs), tuple(problems), tuple(files), forms.metadata(), messages)


class _Forms:
    """The ``<metadata>`` of each function, as files declare them in load order: the first
    file's, with, for a form, every later file's fields merged in (:func:`mgrhooks.shape.merge_form`);
    for anything else the first file's alone."""

    def __init__(self) -> None:
        self.serialised: dict[str, bytes] = {}
        self.merged: dict[str, Element] = {}

    def add(self, name: str, element: bytes, where: Source) -> list[Problem]:
        """Take one file's ``<metadata name=NAME>`` (declared at ``where``); returns a
        warning for each of its fields left out (the form already has one of that name)."""
        first = self.merged.get(name)
        if first is None and name not in self.serialised:
            self.serialised[name] = element
            return []
        later = parse(element, root_tag="metadata")
        if first is None:
            first = parse(self.serialised[name], root_tag="metadata")
            if not (is_form(first) and is_form(later)):
                return []  # not forms: the first file's stays alone
            self.merged[name] = first
        elif not is_form(later):
            return []
        problems = []
        for overlap in merge_form(first, later):
            line = where.line + (overlap.elem.sourceline or 1) - 1
            message = f"form '{name}': {overlap.tag} '{overlap.name}' is already in the form: ignored"
            problems.append(Problem(Severity.WARNING, Source(where.path, line), message))
        return problems

    def metadata(self) -> dict[str, bytes]:
        """Every function's ``<metadata>``, serialised."""
        return self.serialised | {name: etree.tostring(element) for name, element in self.merged.items()}


def _duplicate_funcs(funcs: Sequence[FuncDecl]) -> list[Problem]:
    seen: dict[str, FuncDecl] = {}
    problems = []
    for func in funcs:
        if func.name in seen:
            first = seen[func.name]
            message = f"function '{func.name}' is already declared at {first.source}: ignored"
            problems.append(Problem(Severity.WARNING, func.source, message))
        else:
            seen[func.name] = func
    return problems


def load_registry(root: Path, mgr: str, files: list[PluginFile] | None = None) -> Registry:
    """Read and parse every plugin description of ``mgr`` under ``root`` (or ``files``,
    as :func:`plugin_files` gives them). Paths in records and problems are shown
    relative to ``root``. Never raises: a file that cannot be read is an error problem
    (``cannot read: REASON``) and the others still load."""
    return load_keeping(files if files is not None else plugin_files(root, mgr), {}, {})[0]


#: what a problem that made a file fall back on its last good version adds
KEPT = "its last good version is used"


def load_keeping(
    files: Sequence[PluginFile], refused: Mapping[str, str], last_good: Mapping[str, bytes]
) -> tuple[Registry, dict[str, bytes]]:
    """Read and parse ``files`` (as :func:`plugin_files` gives them), each falling back on
    its last good version (our choice: a plugin file caught half-written, or broken by an
    edit, must not make its handlers, security before-handlers among them, vanish).

    A file whose current content cannot be used (not believed: ``refused`` maps its shown
    path to why; unreadable; not a well-formed ``<mgrdata>`` document) is replaced by its
    bytes in ``last_good``, with an error naming the file, the line and the reason and
    saying so; without a last good version it declares nothing, with the error.

    :returns: the registry, and the new last good versions: shown path → bytes of each
        file whose current content, or last good version, was used
    """
    parsed: list[tuple[str, ParsedFile]] = []
    good: dict[str, bytes] = {}
    for shown, path, generation in files:
        data, result = _current(shown, path, generation, refused.get(shown))
        previous = last_good.get(shown)
        if data is None and previous is not None:
            note = result.problems[0]
            kept = parse_plugin(previous, shown, generation)
            data, result = previous, kept._replace(problems=[note._replace(message=f"{note.message}; {KEPT}")])
        if data is not None:
            good[shown] = data
        parsed.append((shown, result))
    return combine(parsed), good


def _current(shown: str, path: str, generation: int, refusal: str | None) -> tuple[bytes | None, ParsedFile]:
    """A file's bytes, ``None`` when they cannot be used, and what they declare (else one
    problem saying why)."""
    if refusal is not None:
        return None, _unusable(shown, f"not trusted: {refusal}")
    try:
        with open(path, "rb") as file:
            data = file.read()
    except OSError as exc:
        return None, _unusable(shown, f"cannot read: {exc.strerror}")
    result = parse_plugin(data, shown, generation)
    return (data if result.well_formed else None), result


def _unusable(shown: str, message: str) -> ParsedFile:
    return ParsedFile([], [], [Problem(Severity.ERROR, Source(shown), message)], {}, {}, well_formed=False)


class PluginInfo(NamedTuple):
    """One plugin description file, as ``mgrhooks plugin list`` shows it.

    ``name`` is the file name without ``<mgr>_mod_`` and ``.xml`` (``samba``), ``file`` the
    file name, ``shown`` its path relative to the root; ``handlers`` counts the distinct
    handlers its events name, ``functions`` its ``<func>`` declarations, both in what calls
    use of it (its last good version when it cannot be used now); ``problem``: the first
    error the registry has for it, as ``mgrhooks check`` shows it (not believed,
    unreadable, not well-formed: saying when its last good version is used instead; or a
    part of it ignored), or ``""``.
    """

    name: str
    file: str
    shown: str
    enabled: bool
    handlers: int
    functions: int
    problem: str = ""


def plugin_name(file: str, mgr: str) -> str:
    """The plugin's name in a file name: ``samba`` for ``billmgr_mod_samba.xml``."""
    return file.removeprefix(f"{mgr}_mod_").removesuffix(".xml")


def list_plugins(
    files: Sequence[PluginFile], mgr: str, registry: Registry, disabled: Collection[str]
) -> list[PluginInfo]:
    """Every file of ``files`` (:func:`plugin_files`), in load order, with what ``registry``
    holds of it: the registry calls use (:meth:`mgrhooks.root.Root.registry`: trust and
    last good versions applied), so the list counts what runs. ``enabled`` unless its
    file name is in ``disabled``."""
    errors: dict[str, str] = {}
    for problem in registry.problems:
        if problem.severity is Severity.ERROR:
            errors.setdefault(problem.source.path, str(problem))
    found = []
    for shown, _, _ in files:
        file = shown.rsplit("/", 1)[-1]
        handlers = {e.handler.name for e in registry.events if e.handler.plugin == file}
        funcs = [f for f in registry.funcs if f.handler.plugin == file]
        enabled = file not in disabled
        found.append(
            PluginInfo(plugin_name(file, mgr), file, shown, enabled, len(handlers), len(funcs), errors.get(shown, ""))
        )
    return found


def find_plugin(plugins: Iterable[PluginInfo], name: str) -> PluginInfo | None:
    """The first of ``plugins`` whose name (``samba``) or file name is ``name``, or ``None``."""
    return next((plugin for plugin in plugins if name in (plugin.name, plugin.file)), None)
