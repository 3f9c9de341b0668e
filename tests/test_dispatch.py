"""The walk over a plan, driven through the runner seam: real plugin files and a real
root, handler programs answered by a fake runner (no process starts)."""

from __future__ import annotations

import os
from collections.abc import Callable, Mapping, Sequence

import pytest

from conftest import PanelRoot
from mgrhooks.dispatch import Options, call
from mgrhooks.document import Document
from mgrhooks.errors import PanelError
from mgrhooks.model import Base, InternalHandler, Request, Stage
from mgrhooks.monitor import Monitor, StepEnd, StepStart
from mgrhooks.observers import Observers
from mgrhooks.process import Processes
from mgrhooks.process.runner import RunOutcome, RunRequest
from mgrhooks.root import Root
from mgrhooks.xmldoc import Element, add, parse

EMPTY = b"<doc/>"


class Core:
    """A core with one function, ``thing``, and one internal handler after it."""

    def __init__(self, fails: bool = False) -> None:
        self.fails = fails
        self.ran: list[str] = []

    def catalogue(self) -> Mapping[str, Sequence[InternalHandler]]:
        return {"thing": (InternalHandler("thing.extra", Stage.AFTER, Base.CORE),)}

    def action(self, request: Request, doc: Element) -> None:
        self.ran.append("action")
        if self.fails:
            raise PanelError("exists", "thing", "x", "Thing x already exists")
        add(doc, "done", "yes")

    def internal(self, handler: InternalHandler, request: Request, doc: Element) -> None:
        self.ran.append(handler.name)
        add(doc, "extra", "yes")


class Runner:
    """Answers each program by name with ``answers[name](request)`` (default ``<doc/>``)."""

    def __init__(self, core: Core, **answers: Callable[[RunRequest], bytes | RunOutcome]) -> None:
        self.core = core
        self.answers = answers
        self.requests: list[RunRequest] = []

    def __call__(self, request: RunRequest) -> RunOutcome:
        self.requests.append(request)
        name = request.argv[0].rsplit("/", 1)[-1]
        self.core.ran.append(name)
        answer = self.answers.get(name.replace(".", "_"), lambda _: EMPTY)(request)
        return answer if isinstance(answer, RunOutcome) else RunOutcome(request, 0, answer, b"", 0.001, pid=1)


def failing(request: RunRequest) -> RunOutcome:
    return RunOutcome(request, 3, b"", b"", 0.001, pid=1, failure="exit", reason="exit status 3")


def register(root: PanelRoot, name: str, stage: str, type: str = "cgi", attrs: str = "", event: str = "") -> None:
    root.handler(name, "#!/bin/sh\nexit 9\n", f'<event name="thing" {stage}="yes" {event}/>', type=type, attrs=attrs)


def run(root: PanelRoot, runner: Runner, core: Core, **options: object) -> tuple[Element, Callable[[], None] | None]:
    response = call(Root.open(root.path), Request("thing"), core, Options(**options), runner=runner)
    return response.doc, response.finish


@pytest.fixture
def walk(root: PanelRoot) -> PanelRoot:
    register(root, "b1.sh", "before")
    register(root, "b2.sh", "before", type="xml")
    register(root, "a1.sh", "after")
    register(root, "a2.sh", "after", event='base="project"')
    register(root, "f1.sh", "final")
    return root


def test_the_stages_run_in_order_around_the_action(walk: PanelRoot) -> None:
    core = Core()
    runner = Runner(core, b2_sh=lambda request: request.stdin)
    doc, _ = run(walk, runner, core)
    assert core.ran == ["b1.sh", "b2.sh", "action", "thing.extra", "a1.sh", "a2.sh", "f1.sh"]
    assert doc.findtext("done") == "yes" and doc.findtext("extra") == "yes"
    assert all(r.argv[0] == str(walk.path / "addon" / r.argv[0].rsplit("/", 1)[-1]) for r in runner.requests)
    assert [r.env["HANDLER_STAGE"] for r in runner.requests] == ["before", "before", "after", "after", "final"]


def test_an_error_before_stops_the_call_but_not_the_final_stage(walk: PanelRoot) -> None:
    core = Core()
    doc, _ = run(walk, Runner(core, b1_sh=lambda _: b'<doc><error type="nope"/></doc>'), core)
    assert core.ran == ["b1.sh", "f1.sh"] and doc.find("error").get("type") == "nope"


def test_skipaction_before_replaces_the_main_logic_and_the_after_stage(walk: PanelRoot) -> None:
    core = Core()
    doc, _ = run(walk, Runner(core, b2_sh=lambda _: b"<doc><mine/><skipaction/></doc>"), core)
    assert core.ran == ["b1.sh", "b2.sh", "f1.sh"]
    assert [child.tag for child in doc] == ["mine"]


def test_a_failed_action_skips_the_after_stage(walk: PanelRoot) -> None:
    core = Core(fails=True)
    doc, _ = run(walk, Runner(core, b2_sh=lambda request: request.stdin), core)
    assert core.ran == ["b1.sh", "b2.sh", "action", "f1.sh"] and doc.find("error").get("type") == "exists"


def test_a_failing_after_handler_stops_the_call_unless_its_errors_are_ignored(walk: PanelRoot) -> None:
    core = Core()
    doc, _ = run(walk, Runner(core, b2_sh=lambda r: r.stdin, a1_sh=failing), core)
    assert core.ran[-3:] == ["thing.extra", "a1.sh", "f1.sh"]
    assert doc.find("error").get("type") == "handler" and "failed: exit status 3" in doc.findtext("error/msg")
    register(walk, "a1.sh", "after", attrs='ignore_errors="yes"')
    core = Core()
    doc, _ = run(walk, Runner(core, b2_sh=lambda r: r.stdin, a1_sh=failing), core)
    assert core.ran[-3:] == ["a1.sh", "a2.sh", "f1.sh"] and doc.find("error") is None


def test_final_handlers_can_be_deferred_and_see_the_response_only_with_sessiondata(walk: PanelRoot) -> None:
    register(walk, "f2.sh", "final", event='sessiondata="yes"')
    core = Core()
    runner = Runner(core, b2_sh=lambda r: r.stdin)
    doc, finish = run(walk, runner, core, defer_final=True)
    assert core.ran[-1] == "a2.sh" and finish is not None
    finish()
    f1, f2 = runner.requests[-2:]
    assert parse(f1.stdin).find("done") is None  # the document the call started from
    assert parse(f2.stdin).findtext("done") == "yes"  # the response


def test_printed_text_passes_from_handler_to_handler_without_a_tree(root: PanelRoot) -> None:
    """The big-document path: an xml handler's checked output is the next one's stdin,
    and one that prints its input unchanged leaves the response those very bytes."""
    for name in ("x1.sh", "x2.sh", "x3.sh"):
        register(root, name, "after", type="xml")
    core = Core()
    head = b'<?xml version="1.0" encoding="UTF-8"?>\n<doc func="thing" lang="en" binary="/billmgr">'  # the panel's own attributes
    printed = head + b"<elem/>" * 1000 + b"\n</doc>\n"
    runner = Runner(core, x1_sh=lambda _: bytes(printed), x2_sh=lambda r: r.stdin, x3_sh=lambda r: r.stdin)
    response = call(Root.open(root.path), Request("thing"), core, runner=runner)
    x1, x2, x3 = runner.requests
    assert x3.stdin is x2.stdin and x2.stdin == printed
    assert response.serialised is x2.stdin and not response.error


def test_a_refused_program_fails_without_starting(walk: PanelRoot) -> None:
    (walk.path / "addon" / "a1.sh").chmod(0o777)  # writable by others: refused
    core = Core()
    doc, _ = run(walk, Runner(core, b2_sh=lambda r: r.stdin), core)
    assert "a1.sh" not in core.ran and "is writable by group or others" in doc.findtext("error/msg")


class Recorder(Monitor):
    def __init__(self) -> None:
        self.seen: list[tuple[str, str]] = []

    def before(self, start: StepStart) -> None:
        self.seen.append(("before", start.step.name))

    def after(self, end: StepEnd) -> None:
        ran = end.result.run.status if end.result.run else "-"
        self.seen.append(("after", f"{end.start.step.name} {ran}"))

    def committed(self, request: Request, document: Document) -> None:
        self.seen.append(("committed", f"{request.func} error={document.has_error()}"))


def test_a_monitor_is_told_of_every_step_and_of_the_committed_response(walk: PanelRoot) -> None:
    core = Core()
    recorder = Recorder()
    run(walk, Runner(core, b2_sh=lambda r: r.stdin, a2_sh=failing), core, monitors=(recorder,))
    assert recorder.seen == [
        ("before", "b1.sh"),
        ("after", "b1.sh ok"),
        ("before", "b2.sh"),
        ("after", "b2.sh ok"),
        ("before", "thing"),
        ("after", "thing -"),
        ("before", "thing.extra"),
        ("after", "thing.extra -"),
        ("before", "a1.sh"),
        ("after", "a1.sh ok"),
        ("before", "a2.sh"),
        ("after", "a2.sh exit"),
        ("committed", "thing error=True"),
        ("before", "f1.sh"),
        ("after", "f1.sh ok"),
    ]


def test_calls_nested_too_deep_are_refused_before_anything_runs(walk: PanelRoot) -> None:
    core = Core()
    options = Options(depth=9, chain=("a", "b"))
    response = call(Root.open(walk.path), Request("thing"), core, options, runner=Runner(core))
    assert core.ran == [] and response.plan is None
    assert response.doc.find("error").get("type") == "nesting" and "a > b > thing" in response.doc.findtext("error/msg")


def test_parameter_files_are_written_once_for_the_call_and_removed_after_it(walk: PanelRoot) -> None:
    core = Core()
    runner = Runner(core, b2_sh=lambda r: r.stdin)
    big = "x" * (70 * 1024)  # beyond what goes into the environment
    call(Root.open(walk.path), Request("thing", (("note", big),)), core, runner=runner)
    files = {r.env["PARAM_note_FILE"] for r in runner.requests}
    assert len(files) == 1 and "PARAM_note" not in runner.requests[0].env
    assert not os.path.exists(files.pop())  # the call's end removed it


class Recording(Processes):
    """Processes that run nothing: each program's answer is its stdin (an xml ``cat``);
    ``events`` says when they were made ready and when they ran."""

    def __init__(self) -> None:
        super().__init__(guard=False)
        self.events: list[str] = []

    def prepare(self) -> None:
        self.events.append("prepare")

    def keep(self, data: bytes) -> int | None:
        self.events.append("keep")
        self.kept = data
        return super().keep(data)

    def run(self, request: RunRequest) -> RunOutcome:
        self.events.append("run")
        self.stdin = request.stdin
        return RunOutcome(request, 0, request.stdin, b"", 0.001, pid=1)


@pytest.mark.parametrize(
    ("document", "observer_only", "events"),
    [
        (
            '<?xml version="1.0" encoding="UTF-8"?>\n<doc func="site">\n<elem><n>1</n></elem>\n</doc>\n',
            False,
            ["prepare", "run"],
        ),
        ("<doc><elem><n>1</n></elem></doc>", False, ["run"]),  # not in our form: the tree path, nothing to wait for
        ('<?xml version="1.0" encoding="UTF-8"?>\n<doc func="site">\n<elem><n>1</n></elem>\n</doc>\n', True, []),
    ],
)
def test_the_handlers_get_ready_while_a_supplied_list_is_checked(
    root: PanelRoot, document: str, observer_only: bool, events: list[str]
) -> None:
    """A supplied list is checked by libxml2 in another thread; the walk gets the handlers
    of the after stage ready meanwhile (docs/performance.md), when a program is among them."""
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    (root.path / "etc/core/billmgr/site.xml").write_text(document)
    observers = Observers()
    observers.register("site", lambda request, doc: None, stage=Stage.AFTER)
    if not observer_only:
        root.handler("cat.sh", "#!/bin/sh\ncat\n", '<event name="site" after="yes"/>')
    processes = Recording()
    response = call(Root.open(root.path), Request("site"), options=Options(processes=processes, observers=observers))
    assert not response.error and response.doc.findtext("elem/n") == "1"
    assert processes.events == events


LIST = '<?xml version="1.0" encoding="UTF-8"?>\n<doc func="site" total="1">\n<elem><n>1</n></elem>\n</doc>\n'


@pytest.mark.parametrize(("handler_type", "events"), [("xml", ["prepare", "keep", "run"]), ("cgi", ["prepare", "run"])])
def test_the_listed_document_is_made_while_a_supplied_list_is_checked(
    root: PanelRoot, handler_type: str, events: list[str]
) -> None:
    """While libxml2 checks a supplied list, the walk builds the listed document and, when
    the next handler is an xml one, writes its stdin file (docs/performance.md): the run
    reads those very bytes."""
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    (root.path / "etc/core/billmgr/site.xml").write_text(LIST)
    script = "#!/bin/sh\ncat\n" if handler_type == "xml" else "#!/bin/sh\necho '<doc/>'\n"
    root.handler("h.sh", script, '<event name="site" after="yes"/>', type=handler_type)
    processes = Recording()
    response = call(Root.open(root.path), Request("site"), options=Options(processes=processes))
    printed = response.serialised  # (known before the tree is asked for)
    assert not response.error and response.doc.findtext("elem/n") == "1" and response.doc.get("total") == "1"
    assert processes.events == events
    if handler_type == "xml":
        assert processes.stdin is processes.kept and processes.stdin == printed


def test_a_list_the_check_refuses_leaves_nothing_of_what_was_made_meanwhile(root: PanelRoot) -> None:
    """A supplied document the counts take as a list but libxml2 refuses: what the walk made
    of it meanwhile (the listed document, the handler's stdin file) reaches no one; the
    response is the core's error, without the list's attributes."""
    (root.path / "etc/core/billmgr").mkdir(parents=True)
    broken = LIST.replace('total="1"', 'total="1" extra="yes"').replace("<n>1</n>", "<n>1<n>")
    (root.path / "etc/core/billmgr/site.xml").write_text(broken)
    root.handler("h.sh", "#!/bin/sh\ncat\n", '<event name="site" after="yes"/>')
    processes = Recording()
    response = call(Root.open(root.path), Request("site"), options=Options(processes=processes))
    assert response.error and "extra" not in response.doc.attrib and response.doc.find("elem") is None
    assert processes.events == ["prepare", "keep"]  # made meanwhile, never run
