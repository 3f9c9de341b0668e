"""Private broker instances for tests and benchmarks: a RabbitMQ node and a Redis server of
their own, on free 127.0.0.1 ports, with every file in a temporary directory, stopped after.

A server that cannot start raises :class:`ServiceError` with its log: a test using it fails
(never skipped).
"""

from __future__ import annotations

import os
import secrets
import shutil
import signal
import socket
import subprocess
import time
from pathlib import Path

RABBITMQ_SERVER = "/usr/lib/rabbitmq/bin/rabbitmq-server"  # Debian's /usr/sbin one switches to user rabbitmq
START_TIMEOUT = 60.0


class ServiceError(Exception):
    """A server did not start or stop; the message holds its log's tail."""


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def _wait_port(port: int, process: subprocess.Popen[bytes], log: Path, timeout: float = START_TIMEOUT) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if process.poll() is not None:
            raise ServiceError(f"exited with status {process.returncode}:\n{_tail(log)}")
        try:
            socket.create_connection(("127.0.0.1", port), timeout=1).close()
            return
        except OSError:
            time.sleep(0.1)
    raise ServiceError(f"not listening on {port} after {timeout:g}s:\n{_tail(log)}")


def _tail(log: Path) -> str:
    texts = []
    for path in [log] + sorted(log.parent.glob("*.log")):
        if path.exists():
            texts.append(f"--- {path}\n" + "\n".join(path.read_text(errors="replace").splitlines()[-60:]))
    return "\n".join(texts) or f"(no log in {log.parent})"


class RabbitMQ:
    """A RabbitMQ node of its own (``rabbit-<random>@localhost``): its AMQP port, its
    Erlang distribution port and its own epmd on free ports, its data, logs, config and
    Erlang cookie under ``directory``."""

    def __init__(self, directory: Path) -> None:
        if not Path(RABBITMQ_SERVER).exists():
            raise ServiceError(f"{RABBITMQ_SERVER} is missing: install the Debian package rabbitmq-server (setup.sh)")
        self.directory = directory
        self.port = free_port()
        home = directory / "home"
        home.mkdir(parents=True, exist_ok=True)
        cookie = home / ".erlang.cookie"
        cookie.write_text(secrets.token_hex(16))
        cookie.chmod(0o400)
        (directory / "rabbitmq.conf").write_text(
            f"listeners.tcp.default = 127.0.0.1:{self.port}\nloopback_users = none\nlog.file.level = warning\n"
        )
        (directory / "enabled_plugins").write_text("[].\n")
        (directory / "rabbitmq-env.conf").write_text("")
        self.env = {
            "PATH": os.environ.get("PATH", "/usr/bin:/bin"),
            "HOME": str(home),
            "RABBITMQ_NODENAME": f"rabbit-{secrets.token_hex(4)}@localhost",
            "RABBITMQ_NODE_IP_ADDRESS": "127.0.0.1",
            "RABBITMQ_NODE_PORT": str(self.port),
            "RABBITMQ_DIST_PORT": str(free_port()),
            "ERL_EPMD_PORT": str(free_port()),
            "ERL_EPMD_ADDRESS": "127.0.0.1",
            "RABBITMQ_MNESIA_BASE": str(directory / "mnesia"),
            "RABBITMQ_LOG_BASE": str(directory / "log"),
            "RABBITMQ_CONFIG_FILE": str(directory / "rabbitmq.conf"),
            "RABBITMQ_ENABLED_PLUGINS_FILE": str(directory / "enabled_plugins"),
            "RABBITMQ_CONF_ENV_FILE": str(directory / "rabbitmq-env.conf"),
            "RABBITMQ_ADVANCED_CONFIG_FILE": str(directory / "advanced.config"),
            "RABBITMQ_PID_FILE": str(directory / "rabbit.pid"),
        }
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"amqp://guest:guest@127.0.0.1:{self.port}//"

    def start(self) -> None:
        log = self.directory / "server.out"
        with log.open("ab") as out:
            self.process = subprocess.Popen(
                [RABBITMQ_SERVER], env=self.env, stdout=out, stderr=subprocess.STDOUT, start_new_session=True
            )
        _wait_port(self.port, self.process, log)
        self._wait_amqp(log)

    def _wait_amqp(self, log: Path) -> None:
        import kombu

        deadline = time.monotonic() + START_TIMEOUT
        while time.monotonic() < deadline:
            try:
                with kombu.Connection(self.url, connect_timeout=2) as connection:
                    connection.ensure_connection(max_retries=1)
                    return
            except Exception:  # noqa: BLE001 (booting: try again)
                time.sleep(0.2)
        raise ServiceError(f"AMQP not answering on {self.port}:\n{_tail(log)}")

    def stop(self) -> None:
        """Stop the node (SIGTERM: a clean shutdown, its queues kept on disk)."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGTERM)
        try:
            self.process.wait(30)
        except subprocess.TimeoutExpired:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait()
        self.process = None

    def kill(self) -> None:
        """Kill the node (SIGKILL, as a crash or a power cut would to the process: what it
        confirmed is on disk, the rest may not be)."""
        if self.process is None:
            return
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()
        self.process = None

    def close(self) -> None:
        """Stop the node and its epmd."""
        self.stop()
        epmd = shutil.which("epmd") or "/usr/lib/erlang/bin/epmd"
        subprocess.run([epmd, "-kill"], env=self.env, capture_output=True, timeout=10)


class Redis:
    """A Redis server of its own on a free port, its files under ``directory`` (an
    append-only file, fsynced every second: Redis's documented loss window)."""

    def __init__(self, directory: Path) -> None:
        self.directory = directory
        directory.mkdir(parents=True, exist_ok=True)
        self.port = free_port()
        self.process: subprocess.Popen[bytes] | None = None

    @property
    def url(self) -> str:
        return f"redis://127.0.0.1:{self.port}/0"

    def start(self) -> None:
        server = shutil.which("redis-server")
        if server is None:
            raise ServiceError("redis-server is missing: install the Debian package redis-server (setup.sh)")
        log = self.directory / "redis.log"
        self.process = subprocess.Popen(
            [server, "--port", str(self.port), "--bind", "127.0.0.1", "--dir", str(self.directory)]
            + ["--save", "", "--appendonly", "yes", "--logfile", str(log), "--daemonize", "no"],
            stdout=subprocess.DEVNULL,
            stderr=subprocess.STDOUT,
        )
        _wait_port(self.port, self.process, log)

    def close(self) -> None:
        if self.process is not None:
            self.process.terminate()
            self.process.wait(30)
            self.process = None


class Receiver:
    """A real HTTP endpoint on 127.0.0.1 counting the ``X-Mgrhooks-Id`` of what it is sent:
    ``status`` is its answer; with ``hold``, the first request is held that many seconds and
    then dropped unanswered and uncounted (a delivery in progress, to kill a worker during);
    ``stop`` and ``start`` take it down and back on its port (a ``with`` block stops it).
    Connections are kept alive (HTTP/1.1); ``connections`` counts those accepted."""

    def __init__(self) -> None:
        import collections
        import threading

        self.ids: collections.Counter[str] = collections.Counter()
        self.bodies: list[bytes] = []
        self.status = 200
        self.answer = b""  # the body of its answers
        self.hold = 0.0
        self.arrived: list[float] = []
        self.connections = 0  # TCP connections accepted
        self.lock = threading.Lock()
        self.first = threading.Event()
        self.server: object = None
        self.port = free_port()
        self.start()

    def start(self) -> None:
        import threading
        from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer

        receiver = self

        class Handler(BaseHTTPRequestHandler):
            protocol_version = "HTTP/1.1"  # connections kept alive, as the http driver keeps them

            def setup(self) -> None:
                super().setup()
                with receiver.lock:
                    receiver.connections += 1

            def do_POST(self) -> None:
                body = self.rfile.read(int(self.headers["Content-Length"]))
                if receiver.hold and not receiver.first.is_set():
                    receiver.first.set()
                    time.sleep(receiver.hold)
                    self.close_connection = True
                    return
                status = receiver.status
                if status == 200:
                    with receiver.lock:
                        receiver.ids[self.headers["X-Mgrhooks-Id"]] += 1
                        receiver.bodies.append(body)
                        receiver.arrived.append(time.time())
                self.send_response(status)
                self.send_header("Content-Length", str(len(receiver.answer)))
                self.end_headers()
                self.wfile.write(receiver.answer)

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", self.port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server

    def __enter__(self) -> Receiver:
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop()

    def stop(self) -> None:
        server = self.server
        if server is not None:
            server.shutdown()  # type: ignore[attr-defined]
            server.server_close()  # type: ignore[attr-defined]
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"

    def wait(self, ids: set[str], timeout: float) -> set[str]:
        """Wait until every one of ``ids`` arrived (or ``timeout`` seconds); :returns: those missing."""
        deadline = time.monotonic() + timeout
        while time.monotonic() < deadline:
            with self.lock:
                missing = ids - set(self.ids)
            if not missing:
                return missing
            time.sleep(0.05)
        with self.lock:
            return ids - set(self.ids)
