"""The built-in core through the Python API, on a root with no handlers."""

from __future__ import annotations

import os
import sqlite3
import stat
import subprocess
import sys
from pathlib import Path

import pytest

from mgrhooks import Request, Root, call
from mgrhooks.core import verify_password
from mgrhooks.render import render


@pytest.fixture
def panel(tmp_path: Path) -> Root:
    return Root.open(tmp_path)


def do(root: Root, func: str, caller: tuple[str, int] = ("root", 30), **params: str):
    return call(root, Request(func, tuple(params.items()), user=caller[0], level=caller[1])).doc


def text(root: Root, func: str, **params: str) -> str:
    return render(do(root, func, **params), "text")


def rows(root: Root) -> list[tuple[str, int, str]]:
    with sqlite3.connect(root.db_file) as db:
        return db.execute("SELECT name, level, state FROM users ORDER BY name").fetchall()


def test_the_database_holding_password_hashes_is_mode_600_under_any_umask(panel: Root) -> None:
    old = os.umask(0o002)
    try:
        assert text(panel, "user.add", name="alice", passwd="pw", sok="ok") == "OK\nid=alice\n"
    finally:
        os.umask(old)
    made = sorted(panel.db_file.parent.glob(panel.db_file.name + "*"))
    assert panel.db_file in made
    assert {path.name: stat.S_IMODE(path.stat().st_mode) for path in made} == {path.name: 0o600 for path in made}


def test_a_list_reads_while_another_process_holds_the_write_lock(panel: Root) -> None:
    """Reads (a list, a form shown) take no write lock: with a writer holding it, they
    answer at once (a write waits for it: up to db.LOCK_TIMEOUT, 60 s)."""
    assert text(panel, "user.add", name="alice", passwd="pw", sok="ok") == "OK\nid=alice\n"
    writer = sqlite3.connect(panel.db_file, isolation_level=None)
    writer.execute("BEGIN IMMEDIATE")
    try:
        for func, *params in (("user",), ("user.edit", "elid=alice")):
            argv = [sys.executable, "-m", "mgrhooks", "exec", "--root", str(panel.path), "--out", "text", func, *params]
            done = subprocess.run(argv, capture_output=True, text=True, timeout=30)
            assert done.returncode == 0, done.stderr
            assert "alice" in done.stdout
    finally:
        writer.execute("ROLLBACK")
        writer.close()


def test_create_view_change(panel: Root) -> None:
    assert text(panel, "user.add", name="alice", passwd="pw", sok="ok") == "OK\nid=alice\n"
    assert text(panel, "user.edit", elid="alice") == "elid=alice\nname=alice\nlevel=16\nstate=active\nbalance=0.00\n"
    assert text(panel, "user.edit", elid="alice", sok="ok", level="24", balance="12.5") == "OK\nid=alice\n"
    assert rows(panel) == [("alice", 24, "active")]
    assert text(panel, "user.edit", elid="alice", sok="ok", name="alicia") == "OK\nid=alicia\n"
    assert rows(panel) == [("alicia", 24, "active")]


def test_blank_form_has_defaults(panel: Root) -> None:
    assert text(panel, "user.add") == "level=16\nstate=active\nbalance=0.00\n"


def test_password_is_hashed_and_never_echoed(panel: Root) -> None:
    response = render(do(panel, "user.add", name="bob", passwd="hunter2", sok="ok"), "xml")
    assert "hunter2" not in response
    assert "hunter2" not in render(do(panel, "user.edit", elid="bob"), "xml")
    with sqlite3.connect(panel.db_file) as db:
        (stored,) = db.execute("SELECT password FROM users").fetchone()
    assert stored.startswith("scrypt$") and "hunter2" not in stored
    assert verify_password("hunter2", stored) and not verify_password("hunter3", stored)
    do(panel, "user.edit", elid="bob", sok="ok", passwd="new")
    with sqlite3.connect(panel.db_file) as db:
        (changed,) = db.execute("SELECT password FROM users").fetchone()
    assert verify_password("new", changed)


@pytest.mark.parametrize(
    ("func", "params", "expected"),
    [
        (
            "user.add",
            {"name": "alice", "passwd": "x", "sok": "ok"},
            "ERROR exists(user,alice): User 'alice' already exists",
        ),
        ("user.add", {"name": "bad name", "passwd": "x", "sok": "ok"}, "ERROR value(name,bad name): Invalid user name"),
        ("user.add", {"name": "carol", "sok": "ok"}, "ERROR value(passwd): Parameter 'passwd' is required"),
        (
            "user.add",
            {"name": "carol", "passwd": "x", "level": "31", "sok": "ok"},
            "ERROR value(level,31): Invalid level",
        ),
        ("user.edit", {"elid": "nobody"}, "ERROR missed(user,nobody): User 'nobody' not found"),
        ("user.edit", {"elid": "alice", "sok": "ok", "balance": "lots"}, "ERROR value(balance,lots): Invalid balance"),
        ("user.delete", {}, "ERROR value(elid): No user selected"),
        ("nothing.here", {}, "ERROR missed(func,nothing.here): Unknown function 'nothing.here'"),
    ],
)
def test_typed_errors(panel: Root, func: str, params: dict[str, str], expected: str) -> None:
    do(panel, "user.add", name="alice", passwd="pw", sok="ok")
    assert text(panel, func, **params).startswith(expected)
    assert rows(panel) == [("alice", 16, "active")]


def test_access_level(panel: Root) -> None:
    doc = do(panel, "user", caller=("bob", 16))
    assert render(doc, "text") == "ERROR access(func,user): Access to 'user' needs level 29\n"


def test_group_operations_and_list(panel: Root) -> None:
    for name in ("a", "b", "c"):
        do(panel, "user.add", name=name, passwd="pw", sok="ok")
    assert text(panel, "user.suspend", elid="a, c") == "OK\n"
    assert (
        text(panel, "user")
        == "name=a level=16 state=suspended\nname=b level=16 state=active\nname=c level=16 state=suspended\n"
    )
    assert text(panel, "user.resume", elid="c") == "OK\n"
    assert text(panel, "user.delete", elid="a, b") == "OK\n"
    assert rows(panel) == [("c", 16, "active")]


def test_group_action_is_all_or_nothing(panel: Root) -> None:
    for name in ("a", "b"):
        do(panel, "user.add", name=name, passwd="pw", sok="ok")
    assert text(panel, "user.delete", elid="a, ghost, b").startswith("ERROR missed(user,ghost)")
    assert text(panel, "user.suspend", elid="b, ghost").startswith("ERROR missed(user,ghost)")
    assert rows(panel) == [("a", 16, "active"), ("b", 16, "active")]


def test_desktop_internal_handlers(panel: Root) -> None:
    do(panel, "user.add", name="alice", passwd="pw", sok="ok", balance="7.5")
    assert text(panel, "desktop") == "user.name=root\nuser.level=30\nbalance=0.00\n"
    assert (
        render(do(panel, "desktop", caller=("alice", 16)), "text") == "user.name=alice\nuser.level=16\nbalance=7.50\n"
    )


def test_the_levels_are_named_once(panel: Root) -> None:
    """model.Level names the levels panel users have; a request is the super user's unless
    it says otherwise, and the core offers exactly those levels."""
    from mgrhooks.model import Level

    assert [int(level) for level in Level] == [9, 16, 24, 29, 30]
    assert Request("user").level == Level.SUPER_USER == 30
    message = text(panel, "user.add", name="carol", passwd="x", level="31", sok="ok")
    assert message == "ERROR value(level,31): Invalid level '31': one of 9, 16, 24, 29, 30\n"
    for level in Level:
        assert text(panel, "user.add", name=f"u{level}", passwd="x", level=str(level), sok="ok") == f"OK\nid=u{level}\n"
    assert rows(panel) == [(f"u{level}", int(level), "active") for level in sorted(Level, key=str)]


ADMIN = ("admin", 29)


def test_nobody_gives_a_level_above_their_own(panel: Root) -> None:
    denied = render(do(panel, "user.add", ADMIN, name="boss", passwd="pw", level="30", sok="ok"), "text")
    assert denied == "ERROR access(level,30): Level 30 is above your own (29): nobody can give more than they have\n"
    assert text(panel, "user.add", name="al", passwd="pw", sok="ok") == "OK\nid=al\n"
    assert render(do(panel, "user.edit", ADMIN, elid="al", level="30", sok="ok"), "text").startswith(
        "ERROR access(level,30)"
    )
    assert render(do(panel, "user.add", ADMIN, name="peer", passwd="pw", level="29", sok="ok"), "text") == (
        "OK\nid=peer\n"
    )
    assert rows(panel) == [("al", 16, "active"), ("peer", 29, "active")]


@pytest.mark.parametrize(
    ("func", "params"),
    [
        ("user.edit", {"elid": "boss", "level": "16", "sok": "ok"}),
        ("user.edit", {"elid": "boss", "passwd": "mine", "sok": "ok"}),
        ("user.edit", {"elid": "peer", "name": "gone", "sok": "ok"}),
        ("user.suspend", {"elid": "al, boss"}),
        ("user.resume", {"elid": "peer"}),
        ("user.delete", {"elid": "al, boss"}),
        ("user.delete", {"elid": "al, peer"}),
    ],
)
def test_an_administrator_cannot_touch_users_at_or_above_its_level(
    panel: Root, func: str, params: dict[str, str]
) -> None:
    for name, level in (("al", "16"), ("peer", "29"), ("boss", "30")):
        do(panel, "user.add", name=name, passwd="pw", level=level, sok="ok")
    with sqlite3.connect(panel.db_file) as db:
        before = db.execute("SELECT * FROM users ORDER BY name").fetchall()
    response = render(do(panel, func, ADMIN, **params), "text")
    target = "boss" if "boss" in params["elid"] else "peer"
    level = 30 if target == "boss" else 29
    assert response == (
        f"ERROR access(user,{target}): User '{target}' has level {level}: only a caller above that level may"
        " change it (yours is 29)\n"
    )
    with sqlite3.connect(panel.db_file) as db:  # nothing half-applied: 'al' is still there, unchanged
        assert db.execute("SELECT * FROM users ORDER BY name").fetchall() == before


def test_the_super_user_may_act_on_anyone(panel: Root) -> None:
    do(panel, "user.add", name="boss", passwd="pw", level="30", sok="ok")
    do(panel, "user.add", name="al", passwd="pw", sok="ok")
    assert render(do(panel, "user.edit", ADMIN, elid="al", level="29", sok="ok"), "text") == "OK\nid=al\n"
    assert text(panel, "user.edit", elid="boss", level="29", sok="ok") == "OK\nid=boss\n"
    assert text(panel, "user.delete", elid="al, boss") == "OK\n"
    assert rows(panel) == []


def test_a_name_given_twice_in_a_group_is_acted_on_once(panel: Root) -> None:
    do(panel, "user.add", name="a", passwd="pw", sok="ok")
    do(panel, "user.add", name="b", passwd="pw", sok="ok")
    assert text(panel, "user.suspend", elid="b, b") == "OK\n"
    assert text(panel, "user.delete", elid="a, a") == "OK\n"
    assert rows(panel) == [("b", 16, "suspended")]
    assert text(panel, "user.delete", elid="b, ") == (
        "ERROR value(elid,b, ): Empty user name in the group 'b, ' (names are joined by ', ')\n"
    )
    assert rows(panel) == [("b", 16, "suspended")]


@pytest.mark.parametrize(
    ("balance", "expected"),
    [
        ("1e26", "ERROR value(balance,1e26): Invalid balance '1e26': a decimal number like -12.50\n"),
        ("1_000", "ERROR value(balance,1_000): Invalid balance '1_000': a decimal number like -12.50\n"),
        (" 5", "ERROR value(balance, 5): Invalid balance ' 5': a decimal number like -12.50\n"),
        ("inf", "ERROR value(balance,inf): Invalid balance 'inf': a decimal number like -12.50\n"),
        (
            "1" * 16,
            f"ERROR value(balance,{'1' * 16}): Invalid balance '{'1' * 16}': at most 15 digits before the decimal point\n",
        ),
        ("9" * 15 + ".999", "ERROR value(balance,999999999999999.999): Invalid balance '999999999999999.999': at most"),
        ("9" * 15 + ".99", "OK\nid=al\n"),
        ("-.5", "OK\nid=al\n"),
        ("+3.", "OK\nid=al\n"),
    ],
)
def test_balance_is_a_plain_decimal_of_bounded_size(panel: Root, balance: str, expected: str) -> None:
    response = text(panel, "user.add", name="al", passwd="pw", balance=balance, sok="ok")
    assert response.startswith(expected), response
    assert rows(panel) == ([("al", 16, "active")] if expected.startswith("OK") else [])


def test_names_that_are_not_utf_8_are_not_found(panel: Root) -> None:
    assert text(panel, "user.edit", elid="\udcff").startswith("ERROR missed(user,\ufffd): User '\ufffd' not found")
    assert text(panel, "user.delete", elid="a, \udcff\x01").startswith("ERROR missed(user,a)")
    doc = do(panel, "desktop", caller=("\udcffx", 16))
    assert doc.findtext("balance") == "0.00"


def test_eventlist_shows_what_the_callers_level_may_set_off(panel: Root) -> None:
    panel.plugin_dir.mkdir(parents=True)
    (panel.plugin_dir / "billmgr_mod_ev.xml").write_text(
        """<mgrdata>
  <handler name="any.sh" type="cgi"><event name="desktop" after="yes"/><event name="*" final="yes"/></handler>
  <handler name="users.sh" type="cgi"><event name="user.add" after="yes"/></handler>
  <handler name="high.sh" type="cgi" minlevel="24"><event name="desktop" after="yes"/></handler>
  <handler name="f.sh" type="cgi"><func name="open.f"/><func name="shop.f" minlevel="24"/></handler>
  <handler name="g.sh" type="cgi"><event name="shop.f" before="yes"/><event name="open.f" before="yes"/></handler>
</mgrdata>
"""
    )

    def listed(level: int) -> list[str]:
        doc = do(panel, "eventlist", caller=("u", level))
        return [f"{e.findtext('handler')}:{e.findtext('name')}:{e.findtext('stage')}" for e in doc.iter("elem")]

    everyone = ["any.sh:desktop:after", "any.sh:*:final", "g.sh:open.f:before", "f.sh:open.f:action"]
    assert listed(16) == everyone
    assert listed(24) == [
        *everyone[:2],
        "high.sh:desktop:after",
        "g.sh:shop.f:before",
        *everyone[2:],
        "f.sh:shop.f:action",
    ]
    assert len(listed(29)) == len(listed(30)) == 8 and "users.sh:user.add:after" in listed(29)


@pytest.mark.parametrize(
    ("mgr", "balance"), [("billmgr", True), ("ispmgr", False), ("dnsmgr", False), ("vmmgr", False)]
)
def test_only_billmanagers_desktop_has_a_balance(tmp_path: Path, mgr: str, balance: bool) -> None:
    desktop = text(Root.open(tmp_path, mgr), "desktop")
    assert desktop == "user.name=root\nuser.level=30\n" + ("balance=0.00\n" if balance else "")
