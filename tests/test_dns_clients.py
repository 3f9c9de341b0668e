"""Public DNS-01 clients of ISPsystem panels against the DNS product, through the real
``mgrhooks exec`` command: the requests certbot hooks and plugins for DNSmanager and
ISPmanager send, as they send them (a urlencoded body or parameters, ``out=json`` or
``sjson``, the rkey built by the client), and the notifications the changes make."""

from __future__ import annotations

import json
import secrets
import subprocess

import dns.zone
import pytest

from conftest import PanelRoot

ZONE = "example.com"


@pytest.fixture(params=["dnsmgr", "ispmgr"])
def panel(root: PanelRoot, request: pytest.FixtureRequest) -> PanelRoot:
    root.mgr = request.param
    made = root.mgrhooks("exec", "domain.edit", f"name={ZONE}", "ip=192.0.2.1", "sok=ok")
    assert made.returncode == 0, made.stdout + made.stderr
    return root


def body(panel: PanelRoot, func: str, text: str, out: str = "json") -> dict:
    """What the command answers to the request body ``text`` (as a client POSTs it)."""
    result = subprocess.run(
        panel.argv("exec", func, "--body", "-", "--out", out), input=text, capture_output=True, text=True, timeout=60
    )
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["doc"]


def call(panel: PanelRoot, func: str, *pairs: str, out: str = "json") -> dict:
    result = panel.mgrhooks("exec", func, *pairs, "--out", out)
    assert result.returncode == 0, result.stdout + result.stderr
    return json.loads(result.stdout)["doc"]


def elems(doc: dict) -> list[dict]:
    """The rows of a json list: one row is an object, several a list (as the panel answers)."""
    found = doc.get("elem", [])
    return found if isinstance(found, list) else [found]


def txt_in_zone_file(panel: PanelRoot, name: str) -> list[bytes]:
    zone = dns.zone.from_file(str(panel.path / "var/named" / ZONE), origin=ZONE, relativize=False)
    found = zone.get_rdataset(name, "TXT")
    return [b"".join(rd.strings) for rd in found] if found is not None else []


def test_a_certbot_plugin_adds_finds_and_deletes_its_challenge(panel: PanelRoot) -> None:
    """A certbot plugin for ISPmanager: the zone list, domain.record.edit with the absolute
    validation name, the records listed and the new one found by rkey, then
    domain.record.delete with the rkey it builds itself (and elname beside elid)."""
    validation = secrets.token_urlsafe(32)
    name = "_acme-challenge.www.example.com"
    zones = [row["name"]["$"] for row in elems(call(panel, "domain", "out=json"))]
    assert zones == [ZONE]
    added = call(
        panel,
        "domain.record.edit",
        "sok=ok",
        f"plid={ZONE}",
        f"name={name}.",
        f"value={validation}",
        "rtype=txt",
        "ttl=10",
    )
    assert "ok" in added and "error" not in added
    rkey = f"{name}. TXT  {validation}"
    rows = elems(call(panel, "domain.record", f"elid={ZONE}"))
    found = [row for row in rows if row["rkey"]["$"] == rkey]
    assert [(r["name"]["$"], r["rtype"]["$"], r["value"]["$"], r["ttl"]["$"]) for r in found] == [
        (f"{name}.", "TXT", validation, "10")
    ]
    assert txt_in_zone_file(panel, f"{name}.") == [validation.encode()]
    deleted = call(panel, "domain.record.delete", f"plid={ZONE}", f"elname={rkey}", f"elid={rkey}")
    assert "ok" in deleted and "error" not in deleted
    assert all(row["rkey"]["$"] != rkey for row in elems(call(panel, "domain.record", f"elid={ZONE}")))
    assert txt_in_zone_file(panel, f"{name}.") == []


def test_certbot_shell_hooks_post_a_relative_name_and_delete_by_the_rkey_they_build(panel: PanelRoot) -> None:
    """The manual-auth-hook and cleanup-hook of a DNSmanager shell client: urlencoded POST
    bodies with ``authinfo``, ``out=sjson``, a relative ``name`` and ``rtype=txt``; the
    cleanup body's rkey is not urlencoded (its spaces are literal)."""
    validation = secrets.token_urlsafe(32)
    added = body(
        panel,
        "domain.record.edit",
        f"authinfo=root:pw&out=sjson&func=domain.record.edit&elid=&plid={ZONE}&name=_acme-challenge"
        f"&ttl=3600&rtype=txt&value={validation}&sok=ok",
        out="sjson",
    )
    assert added["id"]["$"] == f"_acme-challenge.{ZONE}. TXT  {validation}"
    assert txt_in_zone_file(panel, f"_acme-challenge.{ZONE}.") == [validation.encode()]
    deleted = body(
        panel,
        "domain.record.delete",
        f"authinfo=root:pw&out=sjson&func=domain.record.delete&elid=_acme-challenge.{ZONE}. TXT  {validation}&plid={ZONE}",
        out="sjson",
    )
    assert "ok" in deleted
    assert txt_in_zone_file(panel, f"_acme-challenge.{ZONE}.") == []


def test_a_wildcard_and_its_base_name_get_two_challenges_at_one_name(panel: PanelRoot) -> None:
    """certbot -d example.com -d '*.example.com': two TXT records at the same name, each
    deleted by its own rkey, the other kept."""
    first, second = secrets.token_urlsafe(32), secrets.token_urlsafe(32)
    name = f"_acme-challenge.{ZONE}."
    for value in (first, second):
        call(panel, "domain.record.edit", "sok=ok", f"plid={ZONE}", f"name={name}", f"value={value}", "rtype=txt")
    assert sorted(txt_in_zone_file(panel, name)) == sorted([first.encode(), second.encode()])
    call(panel, "domain.record.delete", f"plid={ZONE}", f"elid={name} TXT  {first}")
    assert txt_in_zone_file(panel, name) == [second.encode()]


def test_zone_changes_make_notifications_and_lists_do_not(panel: PanelRoot) -> None:
    (panel.path / "etc/mgrhooks.conf").write_text("[notify.zones]\ndriver = log\nevents = domain.*\n")
    validation = secrets.token_urlsafe(16)
    name = f"_acme-challenge.{ZONE}."
    call(panel, "domain")
    call(panel, "domain.record", f"elid={ZONE}")
    call(panel, "domain.record.edit", "sok=ok", f"plid={ZONE}", f"name={name}", f"value={validation}", "rtype=txt")
    call(panel, "domain.record.edit", f"plid={ZONE}", f"elid={name} TXT  {validation}")  # the form: a read
    call(panel, "domain.record.delete", f"plid={ZONE}", f"elid={name} TXT  {validation}")
    lines = (panel.path / f"var/{panel.mgr}.events.jsonl").read_text().splitlines()
    events = [(record["event"], record["result"]["id"]) for record in map(json.loads, lines)]
    assert events == [("domain.record.edit", f"{name} TXT  {validation}"), ("domain.record.delete", None)]
