"""mgrhooks: COREmanager's external-addon mechanism as a standalone package and CLI.

The public names are imported on first use, so ``import mgrhooks`` (and the CLI's start)
stays cheap.
"""

from __future__ import annotations

import importlib
from typing import TYPE_CHECKING, Any

if TYPE_CHECKING:
    from .dispatch import Options, Response, call
    from .errors import ExitStatus, MgrhooksError, PanelError, RootError
    from .model import Request, Stage
    from .root import Root

__version__ = "0.1.0"

_WHERE = {
    "Options": "dispatch",
    "Response": "dispatch",
    "call": "dispatch",
    "ExitStatus": "errors",
    "MgrhooksError": "errors",
    "PanelError": "errors",
    "RootError": "errors",
    "Request": "model",
    "Stage": "model",
    "Root": "root",
}
__all__ = [
    "ExitStatus",
    "MgrhooksError",
    "Options",
    "PanelError",
    "Request",
    "Response",
    "Root",
    "RootError",
    "Stage",
    "call",
]


def __getattr__(name: str) -> Any:  # noqa: ANN401 (a module __getattr__ returns anything)
    if name not in _WHERE:
        raise AttributeError(f"module 'mgrhooks' has no attribute {name!r}")
    return getattr(importlib.import_module(f".{_WHERE[name]}", __name__), name)
