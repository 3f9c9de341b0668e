"""One root's panel kept warm for ``mgrhooks serve``: calls run in a bounded pool of
threads, each with its own handler processes, under a limit of calls at once. I/O.

What is kept between calls and what is not (issue 12 items 5 and 6):

* the :class:`~mgrhooks.api.Panel` (its core, its Python functions and observers) and the
  interpreter are kept; the registry is never stale: every call asks
  :meth:`mgrhooks.root.Root.registry`, which looks at the plugin files' stat first (an
  edited file takes effect on the next request), as do the settings and ``etc/debug.conf``;
* each call has its own :class:`Processes` (one call at a time runs on one; an ended
  call's, with its guardian, is taken again by a later call), its own
  panel log target (:func:`mgrhooks.logs.to_file`, a context variable), its own SQLite
  connections (:func:`mgrhooks.db.transaction` opens one a transaction) and its own
  per-call state of the built-in core (the password hash made outside the write lock);
* at most ``concurrency`` calls run at once (a thread each); a call beyond them waits up
  to ``queue_wait`` seconds for a turn, then is :class:`Busy` (HTTP 503, ``Retry-After``);
* a nested call (``depth`` above 1: a handler's ``sbin/mgrctl`` through the local socket)
  never waits for a turn its ancestors hold: it takes none of those turns but one of its
  own allowance, ``concurrency * MAX_DEPTH`` calls at once in threads of their own
  (each outer call's chain holds at most ``MAX_DEPTH`` of them at a time: depths 2 to
  ``MAX_DEPTH``, and the one too deep, answered with its ``nesting`` error; our choice,
  docs/local.md), with the same ``queue_wait`` beyond it;
* :meth:`Resident.reload` (``mgrctl exit``, ``mgrctl -R``, SIGHUP) reads the ``[serve]``
  settings anew and drops the kept ``Processes``;
* final-stage handlers run after the answer is given, still holding the call's turn;
* a call whose client went away runs to its end (its handlers within their timeouts), so
  no transaction is left half done; its answer is dropped;
* :meth:`Resident.stop` (SIGTERM): no new call; running ones get ``grace`` seconds, then
  their handler trees are killed and no further handler of theirs starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import errno
import os
import signal
import threading
from collections.abc import Callable, Mapping
from concurrent.futures import ThreadPoolExecutor
from typing import TYPE_CHECKING, NamedTuple

from .. import logs
from ..dispatch import MAX_DEPTH
from ..process import Processes
from .contract import content_type

if TYPE_CHECKING:
    from ..api import Panel
    from ..process.runner import RunOutcome, RunRequest
    from ..process.spawn import Child
    from ..settings import Serve

#: seconds the threads of killed calls get to end after their handlers were killed
AFTER_KILL = 10.0
#: the ``[serve]`` settings a reload does not change: in force after a restart of ``serve``
#: (sockets, the certificate, the number of threads, the request head's deadline and the
#: Gate's session lifetime are set up once, at start)
RESTART_ONLY = ("listen", "cert", "key", "concurrency", "read_timeout", "session_idle")


class Call(NamedTuple):
    """One call to run: ``func`` with ``params`` (in order) as ``user`` of ``level``;
    rendered in ``out`` (:data:`mgrhooks.render.FORMATS`); ``environ`` the CGI variables
    of the HTTP request for its handlers (``{}`` for local calls); ``depth`` and ``chain``
    its nesting (a nested ``mgrctl`` call is one deeper than its caller); ``timeout``
    seconds each handler may run (``None``: their own)."""

    func: str
    params: tuple[tuple[str, str], ...]
    user: str
    level: int
    lang: str = "en"
    out: str = "xml"
    environ: Mapping[str, str] = {}
    depth: int = 1
    chain: tuple[str, ...] = ()
    timeout: float | None = None


class Answer(NamedTuple):
    """``body``: the rendered document, the bytes ``mgrhooks exec --out FMT`` prints;
    ``content_type`` with its charset; ``error``: the document holds an ``<error>``
    (exec's exit status 1)."""

    body: bytes
    content_type: str
    error: bool


class Busy(Exception):
    """No turn within the queue wait (or the server is stopping): try again after
    ``retry_after`` seconds (HTTP 503 with ``Retry-After``)."""

    def __init__(self, retry_after: float) -> None:
        super().__init__(f"busy: try again in {retry_after:g}s")
        self.retry_after = retry_after


class Reloaded(NamedTuple):
    """What :meth:`Resident.reload` did: ``serve`` the settings now in force, ``restart``
    the ``[serve]`` keys changed in the file that need a restart (:data:`RESTART_ONLY`),
    ``dropped`` how many kept ``Processes`` (idle guardians) were closed."""

    serve: Serve
    restart: tuple[str, ...]
    dropped: int


def reloaded(old: Serve, new: Serve) -> tuple[Serve, tuple[str, ...]]:
    """The settings in force after a reload that read ``new`` while ``old`` were: ``new``
    but the :data:`RESTART_ONLY` keys kept as ``old``; and those keys that differ. Pure."""
    kept = {name: getattr(old, name) for name in RESTART_ONLY}
    changed = tuple(name for name in RESTART_ONLY if getattr(new, name) != kept[name])
    return new._replace(**kept), changed


class _Contained(Processes):
    """The handler processes of one served call, which the server can stop from another
    thread (:meth:`stop`): the running handler's tree is killed, no further one starts."""

    def __init__(self, generation: int = 0) -> None:
        #: the reloads of the resident before this was made (one made earlier is not kept)
        self.generation = generation
        # no adopt_orphans (a subreaper would collect every daemon's zombie for the whole
        # server's life) and no seal (a process-wide action): the CLI's own choices
        super().__init__(guard=True)
        self._lock = threading.Lock()
        self._child: Child | None = None
        self._stopped = False

    def start(self, request: RunRequest, stdin: int, stdout: int, stderr: int) -> Child:
        """:meth:`Processes.start`, unless the call was stopped. :raises OSError: then"""
        with self._lock:
            if self._stopped:
                raise OSError(errno.ESHUTDOWN, "the server is stopping")
            self._child = super().start(request, stdin, stdout, stderr)
            return self._child

    def run(self, request: RunRequest) -> RunOutcome:
        try:
            return super().run(request)
        finally:
            with self._lock:
                self._child = None

    @property
    def stopped(self) -> bool:
        """Whether :meth:`stop` was called (it starts no handler any more)."""
        return self._stopped

    def stop(self) -> None:
        """Kill the running handler's process group and descendants (SIGKILL: their
        grace is over); its own thread reaps it. Starts no handler afterwards."""
        import psutil

        with self._lock:  # (a handler reaped but not yet cleared by run(): a window of microseconds)
            self._stopped = True
            child = self._child
            if child is None:
                return
            victims: list[psutil.Process] = []
            with contextlib.suppress(psutil.Error):
                victims = psutil.Process(child.pid).children(recursive=True)
            for kill, target in ((os.killpg, child.pid), (os.kill, child.pid)):
                with contextlib.suppress(OSError):
                    kill(target, signal.SIGKILL)
            for victim in victims:
                with contextlib.suppress(psutil.Error):
                    victim.kill()


class Resident:
    """``panel`` serving calls (see the module docstring), as ``serve`` (the ``[serve]``
    settings: ``concurrency``, ``queue_wait``, ``retry_after``) says. Made and used in one
    event loop."""

    def __init__(self, panel: Panel, serve: Serve) -> None:
        self.panel = panel
        #: the ``[serve]`` settings in force (a reload replaces them)
        self.serve = serve
        self._turns = asyncio.Semaphore(serve.concurrency)
        self._pool = ThreadPoolExecutor(serve.concurrency, thread_name_prefix="mgrhooks-call")
        # nested calls: their own allowance and threads, so none waits for its ancestors'
        nested = serve.concurrency * MAX_DEPTH
        self._nested_turns = asyncio.Semaphore(nested)
        self._nested_pool = ThreadPoolExecutor(nested, thread_name_prefix="mgrhooks-nested")
        self._jobs: set[asyncio.Future[None]] = set()
        self._running: set[_Contained] = set()
        # the Processes of ended calls, taken again by the next ones: a guardian and a
        # spawner started anew each call cost ~1 ms of CPU (bench row "served | 5 sh
        # handlers: slope ratio"); at most ``concurrency`` of them, LIFO
        self._idle: list[_Contained] = []
        self._lock = threading.Lock()
        self._stopping = False
        self._generation = 0  # reloads so far

    async def answer(self, call: Call) -> Answer:
        """Run ``call`` in the pool under the limit; its final handlers run after this
        returns (holding its turn). A nested call (``depth`` above 1) takes a turn of the
        nested calls' allowance, never one of the outer calls' (see the module docstring).

        :raises Busy: no turn within ``queue_wait`` seconds, or the server is stopping
        :raises UsageError: a name no call can take (``user``, ``func``, ``lang``)
        :raises RootError: the root's ``etc/mgrhooks.conf`` is broken, or the core's
            database cannot be used (see :meth:`mgrhooks.api.Panel.call`)
        """
        serve = self.serve
        if self._stopping:
            raise Busy(serve.retry_after)
        turns, pool = (self._nested_turns, self._nested_pool) if call.depth > 1 else (self._turns, self._pool)
        try:
            await asyncio.wait_for(turns.acquire(), serve.queue_wait)
        except TimeoutError:
            raise Busy(serve.retry_after) from None
        loop = asyncio.get_running_loop()
        answered: asyncio.Future[Answer] = loop.create_future()

        def tell(answer: Answer | None, failure: BaseException | None = None) -> None:
            loop.call_soon_threadsafe(_settle, answered, answer, failure)

        try:
            job = loop.run_in_executor(pool, self._work, call, tell)
        except BaseException:
            turns.release()
            raise
        self._jobs.add(job)
        job.add_done_callback(lambda ended: self._ended(ended, turns))
        return await answered

    def _ended(self, job: asyncio.Future[None], turns: asyncio.Semaphore) -> None:
        self._jobs.discard(job)
        turns.release()

    def _work(self, call: Call, tell: Callable[[Answer | None, BaseException | None], None]) -> None:
        """The call in its thread: answered through ``tell``, then its final stage."""
        with self._lock:
            processes = self._idle.pop() if self._idle else _Contained(self._generation)
            if self._stopping:
                processes.stop()
            self._running.add(processes)
        try:
            with self.panel.logging():
                try:
                    answer, finish = self._call(call, processes)
                except BaseException as exc:  # the front answers it (UsageError, RootError, a bug)
                    tell(None, exc)
                    return
            tell(answer, None)
            if finish is not None:
                with self.panel.logging():
                    try:
                        finish()
                    except Exception as exc:  # the answer is given: only the log can say
                        logs.ACTION.error("'%s' final stage failed: %s", call.func, exc)
        finally:
            with self._lock:
                self._running.discard(processes)
                kept = (
                    not self._stopping
                    and not processes.stopped
                    and processes.generation == self._generation  # not one from before a reload
                    and len(self._idle) < self.serve.concurrency
                )
                if kept:
                    processes.drop_stdin()
                    self._idle.append(processes)
            if not kept:
                processes.close()

    def _call(self, call: Call, processes: Processes) -> tuple[Answer, Callable[[], None] | None]:
        """The answer, rendered as ``exec`` renders it, and what runs the final stage."""
        from ..dispatch import Options
        from ..render import render_bytes

        options = Options(
            timeout=call.timeout,
            depth=call.depth,
            chain=call.chain,
            defer_final=True,
            processes=processes,
            request_env=call.environ or None,
        )
        panel = self.panel
        response = panel.call(call.func, call.params, user=call.user, level=call.level, lang=call.lang, options=options)
        doc = None if response.serialised is not None else response.doc  # no tree built for nothing
        body = render_bytes(doc, call.out, (("func", call.func), *call.params), response.serialised)
        return Answer(body, content_type(call.out), response.error), response.finish

    async def reload(self) -> Reloaded:
        """Drop what is kept warm and could be stale: the ``[serve]`` settings are read
        anew (those of :data:`RESTART_ONLY` stay as they are, logged as needing a restart;
        the others apply from the next call on), and the kept idle ``Processes`` are closed
        (later calls start theirs anew; those of running calls are closed when they end).
        Running calls end as they began. Nothing else is
        kept: the registry, the handler settings and ``etc/debug.conf`` are read on every
        call, the built-in core keeps only its database's path, SQLite connections are a
        transaction's. Logged in the panel log (``action``).

        :raises RootError: ``etc/mgrhooks.conf`` is broken (nothing changed then)
        """
        settings = await asyncio.to_thread(self.panel.root.settings)
        serve, restart = reloaded(self.serve, settings.serve)
        with self._lock:
            self.serve = serve
            self._generation += 1  # those of running calls are closed when they end
            idle, self._idle = self._idle, []
        for processes in idle:
            await asyncio.to_thread(processes.close)
        if restart:
            logs.ACTION.warning(
                "reload: [serve] %s changed in etc/mgrhooks.conf: in force after a restart of mgrhooks serve",
                ", ".join(restart),
            )
        return Reloaded(serve, restart, len(idle))

    async def stop(self, grace: float) -> None:
        """Take no new call; let running ones (final stages included) end within ``grace``
        seconds, then kill their handler trees and wait for their threads (a bounded
        time); the pool is shut then."""
        with self._lock:
            self._stopping = True
        if self._jobs:
            await asyncio.wait(set(self._jobs), timeout=grace)
        if self._jobs:
            with self._lock:
                running = list(self._running)
            for processes in running:
                processes.stop()
            logs.ACTION.warning(
                "stopping: %d call(s) still running after %gs, their handlers killed", len(running), grace
            )
            await asyncio.wait(set(self._jobs), timeout=AFTER_KILL)
        with self._lock:
            idle, self._idle = self._idle, []
        for processes in idle:
            processes.close()
        self._pool.shutdown(wait=False)
        self._nested_pool.shutdown(wait=False)


def _settle(answered: asyncio.Future[Answer], answer: Answer | None, failure: BaseException | None) -> None:
    if answered.done():  # (cancelled: the client went away)
        return
    if failure is not None:
        answered.set_exception(failure)
    else:
        assert answer is not None
        answered.set_result(answer)
