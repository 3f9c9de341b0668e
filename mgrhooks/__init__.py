"""mgrhooks: COREmanager's external-addon mechanism as a standalone package and CLI.

The public names are imported on first use, so ``import mgrhooks`` (and the CLI's start)
stays cheap. Start with :class:`Panel` (``mgrhooks.api``).
"""

from __future__ import annotations

from .version import __version__ as __version__  # re-exported: mgrhooks.__version__

#: ``typing.TYPE_CHECKING`` without importing ``typing`` (~6 ms of every ``sbin/mgrctl``
#: start, which imports only this and :mod:`mgrhooks.client` when a serve answers)
TYPE_CHECKING = False
if TYPE_CHECKING:
    from typing import Any

    from .api import Panel
    from .dispatch import Options, Response, call
    from .errors import ExitStatus, MgrhooksError, PanelError, RootError
    from .model import Base, InternalHandler, Placement, Request, Stage
    from .observers import Continue, Observers, passing
    from .plugins import PluginInfo
    from .root import Root, init_root
    from .xmldoc import add

_WHERE = {
    "Panel": "api",
    "PluginInfo": "plugins",
    "Options": "dispatch",
    "Response": "dispatch",
    "call": "dispatch",
    "ExitStatus": "errors",
    "MgrhooksError": "errors",
    "PanelError": "errors",
    "RootError": "errors",
    "Base": "model",
    "InternalHandler": "model",
    "Placement": "model",
    "Request": "model",
    "Stage": "model",
    "Continue": "observers",
    "Observers": "observers",
    "passing": "observers",
    "Root": "root",
    "init_root": "root",
    "add": "xmldoc",
}
__all__ = [
    "Base",
    "Continue",
    "ExitStatus",
    "InternalHandler",
    "MgrhooksError",
    "Observers",
    "Options",
    "Panel",
    "PanelError",
    "Placement",
    "PluginInfo",
    "Request",
    "Response",
    "Root",
    "RootError",
    "Stage",
    "add",
    "call",
    "init_root",
    "passing",
]


def __getattr__(name: str) -> Any:  # noqa: ANN401 (a module __getattr__ returns anything)
    if name not in _WHERE:
        raise AttributeError(f"module 'mgrhooks' has no attribute {name!r}")
    return getattr(__import__(f"{__name__}.{_WHERE[name]}", fromlist=[name]), name)
