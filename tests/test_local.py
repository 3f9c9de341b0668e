"""The local socket (issue 12, item 5): ``sbin/mgrctl`` and ``mgrhooks exec`` through a
running resident panel of the root print what they print in-process, keep the depth
limit, refuse other users, and fall back in-process when no serve answers.

The server is a real one (``mgrhooks.http.local.serve_local``) in a subprocess with a real
``Panel`` behind it (tests/localserve.py); clients are the real ``sbin/mgrctl`` and
``mgrhooks`` commands.
"""

from __future__ import annotations

import asyncio
import contextlib
import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import threading
import time
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import psutil
import pytest
from localserve import PanelResident

from conftest import REPO, PanelRoot
from mgrhooks import client
from mgrhooks.api import Panel
from mgrhooks.errors import ExitStatus, RootError
from mgrhooks.http.local import RELOADED, serve_local

SERVER = REPO / "tests" / "localserve.py"


def looping(root: PanelRoot) -> str:
    """A function whose handler calls it again through sbin/mgrctl: its name, random (the
    test looks for it among every process of the machine)."""
    func = f"loop.{os.urandom(4).hex()}"
    root.plugin("loop", f'<mgrdata><handler name="loop.sh" type="cgi"><func name="{func}"/></handler></mgrdata>')
    root.addon(
        "loop.sh",
        f'#!/bin/sh\nsbin/mgrctl -o xml {func} > /dev/null\necho "<doc><depth>$MGRHOOKS_DEPTH</depth></doc>"\n',
    )
    return func


class Served:
    """A running tests/localserve.py of a root."""

    def __init__(self, root: Path, *args: str) -> None:
        self.process = subprocess.Popen(
            [sys.executable, str(SERVER), str(root), *args], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True
        )
        assert self.process.stdout is not None
        line = self.process.stdout.readline()
        assert line == "ready\n", self.process.stderr.read() if self.process.stderr else line

    def stop(self) -> None:
        self.process.send_signal(signal.SIGTERM)
        self.process.communicate(timeout=30)


@pytest.fixture
def panel(root: PanelRoot) -> PanelRoot:
    """A root laid out by ``mgrhooks init`` (so it has sbin/mgrctl)."""
    subprocess.run([sys.executable, "-m", "mgrhooks", "init", str(root.path)], check=True, capture_output=True)
    return root


@pytest.fixture
def twin(tmp_path: Path) -> PanelRoot:
    """A second root laid out like ``panel``: the same commands, no serve."""
    path = tmp_path / "twin"
    subprocess.run([sys.executable, "-m", "mgrhooks", "init", str(path)], check=True, capture_output=True)
    return PanelRoot(path)


@pytest.fixture
def served(panel: PanelRoot) -> Iterator[Served]:
    server = Served(panel.path)
    yield server
    server.stop()
    assert not (panel.path / client.SOCKET).exists()  # removed at the end


def mgrctl(root: PanelRoot, *args: str, **kwargs: object) -> subprocess.CompletedProcess[bytes]:
    return subprocess.run([str(root.path / "sbin/mgrctl"), *args], capture_output=True, timeout=60, **kwargs)  # type: ignore[call-overload]


def outcome(result: subprocess.CompletedProcess[bytes]) -> tuple[int, bytes, bytes]:
    return result.returncode, result.stdout, result.stderr


def served_by(root: PanelRoot, pid: int) -> list[str]:
    """The request lines of the panel log written by process ``pid``."""
    return [line for line in logged(root).splitlines() if f"[{pid}:" in line and "INFO Request" in line]


def logged(root: PanelRoot) -> str:
    """The panel log; empty when nothing was logged yet."""
    path = root.path / "var" / f"{root.mgr}.log"
    return path.read_text() if path.exists() else ""


MGRCTL_LINES = [
    ("-m", "billmgr", "user"),
    ("-o", "xml", "user.add", "name=alice", "passwd=x", "sok=ok"),
    ("-o", "json", "user"),
    ("user.add", "name=alice", "passwd=x", "sok=ok"),  # exists: exit 1
    ("-o", "devel", "user.edit", "elid=alice"),
    ("user.delete", "elid=ghost"),
    ("-o", "sjson", "user"),
    ("user", "bad"),  # a usage error of mgrctl's own
    ("-x", "user"),
    ("-h",),
    ("-i", "user.delete"),
    ("-m", "ispmgr", "user"),  # another product than the serve's: in-process
    ("-o", "text", "no.such.func"),
]


def test_mgrctl_through_the_socket_prints_what_it_prints_in_process(
    panel: PanelRoot, twin: PanelRoot, served: Served
) -> None:
    for line in MGRCTL_LINES:
        assert outcome(mgrctl(panel, *line)) == outcome(mgrctl(twin, *line)), line
    # the calls ran in the server, the usage errors, help and -i in the client
    requests = served_by(panel, served.process.pid)
    assert len(requests) == 8, requests
    assert "'func=user.add&name=alice&passwd=***&sok=ok'" in requests[1]


EXEC_LINES = [
    ("user", "--out", "json"),
    ("user.add", "name=bob", "sok=ok", "--stdin", "passwd"),
    ("user.suspend", "--elid", "bob", "--user", "admin", "--level", "29", "--out", "text"),
    ("user.delete", "--elid", "ghost"),
    ("user", "--out", "text", "--dry-run"),
    ("user.add", "name=x", "--timeout", "nan"),
    ("user", "--lang", "ru", "--out", "devel"),
]


def test_exec_through_the_socket_prints_what_it_prints_in_process(
    panel: PanelRoot, twin: PanelRoot, served: Served
) -> None:
    for line in EXEC_LINES:
        results = [
            subprocess.run(root.argv("exec", *line), input=b"secret\n", capture_output=True, timeout=60)
            for root in (panel, twin)
        ]
        assert outcome(results[0]) == outcome(results[1]), line
    assert len(served_by(panel, served.process.pid)) == 5


def test_nested_calls_keep_the_depth_limit_through_the_socket(panel: PanelRoot, served: Served) -> None:
    func = looping(panel)
    result = mgrctl(panel, "-o", "text", func)
    assert (result.returncode, result.stdout) == (0, b"depth=1\n")
    log = panel.log()
    assert "Calls nested deeper than 8: " + " > ".join([func] * 9) in log
    assert len(served_by(panel, served.process.pid)) == 9  # every level served, none in-process
    assert not [p for p in psutil.process_iter(["cmdline"]) if func in " ".join(p.info["cmdline"] or [])]


def test_a_handler_calling_mgrctl_gets_the_same_answer_served(
    panel: PanelRoot, twin: PanelRoot, served: Served
) -> None:
    handler = "#!/bin/sh\nsbin/mgrctl -o xml user > var/nested.xml\necho $? > var/nested.status\necho '<doc/>'\n"
    for root in (panel, twin):
        root.handler("nest.sh", handler, '<event name="user.add" after="yes"/>', type="cgi")
        assert mgrctl(root, "user.add", "name=al", "passwd=x", "sok=ok").returncode == 0
    assert panel.read("var/nested.xml") == twin.read("var/nested.xml")
    assert "<elem><name>al</name>" in panel.read("var/nested.xml")
    assert panel.read("var/nested.status") == "0\n"
    assert len(served_by(panel, served.process.pid)) == 2


def test_restart_reloads_a_running_serve(panel: PanelRoot, served: Served) -> None:
    for args in (("-m", "billmgr", "exit"), ("-R",)):
        result = mgrctl(panel, *args)
        assert result.returncode == 0
        assert (
            result.stderr.decode()
            == f"mgrctl: the resident panel (mgrhooks serve, pid {served.process.pid}) reloaded\n"
        )
    log = panel.log()
    assert f"action INFO mgrctl exit: resident panel (pid {served.process.pid}): reloaded" in log
    assert "mgrctl -R: resident panel" in log


def test_a_stale_socket_runs_in_process(panel: PanelRoot, twin: PanelRoot) -> None:
    path = panel.path / client.SOCKET
    path.parent.mkdir(mode=0o700)
    stale = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
    stale.bind(str(path))  # a socket file nobody listens on, as a killed serve leaves it
    stale.close()
    assert path.exists()
    for line in (("-o", "xml", "user"), ("user.add", "name=al", "passwd=x", "sok=ok")):
        assert outcome(mgrctl(panel, *line)) == outcome(mgrctl(twin, *line))
    exec_line = ("user", "--out", "json")
    assert outcome(subprocess.run(panel.argv("exec", *exec_line), capture_output=True)) == outcome(
        subprocess.run(twin.argv("exec", *exec_line), capture_output=True)
    )
    # and a serve starting there replaces it
    server = Served(panel.path)
    try:
        assert mgrctl(panel, "user").stdout == b"name=al level=16 state=active\n"
        assert served_by(panel, server.process.pid)
    finally:
        server.stop()


def test_a_second_serve_of_the_root_has_no_local_socket(panel: PanelRoot, served: Served) -> None:
    second = Served(panel.path)
    try:
        assert mgrctl(panel, "user").returncode == 0
        assert served_by(panel, served.process.pid) and not served_by(panel, second.process.pid)  # the first serves
    finally:
        second.stop()
    where = panel.path / client.SOCKET
    assert f"action WARNING another mgrhooks serve answers on {where}: this serve has no local socket" in panel.log()
    assert mgrctl(panel, "user").returncode == 0  # the first's socket is still there
    assert len(served_by(panel, served.process.pid)) == 2


def test_the_socket_is_for_root_and_the_owner_only(panel: PanelRoot, served: Served) -> None:
    path = panel.path / client.SOCKET
    assert (os.stat(path.parent).st_mode & 0o777, os.stat(path).st_mode & 0o777) == (0o700, 0o600)


@pytest.fixture
def open_root() -> Iterator[PanelRoot]:
    """A root every user can reach (pytest's own temporary directories are root's only)."""
    path = Path(tempfile.mkdtemp(prefix="mgrhooks-local-"))
    try:
        subprocess.run([sys.executable, "-m", "mgrhooks", "init", str(path)], check=True, capture_output=True)
        path.chmod(0o755)
        (path / "var").chmod(0o755)
        yield PanelRoot(path)
    finally:
        shutil.rmtree(path)


#: a Python another user can run (the test's own may be in root's home): the client is
#: standard library only
OTHERS_PYTHON = "/usr/bin/python3"


@pytest.mark.skipif(os.geteuid() != 0, reason="needs root to act as another user")
@pytest.mark.skipif(not os.access(OTHERS_PYTHON, os.X_OK), reason=f"needs {OTHERS_PYTHON}")
def test_a_peer_of_another_uid_is_refused(open_root: PanelRoot) -> None:
    server = Served(open_root.path)
    try:
        path = open_root.path / client.SOCKET
        path.parent.chmod(0o755)  # as a careless admin might: the uid check still holds
        path.chmod(0o666)
        nobody = 65534
        copy = Path(tempfile.mkdtemp(prefix="mgrhooks-client-"))
        try:
            shutil.copy(REPO / "mgrhooks" / "client.py", copy / "client.py")
            copy.chmod(0o755)
            code = (
                f"import sys; sys.path.insert(0, {str(copy)!r}); import client; sys.exit(client.mgrctl(sys.argv[1:]))"
            )
            result = subprocess.run(
                [OTHERS_PYTHON, "-c", code, "--root", str(open_root.path), "user.add", "name=eve", "sok=ok"],
                capture_output=True,
                text=True,
                preexec_fn=lambda: os.setuid(nobody),
                env={"PATH": os.environ["PATH"]},
                timeout=60,
            )
        finally:
            shutil.rmtree(copy)
        assert result.returncode == client.REFUSED == 77
        assert result.stderr == (
            f"mgrhooks: the resident panel of {open_root.path} refuses uid {nobody}: only root and the root's "
            f"owner (uid 0) may call it through var/run/mgrhooks.sock\n"
        )
        log = logged(open_root)
        assert "eve" not in log
        assert f"action WARNING mgrhooks: the resident panel of {open_root.path} refuses uid {nobody}" in log
    finally:
        server.stop()


def _raw(root: PanelRoot, data: bytes) -> tuple[int, str, bytes]:
    """Send ``data`` as it is; the answer header's status and stderr, and the stdout."""
    with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
        connection.connect(str(root.path / client.SOCKET))
        connection.sendall(data)
        received = b""
        while chunk := connection.recv(65536):
            received += chunk
    size = int.from_bytes(received[:4], "big")
    header = client.decode(received[4 : 4 + size])
    return int(header["status"]), str(header["stderr"]), received[4 + size :]  # type: ignore[call-overload]


def test_a_request_over_the_limit_is_refused(panel: PanelRoot, served: Served) -> None:
    # the test server takes 1 MiB: a real exec with a 2 MiB body, then a bare length
    body = panel.path / "big.form"
    body.write_text("note=" + "x" * (2 << 20))
    result = subprocess.run(panel.argv("exec", "user", "--body", str(body)), capture_output=True, text=True)
    assert result.returncode == 2
    assert (
        result.stderr.startswith("mgrhooks: a request of 2097")
        and "over the local socket's limit of 1048576" in result.stderr
    )
    assert _raw(panel, (1 << 30).to_bytes(4, "big"))[:2] == (
        2,
        "mgrhooks: a request of 1073741824 bytes is over the local socket's limit of 1048576\n",
    )
    assert not served_by(panel, served.process.pid)


def test_a_malformed_request_is_refused(panel: PanelRoot, served: Served) -> None:
    for data, why in (
        (b"not json", "not JSON"),
        (b'{"kind": "mgrctl", "cwd": "/", "env": {}, "argv": [1]}', "'argv' must be a list of strings"),
        (b'{"kind": "call", "cwd": "/", "env": {}}', "'root' must be a string"),
        (b'{"kind": "what", "cwd": "/", "env": {}}', "unknown kind 'what'"),
    ):
        status, stderr, _ = _raw(panel, len(data).to_bytes(4, "big") + data)
        assert (status, stderr) == (2, f"mgrhooks: a malformed request on the local socket: {why}\n")
    request = {
        "kind": "call",
        "root": str(panel.path),
        "mgr": "billmgr",
        "cwd": "/",
        "env": {},
        "func": "user",
        "params": [],
        "user": "root",
        "lang": "en",
        "out": "xml",
        "timeout": None,
    }
    for key, value, why in (
        ("level", 99, "'level' must be a number 0-31"),
        ("out", "html", "'out' must be one of xml, devel, json, sjson, text"),
        ("timeout", -1, "'timeout' must be seconds above 0, at most 86400"),
        ("params", [["a"]], "'params' must be a list of [key, value] pairs"),
    ):
        data = client.encode({**request, "level": 30, key: value})
        status, stderr, _ = _raw(panel, len(data).to_bytes(4, "big") + data)
        assert (status, stderr) == (2, f"mgrhooks: a malformed request on the local socket: {why}\n")
    data = client.encode({**request, "level": 30, "out": "text"})
    assert _raw(panel, len(data).to_bytes(4, "big") + data) == (0, "", b"")  # no users yet: an empty list


def test_a_nested_call_without_a_turn_runs_in_the_handlers_process(panel: PanelRoot, twin: PanelRoot) -> None:
    """One turn, held by the outer call while its handler calls mgrctl: the nested call
    gets no turn (the resident raises Busy, nothing ran) and runs in-process instead of
    waiting for ever."""
    handler = "#!/bin/sh\nsbin/mgrctl -o text user > var/nested.txt\necho '<doc/>'\n"
    for root in (panel, twin):
        root.handler("nest.sh", handler, '<event name="user.add" after="yes"/>', type="cgi")
    server = Served(panel.path, "1")
    try:
        line = ("user.add", "name=al", "passwd=x", "sok=ok")
        assert outcome(mgrctl(panel, *line)) == outcome(mgrctl(twin, *line))
        assert panel.read("var/nested.txt") == twin.read("var/nested.txt") == "name=al level=16 state=active\n"
        assert len(served_by(panel, server.process.pid)) == 1  # the outer call; the nested one in-process
        assert len([line for line in logged(panel).splitlines() if "INFO Request" in line]) == 2
    finally:
        server.stop()


def test_a_serve_that_dies_mid_call_is_an_error_not_a_second_run(panel: PanelRoot) -> None:
    panel.handler(
        "slow.sh",
        "#!/bin/sh\necho $$ > var/slow.pid\nexec sleep 60\n",
        '<event name="user.add" before="yes"/>',
        type="cgi",
    )
    server = Served(panel.path)
    caller = subprocess.Popen(
        [str(panel.path / "sbin/mgrctl"), "user.add", "name=al", "passwd=x", "sok=ok"],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    try:
        while not (panel.path / "var/slow.pid").exists() or not panel.read("var/slow.pid"):
            assert caller.poll() is None
            time.sleep(0.02)
        server.process.kill()
        stdout, stderr = caller.communicate(timeout=30)
    finally:
        server.process.kill()
        server.process.communicate()
        os.kill(int(panel.read("var/slow.pid")), signal.SIGKILL)
    assert (caller.returncode, stdout) == (client.UNANSWERED, "")
    where = panel.path / client.SOCKET
    assert stderr == (
        f"mgrctl: the resident panel ({where}) took the call and gave no answer (the connection ended mid-answer): "
        "it may have run\n"
    )
    assert "name=al" not in mgrctl(panel, "user").stdout.decode()  # not run again in-process


def test_the_clients_exit_statuses_are_the_commands() -> None:
    assert (client.UNANSWERED, client.REFUSED, client.OUTPUT, client.INTERRUPTED) == (
        ExitStatus.UNANSWERED,
        ExitStatus.REFUSED,
        ExitStatus.OUTPUT,
        ExitStatus.INTERRUPTED,
    )


def test_a_root_deeper_than_a_socket_address_is_served(tmp_path: Path) -> None:
    deep = PanelRoot(tmp_path / ("d" * 120))  # its socket's path is over the 107 bytes of sun_path
    subprocess.run([sys.executable, "-m", "mgrhooks", "init", str(deep.path)], check=True, capture_output=True)
    assert len(str(deep.path / client.SOCKET)) > client.MAX_ADDRESS
    server = Served(deep.path)
    try:
        result = mgrctl(deep, "-o", "xml", "user")
        assert result.returncode == 0 and result.stdout.startswith(
            b'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="user"'
        )
        assert served_by(deep, server.process.pid)
        assert mgrctl(deep, "exit").stderr.decode().endswith("reloaded\n")
    finally:
        server.stop()
    assert not (deep.path / client.SOCKET).exists()


# --- the server in this process (a thread of its own with an event loop) ----------------------


@contextlib.contextmanager
def local_server(root: PanelRoot, **options: Any) -> Iterator[PanelResident]:
    """serve_local of ``root`` in a thread of this process while the block runs."""
    resident = PanelResident(Panel(root.path), 64)
    loop = asyncio.new_event_loop()
    started = threading.Event()
    stop = asyncio.Event()
    failed: list[BaseException] = []

    async def serve() -> None:
        async with serve_local(resident.panel.root, resident, **options):
            started.set()
            await stop.wait()

    def run() -> None:
        try:
            loop.run_until_complete(serve())
        except BaseException as exc:
            failed.append(exc)
            started.set()
        finally:
            loop.close()

    thread = threading.Thread(target=run)
    thread.start()
    started.wait(30)
    try:
        if failed:
            raise failed[0]
        yield resident
    finally:
        if not failed:
            loop.call_soon_threadsafe(stop.set)
        thread.join(30)


def test_restart_without_a_reload_hook_says_there_is_nothing_to_reload(panel: PanelRoot) -> None:
    with local_server(panel):
        result = mgrctl(panel, "-R")
    assert result.returncode == 0
    assert result.stderr.decode() == (
        f"mgrctl: the resident panel (mgrhooks serve, pid {os.getpid()}) reads plugin descriptions and addons anew "
        "on every call, so they are in force already (nothing to reload)\n"
    )
    assert f"mgrctl -R: resident panel (pid {os.getpid()}): nothing to reload" in panel.log()


def test_an_error_of_the_call_is_reported_as_in_process(panel: PanelRoot, twin: PanelRoot) -> None:
    for root in (panel, twin):
        (root.path / "etc" / "mgrhooks.conf").write_text("[serve\n")  # broken: exit status 3
    with local_server(panel):
        for line in (("user",), ("-o", "json", "us\x1ber")):
            ours, theirs = outcome(mgrctl(panel, *line)), outcome(mgrctl(twin, *line))
            assert ours == tuple(
                part.replace(bytes(twin.path), bytes(panel.path)) if isinstance(part, bytes) else part
                for part in theirs
            ), line
        assert (mgrctl(panel, "user").returncode, mgrctl(panel, "us\x1ber").returncode) == (3, 2)


def test_a_peer_that_sends_nothing_is_dropped(panel: PanelRoot) -> None:
    with local_server(panel, read_timeout=0.2):
        with socket.socket(socket.AF_UNIX, socket.SOCK_STREAM) as connection:
            connection.connect(str(panel.path / client.SOCKET))
            connection.sendall(b"\0\0\0\x10{")  # 16 bytes announced, 1 sent
            assert connection.recv(100) == b""  # closed without an answer
        assert mgrctl(panel, "user").returncode == 0  # and the server goes on


def test_the_socket_belongs_to_the_roots_owner(panel: PanelRoot) -> None:
    nobody = 65534
    os.chown(panel.path, nobody, nobody)
    with local_server(panel):
        path = panel.path / client.SOCKET
        assert (os.stat(path).st_uid, os.stat(path.parent).st_uid) == (nobody, nobody)
        assert mgrctl(panel, "user").returncode == 0  # root may still


@pytest.mark.parametrize("what", ["a file", "a link"])
def test_a_var_run_that_is_not_a_directory_is_refused(panel: PanelRoot, tmp_path: Path, what: str) -> None:
    run = panel.path / "var" / "run"
    if what == "a file":
        run.write_text("")
    else:
        (tmp_path / "elsewhere").mkdir()
        run.symlink_to(tmp_path / "elsewhere")
    with pytest.raises(RootError, match=f"^{run} is not a directory \\(a link or a file\\)"):
        with local_server(panel):
            pass
    assert not (tmp_path / "elsewhere" / "mgrhooks.sock").exists()


def test_a_file_where_the_socket_goes_is_left_alone(panel: PanelRoot) -> None:
    path = panel.path / client.SOCKET
    path.parent.mkdir(mode=0o700)
    path.write_text("keep me")
    with pytest.raises(RootError, match="is not a socket: remove it"):
        with local_server(panel):
            pass
    assert path.read_text() == "keep me"


def test_what_the_client_finds_without_the_scripts_root(panel: PanelRoot, twin: PanelRoot) -> None:
    """``python -m mgrhooks.mgrctl`` without ``--root`` (older scripts pass it; a user may
    not): the socket is looked for under $MGRHOOKS_ROOT, and the server parses the rest."""
    with local_server(panel):
        results = [
            subprocess.run(
                [sys.executable, "-m", "mgrhooks.mgrctl", "-o", "json", "user"],
                capture_output=True,
                env={**os.environ, "MGRHOOKS_ROOT": str(root.path)},
                timeout=60,
            )
            for root in (panel, twin)
        ]
        assert outcome(results[0]) == outcome(results[1])
        assert len(served_by(panel, os.getpid())) == 1


def test_a_reader_gone_away_is_status_120_as_in_process(panel: PanelRoot, twin: PanelRoot) -> None:
    with local_server(panel):
        statuses = []
        for root in (panel, twin):
            reader, writer = os.pipe()
            os.close(reader)
            try:
                statuses.append(
                    subprocess.run(
                        [str(root.path / "sbin/mgrctl"), "-o", "xml", "user"],
                        stdout=writer,
                        stderr=subprocess.PIPE,
                        timeout=60,
                    )
                )
            finally:
                os.close(writer)
        assert [(r.returncode, r.stderr) for r in statuses] == [(120, b""), (120, b"")]
        assert len(served_by(panel, os.getpid())) == 1


def test_the_wire_is_json(tmp_path: Path) -> None:
    import json

    request = {"argv": ["--root", "/r", "name=\udcff", "é"], "n": 1, "t": 2.5, "none": None, "yes": True}
    assert json.loads(client.encode(request)) == request
    assert client.decode(json.dumps(request).encode()) == request
    for bad in (b"[1]", b'{"a": 1} x', b"", b"nul", b"\xff"):
        with pytest.raises(ValueError):
            client.decode(bad)
    with pytest.raises(TypeError, match="bytes is not JSON"):
        client.encode({"a": b"x"})


# --- through a real `mgrhooks serve` ----------------------------------------------------------


@pytest.fixture
def serve(panel: PanelRoot) -> Iterator[subprocess.Popen[str]]:
    """A real ``mgrhooks serve`` of ``panel`` (plain HTTP on a free loopback port) with its
    local socket listening."""
    process = subprocess.Popen(
        [*panel.argv("serve", "--http", "--listen", "127.0.0.1:0")],
        stdout=subprocess.PIPE,
        stderr=subprocess.PIPE,
        text=True,
    )
    assert process.stderr is not None
    line = process.stderr.readline()  # the startup line: the local socket listens by then
    assert line.startswith("mgrhooks serve: http://127.0.0.1:"), line + process.stderr.read()
    yield process
    process.send_signal(signal.SIGTERM)
    process.communicate(timeout=60)
    assert process.returncode == 0
    assert not (panel.path / client.SOCKET).exists()


def test_mgrctl_and_exec_through_a_real_serve(panel: PanelRoot, twin: PanelRoot, serve: subprocess.Popen[str]) -> None:
    for line in MGRCTL_LINES:
        assert outcome(mgrctl(panel, *line)) == outcome(mgrctl(twin, *line)), line
    for line in EXEC_LINES:
        results = [
            subprocess.run(root.argv("exec", *line), input=b"secret\n", capture_output=True, timeout=60)
            for root in (panel, twin)
        ]
        assert outcome(results[0]) == outcome(results[1]), line
    assert len(served_by(panel, serve.pid)) == 8 + 5
    func = looping(panel)
    result = mgrctl(panel, "-o", "text", func)
    assert (result.returncode, result.stdout) == (0, b"depth=1\n")
    assert "Calls nested deeper than 8: " + " > ".join([func] * 9) in panel.log()
    assert len(served_by(panel, serve.pid)) == 8 + 5 + 9
    restart = mgrctl(panel, "-m", "billmgr", "exit")
    assert (restart.returncode, restart.stderr.decode()) == (0, RELOADED.format(pid=serve.pid) + "\n")
