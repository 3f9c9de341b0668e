"""The panel-style log, ``var/<mgr>.log``, on the standard library's logging.

Line shape, after the panel's: ``Nov 21 08:45:16 [1234:1] external INFO Executing: ...``
(date, ``[pid:thread]``, module, level, message). Modules are the last part of the logger
name: ``action`` (registration, calls) and ``external`` (handler runs).

Levels come from ``etc/debug.conf`` as on the panel: lines ``PRODUCT.MODULE LEVEL`` where
PRODUCT is the ``--mgr`` name or ``*`` and MODULE a module or ``*`` (``*.external 9``);
later lines win. Panel levels map onto ours (our choice): 0 nothing, 1 ERROR, 2 WARNING,
3 INFO, 4 EXTINFO (the default), 5 to 8 DEBUG (handler environments and stdin sizes),
9 TRACE (also the first 4 KiB of every handler's stdin and stdout).
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the panel's EXTINFO level, between INFO and DEBUG, and TRACE below DEBUG
EXTINFO = 15
TRACE = 5
logging.addLevelName(EXTINFO, "EXTINFO")
logging.addLevelName(TRACE, "TRACE")
#: bytes of a handler's stdin and stdout written at TRACE
DUMP_BYTES = 4096
DEFAULT_LEVEL = 4
_PANEL_LEVELS = {0: logging.CRITICAL + 10, 1: logging.ERROR, 2: logging.WARNING, 3: logging.INFO, 4: EXTINFO, 9: TRACE}

LOGGER = logging.getLogger("mgrhooks")
ACTION = logging.getLogger("mgrhooks.action")
EXTERNAL = logging.getLogger("mgrhooks.external")
_lock = threading.Lock()


class PanelFormatter(logging.Formatter):
    """Formats records as the panel's log lines."""

    def __init__(self) -> None:
        line = "%(asctime)s [%(process)d:%(thread_no)d] %(module_name)s %(levelname)s %(message)s"
        super().__init__(line, "%b %d %H:%M:%S")

    def format(self, record: logging.LogRecord) -> str:
        record.module_name = record.name.rsplit(".", 1)[-1]
        record.thread_no = 1 if record.threadName == "MainThread" else (record.thread or 0) % 10000
        return super().format(record)


def panel_level(level: int) -> int:
    """The logging level for a panel debug level 0-9."""
    return _PANEL_LEVELS.get(level, logging.DEBUG)


def read_debug_conf(text: str, mgr: str) -> dict[str, int]:
    """Module → logging level from a ``debug.conf`` text (``"*"`` for every other module).

    Lines that do not parse, or name another product, are skipped.
    """
    levels = {"*": panel_level(DEFAULT_LEVEL)}
    for line in text.splitlines():
        fields = line.split("#", 1)[0].split()
        if len(fields) != 2 or not fields[1].isdigit() or "." not in fields[0]:
            continue
        product, module = fields[0].split(".", 1)
        if product in ("*", mgr):
            if module == "*":
                levels = {key: panel_level(int(fields[1])) for key in levels}
            else:
                levels[module] = panel_level(int(fields[1]))
    return levels


class ModuleLevels(logging.Filter):
    """Passes a record when its level reaches its module's level."""

    def __init__(self, levels: dict[str, int]) -> None:
        super().__init__()
        self.levels = levels

    def filter(self, record: logging.LogRecord) -> bool:
        module = record.name.rsplit(".", 1)[-1]
        return record.levelno >= self.levels.get(module, self.levels["*"])


@contextmanager
def to_file(path: Path, levels: dict[str, int], echo: logging.Handler | None = None) -> Iterator[None]:
    """Attach a file handler for ``path`` (and ``echo``) to the mgrhooks logger meanwhile.

    :param levels: per-module levels, from :func:`read_debug_conf`
    """
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if echo is not None:
        handlers.append(echo)
    for handler in handlers:
        handler.setFormatter(PanelFormatter())
        handler.addFilter(ModuleLevels(levels))
    with _lock:
        for handler in handlers:
            LOGGER.addHandler(handler)
        LOGGER.setLevel(min(levels.values()))
        LOGGER.propagate = False
    try:
        yield
    finally:
        with _lock:
            for handler in handlers:
                LOGGER.removeHandler(handler)
                handler.close()
