"""Event records: which calls make one, their shape, the spool, the drivers and the worker."""

from __future__ import annotations

import base64
import json
import signal
import subprocess
import threading
import time
from datetime import UTC, datetime
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path

import pytest

from conftest import PanelRoot
from mgrhooks.delivery import LEASE_MARGIN
from mgrhooks.errors import RootError
from mgrhooks.model import Request
from mgrhooks.notify import HandlerRun, objects, record, redact, wanted
from mgrhooks.settings import Notifier, load_settings
from mgrhooks.spool import Outcome, Spool
from mgrhooks.xmldoc import parse

# --- pure ---------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("func", "params", "change"),
    [
        ("user", (), False),
        ("desktop", (), False),
        ("user.edit", (("elid", "a"),), False),
        ("user.edit", (("elid", "a"), ("sok", "ok")), True),
        ("user.add", (("sok", "ok"),), True),
        ("user.delete", (("elid", "a"),), True),
        ("payment.add", (), False),
    ],
)
def test_which_calls_are_changes(func: str, params: tuple[tuple[str, str], ...], change: bool) -> None:
    assert Request(func, params).is_change() is change


def test_filters_and_redaction() -> None:
    assert wanted(("user.*",), "user.add") and not wanted(("user.*",), "domain.add")
    assert wanted(("*",), "anything")
    params = (("name", "a"), ("passwd", "x"), ("api_token", "t"), ("authinfo", "u:p"), ("secretary", "s"), ("key", "k"))
    assert redact(params) == {
        "name": "a",
        "passwd": "***",
        "api_token": "***",
        "authinfo": "***",
        "secretary": "***",
        "key": "***",
    }


def test_record_shape() -> None:
    request = Request(
        "user.add", (("name", "alice"), ("passwd", "pw"), ("sok", "ok")), user="admin", level=29, call_id="c1"
    )
    runs = [HandlerRun("samba.pl", "after", 12.5, "ok")]
    now = datetime(2026, 11, 21, 9, 40, 6, 123000, tzinfo=UTC)
    doc = parse(b"<doc><ok/><id>alice</id></doc>")
    assert record(request, "billmgr", doc, runs, "r1", now, [("user:alice", 3)]) == {
        "id": "r1",
        "event": "user.add",
        "timestamp": "2026-11-21T09:40:06.123Z",
        "service": "billmgr",
        "user": "admin",
        "level": 29,
        "call": "c1",
        "objects": [{"type": "user", "id": "alice", "seq": 3}],
        "params": {"name": "alice", "passwd": "***", "sok": "ok"},
        "result": {"status": "ok", "id": "alice"},
        "handlers": [{"name": "samba.pl", "stage": "after", "ms": 12.5, "status": "ok"}],
        "recovered": False,
    }
    failed = parse(b'<doc><id>alice</id><error type="handler" object="x"/></doc>')
    assert record(request, "billmgr", failed, runs, "r1", now, status="error")["result"] == {
        "status": "error",
        "id": "alice",
        "error": "handler",
    }
    assert record(request, "billmgr", doc, [], "r1", now, status="unknown")["recovered"] is True


@pytest.mark.parametrize(
    ("func", "params", "doc", "keys"),
    [
        ("user.add", (("name", "al"), ("sok", "ok")), "<doc><id>al</id></doc>", ["user:al"]),
        ("user.edit", (("elid", "al"), ("sok", "ok")), "<doc><id>al</id></doc>", ["user:al"]),
        (
            "user.edit",
            (("elid", "al"), ("name", "bo"), ("sok", "ok")),
            "<doc><id>bo</id></doc>",
            ["user:al", "user:bo"],
        ),
        ("user.delete", (("elid", "a, b, a"),), "<doc/>", ["user:a", "user:b"]),
        ("domain.record.add", (("sok", "ok"),), "<doc/>", []),
    ],
)
def test_the_objects_a_change_touches(
    func: str, params: tuple[tuple[str, str], ...], doc: str, keys: list[str]
) -> None:
    assert objects(Request(func, params), parse(doc.encode())) == keys


def test_notifier_settings(tmp_path: Path) -> None:
    conf = tmp_path / "mgrhooks.conf"
    conf.write_text(
        "[notify.audit]\ndriver = log\npath = var/a.jsonl\nevents = user.* domain.add\n"
        "[notify.crm]\ndriver = http\nurl = http://127.0.0.1:1/\ntimeout = 0.5\nattempts = 3\nbackoff = 2\nuser = u\npassword = p\n"
    )
    assert load_settings(conf).notifiers == (
        Notifier("audit", "log", ("user.*", "domain.add"), path="var/a.jsonl"),
        Notifier(
            "crm",
            "http",
            ("*",),
            url="http://127.0.0.1:1/",
            timeout=0.5,
            attempts=3,
            backoff=2.0,
            user="u",
            password="p",
        ),
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[notify.x]\ndriver = smtp\n", "[notify.x] driver: expected one of log, http, script, got 'smtp'"),
        ("[notify.x]\ndriver = http\n", "[notify.x] url: required for the http driver"),
        ("[notify.x]\ndriver = log\nurl = http://x/\n", "[notify.x] unknown key(s) url; known: driver, events, path"),
        (
            "[notify.x]\ndriver = http\nurl = u\nattempts = 0\n",
            "[notify.x] attempts: expected a whole number >= 1, got '0'",
        ),
        ("[notfy.x]\ndriver = log\n", "unknown section [notfy.x]; known: [handlers], [notify.NAME]"),
    ],
)
def test_bad_notifier_settings(tmp_path: Path, text: str, message: str) -> None:
    conf = tmp_path / "mgrhooks.conf"
    conf.write_text(text)
    with pytest.raises(RootError) as info:
        load_settings(conf)
    assert message in str(info.value)


def test_spool_claims_leases_and_dead_letters(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.add("r1", "user.add", "{}", ["a", "b"], now=100.0)
    first = spool.claim(now=100.0, lease=10)
    assert [(d.record, d.notifier, d.attempts) for d in first] == [("r1", "a", 0), ("r1", "b", 0)]
    assert spool.claim(now=105.0, lease=10) == []  # leased
    spool.settle([Outcome(first[0], "delivered", first[0].due), Outcome(first[1], "pending", 120.0, "down")])
    assert spool.claim(now=115.0, lease=10) == []  # not due yet
    (again,) = spool.claim(now=120.0, lease=10)
    spool.settle([Outcome(again, "dead", 130.0, "still down")])
    assert [(d.notifier, d.state, d.attempts, d.error) for d in spool.list()] == [("b", "dead", 2, "still down")]
    assert spool.retry([]) == 1
    assert [(d.state, d.attempts) for d in spool.list()] == [("pending", 0)]
    spool.settle([Outcome(spool.claim(now=10**10, lease=1)[0], "dead", 0, "x")])
    assert spool.drop(["other"]) == 0 and spool.drop(["r1"]) == 1
    assert spool.list() == []


# --- through the CLI ------------------------------------------------------------------------


class Endpoint:
    """A real HTTP server on 127.0.0.1 that records what it is sent; it can go down and come back."""

    def __init__(self) -> None:
        self.bodies: list[tuple[dict[str, str], dict[str, object]]] = []
        self.status = 200
        self.delay = 0.0
        self.delays: dict[str, float] = {}  # by record id, instead of ``delay``
        self.server: ThreadingHTTPServer | None = None
        self.port = self._start().server_address[1]
        self.stop()

    def _start(self, port: int = 0) -> ThreadingHTTPServer:
        endpoint = self

        class Handler(BaseHTTPRequestHandler):
            def do_POST(self) -> None:
                body = json.loads(self.rfile.read(int(self.headers["Content-Length"])))
                endpoint.bodies.append((dict(self.headers), body))
                time.sleep(endpoint.delays.get(self.headers["X-Mgrhooks-Id"], endpoint.delay))
                self.send_response(endpoint.status)
                self.end_headers()

            def log_message(self, *args: object) -> None:
                pass

        server = ThreadingHTTPServer(("127.0.0.1", port), Handler)
        server.daemon_threads = True
        threading.Thread(target=server.serve_forever, daemon=True).start()
        self.server = server
        return server

    def start(self) -> None:
        self._start(self.port)

    def stop(self) -> None:
        if self.server is not None:
            self.server.shutdown()
            self.server.server_close()
            self.server = None

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}/hook"


@pytest.fixture
def endpoint():
    endpoint = Endpoint()
    yield endpoint
    endpoint.stop()


def configure(root: PanelRoot, text: str) -> None:
    (root.path / "etc/mgrhooks.conf").write_text(text)


def queue(root: PanelRoot, *args: str) -> list[str]:
    return root.mgrhooks(f"queue {' '.join(args)}" if args else "queue list").stdout.splitlines()


def test_log_driver_gets_one_record_per_committed_change(root: PanelRoot) -> None:
    configure(root, "[notify.audit]\ndriver = log\n")
    root.handler(
        "stop.sh",
        '#!/bin/sh\necho \'<doc><error type="value" object="name"/></doc>\'\n',
        '<event name="user.delete" before="yes"/>',
    )
    assert root.mgrhooks("exec", "user.add", "name=al", "passwd=secret", "sok=ok").returncode == 0
    root.mgrhooks("exec", "user.add", "name=al", "passwd=secret", "sok=ok")  # fails: exists
    root.mgrhooks("exec", "user.edit", "--elid", "al")  # a form shown: no change
    root.mgrhooks("exec", "user.delete", "--elid", "al")  # stopped by a before-handler
    lines = root.read("var/billmgr.events.jsonl").splitlines()
    assert len(lines) == 1
    event = json.loads(lines[0])
    assert (event["event"], event["params"]["passwd"], event["result"]) == (
        "user.add",
        "***",
        {"status": "ok", "id": "al"},
    )
    assert "secret" not in root.read("var/billmgr.events.jsonl")
    assert queue(root) == []


def test_http_endpoint_down_then_back(root: PanelRoot, endpoint: Endpoint) -> None:
    configure(
        root,
        f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\ntimeout = 0.5\nbackoff = 0.1\nuser = crm\npassword = pw\n",
    )
    assert root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok").returncode == 0  # inline attempt fails
    (line,) = queue(root)
    record_id = line.split()[0]
    assert f"{record_id} crm pending attempts=1 user.add  cannot reach {endpoint.url}" in line
    endpoint.start()
    time.sleep(0.2)  # past the backoff
    assert root.mgrhooks("worker --once").stdout == "delivered 1, to retry 0, dead 0\n"
    ((headers, body),) = endpoint.bodies
    assert body["id"] == record_id and headers["X-Mgrhooks-Id"] == record_id
    assert headers["X-Mgrhooks-Event"] == "user.add"
    assert headers["Authorization"] == "Basic " + base64.b64encode(b"crm:pw").decode()
    assert queue(root) == []
    assert root.mgrhooks("worker --once").stdout == "delivered 0, to retry 0, dead 0\n"  # exactly once here


def test_inline_delivery_when_the_endpoint_is_up(root: PanelRoot, endpoint: Endpoint) -> None:
    endpoint.start()
    configure(root, f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\nevents = user.add\n")
    root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")
    root.mgrhooks("exec", "user.suspend", "--elid", "al")  # not in the filter
    assert [body["event"] for _, body in endpoint.bodies] == ["user.add"]
    assert queue(root) == []


def test_a_worker_killed_mid_delivery_loses_nothing(root: PanelRoot, endpoint: Endpoint) -> None:
    configure(root, f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\ntimeout = 2\nbackoff = 0.1\n")
    root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")  # down: stays pending
    endpoint.delay = 30.0
    endpoint.start()
    time.sleep(0.2)
    worker = subprocess.Popen(
        root.argv("worker", "--interval", "0.1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL
    )
    deadline = time.monotonic() + 20
    while not endpoint.bodies and time.monotonic() < deadline:
        time.sleep(0.05)
    claimed = time.monotonic()
    assert len(endpoint.bodies) == 1  # the worker is in the middle of sending it
    worker.send_signal(signal.SIGKILL)
    worker.wait()
    endpoint.delay = 0.0
    assert [line.split()[2] for line in queue(root)] == ["pending"]  # not lost
    assert root.mgrhooks("worker --once").stdout == "delivered 0, to retry 0, dead 0\n"  # leased for 2 + 5 s
    time.sleep(max(0.0, claimed + 2 + LEASE_MARGIN + 0.5 - time.monotonic()))
    assert root.mgrhooks("worker --once").stdout == "delivered 1, to retry 0, dead 0\n"
    assert queue(root) == []
    assert len(endpoint.bodies) == 2 and endpoint.bodies[0][1]["id"] == endpoint.bodies[1][1]["id"]  # at least once


def test_dead_letters_retry_and_drop(root: PanelRoot, endpoint: Endpoint) -> None:
    endpoint.status = 500
    endpoint.start()
    configure(root, f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\nattempts = 2\nbackoff = 0.05\n")
    root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")  # attempt 1 (inline)
    time.sleep(0.1)
    assert root.mgrhooks("worker --once").stdout == "delivered 0, to retry 0, dead 1\n"  # attempt 2
    (line,) = queue(root, "list", "--dead")
    assert f"crm dead attempts=2 user.add  HTTP 500 from {endpoint.url}" in line
    assert "attempt 2 failed: HTTP 500" in root.log() and "(dead letter)" in root.log()
    assert queue(root, "retry") == ["1 delivery(ies) pending again"]
    endpoint.status = 200
    assert root.mgrhooks("worker --once").stdout == "delivered 1, to retry 0, dead 0\n"
    endpoint.status = 500
    root.mgrhooks("exec", "user.delete", "--elid", "al")
    time.sleep(0.1)
    root.mgrhooks("worker --once")
    record_id = queue(root, "list", "--dead")[0].split()[0]
    assert queue(root, "drop", record_id) == ["1 delivery(ies) dropped"]
    assert queue(root) == []


def test_script_driver(root: PanelRoot) -> None:
    root.addon(
        "sync.sh",
        '#!/bin/sh\ncat >> var/synced.jsonl\necho >> var/synced.jsonl\necho "$MGRHOOKS_EVENT" > var/synced.event\n',
    )
    configure(root, "[notify.sync]\ndriver = script\nprogram = sync.sh\n")
    root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")
    assert json.loads(root.read("var/synced.jsonl"))["event"] == "user.add"
    assert root.read("var/synced.event") == "user.add\n"
    configure(root, "[notify.sync]\ndriver = script\nprogram = gone.sh\nattempts = 1\n")
    root.mgrhooks("exec", "user.delete", "--elid", "al")
    (line,) = queue(root, "list", "--dead")
    assert "Addon 'addon/gone.sh' does not exist" in line


def test_the_backoff_doubles_up_to_a_day_however_many_attempts_failed(root: PanelRoot) -> None:
    import sqlite3

    from mgrhooks import Root
    from mgrhooks.delivery import spool_of, work

    panel = Root.open(root.path)
    spool_of(panel).add("r1", "user.add", "{}", ["sync"], now=time.time())
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        db.execute("UPDATE deliveries SET attempts = 1500")  # 2.0 ** 1500 is beyond a float
    notifier = Notifier("sync", "script", program="gone.sh", attempts=10**6, backoff=3600)
    started = time.time()
    assert work(panel, (notifier,)).retried == 1
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        ((due, attempts),) = db.execute("SELECT due, attempts FROM deliveries").fetchall()
    assert attempts == 1501 and started + 86400 / 2 <= due <= time.time() + 86400  # (jitter: half to whole)


# --- drivers that fail as attempts -------------------------------------------------------


class Peer:
    """A raw TCP receiver on 127.0.0.1: reads one request's head (with ``head``, else what
    comes first: a TLS client hello), then ``answer(conn)``."""

    def __init__(self, answer, head: bool = True) -> None:  # type: ignore[no-untyped-def]
        import socket

        self.answer = answer
        self.head = head
        self.requests: list[bytes] = []
        self.server = socket.create_server(("127.0.0.1", 0))
        self.port = self.server.getsockname()[1]
        threading.Thread(target=self._serve, daemon=True).start()

    def _serve(self) -> None:
        while True:
            try:
                conn, _ = self.server.accept()
            except OSError:
                return
            with conn:
                data = b""
                while b"\r\n\r\n" not in data:
                    chunk = conn.recv(65536)
                    data += chunk
                    if not chunk or not self.head:
                        break
                self.requests.append(data)
                try:
                    self.answer(conn)
                except OSError:
                    pass

    def close(self) -> None:
        self.server.close()


def drip(conn) -> None:  # type: ignore[no-untyped-def]
    for byte in b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n":
        conn.sendall(bytes([byte]))
        time.sleep(0.5)


def reset(conn) -> None:  # type: ignore[no-untyped-def]
    import socket
    import struct

    conn.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, struct.pack("ii", 1, 0))


@pytest.mark.parametrize(
    ("answer", "scheme", "reason"),
    [
        (lambda conn: conn.sendall(b"SSH-2.0-OpenSSH_9.2\r\n\r\n"), "http", "BadStatusLine"),
        (reset, "http", "Connection reset"),
        (lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\n\r\n"), "https", "SSL"),
    ],
    ids=["not-http", "reset", "tls-to-plain"],
)
def test_a_failing_receiver_is_a_failed_attempt_never_the_calls(
    root: PanelRoot, answer, scheme: str, reason: str
) -> None:  # type: ignore[no-untyped-def]
    peer = Peer(answer, head=scheme == "http")
    try:
        url = f"{scheme}://127.0.0.1:{peer.port}/hook"
        configure(root, f"[notify.crm]\ndriver = http\nurl = {url}\nattempts = 2\nbackoff = 0.05\n")
        result = root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")
        assert result.returncode == 0, result.stdout + result.stderr  # the notifier never fails the call
        (line,) = queue(root)
        assert "crm pending attempts=1 user.add" in line and f"cannot reach {url}" in line and reason in line, line
        time.sleep(0.1)
        assert (
            root.mgrhooks("worker --once").stdout == "delivered 0, to retry 0, dead 1\n"
        )  # counted, dead at the limit
        assert len(peer.requests) == 2
    finally:
        peer.close()


def test_an_exception_inside_a_driver_is_a_failed_attempt(root: PanelRoot) -> None:
    configure(root, "[notify.crm]\ndriver = http\nurl = http://127.0.0.1:99999/hook\n")
    assert root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok").returncode == 0
    (line,) = queue(root)
    assert "pending attempts=1" in line and "http driver failed: ValueError: Port out of range" in line


def test_the_timeout_bounds_the_whole_attempt(root: PanelRoot) -> None:
    """A receiver dripping a byte every half second (its whole answer takes 19 s)."""
    peer = Peer(drip)
    try:
        url = f"http://127.0.0.1:{peer.port}/hook"
        configure(root, f"[notify.crm]\ndriver = http\nurl = {url}\ntimeout = 1.5\nbackoff = 0.05\n")
        started = time.monotonic()
        assert root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok").returncode == 0
        call = time.monotonic() - started
        (line,) = queue(root)
        assert f"no answer from {url} within 1s (the attempt's timeout)" in line  # inline: at most a second
        time.sleep(0.1)
        started = time.monotonic()
        assert root.mgrhooks("worker --once").stdout == "delivered 0, to retry 1, dead 0\n"
        worker = time.monotonic() - started
        assert f"no answer from {url} within 1.5s" in queue(root)[0]
        assert call < 10 and worker < 10, (call, worker)  # far below the 19 s the answer takes
    finally:
        peer.close()


def test_redirects_are_not_followed_and_credentials_stay(root: PanelRoot, endpoint: Endpoint) -> None:
    endpoint.start()
    peer = Peer(lambda conn: conn.sendall(f"HTTP/1.1 307 Temporary\r\nLocation: {endpoint.url}\r\n\r\n".encode()))
    try:
        url = f"http://127.0.0.1:{peer.port}/hook"
        configure(root, f"[notify.crm]\ndriver = http\nurl = {url}\nuser = crm\npassword = pw\n")
        assert root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "confirm=x", "sok=ok").returncode == 0
        (line,) = queue(root)
        assert f"HTTP 307 from {url}: redirect to {endpoint.url} not followed" in line
        assert endpoint.bodies == []  # neither the record nor the credentials went there
        (request,) = peer.requests
        assert b"Authorization: Basic " in request
    finally:
        peer.close()


def test_confirm_and_friends_are_masked_in_what_is_stored_and_sent(root: PanelRoot, endpoint: Endpoint) -> None:
    endpoint.start()
    configure(root, f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\n")
    params = ("name=al", "passwd=s3cr3t-a", "confirm=s3cr3t-a", "api_key=s3cr3t-b", "sok=ok")
    assert root.mgrhooks("exec", "user.add", *params).returncode == 0
    ((_, body),) = endpoint.bodies
    assert body["params"] == {"name": "al", "passwd": "***", "confirm": "***", "api_key": "***", "sok": "ok"}
    stored = [path for path in (root.path / "var").iterdir() if b"s3cr3t" in path.read_bytes()]
    assert stored == []  # the spool (its WAL too), the log


def test_two_workers_on_a_slow_endpoint_send_no_duplicates(root: PanelRoot, endpoint: Endpoint) -> None:
    from mgrhooks import Root
    from mgrhooks.delivery import spool_of

    endpoint.delay = 0.5
    endpoint.start()
    configure(root, f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\ntimeout = 2\n")
    spool = spool_of(Root.open(root.path))
    for n in range(30):
        spool.add(f"r{n:02}", "user.add", json.dumps({"id": f"r{n:02}"}), ["crm"], now=time.time())
    workers = [
        subprocess.Popen(root.argv("worker", "--interval", "0.1"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        for _ in range(2)
    ]
    try:
        deadline = time.monotonic() + 60
        while len(endpoint.bodies) < 30 and time.monotonic() < deadline:
            time.sleep(0.1)
        time.sleep(1.0)  # anything sent twice would arrive by now
    finally:
        for worker in workers:
            worker.kill()
            worker.wait()
    ids = [body["id"] for _, body in endpoint.bodies]
    assert sorted(ids) == [f"r{n:02}" for n in range(30)]  # each once
    assert queue(root) == []


def test_only_the_holder_settles_a_delivery(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    spool.add("r1", "user.add", "{}", ["a"], now=100.0)
    (late,) = spool.claim(now=100.0, lease=10)
    (current,) = spool.claim(now=111.0, lease=10)  # the first lease ran out
    assert late.holder != current.holder
    assert spool.settle([Outcome(current, "delivered", current.due)]) == [True]
    assert spool.settle([Outcome(late, "pending", 200.0, "timed out")]) == [False]  # cannot turn delivered back
    assert spool.settle([Outcome(late, "delivered", late.due)]) == [False]
    assert spool.list(("delivered",))[0].attempts == 1


def test_delivered_deliveries_are_purged(tmp_path: Path) -> None:
    import sqlite3

    spool = Spool(tmp_path / "spool.db")
    for name in ("r1", "r2", "r3"):
        spool.add(name, "user.add", "{}", ["a"], now=100.0)
    one, two, _ = spool.claim(now=100.0, lease=10)
    spool.settle([Outcome(one, "delivered", one.due), Outcome(two, "dead", 0, "down")])
    spool.drop(["r2"])
    assert spool.purge(before=time.time() - 60) == 0  # done just now: kept
    assert spool.purge(before=time.time() + 1) == 2
    with sqlite3.connect(tmp_path / "spool.db") as db:
        assert [row[0] for row in db.execute("SELECT id FROM records")] == ["r3"]
    assert [d.record for d in spool.list()] == ["r3"]
    with sqlite3.connect(tmp_path / "spool.db") as db:
        plan = " ".join(row[3] for row in db.execute("EXPLAIN QUERY PLAN " + CLAIM_QUERY))
    assert "deliveries_due" in plan, plan


CLAIM_QUERY = (
    "SELECT d.record FROM deliveries d JOIN records r ON r.id = d.record"
    " WHERE d.state = 'pending' AND d.due <= 1 AND d.lease <= 1 ORDER BY d.due LIMIT 1"
)


def test_a_worker_takes_over_the_spool_an_earlier_version_left(root: PanelRoot) -> None:
    import sqlite3

    old = root.path / "var/billmgr.spool.db"
    with sqlite3.connect(old) as db:  # the earlier version's schema
        db.executescript(
            "CREATE TABLE records (id TEXT PRIMARY KEY, event TEXT NOT NULL, created REAL NOT NULL, body TEXT NOT NULL);"
            "CREATE TABLE deliveries (record TEXT NOT NULL, notifier TEXT NOT NULL, state TEXT NOT NULL DEFAULT"
            " 'pending', attempts INTEGER NOT NULL DEFAULT 0, due REAL NOT NULL, lease REAL NOT NULL DEFAULT 0,"
            " error TEXT NOT NULL DEFAULT '', PRIMARY KEY (record, notifier));"
            "INSERT INTO records VALUES ('r1', 'user.add', 1, '{\"id\": \"r1\"}'), ('r2', 'user.add', 1, '{}');"
            "INSERT INTO deliveries VALUES ('r1', 'audit', 'pending', 2, 1, 0, 'down'), ('r2', 'audit', 'delivered', 1, 1, 0, '');"
        )
    configure(root, "[notify.audit]\ndriver = log\n")
    assert root.mgrhooks("worker --once").stdout == "delivered 1, to retry 0, dead 0\n"
    assert root.read("var/billmgr.events.jsonl") == '{"id": "r1"}\n'
    assert not old.exists() and (root.path / "var/billmgr.spool.db.migrated").exists()
    assert "took over 1 delivery(ies)" in root.log()
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        assert db.execute("SELECT id FROM records").fetchall() == [("r1",)]  # not r2: delivered before


# --- a worker's pass: batches, leases, kept connections ----------------------------------


def spooled(root: PanelRoot, count: int, notifier: str = "crm") -> list[str]:
    """``count`` records ``r00``, ``r01``... for ``notifier``, due in that order."""
    from mgrhooks import Root
    from mgrhooks.delivery import spool_of

    spool = spool_of(Root.open(root.path))
    ids = [f"r{n:02}" for n in range(count)]
    for n, record_id in enumerate(ids):
        spool.add(record_id, "user.add", json.dumps({"id": record_id}), [notifier], now=time.time() - count + n)
    return ids


def test_a_worker_pass_keeps_one_connection_to_its_receiver(root: PanelRoot) -> None:
    from services import Receiver

    with Receiver() as receiver:
        configure(root, f"[notify.crm]\ndriver = http\nurl = {receiver.url}\n")
        ids = spooled(root, 20)
        assert root.mgrhooks("worker --once").stdout == "delivered 20, to retry 0, dead 0\n"
        assert sorted(receiver.ids) == ids and set(receiver.ids.values()) == {1}
        assert receiver.connections == 1  # kept alive from one record to the next


@pytest.mark.parametrize(("size", "connections"), [(100, 1), (70000, 3)], ids=["short-answer", "long-answer"])
def test_a_connection_is_kept_once_its_answer_was_read_whole(root: PanelRoot, size: int, connections: int) -> None:
    """An answer's body is read to keep the connection, up to 64 KiB: past that the
    connection is closed and the next attempt opens another."""
    from services import Receiver

    with Receiver() as receiver:
        receiver.answer = b"x" * size
        configure(root, f"[notify.crm]\ndriver = http\nurl = {receiver.url}\n")
        ids = spooled(root, 3)
        assert root.mgrhooks("worker --once").stdout == "delivered 3, to retry 0, dead 0\n"
        assert sorted(receiver.ids) == ids and receiver.connections == connections


def test_each_attempt_of_a_pass_has_its_own_notifiers_timeout(root: PanelRoot) -> None:
    """A pass tries a notifier with a long timeout, then one with a short timeout whose
    receiver drips its answer: that attempt ends at its own timeout, not the first's."""
    from services import Receiver

    from mgrhooks import Root
    from mgrhooks.delivery import spool_of

    peer = Peer(drip)
    try:
        with Receiver() as receiver:
            configure(
                root,
                f"[notify.crm]\ndriver = http\nurl = {receiver.url}\ntimeout = 30\n\n"
                f"[notify.slow]\ndriver = http\nurl = http://127.0.0.1:{peer.port}/hook\ntimeout = 1\n",
            )
            spool = spool_of(Root.open(root.path))
            spool.add("r00", "user.add", "{}", ["crm"], now=time.time() - 2)
            spool.add("r01", "user.add", "{}", ["slow"], now=time.time() - 1)
            started = time.monotonic()
            assert root.mgrhooks("worker --once").stdout == "delivered 1, to retry 1, dead 0\n"
            took = time.monotonic() - started
        (line,) = queue(root)
        assert (
            f"r01 slow pending attempts=1 user.add  no answer from http://127.0.0.1:{peer.port}/hook within 1s" in line
        )
        assert took < 15, took  # far below the first attempt's 30 s
    finally:
        peer.close()


def test_a_kept_connection_the_receiver_closed_is_replaced_within_the_attempt(root: PanelRoot) -> None:
    """A receiver that answers as if it kept the connection, then closes it: the next
    attempt finds it closed, and sends on a new one, with no failed attempt."""
    peer = Peer(lambda conn: conn.sendall(b"HTTP/1.1 200 OK\r\nContent-Length: 0\r\n\r\n"))
    try:
        configure(root, f"[notify.crm]\ndriver = http\nurl = http://127.0.0.1:{peer.port}/hook\nattempts = 1\n")
        ids = spooled(root, 3)
        assert root.mgrhooks("worker --once").stdout == "delivered 3, to retry 0, dead 0\n"
        assert [request.split(b"X-Mgrhooks-Id: ")[1][:3].decode() for request in peer.requests] == ids
    finally:
        peer.close()


def test_an_interrupted_pass_records_what_it_sent_and_gives_back_the_rest(root: PanelRoot, endpoint: Endpoint) -> None:
    endpoint.delays = {"r02": 30.0}  # held while the worker is interrupted
    endpoint.start()
    configure(root, f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\ntimeout = 20\n")
    ids = spooled(root, 5)
    worker = subprocess.Popen(root.argv("worker", "--once"), stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    deadline = time.monotonic() + 30
    while len(endpoint.bodies) < 3 and time.monotonic() < deadline:
        time.sleep(0.02)
    assert [body["id"] for _, body in endpoint.bodies] == ids[:3]
    worker.send_signal(signal.SIGINT)
    assert worker.wait(30) == 130
    pending = [line.split() for line in queue(root)]
    assert [(fields[0], fields[2], fields[3]) for fields in pending] == [
        (record_id, "pending", "attempts=0") for record_id in ids[2:]
    ]  # r00 and r01 recorded as delivered; r02 (interrupted) and the rest given back, not counted
    endpoint.delays = {}
    assert root.mgrhooks("worker --once").stdout == "delivered 3, to retry 0, dead 0\n"  # at once, no lease to wait for
    assert [body["id"] for _, body in endpoint.bodies] == [*ids[:3], *ids[2:]]  # r02 twice: at least once


def test_a_pass_slowed_down_gives_back_the_rest_of_its_batch_before_its_lease_runs_out(
    root: PanelRoot, endpoint: Endpoint
) -> None:
    """The first record is quick, so the pass claims the other nine at once; then each takes
    0.9 s. It must stop trying them while an attempt can still end within the lease (1 + 5
    s): a second worker then takes the rest, and nothing is sent twice."""
    endpoint.delay = 0.9
    endpoint.delays = {"r00": 0.0}
    endpoint.start()
    configure(root, f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\ntimeout = 1.5\n")
    ids = spooled(root, 10)
    first = subprocess.Popen(root.argv("worker", "--once"), stdout=subprocess.PIPE, text=True)
    while len(endpoint.bodies) < 2 and first.poll() is None:
        time.sleep(0.02)
    second = subprocess.Popen(root.argv("worker", "--interval", "0.1"), stdout=subprocess.DEVNULL)
    try:
        deadline = time.monotonic() + 60
        while len(endpoint.bodies) < 10 and time.monotonic() < deadline:
            time.sleep(0.1)
        assert first.communicate(timeout=30)[0].startswith("delivered ")
        time.sleep(2.0)  # anything sent twice would arrive by now
    finally:
        second.kill()
        second.wait()
    assert sorted(body["id"] for _, body in endpoint.bodies) == ids  # each once
    assert queue(root) == []
    assert "lease ran out" not in root.log()


def test_a_spool_that_cannot_be_opened_is_named_by_its_transactions_when_kept(tmp_path: Path) -> None:
    (tmp_path / "spool.db").mkdir()
    with Spool(tmp_path / "spool.db").kept() as kept, pytest.raises(RootError) as caught:
        kept.claim(now=100.0, lease=10)
    assert str(caught.value).startswith(f"cannot use the database {tmp_path / 'spool.db'}: ")


def test_a_batch_is_settled_at_once_and_what_was_not_tried_goes_back(tmp_path: Path) -> None:
    spool = Spool(tmp_path / "spool.db")
    for name in ("r1", "r2", "r3"):
        spool.add(name, "user.add", "{}", ["a"], now=100.0)
    one, two, three = spool.claim(now=100.0, lease=10)
    with spool.kept() as kept:
        assert kept.settle([Outcome(one, "delivered", one.due), Outcome(two, "pending", 150.0, "down")], [three]) == [
            True,
            True,
        ]
        (again,) = kept.claim(now=101.0, lease=10)  # the untried one at once, not after the lease
    assert (again.record, again.attempts, again.error) == ("r3", 0, "")
    assert spool.settle([Outcome(three, "dead", 0.0, "late")], unused=[three]) == [False]  # the old claim: nothing
    assert spool.claim(now=102.0, lease=10) == []  # r3 still the new claim's, r2 not due
    assert [(d.record, d.state, d.attempts, d.error) for d in spool.list(("delivered", "pending", "dead"))] == [
        ("r1", "delivered", 1, ""),
        ("r3", "pending", 0, ""),
        ("r2", "pending", 1, "down"),
    ]


def test_a_worker_paused_past_its_lease_cannot_overwrite_the_next_ones_outcome(
    root: PanelRoot, endpoint: Endpoint
) -> None:
    import sqlite3

    endpoint.delays = {"r00": 0.5}
    endpoint.start()
    configure(root, f"[notify.crm]\ndriver = http\nurl = {endpoint.url}\ntimeout = 1\n")
    spooled(root, 1)
    paused = subprocess.Popen(root.argv("worker", "--once"), stdout=subprocess.PIPE, text=True)
    try:
        while not endpoint.bodies and paused.poll() is None:
            time.sleep(0.01)
        paused.send_signal(signal.SIGSTOP)  # mid-attempt
        time.sleep(1 + LEASE_MARGIN + 0.5)  # its lease runs out
        endpoint.delays = {}
        assert root.mgrhooks("worker --once").stdout == "delivered 1, to retry 0, dead 0\n"
    finally:
        paused.send_signal(signal.SIGCONT)
    assert paused.communicate(timeout=30)[0] == "delivered 0, to retry 0, dead 0\n"
    assert "r00' to crm: the lease ran out during the attempt and another worker holds it" in root.log()
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        assert db.execute("SELECT state, attempts, error FROM deliveries").fetchall() == [("delivered", 1, "")]


def test_a_delivery_whose_notifier_is_gone_is_dead_at_once(root: PanelRoot) -> None:
    configure(root, "[notify.audit]\ndriver = log\n")
    spooled(root, 1, notifier="crm")
    assert root.mgrhooks("worker --once").stdout == "delivered 0, to retry 0, dead 1\n"
    (line,) = queue(root, "list", "--dead")
    assert "r00 crm dead attempts=1 user.add  no such notifier in etc/mgrhooks.conf" in line


def test_an_old_spool_that_cannot_be_read_is_kept_and_the_pass_goes_on(root: PanelRoot) -> None:
    old = root.path / "var/billmgr.spool.db"
    old.write_bytes(b"not a database, and long enough to have a header" * 4)
    configure(root, "[notify.audit]\ndriver = log\n")
    spooled(root, 1, notifier="audit")
    result = root.mgrhooks("worker --once")
    assert (result.returncode, result.stdout) == (0, "delivered 1, to retry 0, dead 0\n")
    assert f"cannot take over {old}: " in root.log()
    assert old.exists()  # for the next pass, or a look by hand


def test_a_pass_purges_what_was_delivered_more_than_spool_days_ago(root: PanelRoot) -> None:
    import sqlite3

    configure(root, "[notify.audit]\ndriver = log\n\n[spool]\ndays = 2\n")
    spooled(root, 2, notifier="audit")
    assert root.mgrhooks("worker --once").stdout == "delivered 2, to retry 0, dead 0\n"
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        db.execute("UPDATE deliveries SET done = ? WHERE record = 'r00'", (time.time() - 3 * 86400,))
    assert root.mgrhooks("worker --once").stdout == "delivered 0, to retry 0, dead 0\n"
    assert "purged 1 delivery(ies) done more than 2 day(s) ago" in root.log()
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        assert db.execute("SELECT id FROM records").fetchall() == [("r01",)]


# --- records of other main logic, and failures that never fail the call ------------------


def log_records(root: PanelRoot) -> list[dict[str, object]]:
    path = root.path / "var/billmgr.events.jsonl"
    return [json.loads(line) for line in path.read_text().splitlines()] if path.exists() else []


def test_an_addon_functions_change_gets_its_record_written_after_it(root: PanelRoot) -> None:
    configure(root, "[notify.audit]\ndriver = log\n")
    root.plugin("pets", '<mgrdata><handler name="pets.sh" type="xml"><func name="pet.add"/></handler></mgrdata>')
    root.addon("pets.sh", '#!/bin/sh\nsed "s|^</doc>|<id>$PARAM_name</id><ok/>\\n</doc>|"\n')
    assert root.mgrhooks("exec", "pet.add", "name=rex", "sok=ok").returncode == 0
    assert root.mgrhooks("exec", "pet.add", "name=tom").returncode == 0  # a form shown: no change, no record
    (event,) = log_records(root)
    assert (event["event"], event["objects"], event["result"]) == (
        "pet.add",
        [{"type": "pet", "id": "rex", "seq": 1}],
        {"status": "ok", "id": "rex"},
    )


def test_a_call_a_before_handler_answered_with_skipaction_gets_its_record(root: PanelRoot) -> None:
    configure(root, "[notify.audit]\ndriver = log\n")
    root.handler(
        "skip.sh", "#!/bin/sh\necho '<doc><skipaction/><ok/></doc>'\n", '<event name="user.add" before="yes"/>'
    )
    assert root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok").returncode == 0
    (event,) = log_records(root)
    assert (event["event"], event["result"]["status"]) == ("user.add", "ok")  # the handler made the change


def test_an_intent_that_cannot_be_written_is_logged_and_the_call_still_succeeds(root: PanelRoot) -> None:
    configure(root, "[notify.audit]\ndriver = log\n")
    root.plugin("pets", '<mgrdata><handler name="pets.sh" type="xml"><func name="pet.add"/></handler></mgrdata>')
    root.addon("pets.sh", '#!/bin/sh\nsed "s|^</doc>|<ok/>\\n</doc>|"\n')
    (root.path / "var/billmgr.db").mkdir()  # the spool cannot be opened
    result = root.mgrhooks("exec", "pet.add", "name=rex", "sok=ok", "--out", "text")
    assert (result.returncode, result.stdout) == (0, "OK\n")
    assert "event record of 'pet.add' could not be spooled, so it is lost: cannot use the database" in root.log()


def test_a_completion_that_fails_leaves_the_intent_and_never_fails_the_call(root: PanelRoot) -> None:
    """An after-handler makes the spool unusable once the intent is written: the call
    succeeds, the log says the record is left as an intent and the inline delivery failed."""
    configure(root, "[notify.audit]\ndriver = log\n")
    root.plugin("pets", '<mgrdata><handler name="pets.sh" type="xml"><func name="pet.add"/></handler></mgrdata>')
    root.addon("pets.sh", '#!/bin/sh\nsed "s|^</doc>|<ok/>\\n</doc>|"\n')
    root.handler(
        "spoil.sh",
        "#!/bin/sh\nrm -f var/billmgr.db-wal var/billmgr.db-shm\nmv var/billmgr.db var/billmgr.db.kept\n"
        "mkdir var/billmgr.db\ncat\n",
        '<event name="pet.add" after="yes"/>',
    )
    result = root.mgrhooks("exec", "pet.add", "name=rex", "sok=ok", "--out", "text")
    assert (result.returncode, result.stdout) == (0, "OK\n")
    log = root.log()
    assert "event record of 'pet.add' left as an intent (recovered later): cannot use the database" in log
    assert "inline delivery of '" in log and "(the worker will)" in log
    assert log_records(root) == []
