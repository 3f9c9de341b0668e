"""The README's walkthrough, run on a fresh copy of the repository's root.

Every ```console block is a shell session: ``$ `` lines are commands (run with bash, in
order, from the root), the lines up to the next command are the exact stdout expected.
"""

from __future__ import annotations

import os
import re
import subprocess
import sys
from pathlib import Path

from conftest import REPO, PanelRoot, need

BLOCK = re.compile(r"```console\n(.*?)```", re.S)


def sessions(readme: str) -> list[tuple[str, str]]:
    steps: list[tuple[str, str]] = []
    for block in BLOCK.findall(readme):
        for line in block.splitlines(keepends=True):
            if line.startswith("$ "):
                steps.append((line[2:].strip(), ""))
            else:
                command, output = steps[-1]
                steps[-1] = (command, output + line)
    return steps


def test_readme_walkthrough_prints_what_it_shows(repo_root: PanelRoot) -> None:
    need("perl", ["perl", "-MCGI", "-e1"])
    steps = sessions((REPO / "README.md").read_text())
    assert len(steps) >= 10
    env = {
        **os.environ,
        "PATH": f"{Path(sys.executable).parent}{os.pathsep}{os.environ['PATH']}",
        "MGRHOOKS_PYTHON": sys.executable,  # the copied root has no .venv of its own
    }
    for command, expected in steps:
        result = subprocess.run(["bash", "-c", command], cwd=repo_root.path, env=env, capture_output=True, text=True)
        assert result.stdout == expected, f"$ {command}\n{result.stderr}"


def test_readme_first_lines_are_the_two_setup_commands() -> None:
    readme = (REPO / "README.md").read_text()
    first_block = readme.split("```sh\n", 1)[1].split("```", 1)[0]
    commands = [line.split("#")[0].strip() for line in first_block.splitlines()]
    assert commands == [
        "bash setup.sh && echo secret | .venv/bin/mgrhooks exec user.add name=alice sok=ok --stdin passwd",
        ".venv/bin/python -m pytest --cov",
    ]
    ci = (REPO / ".ci/run").read_text()
    assert all(command in ci for command in commands)
