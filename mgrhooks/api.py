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
from pathlib import Path
from typing import TYPE_CHECKING, Concatenate, Generic, ParamSpec, TypeVar, overload

from .core import Core
from .dispatch import Options, Response, call, nesting, reachable
from .errors import RootError, UsageError
from .functions import Function, Functions, PythonFunction, builtin_core
from .model import InternalHandler, Level, Plan, Problem, Request, with_group_ids
from .observers import Observers
from .root import DEFAULT_MGR, Root

if TYPE_CHECKING:
    from opentelemetry.trace import TracerProvider

    from .broker import DeadLetter
    from .delivery import Pass
    from .dryrun import Planned
    from .modules import ModuleAnswer, ModuleCall
    from .plugins import PluginInfo
    from .process import Processes
    from .record import Recorder, Recording
    from .relay import Relayed
    from .settings import Relay
    from .spool import Queued

__all__ = ["Function", "Panel", "PluginInfo"]


def __getattr__(name: str) -> object:
    """``PluginInfo``, re-exported from :mod:`mgrhooks.plugins` (docs/api.md) and imported
    on first use: the plugin files' parser is not needed by a call while the registry
    cache holds."""
    if name == "PluginInfo":
        from .plugins import PluginInfo

        return PluginInfo
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")


P = ParamSpec("P")
R = TypeVar("R")


class _Delegated(Generic[P, R]):
    """A :class:`Panel` method that is the same :class:`~mgrhooks.observers.Observers`
    method of ``panel.observers``, looked up on each use (nothing is copied onto the
    panel; signature and docstring are the observers' own)."""

    def __init__(self, method: Callable[Concatenate[Observers, P], R]) -> None:
        self.method = method
        self.__doc__ = method.__doc__

    @overload
    def __get__(self, panel: None, owner: type[Panel]) -> Callable[Concatenate[Observers, P], R]: ...
    @overload
    def __get__(self, panel: Panel, owner: type[Panel]) -> Callable[P, R]: ...
    def __get__(self, panel: Panel | None, owner: type[Panel]) -> Callable[..., R]:
        if panel is None:
            return self.method
        bound: Callable[P, R] = getattr(panel.observers, self.method.__name__)
        return bound


class Panel:
    """A panel root with its observers and core.

    The observer methods (``register``, ``observe``, ``unregister``,
    ``unregister_extension`` and the dispatch kinds ``notify``, ``notify_sync``,
    ``notify1``, ``first``, ``map``, ``foldl``, ``foldr``) are those of :attr:`observers`,
    delegated: ``panel.register`` is ``panel.observers.register``.

    :param root: the root directory (``etc/xml``, ``addon``, ``var``)
    :param mgr: the product (``billmgr``, ``ispmgr``, ...)
    :param core: the core whose functions calls reach; the built-in SQLite core by default
        (:func:`mgrhooks.functions.builtin_core`)
    :raises RootError: ``root`` is not a directory, or ``mgr`` not a plain name
    """

    def __init__(self, root: str | os.PathLike[str] = ".", mgr: str = DEFAULT_MGR, core: Core | None = None) -> None:
        self.root = Root.open(root, mgr)
        #: the observers every call of this panel consults (:class:`~mgrhooks.observers.Observers`)
        self.observers = Observers()
        self._functions: dict[str, PythonFunction] = {}
        self._core = core if core is not None else builtin_core(self.root)
        #: an OpenTelemetry tracer provider tracing every call (:mod:`mgrhooks.tracing`);
        #: ``None``: calls are traced only when ``OTEL_TRACES_EXPORTER`` names an exporter
        self.tracer_provider: TracerProvider | None = None

    register = _Delegated(Observers.register)
    observe = _Delegated(Observers.observe)
    unregister = _Delegated(Observers.unregister)
    unregister_extension = _Delegated(Observers.unregister_extension)
    notify = _Delegated(Observers.notify)
    notify_sync = _Delegated(Observers.notify_sync)
    notify1 = _Delegated(Observers.notify1)
    first = _Delegated(Observers.first)
    map = _Delegated(Observers.map)
    foldl = _Delegated(Observers.foldl)
    foldr = _Delegated(Observers.foldr)

    # --- calls --------------------------------------------------------------------------

    def function(self, name: str, internals: Sequence[InternalHandler] = ()) -> Callable[[Function], Function]:
        """Decorator: make a Python callable the core's function ``name`` (replacing the
        built-in one of that name, if any), with the core's ``internals`` run around it.
        The callable gets ``(request, doc)``, adds its result to ``doc`` and may raise
        :class:`~mgrhooks.errors.PanelError` for a typed ``<error>``."""

        def register(function: Function) -> Function:
            self._functions[name] = PythonFunction(function, tuple(internals))
            return function

        return register

    @property
    def core(self) -> Core:
        """The core calls reach: the Python functions (a
        :class:`~mgrhooks.functions.Functions`), then the given or built-in core."""
        return Functions(self._core, python=self._functions) if self._functions else self._core

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
        A group operation gets ``elids`` beside ``elid`` (:func:`mgrhooks.model.with_group_ids`).

        :param params: request parameters, a mapping or ``(key, value)`` pairs in order
            (a ``func`` among them is dropped)
        :param level: the caller's access level 0-31 (:class:`~mgrhooks.model.Level`)

        A call made from inside a handler (``MGRHOOKS_DEPTH`` in the environment) counts as
        nested. :raises RootError: the root's ``etc/mgrhooks.conf`` is broken, or the
        built-in core's database cannot be used (see :func:`mgrhooks.dispatch.call`)
        :raises UsageError: ``func``, ``user`` or ``lang`` holds a control character or a
        byte that is not UTF-8, or is too long (:meth:`mgrhooks.model.Request.problem`)
        """
        request, options = _prepared(func, params, user, level, lang, options)
        options = options._replace(observers=self.observers)
        if self.tracer_provider is not None or "OTEL_TRACES_EXPORTER" in os.environ:  # else no tracing cost
            from .tracing import traced

            return traced(self.root, request, options, self.tracer_provider, self._call)
        return self._call(request, options)

    def _call(self, request: Request, options: Options) -> Response:
        return call(self.root, request, self.core, options)

    def dry_run(
        self,
        func: str,
        params: Mapping[str, str] | Sequence[tuple[str, str]] = (),
        *,
        user: str = "root",
        level: int = Level.SUPER_USER,
        lang: str = "en",
        options: Options | None = None,
    ) -> tuple[Plan, tuple[Planned, ...]]:
        """What a :meth:`call` with these arguments would start, step by step, nothing run
        nor written (:func:`mgrhooks.dryrun.dry_run`).

        :raises PanelError: the function is unknown, or out of the caller's reach
        :raises UsageError: as :meth:`call`
        """
        from .dryrun import dry_run

        request, options = _prepared(func, params, user, level, lang, options)
        return dry_run(self.root, request, options._replace(observers=self.observers), self.core)

    def recorder(self) -> Recorder:
        """A monitor recording every handler run of a call it is given to
        (``Options.monitors``), kept as the root's ``[record]`` says (:mod:`mgrhooks.record`)."""
        from .record import RUNS, Recorder

        record = self.root.settings().record
        return Recorder(self.root.path / RUNS, None, record.keep, record.days)

    def recordings(self) -> list[Recording]:
        """The recorded calls, the oldest first (:func:`mgrhooks.record.recordings`)."""
        from .record import RUNS, recordings

        return recordings(self.root.path / RUNS)

    def recording(self, call: str) -> Recording:
        """The recorded call ``call``. :raises KeyError: there is none of that id"""
        from .record import RUNS, load

        return load(self.root.path / RUNS, call)

    def plan(self, func: str, level: int = Level.SUPER_USER, core_doc: Path | None = None) -> Plan:
        """The steps a call of ``func`` by a caller of ``level`` runs, each with why; the
        main logic names what answers (the core's function, a core document: ``core_doc``
        as ``exec --core-doc`` gives it, or the root's ``etc/core/``). A function known only
        through the handlers registered for it is planned with its main logic skipped
        (nothing answers it until a core document does).

        :raises PanelError: the function is unknown, or out of the caller's reach
        :raises UsageError: ``func`` holds a control character or a byte that is not UTF-8,
            or is too long
        """
        from .plan import plan

        problem = Request(func).problem()
        if problem is not None:
            raise UsageError(problem)

        registry, functions = reachable(self.root, func, self.core, core_doc)
        disabled = self.root.disabled_plugins()
        where = f"--core-doc FILE or etc/core/{self.root.mgr}/{func}.xml"
        unknown = f"no main logic: nothing answers '{func}' here; give its result with {where}"
        return plan(
            registry,
            Request(func, level=level),
            functions.catalogue(),
            disabled,
            self.observers.events(),
            main=functions.main_logic(func),
            unknown=unknown,
        )

    def functions(self, func: str | None = None) -> list[str]:
        """Every function a call can reach, sorted (``func`` given: that function's
        parameters, as ``mgrctl -i FUNC`` lists them)."""
        registry, functions = reachable(self.root, func or "", self.core)
        if func:
            return functions.parameters(func)
        return sorted({*functions.catalogue(), *registry.function_names})

    @contextmanager
    def logging(self, echo: bool = False) -> Iterator[None]:
        """Write log records to ``var/<mgr>.log`` (and stderr with ``echo``) meanwhile."""
        with self.root.logging(echo):
            yield

    def module(self, call: ModuleCall, processes: Processes | None = None) -> ModuleAnswer:
        """Run a BILLmanager processing or payment module of this root the way the panel
        starts it (``processing/pmX --command open --item 5``; see
        :func:`mgrhooks.modules.run_module`): never raises for a module that misbehaves,
        its failure is an ``<error type="module">`` in the answer.

        :param processes: runs it (:class:`mgrhooks.process.Processes`); ``None``: one of
            its own, closed at the end. Its ``sbin/mgrctl`` calls are nested calls, one
            deeper than this one.
        """
        from .env import Facts
        from .modules import run_module
        from .process import Processes
        from .version import __version__

        depth, chain = nesting(os.environ)
        shown = f"{call.program} --command {call.command}"
        facts = Facts(self.root.mgr, str(self.root.path), __version__, depth=depth, chain=(*chain, shown))
        if processes is not None:
            return run_module(self.root, call, processes, facts)
        with Processes() as own:
            return run_module(self.root, call, own, facts)

    # --- plugins ------------------------------------------------------------------------

    def check(self) -> list[Problem]:
        """Every problem of the plugin files and handler programs (:func:`mgrhooks.check.check`),
        as calls see them (a broken file's last good version in force is said so)."""
        from .check import check
        from .functions import for_call

        with self.logging():  # a registry parsed anew is logged, as a call would
            registry = self.root.registry()
            return check(self.root, registry, for_call(self.root, self.core, registry, {}).is_builtin)

    def plugins(self) -> list[PluginInfo]:
        """The plugin description files, in load order, with what calls use of each
        (:func:`mgrhooks.plugins.list_plugins`).

        :raises RootError: ``etc/mgrhooks.disabled`` is not believed"""
        from .plugins import list_plugins
        from .root import plugin_files

        files = plugin_files(self.root.path, self.root.mgr)
        return list_plugins(files, self.root.mgr, self.root.registry(), self.root.disabled_plugins())

    def set_plugin_enabled(self, name: str, enabled: bool) -> tuple[PluginInfo, bool]:
        """Switch plugin ``name`` (``samba`` or its file name) on or off; a change is
        logged in ``var/<mgr>.log``.

        :returns: the plugin, and whether anything changed
        :raises KeyError: no such plugin
        :raises RootError: the state cannot be written
        """
        from .plugins import find_plugin

        plugin = find_plugin(self.plugins(), name)
        if plugin is None:
            raise KeyError(name)
        changed = self.root.set_plugin_enabled(plugin.file, enabled)
        if changed:
            from . import logs

            with self.logging():
                logs.ACTION.info("plugin %s %s", plugin.file, "enabled" if enabled else "disabled")
        return plugin._replace(enabled=enabled), changed

    # --- event notifications ------------------------------------------------------------

    def deliver(self) -> Pass:
        """One pass of the notification worker over the due deliveries.

        :returns: how many were delivered, are to be retried, went dead
            (:class:`~mgrhooks.delivery.Pass`)
        :raises RootError: the spool's database cannot be used
        """
        from .delivery import work

        settings = self.root.settings()
        with self.logging():
            return work(self.root, settings.notifiers, days=settings.spool_days, skip=settings.relay.notifiers)

    def relay(self) -> Relayed:
        """One pass of the relay: the pending deliveries of the notifiers ``[relay]``
        relays, published to its broker (:mod:`mgrhooks.relay`).

        :returns: how many the broker confirmed, and the error that stopped the pass
        :raises RootError: the spool's database cannot be used
        """
        from .relay import relay

        settings = self.root.settings()
        with self.logging():
            return relay(self.root, settings.relay)

    def central_queue(self) -> list[DeadLetter]:
        """The dead letters of central delivery, in the broker's ``QUEUE.dead``
        (:class:`~mgrhooks.broker.DeadLetter`).

        :raises RootError: no ``[relay]`` broker
        :raises Exception: the broker's (kombu's) errors
        """
        from .broker import dead_letters

        return dead_letters(self._broker())

    def central_retry(self, records: Collection[str] = ()) -> int:
        """Dead letters of central delivery (``records``, or all) back to the task queue,
        their attempts counted anew. :returns: how many (errors as :meth:`central_queue`)"""
        from .broker import retry

        return retry(self._broker(), list(records))

    def central_drop(self, records: Collection[str] = ()) -> int:
        """Forget dead letters of central delivery (``records``, or all). :returns: how many"""
        from .broker import drop

        return drop(self._broker(), list(records))

    def _broker(self) -> Relay:
        relay = self.root.settings().relay
        if not relay.broker_url:
            raise RootError(f"{self.root.path / 'etc/mgrhooks.conf'}: no [relay] section: no broker")
        return relay

    def queue(self, dead_only: bool = False) -> list[Queued]:
        """Deliveries not done, oldest first (:class:`~mgrhooks.spool.Queued`: record,
        notifier, state, attempts, event, last error).

        :raises RootError: the spool's database cannot be used
        """
        from .delivery import spool_of

        return spool_of(self.root).queued(dead_only)

    def retry(self, records: Collection[str] = ()) -> int:
        """Dead letters (``records``, or all) back to pending, their attempts counted anew.

        :returns: how many
        :raises RootError: the spool's database cannot be used
        """
        from .delivery import spool_of

        return spool_of(self.root).retry(list(records))

    def drop(self, records: Collection[str] = ()) -> int:
        """Forget dead letters (``records``, or all).

        :returns: how many
        :raises RootError: the spool's database cannot be used
        """
        from .delivery import spool_of

        return spool_of(self.root).drop(list(records))


def _prepared(
    func: str,
    params: Mapping[str, str] | Sequence[tuple[str, str]],
    user: str,
    level: int,
    lang: str,
    options: Options | None,
) -> tuple[Request, Options]:
    """The request and options of :meth:`Panel.call` (see there).
    :raises UsageError: a name no call can take"""
    pairs = tuple(params.items()) if isinstance(params, Mapping) else tuple(params)
    request = Request(func, tuple((k, v) for k, v in pairs if k != "func"), user=user, level=level, lang=lang)
    problem = request.problem()
    if problem is not None:
        raise UsageError(problem)
    request = with_group_ids(request)  # PARAM_elids, as the panel gives group operations
    options = options if options is not None else Options()
    if options.depth == 1 and not options.chain:
        depth, chain = nesting(os.environ)
        options = options._replace(depth=depth, chain=chain)
    return request, options
