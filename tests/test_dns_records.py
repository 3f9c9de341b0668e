"""The DNS product's record rules and zone file, pure: mgrhooks.dns.records and .zonefile."""

from __future__ import annotations

from datetime import date

import dns.rdatatype
import dns.zone
import pytest
from hypothesis import given
from hypothesis import strategies as st

from mgrhooks.dns import records, zonefile
from mgrhooks.dns.records import Record
from mgrhooks.errors import PanelError

ZONE = "example.com"


def made(**params: str) -> Record:
    return records.record(ZONE, params)


def refused(**params: str) -> tuple[str, str, str]:
    with pytest.raises(PanelError) as caught:
        records.record(ZONE, params)
    return (caught.value.type, caught.value.object, caught.value.value)


@pytest.mark.parametrize(
    ("params", "rkey"),
    [
        # names: relative, absolute with the trailing dot, the apex, IDN, case, wildcard
        (
            {"name": "_acme-challenge.www.example.com.", "rtype": "txt", "value": "tok"},
            "_acme-challenge.www.example.com. TXT  tok",
        ),
        ({"name": "_acme-challenge", "rtype": "TXT", "value": "tok"}, "_acme-challenge.example.com. TXT  tok"),
        ({"name": "@", "rtype": "a", "ip": "192.0.2.1"}, "example.com. A  192.0.2.1"),
        ({"name": "", "rtype": "a", "value": "192.0.2.1"}, "example.com. A  192.0.2.1"),
        ({"name": "WWW.Example.COM.", "rtype": "A", "ip": "192.0.2.1"}, "www.example.com. A  192.0.2.1"),
        ({"name": "пример", "rtype": "a", "ip": "192.0.2.1"}, "xn--e1afmkfd.example.com. A  192.0.2.1"),
        ({"name": "*", "rtype": "aaaa", "ip": "2001:DB8:0:0::1"}, "*.example.com. AAAA  2001:db8::1"),
        # values in their own fields or in value; names in values relative unless absolute
        ({"name": "w", "rtype": "cname", "domain": "www"}, "w.example.com. CNAME  www.example.com."),
        ({"name": "w", "rtype": "cname", "value": "ghs.Google.com."}, "w.example.com. CNAME  ghs.google.com."),
        ({"name": "@", "rtype": "mx", "domain": "mail", "priority": "5"}, "example.com. MX  5 mail.example.com."),
        ({"name": "@", "rtype": "mx", "value": "mail.example.org."}, "example.com. MX  10 mail.example.org."),
        ({"name": "@", "rtype": "mx", "value": "20 mx"}, "example.com. MX  20 mx.example.com."),
        ({"name": "sub", "rtype": "ns", "domain": "ns.example.net."}, "sub.example.com. NS  ns.example.net."),
        (
            {"name": "_sip._tcp", "rtype": "srv", "priority": "0", "weight": "5", "port": "5060", "domain": "sip"},
            "_sip._tcp.example.com. SRV  0 5 5060 sip.example.com.",
        ),
        (
            {"name": "@", "rtype": "caa", "value": '0 issue "letsencrypt.org"'},
            'example.com. CAA  0 issue "letsencrypt.org"',
        ),
        ({"name": "@", "rtype": "txt", "value": "v=spf1 -all"}, "example.com. TXT  v=spf1 -all"),
    ],
)
def test_a_record_and_its_rkey(params: dict[str, str], rkey: str) -> None:
    assert made(**params).rkey == rkey


def test_the_rkey_has_two_spaces_before_the_value() -> None:
    assert Record("pop.example.is.", "A", "185.9.147.250").rkey == "pop.example.is. A  185.9.147.250"


@pytest.mark.parametrize(
    ("params", "error"),
    [
        ({"name": "x.example.org.", "rtype": "txt", "value": "t"}, ("value", "name", "x.example.org.")),
        ({"name": "example.com.evil.", "rtype": "a", "ip": "192.0.2.1"}, ("value", "name", "example.com.evil.")),
        ({"name": "a b", "rtype": "a", "ip": "192.0.2.1"}, ("value", "name", "a b")),
        ({"name": "x.*", "rtype": "a", "ip": "192.0.2.1"}, ("value", "name", "x.*")),
        ({"name": "a" * 64, "rtype": "a", "ip": "192.0.2.1"}, ("value", "name", "a" * 64)),
        ({"name": "x", "rtype": "ptr", "value": "y"}, ("value", "rtype", "ptr")),
        ({"name": "x", "rtype": "a", "ip": "192.0.2"}, ("value", "ip", "192.0.2")),
        ({"name": "x", "rtype": "a", "value": "2001:db8::1"}, ("value", "value", "2001:db8::1")),
        ({"name": "x", "rtype": "aaaa", "ip": "192.0.2.1"}, ("value", "ip", "192.0.2.1")),
        ({"name": "x", "rtype": "a"}, ("value", "value", "")),
        ({"name": "x", "rtype": "cname", "domain": "a..b"}, ("value", "domain", "a..b")),
        ({"name": "@", "rtype": "mx", "domain": "mail", "priority": "65536"}, ("value", "priority", "65536")),
        ({"name": "@", "rtype": "mx", "value": "1 2 3"}, ("value", "value", "1 2 3")),
        (
            {"name": "s", "rtype": "srv", "priority": "0", "weight": "x", "port": "1", "domain": "d"},
            ("value", "weight", "x"),
        ),
        ({"name": "@", "rtype": "caa", "value": "issue letsencrypt.org"}, ("value", "value", "issue letsencrypt.org")),
        ({"name": "x", "rtype": "txt", "value": ""}, ("value", "value", "")),
        ({"name": "x", "rtype": "txt", "value": "a\udcffb"}, ("value", "value", "a\udcffb")),
        ({"name": "x", "rtype": "txt", "value": "a\x01b"}, ("value", "value", "a\x01b")),
        ({"name": "x", "rtype": "txt", "value": "a\nb"}, ("value", "value", "a\nb")),
        ({"name": "@", "rtype": "mx", "priority": "10"}, ("value", "domain", "")),
        ({"name": "x", "rtype": "a", "ip": "192.0.2.1", "ttl": "-1"}, ("value", "ttl", "-1")),
        ({"name": "x", "rtype": "a", "ip": "192.0.2.1", "ttl": str(2**31)}, ("value", "ttl", str(2**31))),
    ],
)
def test_a_bad_record_is_a_value_error_naming_the_field(params: dict[str, str], error: tuple[str, str, str]) -> None:
    assert refused(**params) == error


def test_the_message_of_an_out_of_zone_name_says_how_to_give_it() -> None:
    with pytest.raises(PanelError) as caught:
        made(name="_acme-challenge.example.org.", rtype="txt", value="t")
    assert caught.value.msg == (
        "The name '_acme-challenge.example.org.' is outside the zone 'example.com':"
        " give it relative to the zone or ending in 'example.com.'"
    )


def test_zone_names() -> None:
    assert records.zone_name("Example.COM.") == "example.com"
    assert records.zone_name("пример.рф") == "xn--e1afmkfd.xn--p1ai"
    for bad in ("com", "", "a b.com", "-", "../etc.com", "a/b.com", "a..com"):
        with pytest.raises(PanelError) as caught:
            records.zone_name(bad)
        assert (caught.value.type, caught.value.object) == ("value", "name")


@given(st.text(min_size=1, max_size=2000).filter(lambda text: not any(0xD800 <= ord(c) <= 0xDFFF for c in text)))
def test_txt_is_split_into_strings_of_at_most_255_bytes_that_join_back(text: str) -> None:
    strings = records.txt_rdata(text).strings
    assert all(1 <= len(part) <= 255 for part in strings)
    assert b"".join(strings).decode("utf-8") == text
    assert all(part.decode("utf-8") for part in strings)  # never a character cut in two


def test_txt_strings_are_cut_between_characters() -> None:
    strings = records.txt_rdata("é" * 200).strings  # 400 bytes: 255 would cut an "é" in two
    assert [len(part) for part in strings] == [254, 146]
    assert "".join(part.decode("utf-8") for part in strings) == "é" * 200


def test_a_txt_record_too_large_for_the_wire_is_refused() -> None:
    assert made(name="x", rtype="txt", value="a" * 65000).value == "a" * 65000
    assert refused(name="x", rtype="txt", value="a" * 65400)[:2] == ("value", "value")


def test_cname_exclusivity() -> None:
    txt = made(name="w", rtype="txt", value="t")
    cname = made(name="w", rtype="cname", domain="www")
    apex = Record("example.com.", "CNAME", "www.example.com.")
    problem = records.conflict(cname, [txt], "example.com.")
    assert problem is not None and (problem.type, problem.object) == ("exists", "name")
    problem = records.conflict(txt, [cname], "example.com.")
    assert problem is not None and (problem.type, problem.object) == ("exists", "name")
    problem = records.conflict(apex, [], "example.com.")
    assert problem is not None and (problem.type, problem.object) == ("value", "rtype")
    assert records.conflict(txt, [made(name="w", rtype="txt", value="other")], "example.com.") is None


def test_a_client_built_rkey_is_found_in_another_case_or_with_a_unicode_name() -> None:
    key = ("xn--e1afmkfd.example.com.", "TXT", "tok")
    assert records.parse_rkey("пример.example.com. txt  tok", ZONE) == key
    assert records.parse_rkey("xn--e1afmkfd.EXAMPLE.com. TXT  tok", ZONE) == key
    assert records.parse_rkey("www.example.com. A 192.0.2.1", ZONE) is None  # one space: not a key


def test_serials_increase_by_date_then_by_one() -> None:
    day = date(2026, 11, 30)
    assert zonefile.first_serial(day) == 2026113001
    assert zonefile.next_serial(2026113001, day) == 2026113002
    assert zonefile.next_serial(2026113001, date(2026, 12, 1)) == 2026120101
    assert zonefile.next_serial(2026120150, day) == 2026120151  # ahead of the date: still one more
    assert zonefile.next_serial(2**32 - 1, day) == 2026113001  # RFC 1982: the date is after it
    assert zonefile.next_serial(2026113001 + 2**31, day) == 2026113001 + 2**31 + 1  # ... and here not


def test_the_zone_file_loads_with_dnspython_and_keeps_every_record() -> None:
    kept = [
        Record("example.com.", "NS", "ns.example.net."),
        made(name="_acme-challenge.www", rtype="txt", value="x" * 300 + ' "quoted" ; not a comment', ttl="60"),
        made(name="пример", rtype="a", ip="192.0.2.1"),
        made(name="@", rtype="mx", domain="mail.example.net."),
    ]
    text = zonefile.render(ZONE, zonefile.Soa("ns.example.net.", "hostmaster.example.com.", 7), kept)
    zone = dns.zone.from_text(text, origin=ZONE, relativize=False)
    soa = zone.find_rdataset("example.com.", "SOA")
    assert soa[0].serial == 7 and soa[0].mname.to_text() == "ns.example.net."
    txt = zone.find_rdataset("_acme-challenge.www.example.com.", "TXT")
    assert (txt.ttl, b"".join(txt[0].strings).decode()) == (60, "x" * 300 + ' "quoted" ; not a comment')
    assert [len(s) for s in txt[0].strings] == [255, 70]
    assert zone.find_rdataset("xn--e1afmkfd.example.com.", "A")[0].address == "192.0.2.1"


LABEL = st.from_regex(r"[a-z0-9_]([a-z0-9_-]{0,10}[a-z0-9_])?", fullmatch=True)
RELATIVE = st.lists(LABEL, min_size=0, max_size=3).map(".".join)
PRINTABLE = st.text(
    st.characters(min_codepoint=0x20, max_codepoint=0x2FF, exclude_characters="\x7f"), min_size=1, max_size=600
)
PARAMS = st.one_of(
    st.builds(lambda n, ip: {"name": n, "rtype": "A", "ip": ip}, RELATIVE, st.ip_addresses(v=4).map(str)),
    st.builds(lambda n, ip: {"name": n, "rtype": "aaaa", "ip": ip}, RELATIVE, st.ip_addresses(v=6).map(str)),
    st.builds(lambda n, text: {"name": n, "rtype": "txt", "value": text}, RELATIVE, PRINTABLE),
    st.builds(
        lambda n, p, target: {"name": n, "rtype": "mx", "priority": str(p), "domain": target},
        RELATIVE,
        st.integers(0, 65535),
        RELATIVE.filter(bool),
    ),
)


@given(st.lists(PARAMS, min_size=1, max_size=8), st.integers(0, 2**32 - 1))
def test_the_zone_file_reads_back_as_the_records_and_each_rkey_finds_its_record(
    params: list[dict[str, str]], number: int
) -> None:
    made = list({rec.key: rec for rec in (made_from(p) for p in params)}.values())
    for rec in made:
        assert records.parse_rkey(rec.rkey, ZONE) == rec.key
    text = zonefile.render(ZONE, zonefile.Soa("ns.example.net.", "hostmaster.example.com.", number), made)
    zone = dns.zone.from_text(text, origin=ZONE, relativize=False, check_origin=False)
    read = {
        (name.to_text(), dns.rdatatype.to_text(rdataset.rdtype), rdata.to_text())
        for name, node in zone.nodes.items()
        for rdataset in node.rdatasets
        if rdataset.rdtype != dns.rdatatype.SOA
        for rdata in rdataset
    }
    assert read == {(rec.name, rec.rtype, records.rdata(rec).to_text()) for rec in made}
    assert zone.find_rdataset(f"{ZONE}.", "SOA")[0].serial == number


def made_from(params: dict[str, str]) -> Record:
    return records.record(ZONE, params)
