"""The DNS product of the built-in core (--mgr dnsmgr, ispmgr): its functions through the
Python API, its zone files, the catalogue of each product, and handlers around it."""

from __future__ import annotations

import shutil
import sqlite3
import subprocess
import sys
from pathlib import Path
from typing import Any

import dns.zone
import pytest

from conftest import PanelRoot
from mgrhooks import Request, Root, call
from mgrhooks.render import render

ACME = "_acme-challenge.www.example.com."


@pytest.fixture
def panel(tmp_path: Path) -> Root:
    return Root.open(tmp_path, "dnsmgr")


def do(root: Root, func: str, caller: tuple[str, int] = ("root", 30), **params: str) -> str:
    return render(call(root, Request(func, tuple(params.items()), user=caller[0], level=caller[1])).doc, "text")


def zone_file(root: Root, zone: str = "example.com") -> dns.zone.Zone:
    return dns.zone.from_file(str(root.var_dir / "named" / zone), origin=zone, relativize=False)


def rkeys(root: Root, zone: str = "example.com", caller: tuple[str, int] = ("root", 30)) -> list[str]:
    listed = do(root, "domain.record", caller, elid=zone)
    return [line.split("rkey=")[1] for line in listed.splitlines()]


def serial(root: Root, zone: str = "example.com") -> int:
    return int(zone_file(root, zone).find_rdataset(f"{zone}.", "SOA")[0].serial)


def test_creating_a_zone_adds_its_soa_ns_and_with_ip_its_a_records(panel: Root) -> None:
    assert do(panel, "domain.edit", name="Example.COM", ip="192.0.2.1", sok="ok") == "OK\nid=example.com\n"
    assert do(panel, "domain") == "name=example.com user=root dtype=master status=active\n"
    assert rkeys(panel) == [
        "example.com. A  192.0.2.1",
        "example.com. NS  ns1.example.com.",
        "example.com. NS  ns2.example.com.",
        "ns1.example.com. A  192.0.2.1",
        "ns2.example.com. A  192.0.2.1",
        "www.example.com. A  192.0.2.1",
    ]
    zone = zone_file(panel)
    soa = zone.find_rdataset("example.com.", "SOA")[0]
    assert (soa.mname.to_text(), soa.rname.to_text()) == ("ns1.example.com.", "hostmaster.example.com.")
    assert do(panel, "domain.edit", elid="example.com") == (
        "elid=example.com\nname=example.com\nuser=root\ndtype=master\nns=ns1.example.com. ns2.example.com.\n"
    )


def test_a_zone_with_outside_name_servers_needs_no_ip_one_inside_does(panel: Root) -> None:
    assert do(panel, "domain.edit", name="example.net", ns="ns1.example.org, ns2.example.org.", sok="ok").startswith(
        "OK"
    )
    assert rkeys(panel, "example.net") == ["example.net. NS  ns1.example.org.", "example.net. NS  ns2.example.org."]
    refused = do(panel, "domain.edit", name="example.com", sok="ok")
    assert refused.startswith("ERROR value(ip): The name server ns1.example.com. is inside the zone")
    assert do(panel, "domain.edit", name="example.net", ns="ns.example.org", sok="ok") == (
        "ERROR exists(name,example.net): Zone 'example.net' already exists\n"
    )
    assert do(panel, "domain.edit", name="com", ns="ns.example.org", sok="ok").startswith("ERROR value(name,com)")


def test_the_certbot_sequence_add_find_and_delete_a_txt_record(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ip="192.0.2.1", sok="ok")
    first = serial(panel)
    assert do(panel, "domain") == "name=example.com user=root dtype=master status=active\n"
    added = do(
        panel,
        "domain.record.edit",
        plid="example.com",
        elid="",
        name=ACME,
        rtype="txt",
        value="tok",
        ttl="10",
        sok="ok",
    )
    assert added == f"OK\nid={ACME} TXT  tok\n"
    assert f"{ACME} TXT  tok" in rkeys(panel)
    assert serial(panel) == first + 1
    txt = zone_file(panel).find_rdataset(ACME, "TXT")
    assert (txt.ttl, txt[0].strings) == (10, (b"tok",))
    assert do(panel, "domain.record.delete", plid="example.com", elid=f"{ACME} TXT  tok") == "OK\n"
    assert f"{ACME} TXT  tok" not in rkeys(panel)
    assert zone_file(panel).get_rdataset(ACME, "TXT") is None and serial(panel) == first + 2
    missed = do(panel, "domain.record.delete", plid="example.com", elid=f"{ACME} TXT  tok")
    assert missed == f"ERROR missed(rkey,{ACME} TXT  tok): No record '{ACME} TXT  tok' in the zone 'example.com'\n"


def test_a_record_outside_its_zone_is_a_value_error_naming_name(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ip="192.0.2.1", sok="ok")
    params = {"plid": "example.com", "name": "_acme-challenge.example.org.", "rtype": "txt", "value": "t", "sok": "ok"}
    doc = call(panel, Request("domain.record.edit", tuple(params.items()))).doc
    assert render(doc, "xml").count('<error type="value" object="name" value="_acme-challenge.example.org.">') == 1


def test_changing_a_record_by_its_rkey_keeps_what_is_not_given(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ip="192.0.2.1", sok="ok")
    www = "www.example.com. A  192.0.2.1"
    assert do(panel, "domain.record.edit", plid="example.com", elid=www) == (
        f"plid=example.com\nelid={www}\nname=www.example.com.\nrtype=A\nvalue=192.0.2.1\nttl=3600\n"
    )
    changed = do(panel, "domain.record.edit", plid="example.com", elid=www, ip="192.0.2.2", sok="ok")
    assert changed == "OK\nid=www.example.com. A  192.0.2.2\n"
    retyped = do(
        panel,
        "domain.record.edit",
        plid="example.com",
        elid="www.example.com. A  192.0.2.2",
        rtype="cname",
        domain="example.com.",
        sok="ok",
    )
    assert retyped == "OK\nid=www.example.com. CNAME  example.com.\n"
    assert zone_file(panel).find_rdataset("www.example.com.", "CNAME")[0].target.to_text() == "example.com."


def test_cname_exclusivity_and_duplicates_change_nothing(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ip="192.0.2.1", sok="ok")
    before = rkeys(panel)
    base = {"plid": "example.com", "sok": "ok"}
    assert do(panel, "domain.record.edit", **base, name="www", rtype="cname", domain="example.com.").startswith(
        "ERROR exists(name,www.example.com.): The name 'www.example.com.' already has a A record"
    )
    assert do(panel, "domain.record.edit", **base, name="@", rtype="cname", domain="x.example.net.").startswith(
        "ERROR value(rtype,CNAME): A CNAME record cannot be at the zone's apex"
    )
    assert do(panel, "domain.record.edit", **base, name="www", rtype="a", ip="192.0.2.1") == (
        "ERROR exists(rkey,www.example.com. A  192.0.2.1): The record 'www.example.com. A  192.0.2.1' already exists\n"
    )
    assert rkeys(panel) == before


def test_the_last_ns_record_of_the_apex_stays(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ns="ns.example.org", sok="ok")
    assert do(panel, "domain.record.delete", plid="example.com", elid="example.com. NS  ns.example.org.") == (
        "ERROR value(rtype,NS): The zone 'example.com' must keep an NS record at its apex 'example.com.'\n"
    )


def test_delete_takes_a_group_of_rkeys_all_or_none_and_a_txt_holding_the_separator(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ip="192.0.2.1", sok="ok")
    for value in ("a", "b", "x, y"):
        do(panel, "domain.record.edit", plid="example.com", name="t", rtype="TXT", value=value, sok="ok")
    keys = ["t.example.com. TXT  a", "t.example.com. TXT  b"]
    assert do(panel, "domain.record.delete", plid="example.com", elid=", ".join([*keys, "nope. A  1"])).startswith(
        "ERROR missed(rkey,nope. A  1)"
    )
    assert set(keys) <= set(rkeys(panel))
    assert do(panel, "domain.record.delete", plid="example.com", elid=", ".join(keys)) == "OK\n"
    assert do(panel, "domain.record.delete", plid="example.com", elid="t.example.com. TXT  x, y") == "OK\n"
    assert not [key for key in rkeys(panel) if key.startswith("t.")]


def test_a_long_txt_record_is_split_into_255_byte_strings_in_the_zone_file(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ip="192.0.2.1", sok="ok")
    dkim = "v=DKIM1; k=rsa; p=" + "A" * 700
    assert do(
        panel, "domain.record.edit", plid="example.com", name="mail._domainkey", rtype="txt", value=dkim, sok="ok"
    ).startswith("OK")
    strings = zone_file(panel).find_rdataset("mail._domainkey.example.com.", "TXT")[0].strings
    assert [len(s) for s in strings] == [255, 255, 208] and b"".join(strings).decode() == dkim
    assert f"mail._domainkey.example.com. TXT  {dkim}" in rkeys(panel)


def test_users_see_and_change_only_their_own_zones(panel: Root) -> None:
    for name in ("alice", "bob"):
        do(panel, "user.add", name=name, passwd="x", sok="ok")
    alice, bob = ("alice", 16), ("bob", 16)
    assert (
        do(panel, "domain.edit", alice, name="alice.example", ns="ns.example.org", sok="ok") == "OK\nid=alice.example\n"
    )
    assert do(
        panel, "domain.edit", ("root", 30), name="bob.example", user="bob", ns="ns.example.org", sok="ok"
    ).startswith("OK")
    assert do(panel, "domain", alice) == "name=alice.example user=alice dtype=master status=active\n"
    assert do(panel, "domain") == (
        "name=alice.example user=alice dtype=master status=active\nname=bob.example user=bob dtype=master status=active\n"
    )
    assert (
        do(panel, "domain.record", alice, elid="bob.example")
        == "ERROR missed(domain,bob.example): Zone 'bob.example' not found\n"
    )
    edit = {"plid": "bob.example", "name": "x", "rtype": "a", "ip": "192.0.2.9", "sok": "ok"}
    assert do(panel, "domain.record.edit", alice, **edit).startswith("ERROR missed(domain,bob.example)")
    assert do(panel, "domain.record.edit", bob, **edit).startswith("OK")
    assert do(panel, "domain.delete", alice, elid="bob.example").startswith("ERROR missed(domain,bob.example)")
    assert do(panel, "domain.edit", alice, name="c.example", user="bob", ns="ns.example.org", sok="ok") == (
        "ERROR access(user,bob): Only an administrator may give a zone to another user\n"
    )
    assert do(panel, "domain.edit", name="c.example", user="carol", ns="ns.example.org", sok="ok") == (
        "ERROR missed(user,carol): User 'carol' not found\n"
    )
    assert do(panel, "domain.edit", alice, name="sub.bob.example", ns="ns.example.org", sok="ok") == (
        "ERROR exists(name,sub.bob.example): Zone 'sub.bob.example' would overlap the zone 'bob.example' of another user\n"
    )
    assert do(panel, "domain.edit", alice, name="example", ns="ns.example.org", sok="ok").startswith("ERROR value(name")
    assert do(panel, "domain.edit", elid="alice.example", user="bob", sok="ok") == "OK\nid=alice.example\n"
    assert do(panel, "domain", alice) == "" and do(panel, "domain", ("mailbox", 9)).startswith(
        "ERROR access(func,domain)"
    )


def test_domain_delete_removes_the_zones_and_their_files(panel: Root) -> None:
    for zone in ("a.example", "b.example"):
        do(panel, "domain.edit", name=zone, ns="ns.example.org", sok="ok")
    assert do(panel, "domain.delete", elid="a.example, b.example") == "OK\n"
    assert do(panel, "domain") == "" and list((panel.var_dir / "named").iterdir()) == []
    with sqlite3.connect(panel.db_file) as db:
        assert db.execute("SELECT count(*) FROM dns_records").fetchone() == (0,)


def test_a_zone_file_that_cannot_be_written_undoes_the_change(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ip="192.0.2.1", sok="ok")
    before = rkeys(panel)
    shutil.rmtree(panel.var_dir / "named")
    (panel.var_dir / "named").write_text("a file where the folder was")
    result = subprocess.run(
        [
            sys.executable,
            "-m",
            "mgrhooks",
            "exec",
            "domain.record.edit",
            "plid=example.com",
            "name=x",
            "rtype=a",
            "ip=192.0.2.5",
            "sok=ok",
            "--root",
            str(panel.path),
            "--mgr",
            "dnsmgr",
        ],
        capture_output=True,
        text=True,
    )
    assert result.returncode == 3
    assert (
        f"cannot write the zone file {panel.var_dir}/named/example.com: {panel.var_dir}/named is not a folder"
        in result.stderr
    )
    assert rkeys(panel) == before


def test_named_checkzone_loads_the_zone_file(panel: Root) -> None:
    if shutil.which("named-checkzone") is None:
        pytest.skip("named-checkzone (Debian bind9-utils) is not installed")
    do(panel, "domain.edit", name="пример.example", ip="192.0.2.1", sok="ok")
    zone = "xn--e1afmkfd.example"
    base = {"plid": zone, "sok": "ok"}
    do(panel, "domain.record.edit", **base, name="_acme-challenge", rtype="txt", value='a "quoted" ; text ' + "z" * 400)
    do(panel, "domain.record.edit", **base, name="@", rtype="mx", priority="5", domain="mail")
    do(panel, "domain.record.edit", **base, name="mail", rtype="aaaa", ip="2001:db8::25")
    do(panel, "domain.record.edit", **base, name="_sip._tcp", rtype="srv", value="0 5 5060 mail")
    do(panel, "domain.record.edit", **base, name="@", rtype="caa", value='0 issue "letsencrypt.org"')
    do(panel, "domain.record.edit", **base, name="ftp", rtype="cname", domain="www")
    checked = subprocess.run(
        ["named-checkzone", zone, str(panel.var_dir / "named" / zone)], capture_output=True, text=True
    )
    assert checked.returncode == 0, checked.stdout
    assert f"loaded serial {serial(panel, zone)}" in checked.stdout


def test_each_product_has_its_own_functions(tmp_path: Path) -> None:
    def listed(mgr: str) -> set[str]:
        result = subprocess.run(
            [sys.executable, "-m", "mgrhooks.mgrctl", "--root", str(tmp_path), "-m", mgr, "-i"],
            capture_output=True,
            text=True,
        )
        assert result.returncode == 0, result.stderr
        return set(result.stdout.split())

    domain = {"domain", "domain.edit", "domain.delete", "domain.record", "domain.record.edit", "domain.record.delete"}
    users = {"user", "user.add", "user.edit", "user.delete", "user.suspend", "user.resume", "desktop", "eventlist"}
    assert listed("dnsmgr") == listed("ispmgr") == users | domain
    assert listed("billmgr") == listed("vmmgr") == users
    parameters = subprocess.run(
        [sys.executable, "-m", "mgrhooks.mgrctl", "--root", str(tmp_path), "-m", "dnsmgr", "-i", "domain.record.edit"],
        capture_output=True,
        text=True,
    )
    assert parameters.stdout.split() == [
        "plid",
        "elid",
        "name",
        "rtype",
        "value",
        "ip",
        "domain",
        "priority",
        "weight",
        "port",
        "ttl",
        "sok",
    ]
    for mgr, balance in (("billmgr", True), ("dnsmgr", False), ("ispmgr", False), ("vmmgr", False)):
        desktop = do(Root.open(tmp_path, mgr), "desktop")
        assert ("balance=0.00" in desktop) is balance, (mgr, desktop)


def test_eventlist_lists_the_domain_handlers_a_user_can_set_off(root: PanelRoot) -> None:
    root.mgr = "dnsmgr"
    root.handler(
        "z.sh", "#!/bin/sh\ncat\n", '<event name="domain.record.edit" after="yes"/><event name="user.add" after="yes"/>'
    )
    as_user = root.mgrhooks("exec", "eventlist", "--user", "alice", "--level", "16", "--out", "text")
    assert as_user.stdout.splitlines() == [
        "name=domain.record.edit stage=after handler=z.sh type=xml plugin=etc/xml/dnsmgr_mod_z_sh.xml:1"
    ]


def test_a_before_handler_refuses_a_record_and_an_after_handler_sees_its_rkey(root: PanelRoot) -> None:
    root.mgr = "dnsmgr"
    root.handler(
        "guard.sh",
        """#!/bin/sh
        if [ "$PARAM_rtype" = "caa" ]; then
            echo '<doc><error type="value" object="rtype" value="caa"><msg>CAA records are managed elsewhere</msg></error></doc>'
        else
            cat
        fi
        """,
        '<event name="domain.record.edit" before="yes"/>',
    )
    root.handler("seen.sh", "#!/bin/sh\ntee var/after.seen\n", '<event name="domain.record.edit" after="yes"/>')
    assert root.mgrhooks("exec", "domain.edit", "name=example.com", "ns=ns.example.org", "sok=ok").returncode == 0
    refused = root.mgrhooks(
        "exec",
        "domain.record.edit",
        "plid=example.com",
        "name=@",
        "rtype=caa",
        'value=0 issue "ca.example"',
        "sok=ok",
        "--out",
        "text",
    )
    assert (refused.returncode, refused.stdout) == (1, "ERROR value(rtype,caa): CAA records are managed elsewhere\n")
    assert "CAA" not in root.read("var/named/example.com")
    added = root.mgrhooks(
        "exec", "domain.record.edit", "plid=example.com", f"name={ACME}", "rtype=txt", "value=tok", "sok=ok"
    )
    assert added.returncode == 0
    assert f"<id>{ACME} TXT  tok</id>" in root.read("var/after.seen")


def test_the_zone_list_filters_by_name_as_clients_ask(panel: Root) -> None:
    for zone in ("example.com", "example.net", "пример.example"):
        do(panel, "domain.edit", name=zone, ns="ns.example.org", sok="ok")
    assert (
        do(panel, "domain", filter="on", name="example.net")
        == "name=example.net user=root dtype=master status=active\n"
    )
    assert do(panel, "domain", filter="on", name="Пример.example").startswith("name=xn--e1afmkfd.example ")
    assert do(panel, "domain", filter="on", name="ample.n") == "name=example.net user=root dtype=master status=active\n"
    assert len(do(panel, "domain", name="example.net").splitlines()) == 3  # no filter=on: every zone


def test_empty_zones_and_groups_are_value_errors(panel: Root) -> None:
    assert do(panel, "domain.record", elid="") == "ERROR value(elid): No zone given (parameter 'elid' is empty)\n"
    assert do(panel, "domain.delete") == "ERROR value(elid): No zone selected (parameter 'elid' is empty)\n"
    do(panel, "domain.edit", name="example.com", ns="ns.example.org", sok="ok")
    assert do(panel, "domain.delete", elid="example.com, ") == (
        "ERROR value(elid,example.com, ): Empty zone in the group 'example.com, ' (keys are joined by ', ')\n"
    )
    assert do(panel, "domain.record", elid="exa mple.com").startswith("ERROR missed(domain,exa mple.com)")


def test_observers_refuse_a_record_before_and_see_its_rkey_after(tmp_path: Path) -> None:
    from mgrhooks import Panel
    from mgrhooks.errors import PanelError

    panel = Panel(tmp_path, "ispmgr")
    seen: list[str] = []

    @panel.observe("domain.record.edit", stage="before")
    def no_wildcards(request: Request, doc: object) -> None:
        if request.get("name").startswith("*"):
            raise PanelError("value", "name", request.get("name"), "No wildcard records here")

    @panel.observe("domain.record.edit", stage="after")
    def note(request: Request, doc: Any) -> None:
        seen.append(doc.findtext("id"))

    assert not panel.call("domain.edit", {"name": "example.com", "ns": "ns.example.org", "sok": "ok"}).error
    refused = panel.call(
        "domain.record.edit", {"plid": "example.com", "name": "*", "rtype": "a", "ip": "192.0.2.1", "sok": "ok"}
    )
    assert render(refused.doc, "text") == "ERROR value(name,*): No wildcard records here\n"
    assert seen == [] and "*.example.com" not in (tmp_path / "var/named/example.com").read_text()
    panel.call(
        "domain.record.edit", {"plid": "example.com", "name": "www", "rtype": "a", "ip": "192.0.2.1", "sok": "ok"}
    )
    assert seen == ["www.example.com. A  192.0.2.1"]


def test_a_zone_file_that_is_a_folder_stops_changes_and_deletes_and_names_it(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ns="ns.example.org", sok="ok")
    (panel.var_dir / "named/example.com").unlink()
    (panel.var_dir / "named/example.com").mkdir()
    where = ["--root", str(panel.path), "--mgr", "dnsmgr"]
    for args in (
        ["domain.record.edit", "plid=example.com", "name=x", "rtype=a", "ip=192.0.2.5", "sok=ok"],
        ["domain.delete", "elid=example.com"],
    ):
        result = subprocess.run(
            [sys.executable, "-m", "mgrhooks", "exec", *args, *where], capture_output=True, text=True
        )
        assert result.returncode == 3, result.stdout + result.stderr
        assert f"zone file {panel.var_dir}/named/example.com: Is a directory" in result.stderr
    assert do(panel, "domain") == "name=example.com user=root dtype=master status=active\n"
    assert rkeys(panel) == ["example.com. NS  ns.example.org."]


def test_a_filter_that_is_not_a_zone_name_matches_part_of_one(panel: Root) -> None:
    do(panel, "domain.edit", name="example.com", ns="ns.example.org", sok="ok")
    assert do(panel, "domain", filter="on", name="EXAM") == "name=example.com user=root dtype=master status=active\n"
    assert do(panel, "domain", filter="on", name="nothing") == ""
