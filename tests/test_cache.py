"""The registry cache in var/: reused while nothing changed, never stale, never trusted
when someone else could have written it."""

from __future__ import annotations

import os
import pickle

from conftest import PanelRoot
from mgrhooks import Root
from mgrhooks.model import Registry


def registered(root: PanelRoot) -> list[str]:
    return [f"{e.handler.name}:{e.func}:{e.stage.value}" for e in Root.open(root.path).registry().events]


def test_an_edited_plugin_file_takes_effect_on_the_next_call(root: PanelRoot) -> None:
    root.handler("a.sh", "#!/bin/sh\nsed 's|^</doc>|<a/>\\n</doc>|'\n", '<event name="user" after="yes"/>')
    assert "<a/>" in root.mgrhooks("exec", "user").stdout
    cache = root.path / "var/billmgr.registry"
    assert cache.exists() and cache.stat().st_mode & 0o777 == 0o600
    # the same size, written at once: only the times and content differ
    path = root.path / "etc/xml/billmgr_mod_a_sh.xml"
    path.write_text(path.read_text().replace('name="user"', 'name="desk"'))
    assert "<a/>" not in root.mgrhooks("exec", "user").stdout
    path.write_text(path.read_text().replace('name="desk"', 'name="user"'))
    assert "<a/>" in root.mgrhooks("exec", "user").stdout


def test_added_and_removed_files_take_effect(root: PanelRoot) -> None:
    root.handler("a.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    assert registered(root) == ["a.sh:user:after"]
    root.handler("b.sh", "#!/bin/sh\ncat\n", '<event name="user" before="yes"/>')
    assert registered(root) == ["a.sh:user:after", "b.sh:user:before"]
    (root.path / "etc/xml/billmgr_mod_a_sh.xml").unlink()
    assert registered(root) == ["b.sh:user:before"]


def test_registrations_are_logged_once_per_change(root: PanelRoot) -> None:
    root.handler("a.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    for _ in range(3):
        root.mgrhooks("exec", "user")
    assert root.log().count("Register event 'a.sh' for action 'user'") == 1


def test_a_cache_others_could_write_is_ignored(root: PanelRoot) -> None:
    root.handler("a.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    assert registered(root) == ["a.sh:user:after"]
    cache = root.path / "var/billmgr.registry"
    key = pickle.loads(cache.read_bytes())[0]
    forged = pickle.dumps((key, Registry(metadata={}, messages={}), {}, pickle.dumps(())))  # claims: no handlers
    cache.write_bytes(forged)
    os.chmod(cache, 0o666)
    assert registered(root) == ["a.sh:user:after"]  # not trusted: rebuilt
    assert cache.stat().st_mode & 0o777 == 0o600
    cache.write_bytes(forged)  # ours and private: that one would be trusted
    assert registered(root) == []


def test_a_corrupt_cache_is_rebuilt(root: PanelRoot) -> None:
    root.handler("a.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/>')
    registered(root)
    (root.path / "var/billmgr.registry").write_bytes(b"\x80\x05garbage")
    assert registered(root) == ["a.sh:user:after"]


def test_a_call_loads_the_events_of_its_function_and_star(root: PanelRoot) -> None:
    root.handler("a.sh", "#!/bin/sh\ncat\n", '<event name="user" after="yes"/><event name="desktop" after="yes"/>')
    root.handler("b.sh", "#!/bin/sh\ncat\n", '<event name="*" before="yes"/>')
    panel = Root.open(root.path)
    panel.registry()  # builds the cache
    assert sorted(f"{e.handler.name}:{e.func}" for e in panel.registry("user").events) == ["a.sh:user", "b.sh:*"]
    assert [f"{e.handler.name}:{e.func}" for e in panel.registry("nothing").events] == ["b.sh:*"]
    assert len(panel.registry().events) == 3
    assert "<func>" not in root.mgrhooks("exec", "eventlist", "--out", "text").stdout
    assert root.mgrhooks("exec", "eventlist", "--out", "text").stdout.count("\n") == 3


def test_a_registry_that_cannot_be_stored_leaves_no_file_or_descriptor(tmp_path) -> None:
    """store() answers False, and neither the temporary file nor its descriptor is left.
    The event stands for the slip store's TypeError clause is there for: something
    unpicklable (a mappingproxy) in a record."""
    import types

    from mgrhooks import cache

    (tmp_path / "var").mkdir()
    before = os.listdir("/proc/self/fd")
    event = types.SimpleNamespace(func="user", attrs=types.MappingProxyType({}))
    assert cache.store(tmp_path / "var" / "billmgr.registry", "key", Registry(events=(event,))) is False
    assert os.listdir("/proc/self/fd") == before
    assert list((tmp_path / "var").iterdir()) == []


def test_problems_read_from_the_cache_keep_their_severity(root: PanelRoot) -> None:
    """Severity is an enum in the records, from the parser and from the cache alike; the
    cache key holds the records' field types, so a cache whose problems held plain
    strings (before the enum) is not read."""
    from mgrhooks import cache
    from mgrhooks.model import Severity

    root.plugin("bad", "<mgrdata><handler/></mgrdata>")
    parsed = Root.open(root.path).registry().problems
    cached = Root.open(root.path).registry().problems
    assert parsed == cached and [p.severity for p in cached] == [Severity.ERROR]
    assert cached[0].severity is Severity.ERROR
    assert str(cached[0]).endswith(": error: <handler> without a name: skipped")
    assert "severity:<enum 'Severity'>" in cache.fingerprint([])


def test_a_cache_keeping_no_mapping_of_last_good_versions_keeps_none(tmp_path) -> None:
    from mgrhooks.cache import last_good

    path = tmp_path / "billmgr.registry"
    with path.open("wb") as file:
        pickle.dump("the registry", file)
        pickle.dump(["not", "a", "mapping"], file)
    path.chmod(0o600)
    assert last_good(path) == {}
    with path.open("wb") as file:
        pickle.dump("the registry", file)
        pickle.dump({"etc/xml/a.xml": b"<mgrdata/>", 3: b"x", "etc/xml/b.xml": "not bytes"}, file)
    assert last_good(path) == {"etc/xml/a.xml": b"<mgrdata/>"}


def test_the_key_tells_a_plugin_file_that_went_from_one_that_is_there(tmp_path) -> None:
    from mgrhooks.cache import fingerprint

    plugin = tmp_path / "billmgr_mod_a.xml"
    plugin.write_text("<mgrdata/>")
    files = [("etc/xml/billmgr_mod_a.xml", str(plugin), "billmgr_mod_a.xml")]
    there = fingerprint(files)
    plugin.unlink()
    gone = fingerprint(files)
    assert there != gone and gone.endswith("etc/xml/billmgr_mod_a.xml gone")
