from __future__ import annotations

from pathlib import Path

import pytest

from mgrhooks.model import Base, HandlerType, Placement, Stage
from mgrhooks.plugins import build_registry, load_keeping, load_registry, parse_plugin, plugin_files


def parse(xml: str, path: str = "etc/xml/billmgr_mod_t.xml", generation: int = 5):
    parsed = parse_plugin(xml.encode(), path, generation)
    return parsed.events, parsed.funcs, parsed.problems


def test_vendor_samba_example() -> None:
    events, funcs, problems = parse(
        """<mgrdata> <handler name="samba.pl" type="cgi">
        <event after="yes" name="user.add" postdata="yes"/>
        <event after="yes" name="user.delete" postdata="yes"/>
        </handler> </mgrdata>"""
    )
    assert problems == []
    assert funcs == []
    assert [(e.func, e.stage, e.postdata, e.number) for e in events] == [
        ("user.add", Stage.AFTER, True, 1),
        ("user.delete", Stage.AFTER, True, 2),
    ]
    handler = events[0].handler
    assert (handler.name, handler.type, handler.plugin, handler.source.line) == (
        "samba.pl",
        HandlerType.CGI,
        "billmgr_mod_t.xml",
        1,
    )


def test_every_event_attribute() -> None:
    events, _, problems = parse(
        """<mgrdata><handler name="h" type="xml" ignore_errors="yes" timeout="2.5">
        <event name="*" before="yes" priority="hi" sessiondata="yes"/>
        <event name="desktop" after="yes" proirity="after" base="project"/>
        <event name="x" after="yes" final="yes" proirity="before"/>
        </handler></mgrdata>"""
    )
    assert problems == []
    star, desktop, after, final = events
    assert (star.func, star.stage, star.hi, star.sessiondata) == ("*", Stage.BEFORE, True, True)
    assert (desktop.base, desktop.placement) == (Base.PROJECT, Placement.AFTER)
    assert (after.stage, final.stage, after.number, final.number) == (Stage.AFTER, Stage.FINAL, 3, 3)
    assert (after.base, after.placement) == (Base.CORE, Placement.BEFORE)
    assert star.handler.ignore_errors and star.handler.timeout == 2.5


def test_func_declaration() -> None:
    _, funcs, problems = parse('<mgrdata><handler name="f.sh" type="xml"><func name="my.func"/></handler></mgrdata>')
    assert problems == []
    assert [(f.name, f.handler.name) for f in funcs] == [("my.func", "f.sh")]


def test_real_world_quirks_load() -> None:
    xml = """<?xml version="1.0" encoding="UTF8"?>
<mgrdata>
  <plugin name="x"><version>1</version></plugin>
  <metadata name="x.edit" type="form"><form/></metadata>
  <mainmenu level="29"><node name="x"/></mainmenu>
  <lang name="en"><messages name="x"><msg name="a">A</msg></messages></lang>
  <handler name="x.pl" type="cgi">
    stray text left by an editor
    <!-- a comment -->
    <event name="user.add" after="yes"/>
  </handler>
</mgrdata>
"""
    events, _, problems = parse(xml)
    assert problems == []
    assert [e.func for e in events] == ["user.add"]


def test_warnings_name_file_line_and_handler() -> None:
    _, _, problems = parse(
        """<mgrdata>
<handler name="h" type="xml" colour="red">
  <event name="a" after="yes" base="#10000" proirity="sideways"/>
  <wibble/>
</handler>
<toplevel/>
</mgrdata>"""
    )
    assert [str(p) for p in problems] == [
        "etc/xml/billmgr_mod_t.xml:2: warning: handler 'h': unknown attribute 'colour' ignored",
        "etc/xml/billmgr_mod_t.xml:3: warning: handler 'h': attribute 'base': expected core or project, got '#10000': core used",
        "etc/xml/billmgr_mod_t.xml:3: warning: handler 'h': attribute 'proirity': expected before or after, got 'sideways': after used",
        "etc/xml/billmgr_mod_t.xml:4: warning: handler 'h': unknown element <wibble> ignored",
        "etc/xml/billmgr_mod_t.xml:6: warning: unknown element <toplevel> ignored",
    ]


def test_errors_skip_only_the_broken_part() -> None:
    events, _, problems = parse(
        """<mgrdata>
<handler type="xml"><event name="a" after="yes"/></handler>
<handler name="bad" type="cgii"><event name="a" after="yes"/></handler>
<handler name="ok" type="xml">
  <event after="yes"/>
  <event name="b"/>
  <event name="c" before="yes"/>
</handler>
</mgrdata>"""
    )
    assert [(e.handler.name, e.func) for e in events] == [("ok", "c")]
    assert [(p.severity, p.source.line) for p in problems] == [("error", 2), ("error", 3), ("error", 5), ("error", 6)]
    assert "expected one of cgi, xml, got 'cgii'" in problems[1].message
    assert "event 'b' has no stage" in problems[3].message


def test_missing_type_is_a_warning_and_xml() -> None:
    events, _, problems = parse('<mgrdata><handler name="h"><event name="a" after="yes"/></handler></mgrdata>')
    assert events[0].handler.type is HandlerType.XML
    assert [p.severity for p in problems] == ["warning"]


def test_broken_file_reported_with_line_and_others_still_load(tmp_path: Path) -> None:
    plugins = tmp_path / "etc" / "xml"
    plugins.mkdir(parents=True)
    (plugins / "billmgr_mod_a.xml").write_text(
        '<mgrdata><handler name="a" type="xml">\n<event name="x" after="yes">\n</mgrdata>'
    )
    (plugins / "billmgr_mod_b.xml").write_text(
        '<mgrdata><handler name="b" type="xml"><event name="x" after="yes"/></handler></mgrdata>'
    )
    (plugins / "ispmgr_mod_c.xml").write_text(
        '<mgrdata><handler name="c" type="xml"><event name="x" after="yes"/></handler></mgrdata>'
    )
    registry = load_registry(tmp_path, "billmgr")
    assert [e.handler.name for e in registry.events] == ["b"]
    assert registry.files == ("etc/xml/billmgr_mod_a.xml", "etc/xml/billmgr_mod_b.xml")
    (problem,) = registry.problems
    assert problem.severity == "error"
    assert problem.source.path == "etc/xml/billmgr_mod_a.xml"
    assert problem.source.line == 3
    assert "invalid XML" in problem.message


def test_hostile_plugin_file_is_refused_not_expanded() -> None:
    external = '<!DOCTYPE mgrdata [<!ENTITY x SYSTEM "file:///etc/passwd">]>'
    for body in ('<mgrdata><handler name="&x;"/></mgrdata>', "<mgrdata>&x;</mgrdata>"):
        events, _, problems = parse('<?xml version="1.0"?>\n<!-- c -->\n' + external + body)
        assert events == []
        assert [(p.message, p.source.line) for p in problems] == [("a DTD (<!DOCTYPE>) is not allowed", 3)]


def test_duplicate_func_is_a_warning() -> None:
    registry = build_registry(
        [
            ("a.xml", b'<mgrdata><handler name="one" type="xml"><func name="f"/></handler></mgrdata>', 5),
            ("b.xml", b'<mgrdata><handler name="two" type="xml"><func name="f"/></handler></mgrdata>', 5),
        ]
    )
    func = registry.func("f")
    assert func is not None and func.handler.name == "one"
    assert [str(p) for p in registry.problems] == [
        "b.xml:1: warning: function 'f' is already declared at a.xml:1: ignored"
    ]


def test_plugin_listing(tmp_path: Path) -> None:
    """What ``mgrhooks plugin list`` shows comes from plugins.list_plugins: one record per
    file in load order, handlers counted once each, functions, and the switch's state."""
    import mgrhooks
    from mgrhooks.plugins import PluginInfo, find_plugin, list_plugins, plugin_name

    (tmp_path / "etc/xml").mkdir(parents=True)
    (tmp_path / "etc/xml/billmgr_mod_samba.xml").write_text(
        '<mgrdata><handler name="samba.pl" type="cgi"><event after="yes">user.add</event>'
        '<event after="yes">user.delete</event></handler></mgrdata>'
    )
    (tmp_path / "etc/billmgr_mod_tool.xml").write_text(
        '<mgrdata><handler name="t.sh"><func name="x.y"/></handler></mgrdata>'
    )
    (tmp_path / "etc/xml/billmgr_mod_zz.xml").write_text("<mgrdata><handler>")
    files = plugin_files(tmp_path, "billmgr")
    plugins = list_plugins(files, "billmgr", load_registry(tmp_path, "billmgr", files), {"billmgr_mod_tool.xml"})
    broken = "etc/xml/billmgr_mod_zz.xml:1: error: invalid XML: "
    assert plugins[:2] == [
        PluginInfo("samba", "billmgr_mod_samba.xml", "etc/xml/billmgr_mod_samba.xml", True, 1, 0),
        PluginInfo("tool", "billmgr_mod_tool.xml", "etc/billmgr_mod_tool.xml", False, 0, 1),
    ]
    assert plugins[2][:6] == ("zz", "billmgr_mod_zz.xml", "etc/xml/billmgr_mod_zz.xml", True, 0, 0)
    assert plugins[2].problem.startswith(broken)
    assert find_plugin(plugins, "tool") is plugins[1] and find_plugin(plugins, "billmgr_mod_samba.xml") is plugins[0]
    assert find_plugin(plugins, "mod_tool") is None
    assert plugin_name("ispmgr_mod_a.b.xml", "ispmgr") == "a.b"
    assert mgrhooks.PluginInfo is PluginInfo


@pytest.mark.parametrize(
    ("value", "reason"),
    [
        ("1e9", "expected at most 86400 seconds (a day), got '1e9'"),
        ("inf", "expected at most 86400 seconds (a day), got 'inf'"),
        ("nan", "expected seconds > 0, got 'nan'"),
        ("0", "expected seconds > 0, got '0'"),
        ("soon", "expected seconds > 0, got 'soon'"),
    ],
)
def test_a_bad_handler_timeout_is_an_error_and_the_default_is_used(value: str, reason: str) -> None:
    events, _, problems = parse(
        f'<mgrdata>\n<handler name="h" type="xml" timeout="{value}"><event name="x" after="yes"/></handler></mgrdata>'
    )
    assert [(p.severity, p.source.line, p.message) for p in problems] == [
        ("error", 2, f"handler 'h': attribute 'timeout': {reason}: default used")
    ]
    assert events[0].handler.timeout is None  # the handler still runs, with the run default


def test_a_timeout_of_a_day_is_taken() -> None:
    events, _, problems = parse(
        '<mgrdata><handler name="h" timeout="86400"><event name="x" after="yes"/></handler></mgrdata>'
    )
    assert events[0].handler.timeout == 86400.0 and [p.severity for p in problems] == ["warning"]  # (no type)


def test_load_keeping_keeps_the_last_good_version_of_each_file(tmp_path: Path) -> None:
    """mgrhooks.plugins.load_keeping on real files: a broken file falls back on its last
    good bytes; without any it declares nothing, as before."""
    xml = '<mgrdata><handler name="guard.sh" type="xml"><event name="user" before="yes"/></handler></mgrdata>\n'
    (tmp_path / "etc/xml").mkdir(parents=True)
    (tmp_path / "etc/xml/billmgr_mod_a.xml").write_text(xml)
    (tmp_path / "etc/xml/billmgr_mod_b.xml").write_text("<mgrdata>")
    files = plugin_files(tmp_path, "billmgr")
    registry, good = load_keeping(files, {}, {})
    assert [e.handler.name for e in registry.events] == ["guard.sh"]
    assert good == {"etc/xml/billmgr_mod_a.xml": xml.encode()}
    (tmp_path / "etc/xml/billmgr_mod_a.xml").write_text("")
    refused = {"etc/xml/billmgr_mod_b.xml": "folder etc/xml/ is writable by group or others (mode 777)"}
    registry, kept = load_keeping(files, refused, good)
    assert [e.handler.name for e in registry.events] == ["guard.sh"]
    assert kept == good
    assert [str(p) for p in registry.problems] == [
        "etc/xml/billmgr_mod_a.xml: error: empty output, expected an XML document; its last good version is used",
        "etc/xml/billmgr_mod_b.xml: error: not trusted: folder etc/xml/ is writable by group or others (mode 777)",
    ]
