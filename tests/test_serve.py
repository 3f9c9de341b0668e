"""`mgrhooks serve`: a real server process on 127.0.0.1 (a free port) in a temporary root,
real HTTP clients from the standard library, real handler scripts, real logins (root's
password set by `mgrhooks passwd root --stdin`)."""

from __future__ import annotations

import contextlib
import http.client
import json
import os
import re
import signal
import socket
import ssl
import threading
import time
from pathlib import Path
from urllib.parse import urlencode

import pytest

from conftest import PYTHON_SHEBANG, PanelRoot
from mgrhooks import Request
from mgrhooks.core import BuiltinCore
from mgrhooks.env import Facts, call_environment
from mgrhooks.errors import RootError
from mgrhooks.render import FORMATS
from mgrhooks.settings import Serve, load_settings
from mgrhooks.xmldoc import new_doc
from serving import ROOT, Served, serving


def conf(root: PanelRoot, text: str) -> None:
    (root.path / "etc/mgrhooks.conf").write_text(text)


def marked(marker: str) -> list[int]:
    """The processes whose environment holds ``marker`` (a random value of this test)."""
    found = []
    for entry in os.listdir("/proc"):
        if entry.isdigit():
            with contextlib.suppress(OSError):
                if marker.encode() in Path(f"/proc/{entry}/environ").read_bytes():
                    found.append(int(entry))
    return found


def wait_for(condition: object, seconds: float = 30) -> None:
    ends = time.monotonic() + seconds
    while not condition():  # type: ignore[operator]
        assert time.monotonic() < ends, "never happened"
        time.sleep(0.05)


def hanging(root: PanelRoot, func: str, timeout: str = "60") -> None:
    """A before-handler of ``func`` that sleeps (a child sleeping too), until killed."""
    script = "#!/bin/sh\nsleep 300 &\nsleep 300\n"
    root.handler("hang.sh", script, f'<event name="{func}" before="yes"/>', attrs=f'timeout="{timeout}"')


def in_thread(served: Served, query: str) -> tuple[threading.Thread, list[object]]:
    """``query`` sent from a thread; what came back (or the exception) in the list."""
    got: list[object] = []

    def ask() -> None:
        try:
            got.append(served.request(query))
        except Exception as exc:
            got.append(exc)

    thread = threading.Thread(target=ask, daemon=True)
    thread.start()
    return thread, got


# --- settings, environment, core: pure --------------------------------------------------


def test_serve_settings_defaults_and_values(tmp_path: Path) -> None:
    path = tmp_path / "mgrhooks.conf"
    path.write_text("[handlers]\ntimeout = 5\n")
    assert load_settings(path).serve == Serve()
    assert Serve().listen == "0.0.0.0:1500" and Serve().session_idle == 3600.0
    path.write_text(
        "[serve]\nlisten = [::1]:8443\ncert = etc/c.pem\nkey = etc/k.pem\nmax_body = 1M\nconcurrency = 4\n"
        "queue_wait = 0.5\nretry_after = 2\nread_timeout = 10\ngrace = 3\n"
        "trusted_proxies = 127.0.0.1 10.0.0.0/8 unix\nsession_idle = 600\n"
    )
    assert load_settings(path).serve == Serve(
        "[::1]:8443",
        "etc/c.pem",
        "etc/k.pem",
        1024 * 1024,
        4,
        0.5,
        2.0,
        10.0,
        3.0,
        ("127.0.0.1", "10.0.0.0/8", "unix"),
        600.0,
    )


@pytest.mark.parametrize(
    ("text", "message"),
    [
        ("[serve]\nlisten = 1500\n", "line 2: [serve] listen: expected HOST:PORT with a port 0-65535, got '1500'"),
        ("[serve]\n\nmax_body = lots\n", "line 3: [serve] max_body: expected bytes > 0 (like 64M), got 'lots'"),
        ("[serve]\nconcurrency = 0\n", "line 2: [serve] concurrency: expected a whole number from 1 to 1024, got '0'"),
        ("[serve]\ngrace = -1\n", "line 2: [serve] grace: expected seconds > 0, got '-1'"),
        (
            "[serve]\ntrusted_proxies = 127.0.0.1 nginx\n",
            "line 2: [serve] trusted_proxies: expected addresses or networks (or unix), got 'nginx'",
        ),
        ("[serve]\ncert = etc/c.pem\n", "line 1: [serve] key: cert and key go together (give both, or neither)"),
        ("[serve]\nport = 1\n", "line 2: [serve] unknown key(s) port; known:"),
    ],
)
def test_bad_serve_settings_name_file_line_and_key(tmp_path: Path, text: str, message: str) -> None:
    path = tmp_path / "mgrhooks.conf"
    path.write_text(text)
    with pytest.raises(RootError) as info:
        load_settings(path)
    assert str(info.value).startswith(f"{path}: {message}")


def test_the_requests_variables_never_replace_the_protocols() -> None:
    request = Request("user", (("name", "a"),), user="alice", level=16, call_id="c")
    given = {"REMOTE_ADDR": "192.0.2.1", "AUTH_USER": "root", "QUERY_STRING": "func=x", "PARAM_name": "b"}
    env = call_environment({}, request, Facts("billmgr", "/r", "1"), request_env=given)
    assert env["REMOTE_ADDR"] == "192.0.2.1"
    assert (env["AUTH_USER"], env["QUERY_STRING"], env["PARAM_name"]) == ("alice", "func=user&name=a", "a")


def test_the_builtin_core_keeps_nothing_of_a_call(tmp_path: Path) -> None:
    """One core serves calls in several threads: a call's password hash (made outside the
    write lock) goes with that call, not onto the shared core (nor its password)."""
    core = BuiltinCore(tmp_path / "x.db")
    before = dict(vars(core))
    core.action(Request("user.add", (("name", "bob"), ("passwd", "hunter2"), ("sok", "ok"))), new_doc("user.add"))
    assert vars(core) == before
    assert "hunter2" not in repr(vars(core))


# --- the server ---------------------------------------------------------------------------


def test_https_with_the_certificate_made_on_first_start(root: PanelRoot) -> None:
    with serving(root) as served:
        assert re.fullmatch(
            r"mgrhooks serve: https://127\.0\.0\.1:\d+/billmgr \(SIGTERM stops it, 30s grace\)\n", served.startup
        )
        for name in ("etc/mgrhooks.crt", "etc/mgrhooks.key"):
            assert (root.path / name).stat().st_mode & 0o777 == 0o600
        status, headers, body = served.request(f"func=user&out=json&{ROOT}")  # verified against the certificate
        assert (status, headers["Content-Type"]) == (200, "application/json; charset=UTF-8")
        assert body == b'{"doc": {"$func": "user", "$lang": "en", "$binary": "/billmgr"}}\n'
        unverified = http.client.HTTPSConnection("127.0.0.1", served.port, timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):  # not trusted without it
            unverified.request("GET", "/billmgr")
        unverified.close()
    cert = (root.path / "etc/mgrhooks.crt").read_bytes()
    with serving(root):  # made once: kept on the next start
        assert (root.path / "etc/mgrhooks.crt").read_bytes() == cert


def test_the_certificate_named_in_the_settings(root: PanelRoot, tmp_path: Path) -> None:
    from mgrhooks.http.tls import make_pair

    make_pair(root.path / "etc/own.crt", root.path / "etc/own.key", "panel.example")
    conf(root, "[serve]\ncert = etc/own.crt\nkey = etc/own.key\n")
    with serving(root) as served:
        assert not (root.path / "etc/mgrhooks.crt").exists()
        context = ssl.create_default_context(cafile=str(root.path / "etc/own.crt"))
        connection = http.client.HTTPSConnection("127.0.0.1", served.port, timeout=10, context=context)
        connection.request("GET", f"/billmgr?func=user&{ROOT}")
        assert connection.getresponse().status == 200
        connection.close()


def test_plain_http_get_and_post_on_both_paths(root: PanelRoot) -> None:
    with serving(root, "--http") as served:
        assert served.startup.startswith("mgrhooks serve: http://127.0.0.1:")
        body = urlencode({"func": "user.add", "name": "bob", "passwd": "x y&z", "sok": "ok", "authinfo": "root:secret"})
        added = served.call("", method="POST", body=body.encode(), path="/manager/billmgr")
        assert b"<ok/><id>bob</id>" in added
        assert served.call(f"func=user&out=text&{ROOT}") == b"name=bob level=16 state=active\n"
        # an error is a document in a 200 answer, as the panel answers
        status, _, error = served.request(f"func=no.such&out=text&{ROOT}")
        assert status == 200 and error.startswith(b"ERROR ")
    assert not (root.path / "etc/mgrhooks.crt").exists()  # no certificate made for --http


def test_a_unix_socket(root: PanelRoot, tmp_path: Path) -> None:
    path = str(tmp_path / "serve.sock")
    with serving(root, "--http", "--uds", path) as served:
        assert served.startup.startswith(f"mgrhooks serve: http+unix://{path}:/billmgr")
        assert served.call(f"func=user&out=json&{ROOT}").startswith(b'{"doc"')


def test_what_is_not_a_call_gets_an_http_status(root: PanelRoot) -> None:
    conf(root, "[serve]\nmax_body = 64\n")
    with serving(root, "--http") as served:
        assert served.request("func=user", path="/ispmgr")[0] == 404
        status, headers, _ = served.request("func=user", method="PUT")
        assert (status, headers["Allow"]) == (405, "GET, POST")
        assert served.request("", method="POST", body=b"func=user&x=" + b"a" * 100)[0] == 413
        connection = served.connection()  # a chunked body, no length declared
        connection.request("POST", "/billmgr", body=iter([b"func=user&x=", b"a" * 100]), encode_chunked=True)
        assert connection.getresponse().status == 413
        connection.close()
        status, _, body = served.request(f"func=user&out=bjson&{ROOT}")
        assert (status, body) == (400, b"unknown out 'bjson': one of xml, devel, json, sjson, text\n")
        multipart = {"Content-Type": "multipart/form-data; boundary=x"}
        assert served.request("", method="POST", body=b"--x--", headers=multipart)[0] == 400
        assert served.request(f"func=user&{ROOT}")[0] == 200  # the server goes on
        conf(root, "[handlers]\ntimeout = soon\n")  # broken after the start: the root cannot be used
        status, _, body = served.request(f"func=user&{ROOT}")
        assert status == 500 and body.startswith(b"the panel cannot answer: ") and b"line 2" in body


def test_slow_clients_are_cut_off(root: PanelRoot) -> None:
    conf(root, "[serve]\nread_timeout = 1\n")
    with serving(root, "--http") as served:
        with socket.create_connection(("127.0.0.1", served.port), timeout=20) as head:  # a head that never ends
            head.sendall(b"GET /billmgr?func=user HTTP/1.1\r\nHost: x\r\n")
            assert head.recv(100) == b""  # closed
        with socket.create_connection(("127.0.0.1", served.port), timeout=20) as body:  # a body that never comes
            body.sendall(b"POST /billmgr HTTP/1.1\r\nHost: x\r\nContent-Length: 10\r\n\r\nfunc")
            answer = b"".join(iter(lambda: body.recv(1000), b""))
            assert answer.startswith(b"HTTP/1.1 408 ") and answer.endswith(b"the request body was not read within 1s\n")
        with socket.create_connection(("127.0.0.1", served.port), timeout=20) as idle:  # nothing at all
            assert idle.recv(100) == b""
        assert served.call(f"func=user&{ROOT}")


@pytest.mark.parametrize("fmt", FORMATS)
def test_each_out_is_the_bytes_of_exec(root: PanelRoot, fmt: str) -> None:
    assert root.mgrhooks("exec", "user.add", "name=bob", "passwd=x", "sok=ok").returncode == 0
    expected = root.mgrhooks("exec", "user", "--out", fmt, "p_cnt=5")
    error = root.mgrhooks("exec", "user.delete", "--out", fmt, "elid=nobody")
    with serving(root, "--http") as served:
        status, headers, body = served.request(f"func=user&p_cnt=5&out={fmt}&{ROOT}")
        assert body.decode() == expected.stdout
        kind = {"json": "application/json", "sjson": "application/json", "text": "text/plain"}.get(fmt, "text/xml")
        assert headers["Content-Type"] == f"{kind}; charset=UTF-8"
        assert served.call(f"func=user.delete&elid=nobody&out={fmt}&{ROOT}").decode() == error.stdout


def test_handlers_see_the_requests_cgi_variables(root: PanelRoot) -> None:
    root.handler("seen.sh", "#!/bin/sh\nenv > var/env.seen\ncat\n", '<event name="desktop" before="yes"/>')
    headers = {
        "Cookie": "billmgrses5=KEY; billmgrlang5=dragon:en",
        "User-Agent": "probe/1",
        "X-Forwarded-For": "6.6.6.6",
    }

    def seen() -> dict[str, str]:
        lines = (root.path / "var/env.seen").read_text().splitlines()
        return dict(line.split("=", 1) for line in lines if "=" in line)

    assert root.mgrhooks("exec", "user.add", "name=alice", "passwd=pw", "sok=ok").returncode == 0
    with serving(root) as served:
        served.call("func=desktop&authinfo=alice:pw", headers=headers)
    env = seen()
    assert {k: env.get(k) for k in ("REMOTE_ADDR", "REQUEST_METHOD", "HTTP_COOKIE", "HTTP_USER_AGENT")} == {
        "REMOTE_ADDR": "127.0.0.1",
        "REQUEST_METHOD": "GET",
        "HTTP_COOKIE": "billmgrses5=KEY; billmgrlang5=dragon:en",
        "HTTP_USER_AGENT": "probe/1",
    }
    assert "HTTP_X_FORWARDED_FOR" not in env  # from an untrusted peer
    assert (env["SERVER_NAME"], env["SERVER_PORT"], env["HTTPS"]) == ("127.0.0.1", str(served.port), "on")
    assert (env["AUTH_USER"], env["AUTH_LEVEL"]) == ("alice", "16")
    assert "authinfo" not in env["QUERY_STRING"]

    conf(root, "[serve]\ntrusted_proxies = 127.0.0.1\n")
    with serving(root, "--http") as served:
        served.call(f"func=desktop&{ROOT}", method="POST", body=b"x=1", headers=headers)
    env = seen()
    assert (env["REMOTE_ADDR"], env["HTTP_X_FORWARDED_FOR"], env["AUTH_USER"]) == ("6.6.6.6", "6.6.6.6", "root")
    assert "HTTPS" not in env
    # the handler reads its parameters as the protocol gives them: GET, QUERY_STRING
    assert (env["REQUEST_METHOD"], env["QUERY_STRING"]) == ("GET", "func=desktop&x=1")


def test_handlers_inherit_no_descriptor_of_the_server(root: PanelRoot) -> None:
    """Served handlers start through posix_spawn, the server's descriptors not sealed: the
    child closes them itself. A handler sees its stdin, stdout and stderr only: no
    listening socket, client connection, log or database, and not what the server itself
    inherited (here a pipe, as a service manager passes descriptors)."""
    lister = (
        f"{PYTHON_SHEBANG}import os, sys\n"
        "links = {}\n"
        "for name in os.listdir('/proc/self/fd'):\n"
        "    try:\n"
        "        links[int(name)] = os.readlink(f'/proc/self/fd/{name}')\n"
        "    except OSError:\n"
        "        pass  # the directory listdir had open, closed since\n"
        "open('var/fds.seen', 'w').write(repr(links))\n"
        "sys.stdout.write(sys.stdin.read())\n"
    )
    root.handler("fds.py", lister, '<event name="desktop" before="yes"/>')
    inherited, other_end = os.pipe()
    os.set_inheritable(inherited, True)
    with serving(root, "--http", pass_fds=(inherited,)) as served:
        os.close(inherited)
        os.close(other_end)
        held = served.connection()  # another client's connection, open meanwhile
        held.connect()
        try:
            for _ in range(2):  # a fresh call's processes, then an ended call's taken again
                answer = served.call(f"func=desktop&{ROOT}")
                assert b"<doc" in answer and b"error" not in answer, answer
                links = eval((root.path / "var/fds.seen").read_text())  # noqa: S307 (our own repr)
                assert sorted(links) == [0, 1, 2], links
                assert not any("socket" in link for link in links.values()), links
        finally:
            held.close()


def test_a_call_without_credentials_runs_nothing(root: PanelRoot) -> None:
    root.handler("ran.sh", "#!/bin/sh\ntouch var/ran\ncat\n", '<event name="desktop" before="yes"/>')
    with serving(root, "--http") as served:
        for query in ("func=desktop", "func=desktop&authinfo=root:wrong", "func=desktop&auth=nosuchsession"):
            body = served.call(query)
            assert b'<error type="auth"' in body
        status, headers, body = served.request("func=auth&username=root&password=secret&out=json")
        key = json.loads(body)["doc"]["auth"]["$id"]
        assert status == 200 and f"billmgrses5={key}" in headers["Set-Cookie"]
        for given in (
            {"query": f"func=user&out=text&auth={key}"},
            {"query": "func=user&out=text", "headers": {"Cookie": f"billmgrses5={key}"}},
        ):
            assert served.call(**given) == b""  # (no users yet: an empty list, no error)
        whoami = served.call(f"func=whoami&out=json&auth={key}")
        assert json.loads(whoami)["doc"]["user"] == {"name": {"$": "root"}, "level": {"$": "30"}}
    assert not (root.path / "var/ran").exists()


def test_an_edited_plugin_file_takes_effect_on_the_next_request(root: PanelRoot) -> None:
    for name in ("one", "two"):
        root.addon(f"{name}.sh", f"#!/bin/sh\nsed 's|</doc>|<seen>{name}</seen></doc>|'\n")
    plugin = '<mgrdata><handler name="{}.sh" type="xml"><event name="desktop" after="yes"/></handler></mgrdata>'
    root.plugin("seen", plugin.format("one"))
    with serving(root, "--http") as served:
        assert b"<seen>one</seen>" in served.call(f"func=desktop&{ROOT}")
        root.plugin("seen", plugin.format("two"))
        second = served.call(f"func=desktop&{ROOT}")
        assert b"<seen>two</seen>" in second and b"one" not in second


def test_a_hanging_handler_holds_only_its_own_request(root: PanelRoot) -> None:
    marker = os.urandom(8).hex()
    hanging(root, "user.suspend")
    conf(root, "[serve]\ngrace = 1\n")
    with serving(root, "--http") as served:
        thread, got = in_thread(served, f"func=user.suspend&elid=x&marker={marker}&{ROOT}")
        wait_for(lambda: marked(marker))
        assert served.call(f"func=user&out=text&{ROOT}") == b""  # answered while the other hangs
        assert thread.is_alive() and not got


def test_over_the_limit_a_call_waits_then_gets_503_with_retry_after(root: PanelRoot) -> None:
    marker = os.urandom(8).hex()
    hanging(root, "user.suspend")
    conf(root, "[serve]\nconcurrency = 1\nqueue_wait = 0.2\nretry_after = 3\ngrace = 1\n")
    with serving(root, "--http") as served:
        in_thread(served, f"func=user.suspend&elid=x&marker={marker}&{ROOT}")
        wait_for(lambda: marked(marker))
        status, headers, body = served.request(f"func=user&{ROOT}")
        assert (status, headers["Retry-After"], body) == (503, "3", b"too many calls at once: try again later\n")


def test_a_client_that_goes_away_leaves_no_handler_past_its_timeout(root: PanelRoot) -> None:
    marker = os.urandom(8).hex()
    hanging(root, "user.suspend", timeout="1")
    with serving(root, "--http") as served:
        connection = served.connection()
        connection.request("GET", f"/billmgr?func=user.suspend&elid=x&marker={marker}&{ROOT}")
        wait_for(lambda: marked(marker))
        connection.close()
        wait_for(lambda: not marked(marker), 15)  # its timeout (1 s) and kill grace
        assert served.call(f"func=user&{ROOT}")


def test_sigterm_lets_a_running_call_finish_within_the_grace(root: PanelRoot) -> None:
    marker = os.urandom(8).hex()
    root.handler("nap.sh", "#!/bin/sh\nsleep 1\ncat\n", '<event name="desktop" before="yes"/>')
    with serving(root, "--http") as served:
        thread, got = in_thread(served, f"func=desktop&marker={marker}&{ROOT}")
        wait_for(lambda: marked(marker))
        served.proc.send_signal(signal.SIGTERM)
        thread.join(30)
        assert served.proc.wait(30) == 0
    status, _, body = got[0]  # type: ignore[misc]
    assert status == 200 and b"<doc" in body and b"error" not in body


def test_sigterm_kills_handler_trees_after_the_grace_and_leaves_nothing(root: PanelRoot) -> None:
    marker = os.urandom(8).hex()
    hanging(root, "user.suspend")
    conf(root, "[serve]\ngrace = 1\n")
    with serving(root, "--http") as served:
        threads = [in_thread(served, f"func=user.suspend&elid={n}&marker={marker}&{ROOT}")[0] for n in range(3)]
        wait_for(lambda: len(marked(marker)) >= 6)  # three handlers, each with its child
        started = time.monotonic()
        served.proc.send_signal(signal.SIGTERM)
        assert served.proc.wait(30) == 0
        assert time.monotonic() - started < 20
        assert marked(marker) == []
        for thread in threads:
            thread.join(10)
    assert "their handlers killed" in root.log()


def test_help_and_a_bad_listen(root: PanelRoot) -> None:
    result = root.mgrhooks("serve", "--help")
    assert result.returncode == 0
    for option in ("--listen HOST:PORT", "--http", "--uds PATH", "--root", "--mgr"):
        assert option in result.stdout
    bad = root.mgrhooks("serve", "--listen", "nowhere")
    assert (bad.returncode, bad.stderr) == (
        2,
        "Error: --listen: expected HOST:PORT with a port 0-65535, got 'nowhere'\n",
    )


def test_a_file_replaced_from_threads_at_once_is_one_of_them_whole(tmp_path: Path) -> None:
    """Calls of one server in several threads rewrite the registry cache at once: each
    writes its own temporary file (one per process was shared by the threads)."""
    from mgrhooks.files import replace

    target = tmp_path / "cache"
    payloads = [bytes([n]) * 1_000_000 for n in range(8)]
    failures: list[BaseException] = []

    def write(data: bytes) -> None:
        try:
            for _ in range(10):
                replace(target, data, 0o600)
        except BaseException as exc:
            failures.append(exc)

    threads = [threading.Thread(target=write, args=(data,)) for data in payloads]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert failures == []
    assert target.read_bytes() in payloads
    assert sorted(p.name for p in tmp_path.iterdir()) == ["cache"]


def test_final_handlers_run_after_the_answer(root: PanelRoot) -> None:
    script = "#!/bin/sh\nsleep 2\ntouch var/final.ran\n"
    root.handler("late.sh", script, '<event name="desktop" final="yes"/>')
    with serving(root, "--http") as served:
        assert b"<doc" in served.call(f"func=desktop&{ROOT}")
        assert not (root.path / "var/final.ran").exists()  # answered before it ended
        wait_for((root.path / "var/final.ran").exists)


def test_calls_side_by_side_each_create_their_user_once_with_their_own_password(root: PanelRoot) -> None:
    names = [f"u{n}" for n in range(24)]
    with serving(root, "--http") as served:
        results: dict[str, bytes] = {}

        def add(name: str) -> None:
            body = urlencode({"func": "user.add", "name": name, "passwd": f"pw-{name}", "sok": "ok"})
            results[name] = served.call(ROOT, method="POST", body=body.encode())

        threads = [threading.Thread(target=add, args=(name,)) for name in names]
        for thread in threads:
            thread.start()
        for thread in threads:
            thread.join(120)
        assert all(b"<ok/>" in results[name] for name in names)
        listed = served.call(f"func=user&out=text&{ROOT}").decode().splitlines()
        assert sorted(line.split()[0] for line in listed) == sorted(f"name={name}" for name in names)
        for name in names[:4]:  # each logs in with its own password, not a neighbour's
            assert b'"auth"' in served.call(f"func=auth&username={name}&password=pw-{name}&out=json")
            assert b'type="auth"' in served.call(
                f"func=whoami&authinfo={name}:pw-{names[0 if name != names[0] else 1]}"
            )
