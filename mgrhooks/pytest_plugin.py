"""The pytest plugin for addon authors (the ``pytest11`` entry point ``mgrhooks``: pytest
loads it wherever mgrhooks is installed). Fixtures, all named ``mgr_*``:

* ``mgr_project``: the addon project's directory, whose ``addon/`` and ``etc/`` are
  tested: the ini option ``mgrhooks_project`` (relative to the ini file), else pytest's
  rootdir; override the fixture to choose another;
* ``mgr_product``: the panel (``--mgr``): the ini option ``mgrhooks_mgr``, else
  ``billmgr``; override it (or parametrize it) for another;
* ``mgr_root``: a fresh root laid out from the project in ``tmp_path``
  (:class:`mgrhooks.testing.AddonRoot`);
* ``mgr_call``: ``mgr_root.call``, a call through the real pipeline in this process;
* ``mgr_exec``: ``mgr_root.exec``, the real ``mgrhooks exec`` command in a subprocess.

Nothing of mgrhooks but this module is imported until a test asks for a fixture.
See docs/testing.md.
"""

from __future__ import annotations

from pathlib import Path
from typing import TYPE_CHECKING

import pytest

if TYPE_CHECKING:
    from collections.abc import Callable

    from .testing import AddonRoot, Result


def pytest_addoption(parser: pytest.Parser) -> None:
    parser.addini(
        "mgrhooks_project",
        "the addon project (addon/, etc/) the mgr_root fixture lays out; default: the rootdir",
        type="paths",
        default=[],
    )
    parser.addini("mgrhooks_mgr", "the panel (billmgr, ispmgr, ...) of the mgr_root fixture", default="billmgr")


@pytest.fixture
def mgr_project(request: pytest.FixtureRequest) -> Path:
    """The addon project's directory (ini ``mgrhooks_project``, else the rootdir)."""
    paths: list[Path] = request.config.getini("mgrhooks_project")
    return Path(paths[0]) if paths else Path(request.config.rootpath)


@pytest.fixture
def mgr_product(request: pytest.FixtureRequest) -> str:
    """The panel the root serves (ini ``mgrhooks_mgr``, else ``billmgr``)."""
    return str(request.config.getini("mgrhooks_mgr"))


@pytest.fixture
def mgr_root(mgr_project: Path, mgr_product: str, tmp_path: Path) -> AddonRoot:
    """A fresh root holding the project's ``addon/`` and ``etc/``, in ``tmp_path/root``."""
    from .testing import AddonRoot

    return AddonRoot.lay_out(mgr_project, tmp_path / "root", mgr_product)


@pytest.fixture
def mgr_call(mgr_root: AddonRoot) -> Callable[..., Result]:
    """``mgr_call(func, "key=value", ..., user=, level=, out=, core_doc=)`` -> :class:`~mgrhooks.testing.Result`."""
    return mgr_root.call


@pytest.fixture
def mgr_exec(mgr_root: AddonRoot) -> Callable[..., Result]:
    """``mgr_exec(func, *args, stdin=, env=)``: the ``mgrhooks exec`` command -> :class:`~mgrhooks.testing.Result`."""
    return mgr_root.exec
