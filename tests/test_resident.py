"""The resident panel of a real ``mgrhooks serve`` (issue 12 follow-ups): a handler's
nested ``sbin/mgrctl`` call never waits for a turn its ancestors hold (docs/local.md)."""

from __future__ import annotations

import subprocess
import sys

import pytest
from test_local import looping, served_by

from conftest import PanelRoot
from serving import ROOT, serving


@pytest.fixture
def panel(root: PanelRoot) -> PanelRoot:
    """A root laid out by ``mgrhooks init`` (so it has sbin/mgrctl)."""
    subprocess.run([sys.executable, "-m", "mgrhooks", "init", str(root.path)], check=True, capture_output=True)
    return root


def conf(root: PanelRoot, text: str) -> None:
    (root.path / "etc/mgrhooks.conf").write_text(text)


# --- nested calls and the concurrency limit ----------------------------------------------


def test_a_nested_call_takes_no_turn_its_ancestor_holds(panel: PanelRoot) -> None:
    """One turn, held by an HTTP call whose handler calls sbin/mgrctl: the nested call runs
    in the serve at once (not after queue_wait, not in the handler's process)."""
    conf(panel, "[serve]\nconcurrency = 1\nqueue_wait = 20\n")
    handler = "#!/bin/sh\nsbin/mgrctl -o text user > var/nested.txt\necho $? > var/nested.status\necho '<doc/>'\n"
    panel.handler("nest.sh", handler, '<event name="user.add" after="yes"/>', type="cgi")
    with serving(panel, "--http") as served:
        body = served.call(f"func=user.add&name=al&passwd=x&sok=ok&{ROOT}")
        assert b"<error" not in body, body
        # a nested call waiting for the turn would have waited queue_wait (20 s), then run
        # in the handler's process: the serve's log says where it ran
        assert panel.read("var/nested.txt") == "name=al level=16 state=active\n"
        assert panel.read("var/nested.status") == "0\n"
        assert len(served_by(panel, served.proc.pid)) == 2  # the HTTP call and the nested one, both served


def test_nested_calls_through_the_serve_keep_the_depth_limit(panel: PanelRoot) -> None:
    conf(panel, "[serve]\nconcurrency = 1\nqueue_wait = 20\n")
    func = looping(panel)
    with serving(panel, "--http") as served:
        assert served.call(f"func={func}&out=text&{ROOT}") == b"depth=1\n"
        assert "Calls nested deeper than 8: " + " > ".join([func] * 9) in panel.log()
        assert len(served_by(panel, served.proc.pid)) == 9  # the HTTP call and 8 nested, every one served
