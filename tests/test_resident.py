"""The resident panel of a real ``mgrhooks serve`` (issue 12 follow-ups): a handler's
nested ``sbin/mgrctl`` call never waits for a turn its ancestors hold, and ``mgrctl exit``
/ ``mgrctl -R`` / SIGHUP reload the serve (docs/http.md, docs/local.md)."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import psutil
import pytest
from test_local import looping, mgrctl, served_by

from conftest import PanelRoot
from mgrhooks.http.local import RELOADED
from mgrhooks.http.resident import RESTART_ONLY, reloaded
from mgrhooks.settings import Serve
from serving import ROOT, Served, serving

#: a POST body over ``max_body = 1K`` (a call all the same: ``user`` with a parameter)
BIG = b"func=user&" + ROOT.encode() + b"&pad=" + b"x" * 2000


@pytest.fixture
def panel(root: PanelRoot) -> PanelRoot:
    """A root laid out by ``mgrhooks init`` (so it has sbin/mgrctl)."""
    subprocess.run([sys.executable, "-m", "mgrhooks", "init", str(root.path)], check=True, capture_output=True)
    return root


def conf(root: PanelRoot, text: str) -> None:
    (root.path / "etc/mgrhooks.conf").write_text(text)


def wait_for_log(root: PanelRoot, text: str, seconds: float = 30) -> None:
    ends = time.monotonic() + seconds
    log = root.path / f"var/{root.mgr}.log"
    while not log.exists() or text not in root.log():
        assert time.monotonic() < ends, f"never logged: {text}"
        time.sleep(0.05)


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


# --- reload ---------------------------------------------------------------------------------


def test_a_reload_keeps_the_keys_that_need_a_restart() -> None:
    old = Serve(listen="127.0.0.1:1500", max_body=1024, concurrency=2)
    new = Serve(listen="127.0.0.1:1501", max_body=2048, concurrency=3, queue_wait=9.0)
    serve, restart = reloaded(old, new)
    assert serve == new._replace(listen="127.0.0.1:1500", concurrency=2)
    assert restart == ("listen", "concurrency")
    assert set(RESTART_ONLY) <= set(Serve._fields)


def _reloads(panel: PanelRoot, served: Served, reload: object, logged: str) -> None:
    """A change of ``max_body`` and an edited plugin file are in force after ``reload()``;
    a change of ``listen`` is logged as needing a restart; the kept handler processes (an
    ended call's guardian) are gone."""
    panel.handler("keep.sh", "#!/bin/sh\necho '<doc/>'\n", '<event name="user" before="yes"/>')
    served.call(f"func=user&{ROOT}")
    kept = psutil.Process(served.proc.pid).children()
    assert kept  # the ended call's guardian, kept for the next call
    assert served.request(method="POST", body=BIG)[0] == 413
    conf(panel, "[serve]\nlisten = 127.0.0.1:1\nmax_body = 1M\n")
    reload()  # type: ignore[operator]
    wait_for_log(panel, logged)
    psutil.wait_procs(kept, timeout=30)
    assert not [process for process in kept if process.is_running()]
    status, _, body = served.request(method="POST", body=BIG)
    assert status == 200 and b"<error" not in body, body
    assert "reload: [serve] listen changed in etc/mgrhooks.conf: in force after a restart of mgrhooks serve" in (
        panel.log()
    )
    # the registry stays never stale after a reload: an edited plugin file is in force at once
    panel.handler("mark.sh", "#!/bin/sh\ntouch var/marked\necho '<doc/>'\n", '<event name="user" before="yes"/>')
    served.call(f"func=user&{ROOT}")
    assert (panel.path / "var/marked").exists()


def test_mgrctl_exit_reloads_a_running_serve(panel: PanelRoot) -> None:
    conf(panel, "[serve]\nmax_body = 1K\n")
    with serving(panel, "--http") as served:
        pid = served.proc.pid

        def reload() -> None:
            result = mgrctl(panel, "-m", "billmgr", "exit")
            assert (result.returncode, result.stdout, result.stderr.decode()) == (
                0,
                b"",
                RELOADED.format(pid=pid) + "\n",
            )

        _reloads(panel, served, reload, f"action INFO mgrctl exit: resident panel (pid {pid}): reloaded")
        result = mgrctl(panel, "-R")
        assert (result.returncode, result.stderr.decode()) == (0, RELOADED.format(pid=pid) + "\n")
        assert f"mgrctl -R: resident panel (pid {pid}): reloaded" in panel.log()


def test_a_reload_with_broken_settings_changes_nothing(panel: PanelRoot) -> None:
    conf(panel, "[serve]\nmax_body = 1K\n")
    with serving(panel, "--http") as served:
        conf(panel, "[serve]\nmax_body = lots\n")
        result = mgrctl(panel, "exit")
        assert result.returncode == 3
        assert result.stderr.decode().startswith("Error: ") and "max_body" in result.stderr.decode()
        assert f"mgrctl exit: resident panel (pid {served.proc.pid}): not reloaded: " in panel.log()
        assert served.request(method="POST", body=BIG)[0] == 413  # the old settings hold


def test_sighup_reloads_a_running_serve(panel: PanelRoot) -> None:
    conf(panel, "[serve]\nmax_body = 1K\n")
    with serving(panel, "--http") as served:
        pid = served.proc.pid
        _reloads(
            panel,
            served,
            lambda: served.proc.send_signal(signal.SIGHUP),
            f"action INFO SIGHUP: resident panel (pid {pid}): reloaded",
        )
        assert served.proc.poll() is None  # still serving


def test_sighup_with_broken_settings_is_logged(panel: PanelRoot) -> None:
    with serving(panel, "--http") as served:
        conf(panel, "[serve]\nmax_body = lots\n")
        served.proc.send_signal(signal.SIGHUP)
        wait_for_log(panel, f"SIGHUP: resident panel (pid {served.proc.pid}): not reloaded: ")
        conf(panel, "")
        assert served.call(f"func=user&{ROOT}")  # still serving


# --- what an idle serve holds ----------------------------------------------------------------


def test_an_idle_serve_holds_no_document_it_passed_to_handlers(panel: PanelRoot) -> None:
    """A large document given to xml handlers is kept in a sealed file while the call runs
    (docs/performance.md, big documents); a serve keeping the call's Processes for the next
    call lets it go, so idle turns hold no documents."""
    rows = "".join(f"<elem><name>u{n:06d}</name><note>{'x' * 64}</note></elem>\n" for n in range(20_000))
    core = panel.path / "etc/core" / panel.mgr
    core.mkdir(parents=True, exist_ok=True)
    (core / "big.xml").write_text(f'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="big">\n{rows}</doc>\n')
    for number in range(2):
        panel.handler(f"cat{number}", "#!/bin/sh\nexec cat\n", '<event name="big" after="yes"/>')
    with serving(panel, "--http") as served:
        body = served.call(f"func=big&{ROOT}")
        assert body.count(b"<elem>") == 20_000
        # the answer goes out before the call's turn is given back: wait for that
        ends = time.monotonic() + 15
        while stdin_files(served.proc.pid) and time.monotonic() < ends:
            time.sleep(0.05)
        assert stdin_files(served.proc.pid) == []


def stdin_files(pid: int) -> list[str]:
    """The kept-stdin memfds open in process ``pid``."""
    links = []
    for path in Path(f"/proc/{pid}/fd").iterdir():
        try:
            links.append(os.readlink(path))
        except OSError:  # closed meanwhile
            continue
    return [link for link in links if "mgrhooks-stdin" in link]
