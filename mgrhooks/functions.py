"""The functions a call can reach besides addons: the core's (the built-in one unless
another is given), functions written in Python (``Panel.function``), the runner's own
``eventlist``, and functions of other products answered from supplied documents. I/O.

A function the built-in core does not have (``webdomain.edit``, ``payment.add``, ...) can
still be called: its main logic's result is the ``<doc>`` in ``--core-doc FILE`` (for the
called function only), or in the root's ``etc/core/<mgr>/<func>/<elid>.xml`` for the object
``elid`` names, else ``etc/core/<mgr>/<func>.xml``. The document's attributes and children
are merged into the response as a cgi handler's are (our choice), so the handlers around it
run exactly as on the real panel.

A document in ``etc/core/`` never silently replaces a built-in function (the core's,
``eventlist``, a Python one): it does so only when its ``<doc>`` says
``mgrhooks-replace="yes"`` (:data:`REPLACE`; the attribute is not passed on); otherwise the
built-in function runs, and ``check`` and ``plan`` say the document is not used. A
``--core-doc`` is the caller's explicit choice and always answers. Our choice.

A supplied document must be a regular file of at most :data:`CORE_DOC_LIMIT` bytes, and one
in ``etc/core/`` must lie inside the root once symbolic links are followed (our choice): a
FIFO would hang the call, a device could be read without end, a link could show any file of
the system as a response.
"""

import contextlib
import errno
import os
from collections.abc import Callable, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple

from .core import BuiltinCore, Core, Within, needed_level
from .errors import PanelError
from .model import EMPTY, HandlerType, InternalHandler, Problem, Registry, Request, Severity, Source
from .xmldoc import DocumentError, Element, Rows, add, as_rows, parse

if TYPE_CHECKING:
    from .root import Root

EVENTLIST = "eventlist"
#: the largest supplied document read, in bytes (our choice: a handler's default output_limit)
CORE_DOC_LIMIT = 64 * 1024 * 1024
#: the attribute of a core document's ``<doc>`` that lets it replace a built-in function
REPLACE = "mgrhooks-replace"
#: metadata elements that name a parameter
_FIELDS = ("input", "select", "textarea", "slider", "col", "datetime", "htmldata")
_NO_PLUGINS = Registry()

#: a core function written in Python: adds its result to ``doc`` or raises PanelError
Function = Callable[[Request, Element], None]


class PythonFunction(NamedTuple):
    """A core function written in Python, with the internal handlers the core runs
    around it (``Panel.function``)."""

    function: Function
    internals: tuple[InternalHandler, ...] = ()


class Functions:
    """A :class:`~mgrhooks.core.Core`: ``core`` with, in front of it, supplied documents,
    ``eventlist`` and functions written in Python, consulted in that order.

    :param registry: the plugin descriptions ``eventlist`` lists and whose ``<metadata>``
        names parameters (none by default)
    :param core_docs: function name → document file (:func:`core_docs`)
    :param python: function name → function written in Python; it replaces the core's
        function of that name, if any
    """

    def __init__(
        self,
        core: Core,
        registry: Registry = _NO_PLUGINS,
        core_docs: Mapping[str, "CoreDoc"] = EMPTY,
        python: Mapping[str, PythonFunction] = EMPTY,
    ) -> None:
        self.core = core
        self.registry = registry
        self.core_docs = core_docs
        self.python = python

    def catalogue(self) -> Mapping[str, Sequence[InternalHandler]]:
        """The core's functions, the Python ones (with their internal handlers),
        ``eventlist`` and every supplied document's function."""
        catalogue = dict(self.core.catalogue())
        catalogue.update((name, python.internals) for name, python in self.python.items())
        catalogue[EVENTLIST] = ()
        for name in self.core_docs:
            catalogue.setdefault(name, ())
        return catalogue

    def action(self, request: Request, doc: Element, within: Within | None = None) -> None:
        """Run ``request.func``'s main logic into ``doc``: its supplied document merged in
        as a cgi handler's output (:meth:`_supplied`), ``eventlist``, its Python function,
        or the core's.

        :param within: what must commit with the change, handed to the built-in core's
            transaction (:meth:`mgrhooks.core.BuiltinCore.action`); other main logic has
            no transaction of ours, and does not run it

        :raises PanelError: the supplied document cannot be read or parsed (``value``
            error on ``core-doc``), none answers for the object (``missed`` on
            ``core-doc``), or what the Python function or the core raises
        """
        python = self.python.get(request.func)
        supplied = self._supplied(request)
        if supplied is not None:
            _merge_into(doc, supplied)
        elif request.func == EVENTLIST:
            self._eventlist(doc, request.level)
        elif python is not None:
            python.function(request, doc)
        elif isinstance(self.core, BuiltinCore):
            self.core.action(request, doc, within)
        else:
            self.core.action(request, doc)

    def is_builtin(self, func: str) -> bool:
        """Whether ``func`` is a built-in function: ``eventlist``, a Python function or the
        core's (which a document in ``etc/core/`` replaces only when it says so)."""
        return func == EVENTLIST or func in self.python or func in self.core.catalogue()

    def _supplied(self, request: Request) -> Element | None:
        """The supplied document answering ``request``, parsed, without :data:`REPLACE`:
        ``--core-doc``; else ``etc/core/<mgr>/<func>/<elid>.xml`` when there is one, else
        ``etc/core/<mgr>/<func>.xml``. ``None``: no document, or the function is built in and
        the document does not say ``mgrhooks-replace="yes"`` (or cannot be used: logged), so
        the built-in function answers.

        :raises PanelError: as :meth:`action` says
        """
        supplied = self.core_docs.get(request.func)
        if supplied is None:
            return None
        elid = request.get("elid")
        chosen = supplied.for_object(elid)
        builtin = supplied.root is not None and self.is_builtin(request.func)
        if chosen is None and supplied.objects is not None and not os.path.lexists(supplied.path):
            if builtin:
                return None
            if elid:
                where = f"object '{elid}': neither {supplied.objects}/{elid}.xml nor {supplied.path}"
            else:
                where = f"no object (no elid): no {supplied.path}"
            raise PanelError("missed", "core-doc", elid, f"No core document answers for '{request.func}' {where}")
        document = supplied._replace(path=chosen or supplied.path)
        if not builtin:
            return _without_replace(_load(document))
        try:
            loaded = _load(document)
        except PanelError as exc:
            from . import logs

            logs.ACTION.warning("%s; the built-in function '%s' answers", exc.msg, request.func)
            return None
        return _without_replace(loaded) if loaded.get(REPLACE) == "yes" else None

    def main_logic(self, func: str) -> str | None:
        """What answers a call of ``func``, as ``plan`` shows it (``main logic: ...``), or
        ``None`` when nothing does."""
        supplied = self.core_docs.get(func)
        builtin = self.is_builtin(func)
        general = supplied is not None and (supplied.root is None or os.path.lexists(supplied.path))
        objects = f"{supplied.shown_objects}/<elid>.xml" if supplied is not None and supplied.objects else ""
        if supplied is not None and (not builtin or supplied.root is None or _replaces(supplied)):
            if not general:
                return f"main logic: core documents {objects}, one for each object (none for others)"
            text = f"main logic: core document {supplied.shown}"
            if objects:
                text += f" ({objects} first, for one object)"
            if builtin:
                said = "--core-doc" if supplied.root is None else f'its <doc {REPLACE}="yes">'
                text += f", in place of the built-in function ({said})"
            return text
        if not builtin:
            return None
        text = f"main logic: the core's function '{func}'"
        if supplied is not None and general:
            text += f' ({supplied.shown} is not used: its <doc> does not say {REPLACE}="yes")'
        elif supplied is not None:
            text += f' ({objects} answers for its object only when its <doc> says {REPLACE}="yes")'
        return text

    def rows(self, func: str, meanwhile: Callable[[Rows], object] | None = None) -> Rows | None:
        """The supplied document of ``func`` as rows of text, when it is a list that
        :func:`~mgrhooks.xmldoc.as_rows` takes; else ``None`` (also for a file that cannot
        be read or parsed: :meth:`action` reports it). A 50,000-row list takes about nine
        times its size as a tree (docs/performance.md).

        :param meanwhile: given the rows as counted, while libxml2 checks them
            (:func:`~mgrhooks.xmldoc.as_rows`: nothing made of them may be used unless they
            are returned)"""
        doc = self.core_docs.get(func)
        if doc is None or doc.objects is not None or self.is_builtin(func) or _not_believed(doc):
            return None  # (one object's document, or the built-in function: decided by action)
        try:
            data = _read(doc)
        except OSError:
            return None
        try:
            return as_rows(data, meanwhile)
        except DocumentError:
            return None

    def internal(self, handler: InternalHandler, request: Request, doc: Element) -> None:
        """Run one internal handler: the core's (Python functions' internals included)."""
        self.core.internal(handler, request, doc)

    def needed_level(self, func: str) -> int:
        """The lowest caller level the core's function ``func`` accepts (0 for ``eventlist``,
        supplied documents of functions not built in, Python functions (they check levels themselves), and a core
        that does not say)."""
        if func == EVENTLIST or func in self.python or (func in self.core_docs and not self.is_builtin(func)):
            return 0
        return needed_level(self.core, func)

    def parameters(self, func: str) -> list[str]:
        """The parameters ``func`` reads: the fields named in its ``<metadata>``, else the
        core's own list for its product (``mgrctl -i FUNC``; none from a core that keeps
        no list)."""
        metadata = self.registry.metadata.get(func)
        if metadata is not None:
            names = (e.get("name", "") for e in parse(metadata, root_tag="metadata").iter(*_FIELDS))
            return list(dict.fromkeys(n for n in names if n))
        listed: Callable[[str], Sequence[str]] | None = getattr(self.core, "parameters", None)
        return list(listed(func)) if listed is not None else []

    def _eventlist(self, doc: Element, level: int) -> None:
        """One ``<elem>`` per registration a caller of ``level`` can set off: event, stage,
        handler, type, plugin file and line (events, then the functions addons declare, as
        stage ``action``).

        Left out, as a call would (our choice): a handler whose ``minlevel`` is above
        ``level`` (it never runs for this caller), an event of a function the caller may not
        call (the core's :meth:`needed_level`, or the ``<func>``'s ``minlevel``), and a
        ``<func>`` whose ``minlevel`` is above ``level``."""
        funcs = {f.name: f.minlevel for f in reversed(self.registry.funcs)}  # the first declaration wins
        registrations = [
            (e.func, e.stage.value, e.handler, e.source)
            for e in self.registry.events
            if e.handler.minlevel <= level and funcs.get(e.func, self.needed_level(e.func)) <= level
        ]
        registrations += [(f.name, "action", f.handler, f.source) for f in self.registry.funcs if f.minlevel <= level]
        for name, stage, handler, source in registrations:
            elem = add(doc, "elem")
            add(elem, "name", name)
            add(elem, "stage", stage)
            add(elem, "handler", handler.name)
            add(elem, "type", handler.type.value)
            add(elem, "plugin", str(source))


def builtin_core(root: "Root") -> BuiltinCore:
    """The core of ``root`` when none is given: the built-in SQLite core on
    ``var/<mgr>.db`` (created on first use) serving the product ``root.mgr`` names
    (:func:`mgrhooks.products.product`). The one place it is built."""
    from .products import product

    return BuiltinCore(root.db_file, product(root.mgr))


def for_call(root: "Root", core: Core | None, registry: Registry, core_docs: Mapping[str, "CoreDoc"]) -> Functions:
    """The functions one call can reach: ``core`` (:func:`builtin_core` when ``None``)
    with ``eventlist`` and ``core_docs`` in front of it; a :class:`Functions` given as
    ``core`` keeps its Python functions and gets this call's registry and documents."""
    if isinstance(core, Functions):
        return Functions(core.core, registry, core_docs, core.python)
    return Functions(core if core is not None else builtin_core(root), registry, core_docs)


class CoreDoc(NamedTuple):
    """A supplied document: its file, the root its real path must stay in (``None`` for
    the caller's own ``--core-doc``, read wherever it is), and the folder of its function's
    documents for one object each (``etc/core/<mgr>/<func>/``; ``None``: there is none).
    ``path`` need not exist when ``objects`` does."""

    path: Path
    root: Path | None = None
    objects: Path | None = None

    def for_object(self, elid: str) -> Path | None:
        """``objects/<elid>.xml`` when there is such a file and ``elid`` is one plain file
        name (not empty, no ``/``, not ``.`` or ``..``), else ``None``."""
        if self.objects is None or not elid or "/" in elid or elid in (".", ".."):
            return None
        candidate = self.objects / f"{elid}.xml"
        return candidate if os.path.lexists(candidate) else None

    @property
    def shown(self) -> str:
        """``path`` as messages show it: relative to the root, when in one."""
        return str(self.path.relative_to(self.root)) if self.root is not None else str(self.path)

    @property
    def shown_objects(self) -> str:
        """The folder of per-object documents (``etc/core/<mgr>/<func>/``) as messages show
        it: relative to the root, when in one."""
        return str(self.objects.relative_to(self.root)) if self.objects and self.root else str(self.objects)


def core_docs(root: Path, mgr: str, func: str, core_doc: Path | None) -> dict[str, CoreDoc]:
    """Supplied documents: every ``etc/core/<mgr>/*.xml`` and ``etc/core/<mgr>/<func>/``
    folder by function, then ``core_doc`` for ``func``."""
    folder = root / "etc" / "core" / mgr
    try:  # (not Path.glob: it compiles a pattern, a cost of every call)
        with os.scandir(folder) as entries:
            listed = sorted((entry.name, entry.is_dir()) for entry in entries)
    except OSError:
        listed = []
    found: dict[str, CoreDoc] = {}
    for name, is_folder in listed:
        if is_folder:
            found[name] = found.get(name, CoreDoc(folder / f"{name}.xml", root))._replace(objects=folder / name)
        elif name.endswith(".xml"):
            found.setdefault(name[: -len(".xml")], CoreDoc(folder / name, root))
    if core_doc is not None:
        found[func] = CoreDoc(core_doc)
    return found


def core_doc_problems(root: Path, mgr: str, builtin: Callable[[str], bool]) -> list[Problem]:
    """For ``check``: each document in ``etc/core/<mgr>/`` of a function ``builtin`` says is
    built in, as a warning: it replaces that function (its ``<doc>`` says so), or it is not
    used; an error when it cannot be read or parsed. Documents not believed are left to
    :func:`mgrhooks.trust.audit`."""
    problems = []
    for func, supplied in core_docs(root, mgr, "", None).items():
        if not builtin(func):
            continue
        paths = [supplied.path] if os.path.lexists(supplied.path) else []
        if supplied.objects is not None:
            with contextlib.suppress(OSError):
                paths += sorted(supplied.objects / n for n in os.listdir(supplied.objects) if n.endswith(".xml"))
        for path in paths:
            problems += _builtin_doc_problems(supplied._replace(path=path), func)
    return problems


def _builtin_doc_problems(document: CoreDoc, func: str) -> list[Problem]:
    if _not_believed(document) is not None:
        return []
    where = Source(document.shown)
    try:
        loaded = _load(document)
    except PanelError as exc:
        return [Problem(Severity.ERROR, where, exc.msg)]
    if loaded.get(REPLACE) == "yes":
        message = f"replaces the built-in function '{func}' (its <doc {REPLACE}=\"yes\">)"
        return [Problem(Severity.WARNING, where, message)]
    message = f"'{func}' is a built-in function: this document is not used (its <doc> does not say {REPLACE}=\"yes\")"
    return [Problem(Severity.WARNING, where, message)]


def _replaces(supplied: CoreDoc) -> bool:
    """Whether the document of ``supplied`` for no object in particular says :data:`REPLACE`."""
    if not os.path.lexists(supplied.path):
        return False
    try:
        return _load(supplied).get(REPLACE) == "yes"
    except PanelError:
        return False


def _without_replace(doc: Element) -> Element:
    doc.attrib.pop(REPLACE, None)
    return doc


def _not_believed(doc: CoreDoc) -> str | None:
    """Why a document in a root's ``etc/core/<mgr>/`` is not believed (:mod:`mgrhooks.trust`),
    else ``None`` (also for a ``--core-doc`` file elsewhere: the caller's own input)."""
    if doc.root is None:
        return None
    from . import trust

    return trust.refusal(str(doc.root), str(doc.path.relative_to(doc.root)))


def _load(doc: CoreDoc) -> Element:
    """The supplied document, parsed. :raises PanelError: ``type="value" object="core-doc"``
    naming the file (and line) and why it cannot be used"""
    path = doc.path
    refusal = _not_believed(doc)
    if refusal is not None:
        raise PanelError("value", "core-doc", str(path), f"Core document {path} is not trusted: {refusal}")
    try:
        return parse(_read(doc))
    except OSError as exc:
        raise PanelError("value", "core-doc", str(path), f"Cannot read core document {path}: {exc.strerror}") from None
    except DocumentError as exc:
        where = f"{path}:{exc.line}" if exc.line else str(path)
        raise PanelError("value", "core-doc", str(path), f"Core document {where}: {exc.reason}") from None


def _read(doc: CoreDoc) -> bytes:
    """The bytes of a supplied document, when it is a regular file of at most
    :data:`CORE_DOC_LIMIT` bytes (inside ``doc.root``, if given). Nothing but such a file is
    opened (a FIFO is never waited on). :raises OSError: its ``strerror`` says why"""
    path = str(doc.path)
    if doc.root is not None:
        path, top = os.path.realpath(path), os.path.realpath(doc.root)
        if os.path.commonpath((path, top)) != top:
            raise OSError(errno.EACCES, f"a symbolic link leading out of the root (to {path})")
    _regular(os.stat(path))
    nofollow = os.O_NOFOLLOW if doc.root is not None else 0
    with open(os.open(path, os.O_RDONLY | os.O_NONBLOCK | os.O_CLOEXEC | nofollow), "rb") as file:
        _regular(os.fstat(file.fileno()))  # (the same file: it may have been replaced since)
        data = file.read(CORE_DOC_LIMIT + 1)
    if len(data) > CORE_DOC_LIMIT:
        raise OSError(errno.EFBIG, f"larger than the limit of {CORE_DOC_LIMIT // 2**20} MiB")
    return data


def _regular(info: os.stat_result) -> None:
    from .files import require_regular

    require_regular(info)
    if info.st_size > CORE_DOC_LIMIT:
        raise OSError(errno.EFBIG, f"larger than the limit of {CORE_DOC_LIMIT // 2**20} MiB")


def _merge_into(doc: Element, supplied: Element) -> None:
    """Merge a supplied document into ``doc`` as a cgi handler's output, its own form first:
    a ``<metadata name=F>`` form in it takes the fields the plugin files added to ``doc``'s
    (:func:`mgrhooks.shape.merge_form`; one the core's form has already is left out), rather
    than replacing them."""
    from .merge import apply
    from .shape import is_form, merge_form

    for metadata in supplied.iterchildren("metadata"):
        plugins = next((m for m in doc.iterchildren("metadata") if m.get("name") == metadata.get("name")), None)
        if plugins is not None and is_form(metadata) and is_form(plugins):
            merge_form(metadata, plugins)
    apply(doc, supplied, HandlerType.CGI)  # merges into doc itself
