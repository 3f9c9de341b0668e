"""The local socket's client against a peer that misbehaves: a real unix socket served by a
thread of the test, which answers what a broken or hostile server could (mgrhooks.client;
the wire and its rules: docs/local.md). Before the request is whole at the server, the call
runs in-process (``None``); after it, a missing or malformed answer is an error, never a
second run."""

from __future__ import annotations

import json
import os
import socket
import threading
from collections.abc import Callable, Iterator
from pathlib import Path

import pytest

from mgrhooks import client

Answer = Callable[[socket.socket], None]

REQUEST: dict[str, object] = {"kind": "mgrctl", "argv": ["user"], "cwd": "/", "env": {}}


def _frame(data: bytes) -> bytes:
    return len(data).to_bytes(4, "big") + data


def _header(**fields: object) -> bytes:
    return _frame(json.dumps(fields).encode())


def _read_request(connection: socket.socket) -> bytes:
    size = int.from_bytes(connection.recv(4, socket.MSG_WAITALL), "big")
    return connection.recv(size, socket.MSG_WAITALL)


class Peer:
    """A server on ``root/var/run/mgrhooks.sock`` that takes one connection and runs
    ``answer`` on it; ``requests``: what it read, ``connections``: how many it took."""

    def __init__(self, root: Path, answer: Answer) -> None:
        (root / "var" / "run").mkdir(parents=True, exist_ok=True)
        self.listener = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        self.listener.bind(str(root / client.SOCKET))
        self.listener.listen(1)
        self.listener.settimeout(10)
        self.connections = 0
        self.thread = threading.Thread(target=self._serve, args=(answer,), daemon=True)
        self.thread.start()

    def _serve(self, answer: Answer) -> None:
        try:
            connection, _ = self.listener.accept()
        except OSError:  # closed by the test: nobody came
            return
        self.connections += 1
        with connection:
            answer(connection)

    def close(self) -> None:
        self.listener.close()
        self.thread.join(10)


@pytest.fixture
def peer(tmp_path: Path) -> Iterator[Callable[[Answer], Peer]]:
    made: list[Peer] = []

    def make(answer: Answer) -> Peer:
        made.append(Peer(tmp_path, answer))
        return made[-1]

    yield make
    for one in made:
        one.close()


def test_a_whole_answer_is_status_stderr_and_stdout(tmp_path: Path, peer: Callable[[Answer], Peer]) -> None:
    def answer(connection: socket.socket) -> None:
        assert json.loads(_read_request(connection)) == REQUEST
        connection.sendall(_header(status=3, stderr="warned\n", fallback=False, length=5) + b"<doc>")

    peer(answer)
    assert client.ask(str(tmp_path), REQUEST) == (3, "warned\n", b"<doc>")


def test_a_fallback_answer_runs_the_call_in_process(tmp_path: Path, peer: Callable[[Answer], Peer]) -> None:
    def answer(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(_header(status=0, stderr="", fallback=True, length=0))

    peer(answer)
    assert client.ask(str(tmp_path), REQUEST) is None


@pytest.mark.parametrize(
    ("what", "sent"),
    [
        ("a header without a status", _header(stderr="", length=0)),
        ("a header that is not JSON", _frame(b"<doc/>")),
        ("a header over the limit", (client.MAX_HEADER + 1).to_bytes(4, "big")),
        ("an answer cut short", _header(status=0, stderr="", length=100) + b"<doc>"),
        ("nothing at all", b""),
    ],
)
def test_a_broken_answer_after_the_request_is_an_error_not_a_second_run(
    tmp_path: Path, peer: Callable[[Answer], Peer], what: str, sent: bytes
) -> None:
    def answer(connection: socket.socket) -> None:
        _read_request(connection)
        connection.sendall(sent)

    peer(answer)
    with pytest.raises(client.Unanswered):
        client.ask(str(tmp_path), REQUEST)


def test_a_server_that_drops_the_request_unread_lets_the_call_run_in_process(
    tmp_path: Path, peer: Callable[[Answer], Peer]
) -> None:
    """A request the server never read whole (it closed at once, as for a refused size)
    ran nothing there: the call runs in-process, silently."""
    big = {**REQUEST, "argv": ["user", "x" * (4 << 20)]}  # more than the socket buffers hold
    peer(lambda connection: connection.shutdown(socket.SHUT_RDWR))
    assert client.ask(str(tmp_path), big) is None


def test_a_request_over_the_limit_is_never_sent(tmp_path: Path, peer: Callable[[Answer], Peer]) -> None:
    server = peer(lambda connection: None)
    huge = {**REQUEST, "argv": ["user", "x" * client.MAX_REQUEST]}
    assert client.ask(str(tmp_path), huge) is None
    server.close()
    assert server.connections == 0


def test_served_reports_an_unanswered_call_on_stderr(
    tmp_path: Path, peer: Callable[[Answer], Peer], capfd: pytest.CaptureFixture[str]
) -> None:
    peer(lambda connection: _read_request(connection) and None)
    assert client.served(str(tmp_path), REQUEST, "mgrctl") == client.UNANSWERED
    out, err = capfd.readouterr()
    assert out == ""
    assert err.startswith(f"mgrctl: the resident panel ({tmp_path / client.SOCKET}) took the call")
    assert err.rstrip().endswith("it may have run")


def test_served_without_a_request_runs_in_process(tmp_path: Path) -> None:
    assert client.served(str(tmp_path), None, "mgrctl") is None


def test_a_request_from_a_removed_working_directory_runs_in_process(tmp_path: Path) -> None:
    gone = tmp_path / "gone"
    gone.mkdir()
    here = os.getcwd()
    os.chdir(gone)
    try:
        gone.rmdir()
        assert client.mgrctl_request(["--root", str(tmp_path), "user"], {}) is None
        call = client.call_request(
            str(tmp_path), "billmgr", "user", (), user="root", level=30, lang="en", out="xml", timeout=None, environ={}
        )
        assert call is None
    finally:
        os.chdir(here)


def _closed_reader() -> int:
    read, write = os.pipe()
    os.close(read)
    return write


@pytest.mark.parametrize(
    ("opened", "said"),
    [
        (_closed_reader, ""),  # a reader gone away: 120, as Python's own exit, silently
        (lambda: os.open("/dev/full", os.O_WRONLY), "mgrhooks: cannot write the response: No space left on device"),
    ],
    ids=["closed-reader", "full-disk"],
)
def test_emit_to_an_output_that_cannot_take_it_is_the_output_status(
    capfd: pytest.CaptureFixture[str], opened: Callable[[], int], said: str
) -> None:
    output = opened()
    saved = os.dup(1)
    os.dup2(output, 1)
    try:
        assert client.emit(0, "", b"<doc/>") == client.OUTPUT
    finally:
        os.dup2(saved, 1)
        os.close(saved)
        os.close(output)
    err = capfd.readouterr().err
    assert (said in err) if said else err == ""
