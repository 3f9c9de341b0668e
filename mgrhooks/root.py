"""A panel root directory: its layout, its log, its registry. I/O.

Layout (PROTOCOL §1): ``etc/xml/<mgr>_mod_*.xml`` plugin descriptions, ``addon/``
handler programs, ``var/<mgr>.log`` the log, ``var/<mgr>.db`` the built-in core's data.
"""

from __future__ import annotations

import hashlib
import logging
import os
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path

from . import logs
from .errors import RootError
from .model import Registry
from .plugins import load_registry, plugin_files

DEFAULT_MGR = "billmgr"


@dataclass(frozen=True)
class Root:
    """One root and the product (``mgr``: ``billmgr``, ``ispmgr``, ...) served from it."""

    path: Path
    mgr: str = DEFAULT_MGR

    @classmethod
    def open(cls, path: str | os.PathLike[str], mgr: str = DEFAULT_MGR) -> Root:
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
        return self.path / "etc" / "xml"

    @property
    def addon_dir(self) -> Path:
        return self.path / "addon"

    @property
    def var_dir(self) -> Path:
        return self.path / "var"

    @property
    def log_file(self) -> Path:
        return self.var_dir / f"{self.mgr}.log"

    @property
    def db_file(self) -> Path:
        return self.var_dir / f"{self.mgr}.db"

    def registry(self) -> Registry:
        """Load the plugin descriptions; log registrations when the files changed."""
        registry = load_registry(self.plugin_dir, self.mgr, display_base=self.path)
        self._log_registration(registry)
        return registry

    @contextmanager
    def logging(self, echo: logging.Handler | None = None) -> Iterator[None]:
        """Send mgrhooks' log records to ``var/<mgr>.log`` (and ``echo``) meanwhile."""
        self.var_dir.mkdir(parents=True, exist_ok=True)
        with logs.to_file(self.log_file, echo):
            yield

    def _fingerprint(self) -> str:
        digest = hashlib.sha256()
        for path in plugin_files(self.plugin_dir, self.mgr):
            info = path.stat()
            digest.update(f"{path.name}\0{info.st_mtime_ns}\0{info.st_size}\n".encode())
        return digest.hexdigest()

    def _log_registration(self, registry: Registry) -> None:
        """Log ``Register event ...`` lines once per change of the plugin files.

        The panel logs them when it (re)starts; mgrhooks has no long-lived process, so it
        logs them on the first call after a plugin file was added, changed or removed.
        """
        stamp = self.var_dir / f"{self.mgr}.registered"
        fingerprint = self._fingerprint()
        try:
            if stamp.read_text() == fingerprint:
                return
        except OSError:
            pass
        for event in registry.events:
            logs.ACTION.log(logs.EXTINFO, "Register event '%s' for action '%s'", event.handler.name, event.func)
        for func in registry.funcs:
            logs.ACTION.log(logs.EXTINFO, "Register function '%s' by '%s'", func.name, func.handler.name)
        for problem in registry.problems:
            logs.ACTION.log(logging.ERROR if problem.severity == "error" else logging.WARNING, "%s", problem)
        try:
            self.var_dir.mkdir(parents=True, exist_ok=True)
            temporary = stamp.with_suffix(f".tmp{os.getpid()}")
            temporary.write_text(fingerprint)
            temporary.replace(stamp)
        except OSError as exc:
            logs.ACTION.warning("cannot write %s: %s", stamp, exc.strerror)
