"""The HTTP API's Gate (mgrhooks.http.auth) against a real root and the built-in core's
users, its session store, the failed-login slowdown, and ``mgrhooks passwd``."""

from __future__ import annotations

import json
import os
import sqlite3
import stat
import subprocess
from pathlib import Path

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from lxml import etree

from conftest import PanelRoot
from mgrhooks import core
from mgrhooks.api import Panel
from mgrhooks.core import BuiltinCore
from mgrhooks.http import auth, throttle
from mgrhooks.http.auth import Account, Allowed, Answered, Asked, Caller, CoreUsers, Gate, set_password
from mgrhooks.http.sessions import Store, store_file
from mgrhooks.render import render
from mgrhooks.secret import is_secret
from mgrhooks.xmldoc import Element

ADDRESS = "192.0.2.10"
OTHER = "198.51.100.7"
IDLE = 3600.0


class Clock:
    """A clock the test moves."""

    def __init__(self) -> None:
        self.now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


@pytest.fixture
def panel(root: PanelRoot) -> Panel:
    """The root with users made through the built-in core: alice (user), adam (admin),
    ada (a second admin), sam (suspended)."""
    panel = Panel(root.path)
    for name, level in (("alice", 16), ("adam", 29), ("ada", 29), ("sam", 16)):
        response = panel.call("user.add", {"name": name, "passwd": f"pw-{name}", "level": str(level), "sok": "ok"})
        assert not response.error
    assert not panel.call("user.suspend", {"elid": "sam"}).error
    return panel


@pytest.fixture
def clock() -> Clock:
    return Clock()


@pytest.fixture
def gate(panel: Panel, clock: Clock) -> Gate:
    return make_gate(panel, clock)


def make_gate(panel: Panel, clock: Clock) -> Gate:
    return Gate(panel.root, CoreUsers(BuiltinCore(panel.root.db_file)), session_idle=IDLE, clock=clock)


def ask(func: str, *params: tuple[str, str], cookies: dict[str, str] | None = None, address: str = ADDRESS) -> Asked:
    return Asked(func, tuple(params), cookies or {}, address, "billmgr")


def answered(result: Allowed | Answered) -> Answered:
    assert isinstance(result, Answered), result
    return result


def allowed(result: Allowed | Answered) -> Allowed:
    assert isinstance(result, Allowed), result if isinstance(result, Allowed) else xml(result.doc)
    return result


def xml(doc: Element) -> str:
    return etree.tostring(doc, encoding="unicode")


def error(result: Allowed | Answered) -> dict[str, str]:
    """The <error>'s attributes and message of an Answered."""
    found = answered(result).doc.find("error")
    assert found is not None, xml(answered(result).doc)
    return {**found.attrib, "msg": found.findtext("msg") or ""}


def login(gate: Gate, user: str, password: str, address: str = ADDRESS) -> str:
    """The session key ``func=auth`` gives."""
    result = answered(gate.decide(ask("auth", ("username", user), ("password", password), address=address)))
    found = result.doc.find("auth")
    assert found is not None, xml(result.doc)
    return found.get("id", "")


def log(panel: Panel) -> str:
    path = panel.root.log_file
    return path.read_text() if path.exists() else ""


# --- authinfo ------------------------------------------------------------------------


def test_authinfo_runs_the_call_as_the_user_at_their_level_without_the_consumed_parameters(gate: Gate) -> None:
    params = [("authinfo", "alice:pw-alice"), ("elid", "7"), ("username", "u"), ("password", "p")]
    params += [("key", "k"), ("auth", "a"), ("sok", "ok"), ("elid", "8")]
    result = allowed(gate.decide(ask("domain.edit", *params)))
    assert result == Allowed(Caller("alice", 16), (("elid", "7"), ("sok", "ok"), ("elid", "8")))


def test_authinfo_with_a_password_containing_colons(panel: Panel, gate: Gate) -> None:
    assert not panel.call("user.edit", {"elid": "alice", "passwd": "a:b:c", "sok": "ok"}).error
    assert allowed(gate.decide(ask("user", ("authinfo", "alice:a:b:c")))).caller == Caller("alice", 16)


@pytest.mark.parametrize(
    ("authinfo", "reason"),
    [
        ("alice:guess-1", "wrong password"),
        ("nobody:pw-alice", "unknown user"),
        ("sam:pw-sam", "user suspended"),
        ("alice", "wrong password"),  # no colon: an empty password
    ],
)
def test_a_failed_authinfo_is_an_auth_error_after_a_delay_and_logged(
    panel: Panel, gate: Gate, authinfo: str, reason: str
) -> None:
    result = answered(gate.decide(ask("user", ("authinfo", authinfo))))
    user = authinfo.partition(":")[0]
    assert error(result) == {
        "type": "auth",
        "object": "authfail",
        "value": user,
        "msg": "Login failed: wrong user name, password or key",
    }
    assert result.delay == 1.0 and result.set_cookies == ()
    line = f"login failed for user '{user}' from {ADDRESS}: {reason} (failure 1 in a row from this address, 1 for"
    assert line in log(panel)
    assert "guess-1" not in log(panel) and "pw-" not in log(panel)


def test_a_call_without_credentials_is_an_auth_error_at_once_and_runs_nothing(gate: Gate) -> None:
    result = answered(gate.decide(ask("user.delete", ("elid", "alice"))))
    assert error(result)["type"] == "auth" and error(result)["object"] == "auth"
    assert result.delay == 0.0 and result.doc.get("func") == "user.delete"


# --- sessions --------------------------------------------------------------------------


def test_func_auth_answers_the_session_key_and_its_cookie(gate: Gate) -> None:
    result = answered(gate.decide(ask("auth", ("username", "adam"), ("password", "pw-adam"))))
    key = result.doc.findtext("auth") or ""
    assert len(key) == 32 and xml(result.doc) == f'<doc><auth id="{key}" level="29">{key}</auth></doc>'
    assert json.loads(render(result.doc, "json")) == {"doc": {"auth": {"$id": key, "$level": "29", "$": key}}}
    assert result.set_cookies == (f"billmgrses5={key}; HttpOnly; Path=/; SameSite=Lax",)
    assert result.delay == 0.0


def test_secure_cookies_when_the_front_says_so(panel: Panel, clock: Clock) -> None:
    gate = Gate(panel.root, CoreUsers(BuiltinCore(panel.root.db_file)), clock=clock, secure_cookies=True)
    result = answered(gate.decide(ask("auth", ("username", "adam"), ("password", "pw-adam"))))
    assert "; Secure" in result.set_cookies[0]


def test_a_session_is_used_by_auth_or_by_its_cookie(gate: Gate) -> None:
    key = login(gate, "alice", "pw-alice")
    by_param = allowed(gate.decide(ask("desktop", ("auth", key), ("out", "json"))))
    assert by_param == Allowed(Caller("alice", 16, key), (("out", "json"),))
    by_cookie = allowed(gate.decide(ask("desktop", cookies={"billmgrses5": key, "other": "x"})))
    assert by_cookie.caller == Caller("alice", 16, key)


def test_an_unknown_session_is_an_auth_error(gate: Gate) -> None:
    for asked in (ask("desktop", ("auth", "0" * 32)), ask("desktop", cookies={"billmgrses5": "nope"})):
        result = answered(gate.decide(asked))
        assert error(result)["object"] == "session" and result.delay == 0.0


def test_a_session_lapses_after_the_idle_time_and_each_call_keeps_it_alive(gate: Gate, clock: Clock) -> None:
    key = login(gate, "alice", "pw-alice")
    for _ in range(3):  # each use restarts the idle time
        clock.now += IDLE - 1
        allowed(gate.decide(ask("desktop", ("auth", key))))
    clock.now += IDLE + 1
    assert error(gate.decide(ask("desktop", ("auth", key))))["msg"] == "Session expired or unknown: log in again"
    clock.now -= IDLE  # gone for good, not merely too old
    assert error(gate.decide(ask("desktop", ("auth", key))))["object"] == "session"


def test_a_session_is_bound_to_its_address(panel: Panel, gate: Gate) -> None:
    key = login(gate, "alice", "pw-alice")
    result = answered(gate.decide(ask("desktop", ("auth", key), address=OTHER)))
    assert error(result) == {
        "type": "auth",
        "object": "session",
        "value": "",
        "msg": "Session bound to another address: log in again",
    }
    assert f"session of 'alice' used from {OTHER} (bound to {ADDRESS}): refused" in log(panel)
    allowed(gate.decide(ask("desktop", ("auth", key))))  # still good from its own


def test_a_session_ends_when_its_user_is_suspended(panel: Panel, gate: Gate) -> None:
    key = login(gate, "alice", "pw-alice")
    assert not panel.call("user.suspend", {"elid": "alice"}).error
    assert error(gate.decide(ask("desktop", ("auth", key))))["object"] == "session"


def test_logout_ends_the_session_and_clears_the_cookie(gate: Gate) -> None:
    key = login(gate, "alice", "pw-alice")
    result = answered(gate.decide(ask("logout", cookies={"billmgrses5": key})))
    assert xml(result.doc) == "<doc><ok/></doc>"
    assert result.set_cookies == ('billmgrses5=""; HttpOnly; Max-Age=0; Path=/; SameSite=Lax',)
    assert error(gate.decide(ask("desktop", ("auth", key))))["object"] == "session"
    assert xml(answered(gate.decide(ask("logout"))).doc) == "<doc><ok/></doc>"  # nothing to end: still ok


def test_sessions_survive_a_restart(panel: Panel, gate: Gate, clock: Clock) -> None:
    key = login(gate, "adam", "pw-adam")
    again = make_gate(panel, clock)
    assert allowed(again.decide(ask("user", ("auth", key)))).caller == Caller("adam", 29, key)


def test_the_store_is_mode_600_and_holds_no_key(panel: Panel, gate: Gate) -> None:
    key = login(gate, "alice", "pw-alice")
    answered(gate.decide(ask("session.newkey", ("authinfo", "adam:pw-adam"), ("username", "alice"), ("key", "k" * 20))))
    path = store_file(panel.root)
    assert path == panel.root.var_dir / "billmgr.sessions.db"
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    stored = b"".join(p.read_bytes() for p in path.parent.glob("billmgr.sessions.db*"))
    assert key.encode() not in stored and b"k" * 20 not in stored
    assert key not in log(panel) and "k" * 20 not in log(panel)


# --- one-time keys ---------------------------------------------------------------------


def newkey(gate: Gate, key: str, user: str = "alice", by: str = "adam:pw-adam") -> Answered:
    return answered(gate.decide(ask("session.newkey", ("authinfo", by), ("username", user), ("key", key))))


def test_a_key_from_an_administrator_logs_its_user_in_once(panel: Panel, gate: Gate) -> None:
    key = "K" * 8 + os.urandom(8).hex()
    assert xml(newkey(gate, key).doc) == "<doc><ok/></doc>"
    result = answered(gate.decide(ask("auth", ("key", key), address=OTHER)))  # username optional
    session = result.doc.findtext("auth") or ""
    assert result.doc.find("auth").get("level") == "16" and result.set_cookies  # type: ignore[union-attr]
    assert allowed(gate.decide(ask("desktop", ("auth", session), address=OTHER))).caller.user == "alice"
    again = gate.decide(ask("auth", ("username", "alice"), ("key", key)))
    assert error(again)["object"] == "authfail" and answered(again).delay > 0
    assert "unknown, used or expired key" in log(panel) and key not in log(panel)


def test_a_key_names_its_user_when_a_username_is_given(gate: Gate, clock: Clock) -> None:
    newkey(gate, "x" * 16)
    result = answered(gate.decide(ask("auth", ("username", "adam"), ("key", "x" * 16))))
    assert error(result)["object"] == "authfail"
    clock.now += result.delay
    newkey(gate, "y" * 16)
    assert answered(gate.decide(ask("auth", ("username", "alice"), ("key", "y" * 16)))).doc.find("auth") is not None


def test_a_key_expires_like_a_session(gate: Gate, clock: Clock) -> None:
    newkey(gate, "z" * 16)
    clock.now += IDLE + 1
    assert error(gate.decide(ask("auth", ("key", "z" * 16))))["object"] == "authfail"


def test_a_key_under_16_characters_is_a_value_error_that_does_not_echo_it(gate: Gate) -> None:
    result = newkey(gate, "s" * 15)
    assert error(result) == {
        "type": "value",
        "object": "key",
        "value": "",
        "msg": "Parameter 'key' must have 16 characters or more",
    }
    assert "s" * 15 not in xml(result.doc)
    assert error(gate.decide(ask("auth", ("key", "s" * 15))))["object"] == "authfail"


def test_only_an_administrator_makes_keys_and_only_for_users_below_it(gate: Gate) -> None:
    assert error(newkey(gate, "n" * 16, by="alice:pw-alice")) == {
        "type": "access",
        "object": "func",
        "value": "session.newkey",
        "msg": "Access to 'session.newkey' needs level 29",
    }
    assert error(newkey(gate, "n" * 16, user="ada"))["type"] == "access"  # an equal
    assert error(newkey(gate, "n" * 16, user="nobody"))["type"] == "missed"
    assert error(gate.decide(ask("auth", ("key", "n" * 16))))["object"] == "authfail"  # none was kept


# --- su and whoami ---------------------------------------------------------------------


def test_an_administrator_acts_as_another_user_with_su(gate: Gate) -> None:
    key = login(gate, "adam", "pw-adam")
    result = allowed(gate.decide(ask("desktop", ("auth", key), ("su", "alice"), ("lang", "en"))))
    assert result == Allowed(Caller("alice", 16, key), (("lang", "en"),))


def test_su_by_a_non_administrator_is_an_access_error(gate: Gate) -> None:
    result = gate.decide(ask("desktop", ("authinfo", "alice:pw-alice"), ("su", "sam")))
    assert error(result) == {
        "type": "access",
        "object": "su",
        "value": "sam",
        "msg": "Acting as another user (su) needs level 29",
    }


def test_su_to_an_equal_an_unknown_or_a_suspended_user_is_refused(gate: Gate) -> None:
    assert error(gate.decide(ask("user", ("authinfo", "adam:pw-adam"), ("su", "ada"))))["type"] == "access"
    assert error(gate.decide(ask("user", ("authinfo", "adam:pw-adam"), ("su", "nobody"))))["type"] == "missed"
    assert error(gate.decide(ask("user", ("authinfo", "adam:pw-adam"), ("su", "sam"))))["type"] == "missed"


def test_whoami_answers_the_current_user(gate: Gate) -> None:
    doc = answered(gate.decide(ask("whoami", ("authinfo", "adam:pw-adam")))).doc
    assert xml(doc) == '<doc func="whoami"><user><name>adam</name><level>29</level></user></doc>'
    doc = answered(gate.decide(ask("whoami", ("authinfo", "adam:pw-adam"), ("su", "alice")))).doc
    assert json.loads(render(doc, "json"))["doc"]["user"] == {"name": {"$": "alice"}, "level": {"$": "16"}}
    assert error(gate.decide(ask("whoami")))["type"] == "auth"


# --- the super user ------------------------------------------------------------------


def test_root_cannot_log_in_until_given_a_password(panel: Panel, gate: Gate, clock: Clock) -> None:
    result = answered(gate.decide(ask("user", ("authinfo", "root:"))))
    assert error(result)["object"] == "authfail"
    clock.now += result.delay
    set_password(panel, "root", "r00t-pass")
    assert allowed(gate.decide(ask("user", ("authinfo", "root:r00t-pass")))).caller == Caller("root", 30)
    assert allowed(gate.decide(ask("user", ("authinfo", "root:r00t-pass"), ("su", "ada")))).caller.level == 29
    assert "r00t-pass" not in log(panel)


def test_a_core_user_named_root_is_not_the_super_user(panel: Panel, gate: Gate) -> None:
    assert not panel.call("user.add", {"name": "root", "passwd": "core-pw", "sok": "ok"}).error
    assert error(gate.decide(ask("user", ("authinfo", "root:core-pw"))))["object"] == "authfail"


def test_a_new_password_ends_the_users_sessions(panel: Panel, gate: Gate) -> None:
    key = login(gate, "alice", "pw-alice")
    set_password(panel, "alice", "new-pw")
    assert error(gate.decide(ask("desktop", ("auth", key))))["object"] == "session"
    assert allowed(gate.decide(ask("desktop", ("authinfo", "alice:new-pw")))).caller.user == "alice"


# --- failed logins ---------------------------------------------------------------------


def test_failures_from_one_address_grow_the_delay_up_to_the_cap_and_a_success_resets(
    panel: Panel, gate: Gate, clock: Clock
) -> None:
    delays = []
    for n in range(7):
        result = answered(gate.decide(ask("user", ("authinfo", f"user{n}:bad"))))
        delays.append(result.delay)
        clock.now += result.delay  # a client waits for its answer before trying again
    assert delays == [1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert "(failure 7 in a row from this address, 1 for this user; answer delayed 30.0 s)" in log(panel)
    allowed(gate.decide(ask("user", ("authinfo", "alice:pw-alice"))))
    assert answered(gate.decide(ask("user", ("authinfo", "alice:bad")))).delay == 1.0


def test_failures_for_one_user_grow_the_delay_whatever_the_address(gate: Gate, clock: Clock) -> None:
    for n in range(3):
        result = answered(gate.decide(ask("user", ("authinfo", "adam:bad"), address=f"203.0.113.{n}")))
        clock.now += result.delay
    assert result.delay == 4.0


def test_an_attempt_while_held_is_refused_unchecked(panel: Panel, gate: Gate, clock: Clock) -> None:
    first = answered(gate.decide(ask("user", ("authinfo", "alice:bad"))))
    clock.now += 0.25  # a parallel guess, before the first one's answer
    held = answered(gate.decide(ask("user", ("authinfo", "alice:pw-alice"))))
    assert error(held)["msg"] == "Too many failed logins: try again in 1 s" and held.delay == first.delay - 0.25
    assert f"login of 'alice' from {ADDRESS} refused unchecked: held 0.8 s after failed logins" in log(panel)
    clock.now += held.delay
    allowed(gate.decide(ask("user", ("authinfo", "alice:pw-alice"))))


def test_failures_are_forgotten_after_the_window(gate: Gate, clock: Clock) -> None:
    for _ in range(3):
        clock.now += answered(gate.decide(ask("user", ("authinfo", "alice:bad")))).delay
    clock.now += throttle.DEFAULT.window + 1
    assert answered(gate.decide(ask("user", ("authinfo", "alice:bad")))).delay == 1.0


def test_failures_survive_a_restart(panel: Panel, gate: Gate, clock: Clock) -> None:
    clock.now += answered(gate.decide(ask("user", ("authinfo", "alice:bad")))).delay
    assert answered(make_gate(panel, clock).decide(ask("user", ("authinfo", "alice:bad")))).delay == 2.0


def test_a_failed_func_auth_is_slowed_down_as_authinfo(gate: Gate) -> None:
    result = answered(gate.decide(ask("auth", ("username", "alice"), ("password", "bad"))))
    assert error(result)["object"] == "authfail" and result.delay == 1.0 and result.set_cookies == ()
    missing = answered(gate.decide(ask("auth", ("username", "alice"))))
    assert error(missing)["msg"] == "Log in with username and password, or with key" and missing.delay == 0.0


def test_throttle_delays() -> None:
    assert [throttle.delay(n) for n in range(8)] == [0.0, 1.0, 2.0, 4.0, 8.0, 16.0, 30.0, 30.0]
    assert throttle.delay(10_000) == 30.0
    policy = throttle.Policy(base=0.5, cap=3.0, window=10.0)
    assert [throttle.delay(n, policy) for n in (1, 2, 3, 4)] == [0.5, 1.0, 2.0, 3.0]
    assert throttle.held_for(throttle.Count(2, 100.0), 100.5, policy) == 0.5
    assert throttle.held_for(throttle.Count(2, 100.0), 111.0, policy) == 0.0
    assert throttle.current(None, 0.0) == 0


# --- secrets and the constant-time comparison -----------------------------------------


def test_the_consumed_secrets_are_secret_for_the_logs() -> None:
    assert all(is_secret(name) for name in ("authinfo", "auth", "key", "password"))
    assert auth.CONSUMED == {"authinfo", "auth", "su", "username", "password", "key"}


def test_passwords_are_checked_by_the_cores_verify_password(gate: Gate, monkeypatch: pytest.MonkeyPatch) -> None:
    seen: list[str] = []

    def spy(password: str, stored: str) -> bool:
        seen.append(password)
        return core.verify_password(password, stored)

    assert auth.verify_password is core.verify_password
    monkeypatch.setattr(auth, "verify_password", spy)
    allowed(gate.decide(ask("user", ("authinfo", "alice:pw-alice"))))
    answered(gate.decide(ask("user", ("authinfo", "nobody:guess"), address=OTHER)))  # checked against a decoy
    assert seen == ["pw-alice", "guess"]


def test_a_verified_password_is_remembered_for_that_hash_only(
    panel: Panel, gate: Gate, clock: Clock, monkeypatch: pytest.MonkeyPatch
) -> None:
    seen: list[str] = []

    def spy(password: str, stored: str) -> bool:
        seen.append(password)
        return core.verify_password(password, stored)

    monkeypatch.setattr(auth, "verify_password", spy)
    for _ in range(3):  # authinfo on every call: scrypt once
        allowed(gate.decide(ask("user", ("authinfo", "adam:pw-adam"))))
    assert seen == ["pw-adam"]
    clock.now += answered(gate.decide(ask("user", ("authinfo", "adam:pw-adam!")))).delay
    assert seen == ["pw-adam", "pw-adam!"]
    assert not panel.call("user.edit", {"elid": "adam", "passwd": "other", "sok": "ok"}, level=30).error
    clock.now += answered(gate.decide(ask("user", ("authinfo", "adam:pw-adam")))).delay  # a new hash
    allowed(gate.decide(ask("user", ("authinfo", "adam:other"))))
    assert seen == ["pw-adam", "pw-adam!", "pw-adam", "other"]


def test_a_key_logs_in_once_when_tried_at_once(gate: Gate) -> None:
    from concurrent.futures import ThreadPoolExecutor

    newkey(gate, "c" * 16)
    with ThreadPoolExecutor(8) as pool:
        results = list(
            pool.map(lambda n: gate.decide(ask("auth", ("key", "c" * 16), address=f"203.0.113.{n}")), range(8))
        )
    assert sum(answered(result).doc.find("auth") is not None for result in results) == 1


class OneUser:
    """Users holding one user, its password hashed with cheap scrypt parameters."""

    def __init__(self, password: str) -> None:
        import hashlib

        salt = os.urandom(16)
        digest = hashlib.scrypt(password.encode("utf-8", "surrogateescape"), salt=salt, n=2, r=1, p=1)
        self.stored = f"scrypt$2$1$1${salt.hex()}${digest.hex()}"

    def account(self, name: str) -> Account | None:
        return Account(self.stored, 16, True) if name == "u" else None


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(password=st.text(min_size=1, max_size=20), given_password=st.text(max_size=20))
def test_a_password_is_accepted_exactly_when_it_is_the_users(
    root: PanelRoot, password: str, given_password: str
) -> None:
    gate = Gate(Panel(root.path).root, OneUser(password), clock=Clock(), policy=throttle.Policy(base=0.0, cap=0.0))
    result = gate.decide(ask("user", ("authinfo", f"u:{given_password}")))
    assert isinstance(result, Allowed) == (given_password == password)
    assert isinstance(gate.decide(ask("user", ("authinfo", f"u:{password}"))), Allowed)


# --- mgrhooks passwd -------------------------------------------------------------------


def passwd(root: PanelRoot, *args: str, stdin: bytes) -> subprocess.CompletedProcess[str]:
    return subprocess.run(root.argv("passwd", *args), input=stdin.decode(), capture_output=True, text=True, timeout=60)


def cmdlines() -> bytes:
    found = b""
    for proc in Path("/proc").iterdir():
        try:
            found += (proc / "cmdline").read_bytes() + b"\n"
        except OSError:
            continue
    return found


def test_passwd_root_from_stdin_lets_root_log_in_and_never_shows_the_password(
    root: PanelRoot, panel: Panel, clock: Clock
) -> None:
    password = f"root-{os.urandom(8).hex()}"
    process = subprocess.Popen(
        root.argv("passwd", "--stdin", "root"), stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE
    )
    try:
        assert password.encode() not in cmdlines()
        out, err = process.communicate(f"{password}\r\nignored second line\n".encode(), timeout=60)
    finally:
        process.kill()
    assert process.returncode == 0 and err == b"password of root changed\n" and out == b""
    gate = make_gate(panel, clock)
    assert allowed(gate.decide(ask("user", ("authinfo", f"root:{password}")))).caller == Caller("root", 30)
    assert password not in log(panel)
    with sqlite3.connect(root.path / "var/billmgr.db") as db:  # not a core user
        assert db.execute("SELECT count(*) FROM users WHERE name = 'root'").fetchone() == (0,)


def test_passwd_changes_a_core_users_password(root: PanelRoot, panel: Panel, clock: Clock) -> None:
    result = passwd(root, "--stdin", "alice", stdin=b"brand-new\n")
    assert result.returncode == 0, result.stderr
    gate = make_gate(panel, clock)
    assert allowed(gate.decide(ask("user", ("authinfo", "alice:brand-new")))).caller.user == "alice"
    assert error(gate.decide(ask("user", ("authinfo", "alice:pw-alice"), address=OTHER)))["object"] == "authfail"


@pytest.mark.parametrize(
    ("args", "stdin", "status", "message"),
    [
        (["--stdin", "nobody"], b"pw\n", 1, "Error: User 'nobody' not found\n"),
        (["--stdin", "root"], b"", 2, "Error: the password is empty\n"),
        (["--stdin", "root"], b"\n", 2, "Error: the password is empty\n"),
        (["root"], b"pw\n", 2, "Error: no terminal to ask the password on: give it on stdin with --stdin\n"),
    ],
)
def test_passwd_refusals(
    root: PanelRoot, panel: Panel, args: list[str], stdin: bytes, status: int, message: str
) -> None:
    result = passwd(root, *args, stdin=stdin)
    assert (result.returncode, result.stderr[-len(message) :]) == (status, message), result.stderr
    assert Store(store_file(panel.root)).super_user_password("root") is None


def test_passwd_asks_twice_without_echo_on_a_terminal(root: PanelRoot, panel: Panel, clock: Clock) -> None:
    import pty
    import select

    controller, terminal = pty.openpty()
    # a new session: no controlling terminal, so getpass asks on stdin, the terminal given
    process = subprocess.Popen(
        root.argv("passwd", "root"), stdin=terminal, stdout=terminal, stderr=terminal, start_new_session=True
    )
    os.close(terminal)
    shown = b""

    def answer(prompt: bytes, line: bytes) -> None:
        nonlocal shown
        while prompt not in shown and select.select([controller], [], [], 60)[0]:
            shown += os.read(controller, 1024)
        os.write(controller, line)

    answer(b"New password: ", b"s3cret-tty\n")
    answer(b"Retype new password: ", b"s3cret-tty\n")
    assert process.wait(timeout=60) == 0
    try:
        shown += os.read(controller, 1024)
    except OSError:  # (EIO: the terminal's other end is closed)
        pass
    os.close(controller)
    assert b"s3cret" not in shown  # not echoed
    assert allowed(make_gate(panel, clock).decide(ask("user", ("authinfo", "root:s3cret-tty")))).caller.level == 30
