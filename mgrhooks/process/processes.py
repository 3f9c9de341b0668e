"""The handler processes of one caller: what their runs share (the guardian, the mark of
their orphans, how they start), owned by the caller instead of by the module. I/O.

A call, or the ``mgrhooks`` command around one, makes a :class:`Processes` and closes it
at its end; calls side by side (threads of one server) each have their own, and each
stops only its own handlers. Importing this module costs nothing more: the runner, the
guardian and ``ctypes`` load with the first handler (a call without handlers never needs
them, docs/performance.md).
"""

from __future__ import annotations

import os
from collections.abc import Callable
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from .containment import Guardian
    from .runner import Owner, RunOutcome, RunRequest
    from .spawn import Child, PosixSpawn


#: bytes of stdin from which a run's stdin file is kept for the next run
KEEP_STDIN = 1 << 20


class Processes:
    """Runs handlers for one caller and keeps them contained.

    Set up at the first :meth:`run` (nothing is started for calls without handlers) as
    the options ask; :meth:`close` (or leaving a ``with`` block) ends the guardian. Runs
    one handler at a time: calls side by side need a ``Processes`` each.

    :param guard: start a :class:`~mgrhooks.process.containment.Guardian`, so that the
        running handler and its descendants are killed if this process dies mid-handler
    :param adopt_orphans: make this process a child subreaper
        (:func:`~mgrhooks.process.containment.adopt_orphans`; for the whole process, and
        it stays so) and mark the handlers' environments with this object's own
        ``MGRHOOKS_RUN_ID``, so that a daemon a handler double-forks is found and stopped
        with it, and only with it; the CLI does
    :param seal: make this process's descriptors close-on-exec
        (:func:`~mgrhooks.process.spawn.seal_descriptors`, for the whole process), so that
        handlers start through ``posix_spawn``; the CLI does. Without it handlers start
        through ``posix_spawn`` too where glibc can close every descriptor above 2 in the
        child (2.34 and later: ``serve``'s calls), else through ``subprocess.Popen``
    """

    def __init__(self, guard: bool = True, adopt_orphans: bool = False, seal: bool = False) -> None:
        self.guard = guard
        self.adopt_orphans = adopt_orphans
        self.seal = seal
        self._guardian: Guardian | None = None
        self._fast: PosixSpawn | None = None  # once sealed, where the C library allows
        self._ready = False
        # bound at the first run (an import statement per handler cost ~4 us each, cold:
        # docs/performance.md, bench row "per handler")
        self._run: Callable[[RunRequest, Owner], RunOutcome]
        self._start: Callable[..., Child]
        self._mark = ""  # RUN_ID, the name
        self._run_id: str | None = None  # its value, when orphans are adopted
        self._stdin: tuple[bytes, int] | None = None  # the last large stdin, and its sealed file

    def __enter__(self) -> Processes:
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    def run(self, request: RunRequest) -> RunOutcome:
        """Run one handler (see :func:`mgrhooks.process.runner.run`): never raises for a
        handler that misbehaves; its failure is in the outcome."""
        if not self._ready:
            self._prepare()
        try:
            return self._run(request, self)
        finally:
            if self._guardian is not None:
                self._guardian.release()

    def prepare(self) -> None:
        """Set up what the options ask for now rather than at the first :meth:`run`, the
        guardian started: for a caller with time to spare before it."""
        if not self._ready:
            self._prepare()
        if self._guardian is not None:
            self._guardian.start()

    def close(self) -> None:
        """End the guardian (waited for up to 1 s). The object can run handlers again
        afterwards; it sets itself up anew."""
        if self._guardian is not None:
            self._guardian.close()
            self._guardian = None
        self.drop_stdin()
        self._ready = False

    # --- the runner's side (mgrhooks.process.runner.Owner) -------------------------------

    def start(self, request: RunRequest, stdin: int, stdout: int, stderr: int) -> Child:
        """Start ``request``'s program with these descriptors, and guard it.
        :raises OSError: the program cannot start"""
        env = request.env if self._run_id is None else {**request.env, self._mark: self._run_id}
        child = self._start(request.argv, request.cwd, env, stdin, stdout, stderr, self._fast)
        if self._guardian is not None:
            self._guardian.watch(child.pid)
        return child

    def kill(self, child: Child, grace: float) -> tuple[int, ...]:
        """Stop ``child`` and what it started, its adopted orphans included (see
        :func:`~mgrhooks.process.containment.kill_tree`; ``grace`` in seconds)."""
        from .containment import kill_tree

        return kill_tree(child, grace, self._run_id)

    def stdin(self, data: bytes) -> int | None:
        """A new read-only descriptor, at offset 0, of a sealed in-memory file holding
        ``data`` when it is large (:data:`KEEP_STDIN`), else ``None`` (the runner writes a
        new file). The file is kept: the next run given the same bytes object (xml handlers
        passing a document on unchanged) gets it again instead of 11 MB written anew
        (docs/performance.md); it goes with a run given other stdin, :meth:`drop_stdin`
        or :meth:`close`.
        ``None`` too where Linux cannot seal or reopen one. :raises OSError:"""
        sealed = self.keep(data)
        if sealed is None:
            return None
        from .spawn import reopened

        return reopened(sealed)

    def keep(self, data: bytes) -> int | None:
        """The sealed in-memory file kept for ``data`` (written now unless it is the bytes
        object kept already), ``None`` when ``data`` is too small to be kept (the kept one
        goes) or Linux cannot seal one. For a caller that knows the next run's stdin early
        and has time to spare before it: the walk while libxml2 checks a supplied list
        (docs/performance.md). The descriptor stays this object's. :raises OSError:"""
        if len(data) < KEEP_STDIN:
            self.drop_stdin()
            return None
        if self._stdin is None or self._stdin[0] is not data:
            from .spawn import sealed_file

            self.drop_stdin()
            sealed = sealed_file("mgrhooks-stdin", data)
            if sealed is None:
                return None
            self._stdin = (data, sealed)
        return self._stdin[1]

    def drop_stdin(self) -> None:
        """Let the kept stdin go (its file and the bytes it holds): a server keeping these
        ``Processes`` for its next call does, so an idle one holds no document."""
        if self._stdin is not None:
            os.close(self._stdin[1])
            self._stdin = None

    def _prepare(self) -> None:
        """What the options ask for, before the first handler starts."""
        from .containment import RUN_ID
        from .runner import run
        from .spawn import start

        self._run, self._start, self._mark = run, start, RUN_ID
        if self.adopt_orphans:
            self._run_id = os.urandom(8).hex()
            from .containment import adopt_orphans

            adopt_orphans()
        from .spawn import posix_spawner

        if self.seal:
            from .spawn import seal_descriptors

            self._fast = posix_spawner() if seal_descriptors() else None
        else:  # the child closes what it must not inherit (glibc 2.34), else subprocess does
            self._fast = posix_spawner(close_from=True)
        if self.guard:
            from .containment import Guardian

            self._guardian = Guardian(self._fast)
        self._ready = True
