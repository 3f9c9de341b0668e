"""Public DNS-01 clients of ISPsystem panels against `mgrhooks serve` with the DNS product:
a real server process on a free 127.0.0.1 port, root's password set by `mgrhooks passwd
root --stdin`, the requests certbot plugins and hooks send, as they send them (func=auth
sessions, authinfo, out=json and sjson, GET queries and urlencoded POST bodies)."""

from __future__ import annotations

import json
import secrets
from urllib.parse import urlencode

import dns.zone
import pytest
from test_serve import Served, serving

from conftest import PanelRoot

ZONE = "example.com"


def doc(served: Served, params: dict[str, str], mgr: str) -> dict:
    """The json document a GET with ``params`` gets (out=json unless they say)."""
    return json.loads(served.call(urlencode({"out": "json", **params}), path=f"/{mgr}"))["doc"]


def elems(found: dict) -> list[dict]:
    rows = found.get("elem", [])
    return rows if isinstance(rows, list) else [rows]


def login(served: Served, user: str, password: str, mgr: str) -> str:
    """A session key as a certbot plugin gets it: func=auth, out=json, doc.auth.$id."""
    answer = doc(served, {"func": "auth", "username": user, "password": password}, mgr)
    assert "authfail" not in answer and "error" not in answer, answer
    return str(answer["auth"]["$id"])


def txt(root: PanelRoot, name: str) -> list[bytes]:
    zone = dns.zone.from_file(str(root.path / "var/named" / ZONE), origin=ZONE, relativize=False)
    found = zone.get_rdataset(name, "TXT")
    return [b"".join(rd.strings) for rd in found] if found is not None else []


@pytest.mark.parametrize("mgr", ["ispmgr", "dnsmgr"])
def test_a_certbot_plugin_with_a_session(root: PanelRoot, mgr: str) -> None:
    """An ISPmanager certbot plugin: func=auth, then GET queries with auth= and out=json:
    the zone list, domain.record.edit with the absolute validation name, the records listed
    and the new one found by rkey, domain.record.delete with the rkey it builds."""
    root.mgr = mgr
    with serving(root, "--http") as served:
        key = login(served, "root", "secret", mgr)
        made = doc(served, {"auth": key, "func": "domain.edit", "name": ZONE, "ip": "192.0.2.1", "sok": "ok"}, mgr)
        assert made["id"] == {"$": ZONE}
        assert [row["name"]["$"] for row in elems(doc(served, {"auth": key, "func": "domain"}, mgr))] == [ZONE]
        validation, name = secrets.token_urlsafe(32), f"_acme-challenge.www.{ZONE}"
        added = doc(
            served,
            {
                "sok": "ok",
                "plid": ZONE,
                "func": "domain.record.edit",
                "name": f"{name}.",
                "value": validation,
                "rtype": "txt",
                "ttl": "10",
                "auth": key,
            },
            mgr,
        )
        rkey = f"{name}. TXT  {validation}"
        assert "ok" in added and added["id"] == {"$": rkey}
        rows = elems(doc(served, {"auth": key, "func": "domain.record", "elid": ZONE}, mgr))
        assert [row["value"]["$"] for row in rows if row["rkey"]["$"] == rkey] == [validation]
        assert txt(root, f"{name}.") == [validation.encode()]
        deleted = doc(
            served, {"plid": ZONE, "func": "domain.record.delete", "elname": rkey, "elid": rkey, "auth": key}, mgr
        )
        assert "ok" in deleted and "error" not in deleted
        assert txt(root, f"{name}.") == []
        assert all(
            row["rkey"]["$"] != rkey
            for row in elems(doc(served, {"auth": key, "func": "domain.record", "elid": ZONE}, mgr))
        )


def test_certbot_shell_hooks_post_authinfo_and_an_rkey_with_literal_spaces(root: PanelRoot) -> None:
    """A DNSmanager manual-auth-hook and cleanup-hook: urlencoded POST bodies with
    authinfo and out=sjson, a relative name; the cleanup's rkey not urlencoded."""
    root.mgr = "dnsmgr"
    with serving(root, "--http") as served:
        doc(
            served,
            {"authinfo": "root:secret", "func": "domain.edit", "name": ZONE, "ip": "192.0.2.1", "sok": "ok"},
            "dnsmgr",
        )
        validation = secrets.token_urlsafe(32)
        add = (
            f"authinfo=root:secret&out=sjson&func=domain.record.edit&elid=&plid={ZONE}&name=_acme-challenge"
            f"&ttl=3600&rtype=txt&value={validation}&sok=ok"
        )
        added = json.loads(served.call("", method="POST", body=add.encode(), path="/dnsmgr"))["doc"]
        assert added["id"]["$"] == f"_acme-challenge.{ZONE}. TXT  {validation}"
        assert txt(root, f"_acme-challenge.{ZONE}.") == [validation.encode()]
        cleanup = (
            f"authinfo=root:secret&out=sjson&func=domain.record.delete"
            f"&elid=_acme-challenge.{ZONE}. TXT  {validation}&plid={ZONE}"
        )
        deleted = json.loads(served.call("", method="POST", body=cleanup.encode(), path="/dnsmgr"))["doc"]
        assert "ok" in deleted and "error" not in deleted
        assert txt(root, f"_acme-challenge.{ZONE}.") == []


def test_a_user_with_a_session_sees_and_changes_only_their_own_zone(root: PanelRoot) -> None:
    root.mgr = "dnsmgr"
    with serving(root, "--http") as served:
        admin = {"authinfo": "root:secret"}
        doc(served, {**admin, "func": "user.add", "name": "alice", "passwd": "pw-alice", "sok": "ok"}, "dnsmgr")
        doc(served, {**admin, "func": "domain.edit", "name": ZONE, "ns": "ns.example.org", "sok": "ok"}, "dnsmgr")
        doc(
            served,
            {
                **admin,
                "func": "domain.edit",
                "name": "alice.example",
                "user": "alice",
                "ns": "ns.example.org",
                "sok": "ok",
            },
            "dnsmgr",
        )
        key = login(served, "alice", "pw-alice", "dnsmgr")
        assert [row["name"]["$"] for row in elems(doc(served, {"auth": key, "func": "domain"}, "dnsmgr"))] == [
            "alice.example"
        ]
        record = {
            "auth": key,
            "func": "domain.record.edit",
            "name": "_acme-challenge",
            "rtype": "txt",
            "value": "t",
            "sok": "ok",
        }
        assert doc(served, {**record, "plid": "alice.example"}, "dnsmgr")["id"] == {
            "$": "_acme-challenge.alice.example. TXT  t"
        }
        refused = doc(served, {**record, "plid": ZONE}, "dnsmgr")["error"]
        assert (refused["$type"], refused["$object"]) == ("missed", "domain")
        assert txt(root, f"_acme-challenge.{ZONE}.") == []
