"""Frozen records shared by the pure modules: plugin descriptions, requests, plan steps.

Records are ``typing.NamedTuple``: immutable, typed, and cheap to define (a frozen
dataclass costs about ten times more at import, which every start of the command pays).
This module, like the others whose records every call defines (``settings``, ``root``,
``plugins``, ``shape``, ``env``, ``functions``, ``observers``, ``step``, ``dispatch``),
evaluates its annotations (no ``from __future__ import annotations``; a name imported only
for type checking is quoted): ``NamedTuple`` compiles every annotation it is given as a
string, which took 1.2 ms of this module's 2.9 ms import (~0.1 ms a record elsewhere).
"""

import enum
from collections.abc import Mapping
from types import MappingProxyType
from typing import Any, NamedTuple

#: an empty mapping to default to (a NamedTuple's defaults are shared, so immutable)
EMPTY: Mapping[Any, Any] = MappingProxyType({})


class Stage(enum.StrEnum):
    """When a handler runs relative to the function's main logic (PROTOCOL §3)."""

    BEFORE = "before"
    AFTER = "after"
    FINAL = "final"


class HandlerType(enum.StrEnum):
    """How a handler gets its input (PROTOCOL §4)."""

    CGI = "cgi"
    XML = "xml"
    #: an in-process observer registered from Python (see mgrhooks.observers)
    PYTHON = "python"


class Base(enum.StrEnum):
    """Which internal group an event is anchored to (``base=``; PROTOCOL §3)."""

    CORE = "core"
    PROJECT = "project"


class Placement(enum.StrEnum):
    """Side of the base's internal group (``proirity=`` in plugin files)."""

    BEFORE = "before"
    AFTER = "after"


class Source(NamedTuple):
    """Where something was declared: a file path and a 1-based line (0 when unknown)."""

    path: str
    line: int = 0

    def __str__(self) -> str:
        return f"{self.path}:{self.line}" if self.line else self.path


class Handler(NamedTuple):
    """One ``<handler>`` of a plugin description.

    ``timeout`` (seconds) comes from our ``timeout=`` extension attribute, ``None`` meaning
    the run default. ``minlevel`` is the lowest caller level it runs for (old generation).
    ``generation`` is 5 for ``etc/xml/`` files, 4 for old-generation ``etc/`` files: it
    decides the input shape (PROTOCOL §4).
    """

    name: str
    type: HandlerType
    plugin: str
    source: Source
    ignore_errors: bool = False
    timeout: float | None = None
    minlevel: int = 0
    generation: int = 5


class Event(NamedTuple):
    """One registration of a handler for one function (or ``*``) at one stage.

    ``number`` is the document order of the ``<event>`` element in its plugin file (an
    ``<event after="yes" final="yes">`` gives two records with the same number).
    """

    func: str
    stage: Stage
    handler: Handler
    source: Source
    number: int
    postdata: bool = False
    sessiondata: bool = False
    hi: bool = False
    base: Base = Base.CORE
    placement: Placement = Placement.AFTER
    #: lower runs first within a slot: ``priority="hi"`` is 0, the default 500
    priority: int = 500


class FuncDecl(NamedTuple):
    """A ``<func name=.../>``: the handler is the whole function (EVENT_TYPE=action)."""

    name: str
    handler: Handler
    source: Source
    minlevel: int = 0


class Severity(enum.StrEnum):
    """How bad a :class:`Problem` is (``mgrhooks check`` exits 1 when one is an error)."""

    #: the thing is not used (a handler, an event, a file)
    ERROR = "error"
    #: the thing is used, perhaps not as its author meant
    WARNING = "warning"


class Problem(NamedTuple):
    """Something wrong in a plugin file or handler program, with its place; ``str()``
    gives ``path:line: severity: message``."""

    severity: Severity
    source: Source
    message: str

    def __str__(self) -> str:
        return f"{self.source}: {self.severity}: {self.message}"


class Registry(NamedTuple):
    """Everything the plugin descriptions of one root declare, in load order."""

    events: tuple[Event, ...] = ()
    funcs: tuple[FuncDecl, ...] = ()
    problems: tuple[Problem, ...] = ()
    files: tuple[str, ...] = ()
    #: serialised ``<metadata name=F>`` elements by function (first file wins)
    metadata: Mapping[str, bytes] = EMPTY
    #: serialised ``<messages name=F>`` elements by (language, function), in file order
    messages: Mapping[tuple[str, str], tuple[bytes, ...]] = EMPTY

    def func(self, name: str) -> FuncDecl | None:
        """The first ``<func>`` declaring ``name`` (file name order), or ``None``."""
        return next((f for f in self.funcs if f.name == name), None)

    @property
    def function_names(self) -> set[str]:
        """Every function an addon's ``<func>`` declares."""
        return {f.name for f in self.funcs}


class InternalHandler(NamedTuple):
    """A handler the core itself runs around a function (the seed's ``balance``)."""

    name: str
    stage: Stage
    base: Base


class Level(enum.IntEnum):
    """The access levels panel users have (``AUTH_LEVEL``; PROTOCOL §4). A caller's level
    is any number 0-31 (a plain ``int``); these name the ones the panel gives."""

    MAILBOX_USER = 9
    USER = 16
    RESELLER = 24
    ADMIN = 29
    #: ``root``: what ``mgrctl`` and ``mgrhooks exec`` call as by default
    SUPER_USER = 30


#: the longest function name, user or language a call takes (our choice, as a file name:
#: each goes into several environment variables of every handler)
NAME_LIMIT = 255


def name_problem(text: str) -> str | None:
    """The first thing in ``text`` that no name holds: more than :data:`NAME_LIMIT`
    characters, a control character (C0, DEL, C1) or a byte that is not UTF-8 (decoded as
    a lone surrogate, as Python does for command lines), with its 1-based position;
    ``None`` when there is none."""
    if len(text) > NAME_LIMIT:
        return f"{len(text)} characters, more than {NAME_LIMIT}"
    if text.isascii() and text.isprintable():
        return None
    for position, char in enumerate(text, 1):
        code = ord(char)
        if 0xDC80 <= code <= 0xDCFF:
            return f"byte 0x{code - 0xDC00:02X} at position {position} is not UTF-8"
        if 0xD800 <= code <= 0xDFFF:
            return f"lone surrogate U+{code:04X} at position {position}"
        if code < 0x20 or 0x7F <= code <= 0x9F:
            return f"control character U+{code:04X} at position {position}"
    return None


def _escaped(char: str) -> str:
    """``char`` as it can be shown on one line: itself when printable, else an escape (a
    byte that was not UTF-8 as ``\\xff``, as in the command line it came from)."""
    if char.isprintable():
        return char
    code = ord(char)
    return f"\\x{code - 0xDC00:02x}" if 0xDC80 <= code <= 0xDCFF else char.encode("unicode_escape").decode()


#: forms: shown without ``sok``, saved with it
_FORMS = (".add", ".edit")
#: lists of sub-objects, named ``object.subobject`` with no verb (DNSmanager's records of a zone)
_SUB_LISTS = frozenset({"domain.record"})


class Request(NamedTuple):
    """One function call.

    ``params`` are the request parameters in order, without ``func``; ``level`` is the
    caller's access level 0-31 (see :class:`Level`; PROTOCOL §4).
    """

    func: str
    params: tuple[tuple[str, str], ...] = ()
    user: str = "root"
    level: int = Level.SUPER_USER
    lang: str = "en"
    call_id: str = ""

    def problem(self) -> str | None:
        """Why no call can take this request: a control character, a byte that is not
        UTF-8 or a length over :data:`NAME_LIMIT` in the function name, the user or the
        language (each goes into XML attributes, the environment and the log); ``None``
        when there is none (our choice)."""
        for what, value in (
            ("function name", self.func),
            ("user (--user)", self.user),
            ("language (--lang)", self.lang),
        ):
            reason = name_problem(value)
            if reason is not None:
                shown = "".join(map(_escaped, value[:60])) + ("..." if len(value) > 60 else "")
                return f"Invalid {what} '{shown}': {reason}"
        return None

    def is_change(self) -> bool:
        """Whether a successful call of this request changes something (our reading of
        COREmanager's naming, docs/notifications.md): a list (``user``, or a list of
        sub-objects such as ``domain.record``) and a form (``.add``, ``.edit``) without
        ``sok`` only read; every other ``object.verb`` changes. The built-in core runs a
        read in a read transaction, and makes event records of changes only."""
        if "." not in self.func or self.func in _SUB_LISTS:
            return False
        return not (self.func.endswith(_FORMS) and not self.get("sok"))

    def get(self, key: str, default: str = "") -> str:
        """The last value of parameter ``key`` (``default`` when absent)."""
        value = default
        for k, v in self.params:
            if k == key:
                value = v
        return value

    @property
    def all_params(self) -> tuple[tuple[str, str], ...]:
        """``func`` first, then the parameters: what CGI handlers and PARAM_* see."""
        return (("func", self.func), *self.params)


#: the last part of a function name that makes it a group operation (``user.suspend``,
#: ``ftp.user.delete``): the panel passes its selected ids in ``elids`` too
GROUP_ACTIONS = frozenset({"delete", "suspend", "resume", "enable", "disable"})


def with_group_ids(request: Request) -> Request:
    """``request`` with ``elids`` beside ``elid`` when it is a group operation: its function
    name ends in one of :data:`GROUP_ACTIONS`, ``elid`` is set and not empty, and the caller
    gave no ``elids`` of its own. ``elids`` holds the same ids as ``elid`` (a group joined by
    ", ") and comes right after it, so handlers find it in ``PARAM_elids``, the query string,
    the POST body and old-generation ``<params>``; otherwise ``request`` itself.

    Source: public ISPmanager 5 addons read the selected ids of ``user.suspend``,
    ``user.resume`` and ``user.delete`` from ``PARAM_elids`` (docs/protocol.md, *Starting a
    handler*); which functions get it is our choice. Here, not in :mod:`mgrhooks.env` (which
    re-exports it): every call makes its request with it, and a call without handlers
    needs nothing else of that module (bench row "cold start").
    """
    if request.func.rpartition(".")[2] not in GROUP_ACTIONS:
        return request
    keys = [key for key, _ in request.params]
    if "elids" in keys or not request.get("elid"):
        return request
    at = len(keys) - keys[::-1].index("elid")  # after the last elid, whose value counts
    params = (*request.params[:at], ("elids", request.get("elid")), *request.params[at:])
    return request._replace(params=params)


class RunStatus(enum.StrEnum):
    """How a handler's run went, as event records give it (``status``).

    ``ok``; for a program, the runner's failure kind (``spawn``, ``timeout``, ``output``,
    ``exit``: :attr:`mgrhooks.runner.RunOutcome.failure`); for a Python observer, ``error``
    (it raised :class:`~mgrhooks.errors.PanelError`) or ``exception`` (anything else).
    """

    OK = "ok"
    SPAWN = "spawn"
    TIMEOUT = "timeout"
    OUTPUT = "output"
    EXIT = "exit"
    ERROR = "error"
    EXCEPTION = "exception"


class HandlerRun(NamedTuple):
    """One handler's part in a call (for event records); ``ms`` in milliseconds."""

    name: str
    stage: str
    ms: float
    status: RunStatus


class StepKind(enum.StrEnum):
    """What a plan step runs."""

    HANDLER = "handler"
    INTERNAL = "internal"
    ACTION = "action"


class HandlerStep(NamedTuple):
    """A plan step that runs a registered handler (a plugin's or a Python observer's).

    ``skipped`` says why a step that would run does not (its plugin is disabled); such
    steps are shown by ``plan`` and left out by :meth:`Plan.stage`.
    """

    event: Event
    why: str
    skipped: str = ""

    @property
    def kind(self) -> StepKind:
        """``handler``."""
        return StepKind.HANDLER

    @property
    def stage(self) -> Stage:
        """The stage it runs in."""
        return self.event.stage

    @property
    def name(self) -> str:
        """The handler's name."""
        return self.event.handler.name


class InternalStep(NamedTuple):
    """A plan step that runs one of the core's internal handlers."""

    internal: InternalHandler
    why: str

    @property
    def kind(self) -> StepKind:
        """``internal``."""
        return StepKind.INTERNAL

    @property
    def stage(self) -> Stage:
        """The stage it runs in."""
        return self.internal.stage

    @property
    def name(self) -> str:
        """The internal handler's name."""
        return self.internal.name

    @property
    def skipped(self) -> str:
        """Always ``""``: internal handlers cannot be switched off."""
        return ""


class ActionStep(NamedTuple):
    """The plan step that runs the function's main logic: the core's function of that
    ``name`` (``func`` ``None``), or the handler of an addon's ``<func>``. ``skipped``:
    why ``mgrhooks plan`` shows it not running (a function known only through its
    handlers)."""

    name: str
    why: str
    func: FuncDecl | None = None
    skipped: str = ""

    @property
    def kind(self) -> StepKind:
        """``action``."""
        return StepKind.ACTION

    @property
    def stage(self) -> None:
        """``None``: the main logic stands between the before and after stages."""
        return None


#: one entry of a plan, with the reason it stands where it does (``why``)
Step = HandlerStep | InternalStep | ActionStep


class Plan(NamedTuple):
    """The ordered steps of one function call."""

    func: str
    steps: tuple[Step, ...] = ()

    def stage(self, stage: Stage) -> tuple[HandlerStep | InternalStep, ...]:
        """The handler and internal steps of one stage that run, in order."""
        return tuple(s for s in self.steps if not isinstance(s, ActionStep) and s.stage is stage and not s.skipped)

    @property
    def action(self) -> ActionStep:
        """The step that runs the function's main logic."""
        return next(s for s in self.steps if isinstance(s, ActionStep))
