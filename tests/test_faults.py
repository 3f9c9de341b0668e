"""Every fault and hostile-input case (tests/faults.py), through the real CLI."""

from __future__ import annotations

import pytest

from conftest import PanelRoot
from faults import CASES, Case


@pytest.mark.parametrize("case", CASES, ids=[c.name.replace(" ", "_") for c in CASES])
def test_fault(case: Case, root: PanelRoot) -> None:
    measured = case.run(root)
    assert measured.leftover == 0
    assert measured.rows_lost == 0
