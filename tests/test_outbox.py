"""The transactional outbox: a real ``mgrhooks exec user.add`` SIGKILLed before, inside
and after the built-in core's action, during after-handlers and during the inline
delivery, then recovered: every committed user has exactly one record, no other user
has one."""

from __future__ import annotations

import json
import os
import random
import sqlite3
import subprocess
import threading
import time

import pytest

from conftest import PanelRoot
from mgrhooks.owner import alive, me, name_of

LOG = "var/billmgr.events.jsonl"
DB = "var/billmgr.db"


def configure(root: PanelRoot, extra: str = "") -> None:
    (root.path / "etc/mgrhooks.conf").write_text("[notify.audit]\ndriver = log\n" + extra)


def waiting_handler(root: PanelRoot, name: str, stage: str) -> None:
    """An sh handler on ``user.add`` at ``stage`` that says it runs (``var/NAME.ready``:
    the user it was called for) and then waits for the kill."""
    root.handler(
        name,
        f'#!/bin/sh\necho "$PARAM_name" > var/{name}.ready\nexec sleep 600\n',
        f'<event name="user.add" {stage}="yes"/>',
    )


def start(root: PanelRoot, name: str) -> subprocess.Popen[bytes]:
    argv = root.argv("exec", "user.add", f"name={name}", "passwd=pw", "confirm=pw", "sok=ok")
    return subprocess.Popen(argv, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)


def wait_for(condition, seconds: float = 30) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + seconds
    while not condition():
        assert time.monotonic() < deadline, "timed out waiting"
        time.sleep(0.01)


def kill(process: subprocess.Popen[bytes]) -> None:
    process.kill()
    process.wait()


def users(root: PanelRoot) -> set[str]:
    if not (root.path / DB).exists():
        return set()
    with sqlite3.connect(root.path / DB) as db:
        return {row[0] for row in db.execute("SELECT name FROM users")}


def records_by_user(root: PanelRoot) -> dict[str, set[str]]:
    """User name → the ids of the records about it, in the spool and in the log driver's file."""
    seen: dict[str, set[str]] = {}
    bodies = []
    with sqlite3.connect(root.path / DB) as db:
        bodies += [json.loads(row[0]) for row in db.execute("SELECT body FROM records")]
    if (root.path / LOG).exists():
        bodies += [json.loads(line) for line in (root.path / LOG).read_text().splitlines()]
    for body in bodies:
        for obj in body["objects"]:
            seen.setdefault(obj["id"], set()).add(body["id"])
    return seen


def assert_one_record_per_committed_user(
    root: PanelRoot, tried: set[str], leased: int = 0
) -> dict[str, dict[str, object]]:
    """After a worker pass: each committed user has exactly one record id, delivered but
    for ``leased`` deliveries a killed call was trying (-1: any number of them); no
    uncommitted one has any; no intent is left. :returns: user → its record"""
    result = root.mgrhooks("worker", "--once")
    assert result.returncode == 0, result.stderr
    committed = users(root)
    by_user = records_by_user(root)
    assert committed <= tried
    assert {name: len(by_user.get(name, ())) for name in committed} == dict.fromkeys(committed, 1)
    assert not set(by_user) - committed, f"records of uncommitted users: {set(by_user) - committed}"
    with sqlite3.connect(root.path / DB) as db:
        assert db.execute("SELECT count(*) FROM records WHERE state = 'intent'").fetchone() == (0,)
        states = dict(db.execute("SELECT state, count(*) FROM deliveries WHERE state != 'delivered' GROUP BY state"))
        assert states == ({"pending": leased} if leased else {}) or leased < 0 and set(states) <= {"pending"}
    delivered = [json.loads(line) for line in (root.path / LOG).read_text().splitlines()] if committed else []
    with sqlite3.connect(root.path / DB) as db:
        delivered += [json.loads(row[0]) for row in db.execute("SELECT body FROM records")] if leased else []
    assert "pw" not in json.dumps(delivered).replace('"***"', "")
    return {body["objects"][0]["id"]: body for body in delivered}


def test_killed_in_a_before_handler_no_user_no_record(root: PanelRoot) -> None:
    configure(root)
    waiting_handler(root, "wait.sh", "before")
    call = start(root, "al")
    wait_for((root.path / "var/wait.sh.ready").exists)
    kill(call)
    assert users(root) == set()
    root.mgrhooks("exec", "user")  # makes the database, and a recovery pass with no intent
    assert assert_one_record_per_committed_user(root, {"al"}) == {}


def test_killed_inside_the_action_no_user_no_record(root: PanelRoot) -> None:
    """A trigger makes the INSERT slow: the call is killed holding the write lock, the row
    and the intent written and not committed."""
    configure(root)
    root.mgrhooks("exec", "user")  # the users table
    with sqlite3.connect(root.path / DB) as db:
        db.execute("CREATE TABLE slow (x)")
        db.executemany("INSERT INTO slow VALUES (?)", [(n,) for n in range(6000)])
        db.execute("CREATE TRIGGER slowly AFTER INSERT ON users BEGIN SELECT count(*) FROM slow a, slow b; END")
    call = start(root, "al")

    def locked() -> bool:
        probe = sqlite3.connect(root.path / DB, timeout=0, isolation_level=None)
        try:
            probe.execute("BEGIN IMMEDIATE")
            probe.execute("ROLLBACK")
            return False
        except sqlite3.OperationalError:
            return True
        finally:
            probe.close()

    wait_for(locked)
    kill(call)
    assert users(root) == set()
    assert assert_one_record_per_committed_user(root, {"al"}) == {}


@pytest.mark.parametrize("handler_stage", ["after", "final"])
def test_killed_after_the_action_the_record_is_recovered(root: PanelRoot, handler_stage: str) -> None:
    configure(root)
    waiting_handler(root, "wait.sh", handler_stage)
    call = start(root, "al")
    wait_for((root.path / "var/wait.sh.ready").exists)
    kill(call)
    assert users(root) == {"al"}
    (record,) = assert_one_record_per_committed_user(root, {"al"}).values()
    assert record["objects"] == [{"type": "user", "id": "al", "seq": 1}]
    assert record["params"]["confirm"] == "***" and record["params"]["passwd"] == "***"
    if handler_stage == "after":  # killed before the call ended: recovered from the intent
        assert (record["recovered"], record["result"]["status"]) == (True, "unknown")
        assert "recovered 1 event record(s) left as intents" in root.log()
    else:  # the record was complete before the final stage
        assert (record["recovered"], record["result"]["status"]) == (False, "ok")


def test_killed_during_the_inline_delivery(root: PanelRoot) -> None:
    root.addon("sync.sh", "#!/bin/sh\ncat > /dev/null\ntouch var/sync.ready\nexec sleep 600\n")
    configure(root, "[notify.sync]\ndriver = script\nprogram = sync.sh\n")
    call = start(root, "al")
    wait_for((root.path / "var/sync.ready").exists)
    kill(call)
    (root.path / "etc/mgrhooks.conf").write_text("[notify.sync]\ndriver = log\n")
    (record,) = assert_one_record_per_committed_user(root, {"al"}, leased=1).values()  # till its lease runs out
    assert (record["recovered"], record["result"]["status"]) == (False, "ok")


def test_the_next_call_recovers_a_dead_calls_intent(root: PanelRoot) -> None:
    configure(root)
    waiting_handler(root, "wait.sh", "after")
    call = start(root, "al")
    wait_for((root.path / "var/wait.sh.ready").exists)
    kill(call)
    (root.path / "addon/wait.sh").write_text("#!/bin/sh\nexec cat\n")
    assert root.mgrhooks("exec", "user.add", "name=bo", "passwd=x", "sok=ok").returncode == 0
    with sqlite3.connect(root.path / DB) as db:
        rows = db.execute("SELECT r.state, r.body, d.state FROM records r JOIN deliveries d ON d.record = r.id")
        seen = sorted(
            (json.loads(body)["objects"][0]["id"], json.loads(body)["recovered"], r, d) for r, body, d in rows
        )
    assert seen == [("al", True, "ready", "pending"), ("bo", False, "ready", "delivered")]  # al's: for the worker


def test_an_after_handler_failing_still_gets_the_change_its_record(root: PanelRoot) -> None:
    configure(root)
    root.handler("fail.sh", "#!/bin/sh\nexit 3\n", '<event name="user.add" after="yes"/>')
    result = root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")
    assert result.returncode == 1 and users(root) == {"al"}
    (record,) = assert_one_record_per_committed_user(root, {"al"}).values()
    assert record["result"] == {"status": "error", "id": "al", "error": "handler"}
    assert record["handlers"][0]["status"] == "exit"


def test_sequence_numbers_follow_the_changes_of_each_object(root: PanelRoot) -> None:
    configure(root)
    root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")
    root.mgrhooks("exec", "user.add", "name=bo", "passwd=x", "sok=ok")
    root.mgrhooks("exec", "user.suspend", "--elid", "al, bo")
    root.mgrhooks("exec", "user.add", "name=al", "passwd=x", "sok=ok")  # exists: no change, no number
    root.mgrhooks("exec", "user.edit", "--elid", "bo", "level=24", "sok=ok")
    objects = [json.loads(line)["objects"] for line in root.read(LOG).splitlines()]
    assert [[(o["id"], o["seq"]) for o in each] for each in objects] == [
        [("al", 1)],
        [("bo", 1)],
        [("al", 2), ("bo", 2)],
        [("bo", 3)],
    ]


def test_sigkill_at_random_moments_loses_no_committed_change(root: PanelRoot) -> None:
    """Calls with before-, after- and final-handlers and a slow notifier script, each
    killed at a random moment of its run; then one worker pass recovers."""
    configure(root, "[notify.sync]\ndriver = script\nprogram = sync.sh\ntimeout = 0.3\n")
    root.addon("sync.sh", "#!/bin/sh\ncat > /dev/null\nsleep 0.1\n")
    for stage in ("before", "after", "final"):
        root.handler(f"{stage}.sh", "#!/bin/sh\nsleep 0.05\nexec cat\n", f'<event name="user.add" {stage}="yes"/>')
    started = time.monotonic()
    assert root.mgrhooks("exec", "user.add", "name=probe", "passwd=pw", "sok=ok").returncode == 0
    whole = time.monotonic() - started
    rng = random.Random(os.urandom(8))
    tried = {"probe"}
    for n in range(24):
        name = f"u{n}"
        tried.add(name)
        call = start(root, name)
        time.sleep(rng.uniform(0, whole))
        kill(call)
    (root.path / "addon/sync.sh").write_text("#!/bin/sh\ncat > /dev/null\n")
    assert_one_record_per_committed_user(root, tried, leased=-1)  # (-1: those being tried at the kill, leased)


def test_calls_in_parallel_threads_get_one_record_each(root: PanelRoot) -> None:
    """Many calls in one process (as ``mgrhooks serve`` runs them): no call recovers
    another's intent, each committed change has its record."""
    from mgrhooks import Panel

    configure(root)
    panel = Panel(root.path, mgr="billmgr")
    errors: list[BaseException] = []

    def add(n: int) -> None:
        try:
            response = panel.call("user.add", {"name": f"t{n}", "passwd": "x", "sok": "ok"})
            assert not response.error
        except BaseException as exc:  # noqa: BLE001
            errors.append(exc)

    threads = [threading.Thread(target=add, args=(n,)) for n in range(16)]
    for thread in threads:
        thread.start()
    for thread in threads:
        thread.join()
    assert errors == []
    records = assert_one_record_per_committed_user(root, {f"t{n}" for n in range(16)})
    assert len(records) == 16 and not any(r["recovered"] for r in records.values())


def test_owner_names_tell_a_dead_process_from_a_live_one() -> None:
    assert alive(me())
    child = subprocess.Popen(["sleep", "60"])
    name = name_of(child.pid)
    assert alive(name)
    child.kill()
    child.wait()
    assert not alive(name)
    boot, pid, started = me().split()
    assert not alive(f"{boot} {pid} {int(started) + 1}")  # the same id, another process
    assert not alive(f"another-boot {pid} {started}")


def test_a_call_raising_after_its_change_completes_the_record(root: PanelRoot) -> None:
    """A subscriber raising after the action (the call raises: no ``committed``): the
    record still completes, saying the call ended in error, without waiting for recovery."""
    from mgrhooks import Panel
    from mgrhooks.dispatch import Options
    from mgrhooks.model import ActionStep
    from mgrhooks.monitor import Monitor, StepEnd

    class Raising(Monitor):
        def after(self, end: StepEnd) -> None:
            if isinstance(end.start.step, ActionStep):
                raise RuntimeError("a subscriber's bug")

    configure(root)
    panel = Panel(root.path, mgr="billmgr")
    with pytest.raises(RuntimeError):
        panel.call("user.add", {"name": "al", "passwd": "x", "sok": "ok"}, options=Options(monitors=(Raising(),)))
    with sqlite3.connect(root.path / DB) as db:
        ((state, body),) = db.execute("SELECT state, body FROM records").fetchall()
    assert state == "ready" and json.loads(body)["result"]["status"] == "error"
    assert not json.loads(body)["recovered"]
    assert assert_one_record_per_committed_user(root, {"al"}).keys() == {"al"}
