"""The Python API: observers in calls, core functions in Python, the dispatch kinds."""

from __future__ import annotations

import json
import sqlite3

import pytest

from conftest import PanelRoot
from mgrhooks import Continue, Panel, PanelError, Stage, add, passing


@pytest.fixture
def panel(root: PanelRoot) -> Panel:
    return Panel(root.path)


def users(root: PanelRoot) -> list[str]:
    if not (root.path / "var/billmgr.db").exists():
        return []
    with sqlite3.connect(root.path / "var/billmgr.db") as db:
        return [name for (name,) in db.execute("SELECT name FROM users")]


def test_a_call_through_the_api(panel: Panel) -> None:
    response = panel.call("user.add", {"name": "al", "passwd": "x", "sok": "ok"}, user="admin", level=29)
    assert not response.error and response.doc.findtext("id") == "al"
    denied = panel.call("user", user="bob", level=16)
    assert denied.error and denied.doc.find("error").get("type") == "access"


def test_observers_take_their_place_among_plugin_handlers(root: PanelRoot, panel: Panel) -> None:
    root.handler("plain.sh", "#!/bin/sh\ncat\n", '<event name="desktop" after="yes"/>')
    root.handler("hi.sh", "#!/bin/sh\ncat\n", '<event name="desktop" after="yes" priority="hi"/>')

    def early(request, doc):
        pass

    def tied(request, doc):
        pass

    def late(request, doc):
        pass

    def project(request, doc):
        pass

    panel.register("desktop", late, stage="after", priority=900)
    panel.register("desktop", tied, stage=Stage.AFTER)  # 500, like plain.sh: observers first
    panel.register("desktop", early, stage="after", priority=100)
    panel.register("*", project, stage="after", base="project", placement="after")
    steps = [s.name.split("#")[0].rsplit(".", 1)[-1] if "#" in s.name else s.name for s in panel.plan("desktop").steps]
    assert steps == [
        "desktop",
        "desktop.user",
        "hi.sh",
        "early",
        "tied",
        "plain.sh",
        "late",
        "desktop.balance",
        "project",
    ]
    why = next(s.why for s in panel.plan("desktop").steps if "early" in s.name)
    assert why.startswith("after stage, slot base=core, proirity=after; priority=100, Python observer #")


def test_observers_change_replace_and_stop_the_document(root: PanelRoot, panel: Panel) -> None:
    seen = []

    @panel.observe("user.add", stage="before")
    def check(request, doc):
        seen.append(("before", request.get("name")))
        if request.get("name") == "root":
            raise PanelError("value", "name", "root", "Reserved name")

    @panel.observe("user.add", stage="after")
    def stamp(request, doc):
        add(doc, "stamped", "yes")

    @panel.observe("user.add", stage="after", priority=600)
    def replace(request, doc):
        new = doc.makeelement("doc", {})
        add(new, "replaced", doc.findtext("stamped"))
        return new

    stopped = panel.call("user.add", {"name": "root", "passwd": "x", "sok": "ok"})
    assert stopped.error and stopped.doc.findtext("error/msg") == "Reserved name"
    assert users(root) == []
    done = panel.call("user.add", {"name": "al", "passwd": "x", "sok": "ok"})
    assert [child.tag for child in done.doc] == ["replaced"] and done.doc.findtext("replaced") == "yes"
    assert seen == [("before", "root"), ("before", "al")]


def test_an_observer_that_raises_is_a_failing_handler(panel: Panel) -> None:
    @panel.observe("user", stage="after")
    def broken(request, doc):
        raise RuntimeError("boom")

    response = panel.call("user")
    error = response.doc.find("error")
    assert error.get("type") == "handler" and "raised RuntimeError: boom" in error.findtext("msg")

    panel.unregister("user", broken, stage="after")

    @panel.observe("user", stage="after")
    def wrong(request, doc):
        return "<doc/>"

    assert "returned str, not a <doc> or None" in panel.call("user").doc.findtext("error/msg")


def test_skipaction_from_a_before_observer(root: PanelRoot, panel: Panel) -> None:
    @panel.observe("user.add", stage="before")
    def instead(request, doc):
        add(doc, "skipaction")
        add(doc, "done", "by python")

    response = panel.call("user.add", {"name": "al", "passwd": "x", "sok": "ok"})
    assert response.doc.findtext("done") == "by python" and response.doc.find("skipaction") is None
    assert users(root) == []


def test_final_observers_cannot_change_the_response(panel: Panel) -> None:
    finals = []

    @panel.observe("user", stage="final")
    def final(request, doc):
        finals.append(request.func)
        add(doc, "sneaky")

    response = panel.call("user")
    assert finals == ["user"] and response.doc.find("sneaky") is None


def test_a_core_function_written_in_python(root: PanelRoot, panel: Panel) -> None:
    @panel.function("hello.world")
    def hello(request, doc):
        if not request.get("who"):
            raise PanelError("value", "who", "", "Say who")
        add(doc, "greeting", f"Hello, {request.get('who')}")

    root.handler("shout.sh", "#!/bin/sh\nsed 's|Hello|HELLO|'\n", '<event name="hello.world" after="yes"/>')
    assert panel.call("hello.world", {"who": "you"}).doc.findtext("greeting") == "HELLO, you"
    assert panel.call("hello.world").doc.find("error").get("object") == "who"
    assert "hello.world" in panel.functions()
    assert (
        panel.call("user.add", {"name": "al", "passwd": "x", "sok": "ok"}).doc.findtext("id") == "al"
    )  # core still there


def test_registering_twice_runs_once_and_extensions_are_removed_by_exact_name(panel: Panel) -> None:
    calls = []

    def one(message):
        calls.append(("one", message))

    def two(message):
        calls.append(("two", message))

    panel.register("evt", one, extension="admin")
    panel.register("evt", one, extension="admin")
    panel.register("evt", two, extension="adminext")
    panel.notify_sync("evt", 1)
    assert calls == [("one", 1), ("two", 1)]
    assert panel.unregister_extension("admin") == 1  # not "adminext"
    panel.notify_sync("evt", 2)
    assert calls[2:] == [("two", 2)]


def test_observe_decorator_for_several_events(panel: Panel) -> None:
    @panel.observe("a", "b", priority=10)
    def both(message):
        return f"both:{message}"

    assert (panel.map("a", 1), panel.map("b", 2), panel.map("c", 3)) == (["both:1"], ["both:2"], [])


def test_dispatch_kinds_in_priority_order(panel: Panel) -> None:
    order = []
    panel.register("evt", lambda m: order.append(("c", m)) or "c", priority=900)
    panel.register("evt", lambda m: order.append(("a", m)) or "a", priority=1)
    panel.register("evt", lambda m: order.append(("b", m)) or "b")
    assert panel.map("evt", 0) == ["a", "b", "c"]
    panel.notify_sync("evt", 1)
    panel.notify("evt", 2).join(5)
    panel.notify1("evt", 3).join(5)
    assert order == [("a", 0), ("b", 0), ("c", 0), ("a", 1), ("b", 1), ("c", 1), ("a", 2), ("b", 2), ("c", 2), ("a", 3)]


def test_first_with_message_rewriting(panel: Panel) -> None:
    panel.register("q", lambda m: None, priority=1)  # not mine
    panel.register("q", lambda m: passing(m * 10), priority=2)  # rewritten for the next
    panel.register("q", lambda m: Continue(), priority=3)  # passed on unchanged
    panel.register("q", lambda m: f"answer {m}", priority=4)
    panel.register("q", lambda m: "never asked", priority=5)
    assert panel.first("q", 4) == "answer 40"
    assert panel.first("nobody", 4) is None


def test_folds(panel: Panel) -> None:
    panel.register("f", lambda m, acc: acc + [f"x{m}"], priority=1)
    panel.register("f", lambda m, acc: acc + [f"y{m}"], priority=2)
    assert panel.foldl("f", 7, []) == ["x7", "y7"]
    assert panel.foldr("f", 7, []) == ["y7", "x7"]


def test_asynchronous_failures_are_logged_not_raised(root: PanelRoot, panel: Panel) -> None:
    panel.register("evt", lambda m: 1 / 0)
    with panel.logging():
        panel.notify("evt", 1).join(5)
    assert "observer of 'evt' failed: ZeroDivisionError" in root.log()
    with pytest.raises(ZeroDivisionError):
        panel.notify_sync("evt", 1)


def test_event_records_list_observers_among_the_handlers_run(root: PanelRoot, panel: Panel) -> None:
    (root.path / "etc/mgrhooks.conf").write_text("[notify.audit]\ndriver = log\n")

    @panel.observe("user.add", stage="after")
    def audit(request, doc):
        pass

    panel.call("user.add", {"name": "al", "passwd": "x", "sok": "ok"})
    record = json.loads(root.read("var/billmgr.events.jsonl"))
    assert [(run["stage"], run["status"]) for run in record["handlers"]] == [("after", "ok")]
    assert "audit" in record["handlers"][0]["name"]


def test_a_response_kept_as_text_builds_its_tree_on_demand(root: PanelRoot, panel: Panel) -> None:
    root.handler("cat.sh", "#!/bin/sh\ncat\n", '<event name="desktop" after="yes" base="project"/>')  # last
    response = panel.call("desktop", user="root", level=31)
    assert response.serialised is not None and response.serialised.startswith(b"<?xml")
    assert not response.error
    assert response.doc.tag == "doc" and response.doc is response.doc  # parsed once
    assert response.doc.get("func") == "desktop"


def test_embedded_records_follow_the_applications_levels(root: PanelRoot, panel: Panel, caplog, monkeypatch) -> None:
    """Without panel.logging(), records go to the mgrhooks.* loggers, and the costly
    debug details are built only when the application's level lets them through."""
    import logging

    from mgrhooks import logs

    built: list[str] = []
    debug = logs.EXTERNAL.debug
    monkeypatch.setattr(logs.EXTERNAL, "debug", lambda message, *args: (built.append(message), debug(message, *args)))
    root.handler("h.sh", "#!/bin/sh\ncat\n", '<event name="desktop" after="yes"/>')
    with caplog.at_level(logging.INFO, logger="mgrhooks"):
        panel.call("desktop")
    assert "Executing: addon/h.sh" in caplog.text and built == []
    with caplog.at_level(logging.DEBUG, logger="mgrhooks"):
        panel.call("desktop")
    assert "'h.sh': " in caplog.text and "bytes on stdin, environment " in caplog.text and len(built) == 1


def test_the_version_lives_in_its_own_module() -> None:
    """mgrhooks.version holds it; the package re-exports it and the installed metadata
    (pyproject's dynamic version) reads it from there."""
    from importlib.metadata import version

    import mgrhooks
    from mgrhooks.version import __version__

    assert mgrhooks.__version__ == __version__ == version("mgrhooks")


def test_the_observer_methods_are_those_of_panel_observers(panel: Panel) -> None:
    """Delegated on each use, not copied onto the panel: a panel given other observers
    registers with, dispatches to and calls with those."""
    from mgrhooks import Observers

    assert not {"register", "observe", "notify", "first", "foldr"} & set(vars(panel))
    assert Panel.register.__doc__ == Observers.register.__doc__ and Panel.map is Observers.map
    mine = Observers()
    panel.observers = mine

    @panel.observe("user", stage="after")
    def stamp(request, doc):
        add(doc, "stamped")

    assert [e.func for e in mine.events()] == ["user"]
    assert panel.call("user").doc.find("stamped") is not None
    mine.register("q", lambda m: m + 1)
    assert panel.first("q", 1) == 2 and panel.map("q", 2) == [3]
    assert panel.unregister("user", stamp, stage="after") and mine.events() == ()


def test_python_functions_eventlist_and_core_documents_are_one_core_wrapper(root: PanelRoot, panel: Panel) -> None:
    """Panel.core is a functions.Functions around the built-in core; a call wraps no
    second time, and another panel given this core keeps its Python functions."""
    from mgrhooks.core import BuiltinCore
    from mgrhooks.functions import Functions

    assert isinstance(panel.core, BuiltinCore) and panel.core.db_path == root.path / "var/billmgr.db"

    @panel.function("user")  # replaces the built-in list
    def nobody(request, doc):
        add(doc, "nobody")

    assert isinstance(panel.core, Functions) and isinstance(panel.core.core, BuiltinCore)
    assert panel.call("user").doc.find("nobody") is not None
    assert "eventlist" in panel.functions() and not panel.call("eventlist").error
    other = Panel(root.path, core=panel.core)
    assert other.call("user").doc.find("nobody") is not None
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    (root.path / "etc/core/billmgr/user.xml").write_text("<doc><from>file</from></doc>")
    assert panel.call("user").doc.find("nobody") is not None  # not silently replaced (issue 16)
    (root.path / "etc/core/billmgr/user.xml").write_text('<doc mgrhooks-replace="yes"><from>file</from></doc>')
    replaced = panel.call("user").doc
    assert replaced.findtext("from") == "file" and "mgrhooks-replace" not in replaced.attrib  # when it says so


def test_queue_and_deliver_answer_named_records(root: PanelRoot, panel: Panel) -> None:
    (root.path / "etc/mgrhooks.conf").write_text("[notify.sync]\ndriver = script\nprogram = gone.sh\nattempts = 1\n")
    panel.call("user.add", {"name": "al", "passwd": "x", "sok": "ok"})  # the inline attempt fails: dead
    (dead,) = panel.queue()
    assert (dead.notifier, dead.state, dead.attempts, dead.event) == ("sync", "dead", 1, "user.add")
    assert "Addon 'addon/gone.sh' does not exist" in dead.error
    record, notifier, state, attempts, event, error = dead  # the six fields, in the order they always had
    assert panel.queue(dead_only=True) == [dead] and (record, state) == (dead.record, "dead")
    assert panel.retry() == 1 and panel.queue()[0].state == "pending"
    done = panel.deliver()
    assert (done.delivered, done.retried, done.dead) == (0, 0, 1) and done == (0, 0, 1)
    assert panel.drop([record]) == 1 and panel.queue() == []
