"""A real `mgrhooks serve` process for tests and fault cases (tests/test_serve.py,
tests/faults.py): started on a free 127.0.0.1 port (or a unix socket) in a temporary
root, root's password ``secret``, reached with the standard library's HTTP client."""

from __future__ import annotations

import contextlib
import http.client
import re
import signal
import socket
import ssl
import subprocess
from collections.abc import Iterator
from dataclasses import dataclass

from conftest import PanelRoot

#: root's credentials on every call (``mgrhooks passwd root`` set them)
ROOT = "authinfo=root:secret"


@dataclass
class Served:
    """A running `mgrhooks serve` and how to reach it."""

    proc: subprocess.Popen[str]
    startup: str
    root: PanelRoot
    port: int = 0
    https: bool = False
    uds: str | None = None

    def connection(self, timeout: float = 30) -> http.client.HTTPConnection:
        if self.uds is not None:
            return _UnixConnection(self.uds, timeout)
        if self.https:
            context = ssl.create_default_context(cafile=str(self.root.path / "etc/mgrhooks.crt"))
            return http.client.HTTPSConnection("127.0.0.1", self.port, timeout=timeout, context=context)
        return http.client.HTTPConnection("127.0.0.1", self.port, timeout=timeout)

    def request(
        self,
        query: str = "",
        method: str = "GET",
        body: bytes | None = None,
        headers: dict[str, str] | None = None,
        path: str = "/billmgr",
    ) -> tuple[int, http.client.HTTPMessage, bytes]:
        connection = self.connection()
        try:
            given = dict(headers or {})
            if body is not None and method == "POST":
                given.setdefault("Content-Type", "application/x-www-form-urlencoded")
            connection.request(method, f"{path}?{query}" if query else path, body=body, headers=given)
            response = connection.getresponse()
            return response.status, response.headers, response.read()
        finally:
            connection.close()

    def call(self, query: str, **kwargs: object) -> bytes:
        status, _, body = self.request(query, **kwargs)  # type: ignore[arg-type]
        assert status == 200, body
        return body


class _UnixConnection(http.client.HTTPConnection):
    def __init__(self, path: str, timeout: float) -> None:
        super().__init__("localhost", timeout=timeout)
        self.socket_path = path

    def connect(self) -> None:
        sock = socket.socket(socket.AF_UNIX, socket.SOCK_STREAM)
        sock.settimeout(self.timeout)
        sock.connect(self.socket_path)
        self.sock = sock


@contextlib.contextmanager
def serving(root: PanelRoot, *args: str, pass_fds: tuple[int, ...] = ()) -> Iterator[Served]:
    """Start `mgrhooks serve` on a free 127.0.0.1 port (or as ``args`` say), root's
    password ``secret``, ``pass_fds`` inherited (as a service manager passes some);
    wait for its startup line; SIGTERM it at the end (killed if it does not end)."""
    if not (root.path / f"var/{root.mgr}.sessions.db").exists():
        given = subprocess.run(root.argv("passwd", "--stdin", "root"), input="secret\n", capture_output=True, text=True)
        assert given.returncode == 0, given.stderr
    listen = [] if "--uds" in args else ["--listen", "127.0.0.1:0"]
    argv = root.argv("serve", *listen, *args)
    proc = subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True, pass_fds=pass_fds)
    try:
        assert proc.stderr is not None
        startup = proc.stderr.readline()
        assert startup.startswith("mgrhooks serve: "), startup + proc.stderr.read()
        served = Served(proc, startup, root, https="https" in startup.split()[2])
        found = re.search(r"://127\.0\.0\.1:(\d+)/", startup)
        if found:
            served.port = int(found[1])
        if "--uds" in args:
            served.uds = args[args.index("--uds") + 1]
        yield served
    finally:
        if proc.poll() is None:
            proc.send_signal(signal.SIGTERM)
            try:
                proc.wait(60)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait()
        if proc.stderr is not None:
            proc.stderr.close()
