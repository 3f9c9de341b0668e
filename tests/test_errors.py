"""Which failures are the machine's (exit status 71) rather than a bug (4), on real errors."""

from __future__ import annotations

import os
import resource
from pathlib import Path

from mgrhooks.errors import out_of_resources


def test_out_of_descriptors_names_what_could_not_be_opened(tmp_path: Path) -> None:
    target = tmp_path / "decimal.py"
    target.write_text("")
    soft, hard = resource.getrlimit(resource.RLIMIT_NOFILE)
    resource.setrlimit(resource.RLIMIT_NOFILE, (3, hard))  # 0, 1, 2 and nothing more
    try:
        try:
            open(target).close()
        except OSError as exc:
            refused: BaseException = exc
    finally:
        resource.setrlimit(resource.RLIMIT_NOFILE, (soft, hard))
    assert out_of_resources(refused) == f"Too many open files: '{target}'"


def test_memory_is_the_machines_and_a_missing_file_is_not() -> None:
    assert out_of_resources(MemoryError()) == "out of memory"
    try:
        os.stat("/nonexistent/mgrhooks")
    except OSError as exc:
        assert out_of_resources(exc) is None
    assert out_of_resources(ValueError("a bug")) is None
