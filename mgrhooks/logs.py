"""The panel-style log, ``var/<mgr>.log``, on the standard library's logging.

Line shape, after the panel's: ``Nov 21 08:45:16 [1234:1] external INFO Executing: ...``
(date, ``[pid:thread]``, module, level, message). Modules are the last part of the logger
name: ``action`` (registration, calls), ``external`` (handler runs), ``core``.
"""

from __future__ import annotations

import logging
import threading
from collections.abc import Iterator
from contextlib import contextmanager
from pathlib import Path

#: the panel's EXTINFO level, between INFO and DEBUG
EXTINFO = 15
logging.addLevelName(EXTINFO, "EXTINFO")

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


@contextmanager
def to_file(path: Path, echo: logging.Handler | None = None) -> Iterator[None]:
    """Attach a file handler for ``path`` (and ``echo``) to the mgrhooks logger meanwhile.

    Both record EXTINFO and above.
    """
    handlers: list[logging.Handler] = [logging.FileHandler(path, encoding="utf-8")]
    if echo is not None:
        handlers.append(echo)
    for handler in handlers:
        handler.setFormatter(PanelFormatter())
        handler.setLevel(EXTINFO)
    with _lock:
        for handler in handlers:
            LOGGER.addHandler(handler)
        LOGGER.setLevel(logging.DEBUG)
        LOGGER.propagate = False
    try:
        yield
    finally:
        with _lock:
            for handler in handlers:
                LOGGER.removeHandler(handler)
                handler.close()
