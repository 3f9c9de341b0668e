"""The ordering rule, one behaviour per test, asserting exact step lists."""

from __future__ import annotations

import pytest

from mgrhooks.core import BuiltinCore
from mgrhooks.errors import PanelError
from mgrhooks.model import Base, InternalHandler, Request, Stage
from mgrhooks.plan import plan
from mgrhooks.plugins import build_registry

CATALOGUE = {
    "user.add": (),
    "desktop": (
        InternalHandler("desktop.user", Stage.AFTER, Base.CORE),
        InternalHandler("desktop.balance", Stage.AFTER, Base.PROJECT),
    ),
}


def registry(*files: tuple[str, str]):
    return build_registry([(name, xml.encode(), 5) for name, xml in files])


def handler(name: str, *events: str) -> str:
    return f'<handler name="{name}" type="xml">{"".join(events)}</handler>'


def plugin(*handlers: str) -> str:
    return f"<mgrdata>{''.join(handlers)}</mgrdata>"


def names(reg, func: str = "user.add", catalogue=CATALOGUE) -> list[str]:
    return [f"{s.stage.value if s.stage else 'action'}:{s.name}" for s in plan(reg, Request(func), catalogue).steps]


def test_stages_before_action_after_final() -> None:
    reg = registry(
        (
            "billmgr_mod_a.xml",
            plugin(
                handler("fin", '<event name="user.add" final="yes"/>'),
                handler("aft", '<event name="user.add" after="yes"/>'),
                handler("bef", '<event name="user.add" before="yes"/>'),
            ),
        )
    )
    assert names(reg) == ["before:bef", "action:user.add", "after:aft", "final:fin"]


def test_file_name_byte_order_then_document_order() -> None:
    reg = registry(
        ("billmgr_mod_b.xml", plugin(handler("b1", '<event name="user.add" after="yes"/>'))),
        ("billmgr_mod_B.xml", plugin(handler("B1", '<event name="user.add" after="yes"/>'))),
        (
            "billmgr_mod_a.xml",
            plugin(
                handler("a2", '<event name="user.add" after="yes"/>'),
                handler("a1", '<event name="user.add" after="yes"/>'),
            ),
        ),
    )
    # byte order: "B" (0x42) sorts before "a" (0x61) and "b"; inside a file, document order
    assert names(reg) == ["action:user.add", "after:B1", "after:a2", "after:a1", "after:b1"]


def test_priority_hi_first_within_its_slot() -> None:
    reg = registry(
        ("billmgr_mod_a.xml", plugin(handler("plain", '<event name="user.add" before="yes"/>'))),
        ("billmgr_mod_z.xml", plugin(handler("hi", '<event name="user.add" before="yes" priority="hi"/>'))),
    )
    assert names(reg) == ["before:hi", "before:plain", "action:user.add"]


def test_after_stage_slots_around_internal_handlers() -> None:
    reg = registry(
        (
            "billmgr_mod_a.xml",
            plugin(
                handler("project_after", '<event name="desktop" after="yes" proirity="after" base="project"/>'),
                handler("project_before", '<event name="desktop" after="yes" proirity="before" base="project"/>'),
                handler("core_default", '<event name="desktop" after="yes"/>'),
                handler("core_before", '<event name="desktop" after="yes" proirity="before"/>'),
                handler("project_default", '<event name="desktop" after="yes" base="project"/>'),
            ),
        )
    )
    assert names(reg, "desktop") == [
        "action:desktop",
        "after:core_before",
        "after:desktop.user",
        "after:core_default",
        "after:project_before",
        "after:desktop.balance",
        "after:project_after",
        "after:project_default",
    ]


def test_priority_hi_does_not_leave_its_slot() -> None:
    reg = registry(
        (
            "billmgr_mod_a.xml",
            plugin(
                handler("late", '<event name="desktop" after="yes" proirity="after" base="project"/>'),
                handler("hi", '<event name="desktop" after="yes" priority="hi"/>'),
            ),
        )
    )
    assert names(reg, "desktop") == [
        "action:desktop",
        "after:desktop.user",
        "after:hi",
        "after:desktop.balance",
        "after:late",
    ]


def test_star_matches_every_function_and_sorts_like_any_event() -> None:
    reg = registry(
        ("billmgr_mod_a.xml", plugin(handler("all", '<event name="*" before="yes"/>'))),
        ("billmgr_mod_b.xml", plugin(handler("one", '<event name="user.add" before="yes"/>'))),
    )
    assert names(reg) == ["before:all", "before:one", "action:user.add"]
    assert names(reg, "desktop") == ["before:all", "action:desktop", "after:desktop.user", "after:desktop.balance"]


def test_same_handler_twice_in_one_stage_runs_once_at_first_place() -> None:
    reg = registry(
        (
            "billmgr_mod_a.xml",
            plugin(handler("h", '<event name="*" after="yes"/>', '<event name="user.add" after="yes" priority="hi"/>')),
        )
    )
    steps = plan(reg, Request("user.add"), CATALOGUE).stage(Stage.AFTER)
    assert [(s.name, s.event.number if s.event else 0) for s in steps] == [("h", 2)]


def test_after_and_final_on_one_event_gives_two_steps() -> None:
    reg = registry(("billmgr_mod_a.xml", plugin(handler("h", '<event name="user.add" after="yes" final="yes"/>'))))
    assert names(reg) == ["action:user.add", "after:h", "final:h"]


def test_unknown_function_is_a_missed_error() -> None:
    with pytest.raises(PanelError) as info:
        plan(registry(), Request("no.such"), CATALOGUE)
    assert (info.value.type, info.value.object, info.value.value) == ("missed", "func", "no.such")


def test_addon_func_is_the_action_and_core_internals_do_not_run() -> None:
    reg = registry(
        (
            "billmgr_mod_a.xml",
            plugin(
                '<handler name="impl.sh" type="xml"><func name="desktop"/></handler>',
                handler("b", '<event name="desktop" before="yes"/>'),
            ),
        )
    )
    steps = plan(reg, Request("desktop"), CATALOGUE).steps
    assert [(s.kind.value, s.name) for s in steps] == [("handler", "b"), ("action", "impl.sh")]
    assert "impl.sh" in steps[1].why


def test_why_names_slot_priority_file_and_line() -> None:
    reg = registry(
        ("billmgr_mod_a.xml", plugin(handler("h", '<event name="desktop" after="yes" priority="hi" base="project"/>')))
    )
    step = plan(reg, Request("desktop"), CATALOGUE).stage(Stage.AFTER)[-1]
    assert (
        step.why
        == "after stage, slot base=project, proirity=after; priority=hi, file billmgr_mod_a.xml, event #1 (billmgr_mod_a.xml:1)"
    )


def test_builtin_catalogue_lists_the_core_functions(tmp_path) -> None:
    catalogue = BuiltinCore(tmp_path / "db").catalogue()
    assert sorted(catalogue) == [
        "desktop",
        "user",
        "user.add",
        "user.delete",
        "user.edit",
        "user.resume",
        "user.suspend",
    ]
    assert [i.name for i in catalogue["desktop"]] == ["desktop.user", "desktop.balance"]


def test_disabled_plugins_stay_in_the_plan_as_skipped_steps() -> None:
    reg = registry(
        ("billmgr_mod_a.xml", plugin(handler("a", '<event name="user.add" after="yes"/>'))),
        ("billmgr_mod_b.xml", plugin(handler("b", '<event name="user.add" after="yes"/>'))),
    )
    steps = plan(reg, Request("user.add"), CATALOGUE, disabled={"billmgr_mod_a.xml"})
    assert [(s.name, s.skipped) for s in steps.steps] == [("user.add", ""), ("a", "plugin disabled"), ("b", "")]
    assert [s.name for s in steps.stage(Stage.AFTER)] == ["b"]


def test_a_function_of_a_disabled_plugin_is_not_offered() -> None:
    reg = registry(
        (
            "billmgr_mod_f.xml",
            plugin('<handler name="f.sh" type="xml"><func name="my.func"/><func name="desktop"/></handler>'),
        )
    )
    with pytest.raises(PanelError) as info:
        plan(reg, Request("my.func"), CATALOGUE, disabled={"billmgr_mod_f.xml"})
    assert info.value.msg == "Function 'my.func' comes from plugin billmgr_mod_f.xml, which is disabled"
    # where the core has the function, the core's own runs again
    assert plan(reg, Request("desktop"), CATALOGUE, disabled={"billmgr_mod_f.xml"}).action.func is None
