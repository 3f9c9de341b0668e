"""A panel root directory: its layout, its log, its registry. I/O.

Layout (PROTOCOL §1): ``etc/xml/<mgr>_mod_*.xml`` plugin descriptions, ``addon/``
handler programs, ``var/<mgr>.log`` the log, ``var/<mgr>.db`` the built-in core's data.
"""

import os
from collections.abc import Callable, Iterator
from contextlib import contextmanager, suppress
from pathlib import Path
from typing import NamedTuple

from . import logs
from .errors import RootError
from .model import Registry, Severity
from .settings import Settings, load_settings

DEFAULT_MGR = "billmgr"
#: sbin/mgrctl of a root: the panel's command-line client, run through mgrhooks. The
#: Python comes from $MGRHOOKS_PYTHON (set for every handler), else the one named here.
#: ``-c`` rather than ``-m mgrhooks.mgrctl`` (which works too): ``-m`` imports runpy, ~4 ms
#: of a call a running serve answers in ~10 (bench row "nested mgrctl")
MGRCTL_SCRIPT = """#!/bin/sh
# mgrctl for this root: runs panel functions through mgrhooks (see `mgrhooks init`).
root=$(cd "$(dirname "$0")/.." && pwd)
exec "${{MGRHOOKS_PYTHON:-{python}}}" -c 'from mgrhooks.mgrctl import main; main()' --root "$root" "$@"
"""


def mgrctl_script(python: str) -> str:
    """The text of ``sbin/mgrctl`` for a root whose fallback Python is ``python``
    (a path, or a shell expression such as ``$root/.venv/bin/python``)."""
    return MGRCTL_SCRIPT.format(python=python)


def init_root(directory: Path, python: str) -> list[Path]:
    """Lay out a root: ``etc/xml``, ``etc/core``, ``addon`` (mode 750), ``var``,
    ``sbin/mgrctl``. Existing files are kept. :returns: what was created.
    :raises OSError: a directory or the script cannot be made (what was made stays)"""
    created = []
    for sub, mode in (("etc/xml", 0o755), ("etc/core", 0o755), ("addon", 0o750), ("var", 0o750), ("sbin", 0o755)):
        path = directory / sub
        if not path.is_dir():
            path.mkdir(parents=True, mode=mode)
            created.append(path)
    script = directory / "sbin" / "mgrctl"
    if not script.exists():
        script.write_text(mgrctl_script(python))
        script.chmod(0o755)
        created.append(script)
    return created


class Root(NamedTuple):
    """One root and the product (``mgr``: ``billmgr``, ``ispmgr``, ...) served from it."""

    path: Path
    mgr: str = DEFAULT_MGR

    @classmethod
    def open(cls, path: str | os.PathLike[str], mgr: str = DEFAULT_MGR) -> "Root":
        """The root at ``path`` (made absolute).

        :raises RootError: ``path`` is not a directory, or ``mgr`` is not a plain name
        """
        absolute = Path(path).resolve()
        if not absolute.is_dir():
            raise RootError(f"root {absolute} is not a directory")
        if not mgr or not mgr.replace("_", "").isalnum():
            raise RootError(f"invalid panel name {mgr!r}: letters, digits and '_' only")
        return cls(absolute, mgr)

    @property
    def plugin_dir(self) -> Path:
        """``etc/xml``: the plugin descriptions (old-generation ones are in ``etc``)."""
        return self.path / "etc" / "xml"

    @property
    def addon_dir(self) -> Path:
        """``addon``: the handler programs (and the script driver's programs)."""
        return self.path / "addon"

    @property
    def var_dir(self) -> Path:
        """``var``: the log, the databases, the registry cache."""
        return self.path / "var"

    @property
    def log_file(self) -> Path:
        """``var/<mgr>.log``: the panel-style log."""
        return self.var_dir / f"{self.mgr}.log"

    @property
    def db_file(self) -> Path:
        """``var/<mgr>.db``: the built-in core's SQLite database."""
        return self.var_dir / f"{self.mgr}.db"

    def settings(self) -> Settings:
        """The root's ``etc/mgrhooks.conf`` (defaults where it is missing).

        :raises RootError: the file is broken, or not believed (:mod:`mgrhooks.trust`)
        """
        path = self.path / "etc" / "mgrhooks.conf"
        if os.path.lexists(path):  # (else the defaults: nothing to believe, trust not imported)
            self._believe(path)
        return load_settings(path)

    def _believe(self, path: Path) -> None:
        """:raises RootError: the file at ``path`` exists and is not believed"""
        refusal = self._refusal(path)
        if refusal is not None:
            raise RootError(f"{path}: not trusted: {refusal}")

    def _refusal(self, path: Path) -> str | None:
        """Why the root's file at ``path`` is not believed (:mod:`mgrhooks.trust`), or ``None``."""
        from . import trust

        return trust.refusal(str(self.path), str(path.relative_to(self.path)))

    @property
    def disabled_file(self) -> Path:
        """``etc/mgrhooks.disabled``: the plugin files switched off, one a line."""
        return self.path / "etc" / "mgrhooks.disabled"

    def disabled_plugins(self) -> frozenset[str]:
        """Plugin file names switched off in ``etc/mgrhooks.disabled`` (one a line, ``#``
        comments); empty when the file is missing or cannot be read.

        :raises RootError: the file is not believed (:mod:`mgrhooks.trust`)
        """
        try:
            text = self.disabled_file.read_text(encoding="utf-8")
        except OSError:
            return frozenset()
        self._believe(self.disabled_file)
        return frozenset(line.split("#", 1)[0].strip() for line in text.splitlines()) - {""}

    def set_plugin_enabled(self, plugin: str, enabled: bool) -> bool:
        """Switch plugin file ``plugin`` on or off; ``False`` when nothing changed.

        Read, change and replace happen under an exclusive ``flock`` on ``etc/`` (the file
        itself is replaced, so a lock on it would hold the old one): switches made at once
        from several processes are all kept.

        :raises RootError: the file cannot be written, or is not believed
        """
        with self._switch_lock():
            disabled = set(self.disabled_plugins())
            if (plugin not in disabled) == enabled:
                return False
            disabled = disabled - {plugin} if enabled else disabled | {plugin}
            text = "# plugin files switched off by `mgrhooks plugin disable`\n" + "".join(
                f"{name}\n" for name in sorted(disabled)
            )
            from . import files

            try:
                files.replace(self.disabled_file, text.encode("utf-8"))
            except OSError as exc:
                raise RootError(f"cannot write {self.disabled_file}: {exc.strerror}") from None
            return True

    @contextmanager
    def _switch_lock(self) -> Iterator[None]:
        """Hold an exclusive lock on ``etc/`` meanwhile (released when closed, also when
        the process dies). :raises RootError: ``etc/`` cannot be opened or locked"""
        import fcntl

        folder = self.disabled_file.parent
        try:
            descriptor = os.open(folder, os.O_RDONLY | os.O_DIRECTORY | os.O_CLOEXEC)
        except OSError as exc:
            raise RootError(f"cannot write {self.disabled_file}: {exc.strerror}") from None
        try:
            try:
                fcntl.flock(descriptor, fcntl.LOCK_EX)
            except OSError as exc:  # e.g. a file system without flock
                raise RootError(f"cannot lock {folder} to switch a plugin: {exc.strerror}") from None
            yield
        finally:
            os.close(descriptor)

    @property
    def cache_file(self) -> Path:
        """``var/<mgr>.registry``: the registry cache (:mod:`mgrhooks.cache`)."""
        return self.var_dir / f"{self.mgr}.registry"

    def registry(self, func: str | None = None) -> Registry:
        """The plugin descriptions: from the cache while no plugin file changed, else
        parsed anew, with the registrations logged and the cache rewritten. A plugin file
        that is not believed (:mod:`mgrhooks.trust`), cannot be read or is not well-formed
        falls back on its last good version, kept in the cache
        (:func:`mgrhooks.plugins.load_keeping`).

        :param func: only the events of this function and of ``*`` are needed (the
            rest of the registry is whole); ``None`` for every event

        Never raises: broken files are the registry's problems, and a cache that cannot
        be written is a warning in the log.
        """
        files = plugin_files(self.path, self.mgr)
        if not files:
            return Registry()
        from . import cache  # (a root without plugin files has no cache: bench row "cold start")

        refused, stat_of = _examine_plugin_files(self.path, files)
        key = cache.fingerprint(files, stat_of) + "".join(f"\n{shown} refused: {why}" for shown, why in refused.items())
        registry = cache.load(self.cache_file, key, func)
        if registry is None:
            from .plugins import load_keeping  # (the parser: not needed while the cache holds)

            registry, good = load_keeping(files, refused, cache.last_good(self.cache_file))
            self._log_registration(registry)
            if not cache.store(self.cache_file, key, registry, good):
                logs.ACTION.warning("cannot write the registry cache %s", self.cache_file)
        return registry

    @contextmanager
    def logging(self, echo: bool = False) -> Iterator[None]:
        """Send mgrhooks' log records to ``var/<mgr>.log`` (and stderr with ``echo``)
        meanwhile, at the levels ``etc/debug.conf`` sets. A ``var/`` that cannot be made
        fails nothing here: the log says so on stderr when it cannot be opened.

        An ``etc/debug.conf`` that is not believed (:mod:`mgrhooks.trust`) is not used:
        the default levels apply, and the log says why (our choice: it only sets how much
        the log says, so it stops no call, but whoever could write it could silence the
        log or fill it)."""
        with suppress(OSError):
            self.var_dir.mkdir(parents=True, exist_ok=True)
        conf, refusal = self._debug_conf()
        with logs.to_file(self.log_file, logs.read_debug_conf(conf, self.mgr), echo, root=self.path):
            if refusal is not None:
                logs.ACTION.warning("%s: not trusted, its levels are not used: %s", self.debug_conf, refusal)
            yield

    @property
    def debug_conf(self) -> Path:
        """``etc/debug.conf``: the log's levels, as on the panel (:func:`mgrhooks.logs.read_debug_conf`)."""
        return self.path / "etc" / "debug.conf"

    def _debug_conf(self) -> tuple[str, str | None]:
        """The text of ``etc/debug.conf`` (``""`` when it is missing, cannot be read or is
        not believed), and why it is not believed, or ``None``."""
        try:
            text = self.debug_conf.read_text(errors="replace")
        except OSError:
            return "", None
        refusal = self._refusal(self.debug_conf)
        return ("", refusal) if refusal is not None else (text, None)

    def _log_registration(self, registry: Registry) -> None:
        """Log ``Register event ...`` lines once per change of the plugin files.

        The panel logs them when it (re)starts; mgrhooks has no long-lived process, so it
        logs them when it parses the plugin files anew: on the first call after one was
        added, changed or removed.
        """
        for event in registry.events:
            logs.ACTION.log(logs.EXTINFO, "Register event '%s' for action '%s'", event.handler.name, event.func)
        for func in registry.funcs:
            logs.ACTION.log(logs.EXTINFO, "Register function '%s' by '%s'", func.name, func.handler.name)
        for problem in registry.problems:
            logs.ACTION.log(logs.ERROR if problem.severity is Severity.ERROR else logs.WARNING, "%s", problem)


#: a plugin description file: ``(shown, path, generation)`` (:func:`plugin_files`)
PluginFile = tuple[str, str, int]


def plugin_files(root: Path, mgr: str) -> list[PluginFile]:
    """Every plugin description of ``mgr`` under ``root``, as ``(shown, path, generation)``
    (:data:`PluginFile`; plain strings: a root may have a thousand, listed on every call).
    A directory that cannot be listed has none.

    ``etc/xml/<mgr>_mod_*.xml`` are generation 5, ``etc/<mgr>_mod_*.xml`` generation 4;
    together they are sorted by file name (byte order), ``etc/xml/`` first on a tie.
    """
    found: list[tuple[str, str, int]] = []
    for relative, generation in (("etc/xml", 5), ("etc", 4)):
        found += [(name, relative, generation) for name in _plugin_names(os.path.join(root, relative), mgr)]
    found.sort(key=lambda item: (item[0].encode(), -item[2]))
    return [(f"{relative}/{name}", os.path.join(root, relative, name), gen) for name, relative, gen in found]


def _plugin_names(directory: str, mgr: str) -> list[str]:
    """Names of the regular files ``<mgr>_mod_*.xml`` in ``directory`` (os.scandir: a
    root with a thousand plugin files is listed in a millisecond, not five)."""
    prefix = f"{mgr}_mod_"
    try:
        with os.scandir(directory) as entries:
            return [e.name for e in entries if e.name.startswith(prefix) and e.name.endswith(".xml") and e.is_file()]
    except OSError:
        return []


def _examine_plugin_files(
    root: Path, files: list[PluginFile]
) -> tuple[dict[str, str], Callable[[str], os.stat_result]]:
    """Which plugin files are not believed (shown path → why; :mod:`mgrhooks.trust`), and
    a ``stat`` that reuses what the examination found (one system call a file, as before)."""
    from . import trust

    try:
        refused, found = trust.Examiner(str(root)).survey((shown, path) for shown, path, _ in files)
    except OSError:
        return {}, os.stat

    def stat_of(path: str) -> os.stat_result:
        info = found.get(path)
        return info if info is not None else os.stat(path)

    return refused, stat_of
