"""The repository's own example addons (addon/, etc/xml/), tested as an addon author tests
theirs: with the pytest plugin's fixtures only (mgrhooks.pytest_plugin; the project is
pytest's rootdir, this repository)."""

from __future__ import annotations


def test_samba_keeps_the_users_added_and_deleted(mgr_root, mgr_call) -> None:
    for name in ("alice", "bob"):
        added = mgr_call("user.add", f"name={name}", "passwd=x", sok="ok")
        added.assert_ok()
        added.assert_xpath("/doc/id", name)
    assert mgr_root.read("var/samba.users") == "alice\nbob\n"
    assert "samba: added alice" in mgr_root.log()

    mgr_call("user.delete", elid="alice, bob").assert_ok()
    assert mgr_root.read("var/samba.users") == ""


def test_samba_does_not_run_when_the_core_refuses(mgr_root, mgr_call) -> None:
    mgr_call("user.add", "name=alice", "passwd=x", sok="ok").assert_ok()
    again = mgr_call("user.add", "name=alice", "passwd=x", sok="ok", out="text")
    again.assert_error(type="exists", object="user", value="alice")
    assert again.status == 1
    assert again.output == "ERROR exists(user,alice): User 'alice' already exists\n"
    assert mgr_root.log().count("Executing: addon/samba.pl") == 1


def test_suspend_review_queues_an_administrators_request(mgr_root, mgr_call) -> None:
    mgr_call("user.add", "name=alice", "passwd=x", sok="ok")
    queued = mgr_call("user.suspend", elid="alice", user="admin", level=29, out="json")
    queued.assert_ok()
    queued.assert_xpath("/doc/banner", "Suspension of alice queued for review")
    assert queued.json["doc"]["banner"] == {"$": "Suspension of alice queued for review"}
    assert mgr_root.read("var/suspend.queue") == "alice\tadmin\n"
    mgr_call("user", out="text").assert_xpath("/doc/elem[name='alice']/state", "active")


def test_suspend_review_lets_the_super_user_through(mgr_root, mgr_call) -> None:
    mgr_call("user.add", "name=alice", "passwd=x", sok="ok")
    mgr_call("user.suspend", elid="alice").assert_no_xpath("/doc/banner")
    mgr_call("user").assert_xpath("/doc/elem[name='alice']/state", "suspended")
    assert not (mgr_root.path / "var/suspend.queue").exists()


def test_low_balance_notes_the_balance_after_the_project_handler(mgr_call) -> None:
    desktop = mgr_call("desktop")
    desktop.assert_doc(
        """<doc func="desktop" lang="en" binary="/billmgr">
             <user><name>root</name><level>30</level></user>
             <balance>0.00</balance>
             <notice>Balance is low: 0.00</notice>
           </doc>"""
    )
    desktop.assert_xpath("count(/doc/notice)", 1)
    desktop.assert_xpath("/doc/notice/preceding-sibling::*[1]", "<balance>0.00</balance>")


def test_the_command_gives_the_same_answer(mgr_exec) -> None:
    added = mgr_exec("user.add", "name=alice", "sok=ok", "--stdin", "passwd", stdin="secret\n")
    assert added.status == 0, added.stderr
    added.assert_xpath("/doc/id", "alice")
    listed = mgr_exec("user", "--out", "text")
    assert listed.output == "name=alice level=16 state=active\n"
    assert listed.document is None
