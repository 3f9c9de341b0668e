"""The Python API: a panel root, its observers and its core, in one object.

.. code-block:: python

    from mgrhooks import Panel, PanelError

    panel = Panel("/usr/local/mgr5", mgr="billmgr")

    @panel.observe("user.add", stage="after", extension="crm")
    def tell_crm(request, doc):
        crm.created(request.get("name"))          # doc may be changed or replaced

    @panel.function("hello.world")                 # a core function written in Python
    def hello(request, doc):
        if not request.get("who"):
            raise PanelError("value", "who", "", "Say who")
        add(doc, "greeting", f"Hello, {request.get('who')}")

    response = panel.call("user.add", {"name": "alice", "passwd": "x", "sok": "ok"})
    response.error, response.doc                    # bool, the lxml <doc>

    panel.register("order.paid", send_mail)         # no stage: for the dispatch kinds
    panel.notify("order.paid", order)               # first / map / foldl / foldr / ...

The ``mgrhooks`` command uses this API and nothing else.
"""

from __future__ import annotations

import os
from collections.abc import Callable, Collection, Iterator, Mapping, Sequence
from contextlib import contextmanager
from typing import NamedTuple

from .core import BuiltinCore, Core
from .dispatch import Options, Response, call, nesting, reachable
from .model import InternalHandler, Level, Plan, Problem, Request
from .observers import Observers
from .root import DEFAULT_MGR, Root
from .xmldoc import Element

#: a core function written in Python: adds its result to ``doc`` or raises PanelError
Function = Callable[[Request, Element], None]


class PluginInfo(NamedTuple):
    """One plugin description file, as ``mgrhooks plugin list`` shows it."""

    name: str
    file: str
    shown: str
    enabled: bool
    handlers: int
    functions: int


class Panel:
    """A panel root with its observers and core.

    :param root: the root directory (``etc/xml``, ``addon``, ``var``)
    :param mgr: the product (``billmgr``, ``ispmgr``, ...)
    :param core: the core whose functions calls reach; the built-in SQLite core by default
    :raises RootError: ``root`` is not a directory, or ``mgr`` not a plain name
    """

    def __init__(self, root: str | os.PathLike[str] = ".", mgr: str = DEFAULT_MGR, core: Core | None = None) -> None:
        self.root = Root.open(root, mgr)
        self.observers = Observers()
        self._functions: dict[str, tuple[Function, tuple[InternalHandler, ...]]] = {}
        self._core = core if core is not None else BuiltinCore(self.root.db_file)
        self.register = self.observers.register
        self.observe = self.observers.observe
        self.unregister = self.observers.unregister
        self.unregister_extension = self.observers.unregister_extension
        self.notify = self.observers.notify
        self.notify_sync = self.observers.notify_sync
        self.notify1 = self.observers.notify1
        self.first = self.observers.first
        self.map = self.observers.map
        self.foldl = self.observers.foldl
        self.foldr = self.observers.foldr

    # --- calls --------------------------------------------------------------------------

    def function(self, name: str, internals: Sequence[InternalHandler] = ()) -> Callable[[Function], Function]:
        """Decorator: make a Python callable the core's function ``name`` (replacing the
        built-in one of that name, if any)."""

        def register(function: Function) -> Function:
            self._functions[name] = (function, tuple(internals))
            return function

        return register

    @property
    def core(self) -> Core:
        """The core calls reach: the Python functions, then the given or built-in core."""
        return _WithFunctions(self._core, self._functions) if self._functions else self._core

    def call(
        self,
        func: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        *,
        user: str = "root",
        level: int = Level.SUPER_USER,
        lang: str = "en",
        options: Options | None = None,
    ) -> Response:
        """Call ``func`` and return the response (see :func:`mgrhooks.dispatch.call`).

        A call made from inside a handler (``MGRHOOKS_DEPTH`` in the environment) counts as
        nested. :raises RootError: the root's ``etc/mgrhooks.conf`` is broken, or the
        built-in core's database cannot be used (see :func:`mgrhooks.dispatch.call`)
        """
        pairs = tuple(params.items()) if isinstance(params, Mapping) else tuple(params)
        request = Request(func, tuple((k, v) for k, v in pairs if k != "func"), user=user, level=level, lang=lang)
        options = options if options is not None else Options()
        if options.depth == 1 and not options.chain:
            depth, chain = nesting(os.environ)
            options = options._replace(depth=depth, chain=chain)
        return call(self.root, request, self.core, options._replace(observers=self.observers))

    def plan(self, func: str, level: int = Level.SUPER_USER) -> Plan:
        """The steps a call of ``func`` by a caller of ``level`` runs, each with why.

        :raises PanelError: the function is unknown, or out of the caller's reach
        """
        from .plan import plan

        registry, functions = reachable(self.root, func, self.core)
        disabled = self.root.disabled_plugins()
        return plan(registry, Request(func, level=level), functions.catalogue(), disabled, self.observers.events())

    def functions(self, func: str | None = None) -> list[str]:
        """Every function a call can reach (``func`` given: that function's parameters)."""
        registry, functions = reachable(self.root, func or "", self.core)
        if func:
            return functions.parameters(func)
        return sorted({*functions.catalogue(), *registry.function_names})

    @contextmanager
    def logging(self, echo: bool = False) -> Iterator[None]:
        """Write log records to ``var/<mgr>.log`` (and stderr with ``echo``) meanwhile."""
        with self.root.logging(echo):
            yield

    # --- plugins ------------------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Every problem of the plugin files and handler programs."""
        from .check import check
        from .plugins import load_registry

        return check(self.root, load_registry(self.root.path, self.root.mgr))

    def plugins(self) -> list[PluginInfo]:
        """The plugin description files, in load order."""
        from .plugins import load_registry, plugin_files

        files = plugin_files(self.root.path, self.root.mgr)
        registry = load_registry(self.root.path, self.root.mgr, files)
        disabled = self.root.disabled_plugins()
        found = []
        for shown, _, _ in files:
            file = shown.rsplit("/", 1)[-1]
            handlers = {e.handler.name for e in registry.events if e.handler.plugin == file}
            funcs = [f for f in registry.funcs if f.handler.plugin == file]
            name = file.removeprefix(f"{self.root.mgr}_mod_").removesuffix(".xml")
            found.append(PluginInfo(name, file, shown, file not in disabled, len(handlers), len(funcs)))
        return found

    def set_plugin_enabled(self, name: str, enabled: bool) -> tuple[PluginInfo, bool]:
        """Switch plugin ``name`` (``samba`` or its file name) on or off.

        :returns: the plugin, and whether anything changed
        :raises KeyError: no such plugin
        :raises RootError: the state cannot be written
        """
        for plugin in self.plugins():
            if name in (plugin.name, plugin.file):
                changed = self.root.set_plugin_enabled(plugin.file, enabled)
                if changed:
                    from . import logs

                    with self.logging():
                        logs.ACTION.info("plugin %s %s", plugin.file, "enabled" if enabled else "disabled")
                return plugin._replace(enabled=enabled), changed
        raise KeyError(name)

    # --- event notifications ------------------------------------------------------------

    def deliver(self) -> tuple[int, int, int]:
        """One pass of the notification worker: (delivered, to retry, dead).
        :raises RootError: the spool's database cannot be used"""
        from .delivery import work

        with self.logging():
            done = work(self.root, self.root.settings().notifiers)
        return done.delivered, done.retried, done.dead

    def queue(self, dead_only: bool = False) -> list[tuple[str, str, str, int, str, str]]:
        """Deliveries not done: (record, notifier, state, attempts, event, last error).
        :raises RootError: the spool's database cannot be used"""
        from .delivery import spool_of

        states = ("dead",) if dead_only else ("pending", "dead")
        return [(d.record, d.notifier, d.state, d.attempts, d.event, d.error) for d in spool_of(self.root).list(states)]

    def retry(self, records: Collection[str] = ()) -> int:
        """Dead letters (``records``, or all) back to pending. :returns: how many.
        :raises RootError: the spool's database cannot be used"""
        from .delivery import spool_of

        return spool_of(self.root).retry(list(records))

    def drop(self, records: Collection[str] = ()) -> int:
        """Forget dead letters (``records``, or all). :returns: how many.
        :raises RootError: the spool's database cannot be used"""
        from .delivery import spool_of

        return spool_of(self.root).drop(list(records))


class _WithFunctions:
    """A core with functions written in Python in front of it."""

    def __init__(self, core: Core, functions: Mapping[str, tuple[Function, tuple[InternalHandler, ...]]]) -> None:
        self._core = core
        self._functions = functions

    def catalogue(self) -> Mapping[str, Sequence[InternalHandler]]:
        return {**self._core.catalogue(), **{name: internals for name, (_, internals) in self._functions.items()}}

    def action(self, request: Request, doc: Element) -> None:
        entry = self._functions.get(request.func)
        if entry is None:
            self._core.action(request, doc)
        else:
            entry[0](request, doc)

    def internal(self, handler: InternalHandler, request: Request, doc: Element) -> None:
        self._core.internal(handler, request, doc)
