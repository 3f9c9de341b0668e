"""Shared fixtures: throw-away panel roots with real plugin files and handler scripts."""

from __future__ import annotations

import os
import shutil
import subprocess
import sys
import textwrap
from dataclasses import dataclass
from pathlib import Path

import pytest

REPO = Path(__file__).resolve().parent.parent
#: characters escaped inside GNU ``env -S``'s double quotes, where ``\_`` is a space
_ENV_S_ESCAPES = {" ": r"\_", "\t": r"\t", "\\": r"\\", '"': r"\"", "$": r"\$"}
#: the first line of a handler run by the test's own Python. A shebang line cannot name a
#: path with a space (the kernel splits it there), so such a path goes through ``env -S``,
#: which, unlike a shell, passes the environment on untouched (tests check it name by name).
PYTHON_SHEBANG = (
    '#!/usr/bin/env -S "' + "".join(_ENV_S_ESCAPES.get(c, c) for c in sys.executable) + '"\n'
    if any(c.isspace() for c in sys.executable)
    else f"#!{sys.executable}\n"
)


def unmeasured() -> dict[str, str]:
    """This process's environment without coverage's measuring of child processes, for a
    child run under a file size limit (coverage could not write its data file there)."""
    return {k: v for k, v in os.environ.items() if not k.startswith("COVERAGE_")}


@pytest.fixture(autouse=True)
def _no_ambient_root(monkeypatch: pytest.MonkeyPatch) -> None:
    """No test may act on a root it did not choose (e.g. the repository's own var/)."""
    monkeypatch.delenv("MGRHOOKS_ROOT", raising=False)


def need(program: str, probe: list[str] | None = None) -> None:
    """Skip when an interpreter the test needs is missing, except in CI, where it fails."""
    ok = shutil.which(program) is not None
    if ok and probe:
        ok = subprocess.run(probe, capture_output=True).returncode == 0
    if not ok:
        message = f"{program} (with {' '.join(probe or [])}) is not installed: run setup.sh"
        if os.environ.get("CI"):
            pytest.fail(message)
        pytest.skip(message)


@dataclass
class PanelRoot:
    """A temporary root: write plugin files and addons, run the CLI against it."""

    path: Path
    mgr: str = "billmgr"

    def plugin(self, name: str, xml: str, directory: str = "etc/xml") -> Path:
        path = self.path / directory / f"{self.mgr}_mod_{name}.xml"
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(xml).lstrip())
        return path

    def addon(self, name: str, source: str, mode: int = 0o750) -> Path:
        path = self.path / "addon" / name
        path.parent.mkdir(parents=True, exist_ok=True)
        path.write_text(textwrap.dedent(source).lstrip())
        path.chmod(mode)
        return path

    def handler(self, name: str, source: str, events: str, type: str = "xml", attrs: str = "") -> Path:
        """An addon and a one-handler plugin file registering it for ``events``."""
        self.plugin(
            name.replace(".", "_"),
            f'<mgrdata><handler name="{name}" type="{type}" {attrs}>{events}</handler></mgrdata>',
        )
        return self.addon(name, source)

    def argv(self, command: str, *rest: str) -> list[str]:
        """The real ``mgrhooks`` command line for ``command`` (``"exec"``, ``"plugin list"``)
        on this root."""
        return [sys.executable, "-m", "mgrhooks", *command.split(), "--root", str(self.path), "--mgr", self.mgr, *rest]

    def mgrhooks(
        self, *args: str, env: dict[str, str] | None = None, timeout: float = 60
    ) -> subprocess.CompletedProcess[str]:
        """Run the real ``mgrhooks`` command with ``--root`` set to this root."""
        command, *rest = args
        return subprocess.run(self.argv(command, *rest), capture_output=True, text=True, env=env, timeout=timeout)

    def read(self, relative: str) -> str:
        return (self.path / relative).read_text()

    def log(self) -> str:
        return self.read(f"var/{self.mgr}.log")


@pytest.fixture
def root(tmp_path: Path) -> PanelRoot:
    (tmp_path / "etc" / "xml").mkdir(parents=True)
    (tmp_path / "addon").mkdir()
    (tmp_path / "var").mkdir()
    return PanelRoot(tmp_path)


@pytest.fixture
def repo_root(tmp_path: Path) -> PanelRoot:
    """A copy of the repository's own root (etc/, addon/), so its var/ is left alone."""
    target = tmp_path / "repo"
    shutil.copytree(REPO / "etc", target / "etc")
    shutil.copytree(REPO / "addon", target / "addon")
    shutil.copytree(REPO / "sbin", target / "sbin")
    for program in (target / "addon").iterdir():
        program.chmod(0o750)
    for path in [target, *target.rglob("*")]:  # a checkout made with umask 002: mgrhooks.trust refuses it
        path.chmod(path.stat().st_mode & ~0o022)
    return PanelRoot(target)
