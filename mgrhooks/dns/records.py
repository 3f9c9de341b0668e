"""The record rules of the DNS product (DNSmanager's and ISPmanager's ``domain.record.edit``):
zone and record names, types, values and TTLs checked and made canonical with dnspython,
and the panel's record key. Pure.

Every refusal is a :class:`~mgrhooks.errors.PanelError` ``type="value"`` whose ``object`` is
the parameter at fault (``name``, ``rtype``, ``value``, ``ip``, ``domain``, ``priority``,
``weight``, ``port``, ``ttl``). What is checked, and the choices made, are in docs/dns.md.
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping
from typing import NamedTuple

import dns.exception
import dns.name
import dns.rdata
import dns.rdataclass
import dns.rdatatype
import dns.rdtypes.ANY.TXT

from ..errors import PanelError

#: the record types ``domain.record.edit`` takes (the issue's list; upper case, as in the rkey)
RTYPES = ("A", "AAAA", "CNAME", "MX", "NS", "TXT", "SRV", "CAA")
#: the TTL of a record made without one, in seconds (our choice: BIND's usual default)
DEFAULT_TTL = 3600
#: the largest TTL (RFC 2181 §8), in seconds
MAX_TTL = 2**31 - 1
#: the largest character-string of a TXT record, in bytes (RFC 1035 §3.3)
TXT_CHUNK = 255
#: the largest record data on the wire, in bytes (RFC 1035 §3.2.1: RDLENGTH is 16 bits)
MAX_RDATA = 65535
#: the MX priority of a record whose value gives none (our choice)
DEFAULT_PRIORITY = 10
#: a label once in A-labels: letters, digits, '-' and '_' (``_acme-challenge``, ``_sip._tcp``);
#: a wildcard ``*`` only as the leftmost label of a record's name (our choice: hostnames of
#: RFC 1123 plus the underscore of service names, RFC 8552)
_LABEL = re.compile(rb"[a-z0-9_](?:[a-z0-9_-]{0,61}[a-z0-9_])?")
#: the type's own fields of ``domain.record.edit``, in the order the value is made of them
_FIELDS = {
    "A": ("ip",),
    "AAAA": ("ip",),
    "CNAME": ("domain",),
    "NS": ("domain",),
    "MX": ("priority", "domain"),
    "SRV": ("priority", "weight", "port", "domain"),
    "TXT": (),
    "CAA": (),
}
_IN = dns.rdataclass.IN


class Record(NamedTuple):
    """One record of a zone, canonical.

    ``name``: absolute, in A-labels, lower case, with the trailing dot; ``rtype``: one of
    :data:`RTYPES`; ``value``: what the panel lists and the rkey holds (dnspython's
    presentation form, names absolute; for TXT the text itself, unquoted); ``ttl`` in seconds.
    """

    name: str
    rtype: str
    value: str
    ttl: int = DEFAULT_TTL

    @property
    def rkey(self) -> str:
        """The panel's record key ``"<fqdn>. <TYPE>  <value>"`` (two spaces before the
        value), e.g. ``pop.example.is. A  185.9.147.250``: public clients build it
        themselves (HTTP-API.md "DNS functions")."""
        return f"{self.name} {self.rtype}  {self.value}"

    @property
    def key(self) -> tuple[str, str, str]:
        """What makes the record unique in its zone: name, type, value."""
        return (self.name, self.rtype, self.value)


def zone_name(text: str, field: str = "name") -> str:
    """The zone named ``text`` (Unicode or A-labels, any case, trailing dot optional) as
    stored: A-labels, lower case, no trailing dot (``example.com``).

    :raises PanelError: ``value`` on ``field``: not a domain name, or a single label"""
    name = _absolute(text, field, wildcard=False)
    if len(name.labels) < 3:
        raise PanelError("value", field, text, f"Invalid zone name '{text}': a domain name like example.com")
    return name.to_text(omit_final_dot=True)


def record_name(text: str, zone: str, field: str = "name") -> str:
    """The absolute name of a record of ``zone`` given as ``text``: relative to the zone
    (``www``, ``_acme-challenge.www``; ``@`` or empty: the zone's apex) or absolute with a
    trailing dot (``_acme-challenge.www.example.com.``), as a zone file reads names.

    :raises PanelError: ``value`` on ``field``: not a name, or outside ``zone``"""
    origin = dns.name.from_text(zone)
    name = origin if text.strip() in ("", "@") else _name(text.strip(), origin, field, wildcard=True)
    if not name.is_subdomain(origin):
        message = f"The name '{text}' is outside the zone '{zone}': give it relative to the zone or ending in '{zone}.'"
        raise PanelError("value", field, text, message)
    return name.to_text()


def rtype(text: str) -> str:
    """The record type ``text`` (any case) in upper case. :raises PanelError: ``value`` on
    ``rtype``: not one of :data:`RTYPES`"""
    upper = text.strip().upper()
    if upper not in RTYPES:
        raise PanelError("value", "rtype", text, f"Invalid record type '{text}': one of {', '.join(RTYPES)}")
    return upper


def ttl(text: str) -> int:
    """A TTL in seconds, 0 to :data:`MAX_TTL`. :raises PanelError: ``value`` on ``ttl``"""
    if not text.strip().isascii() or not text.strip().isdigit() or int(text) > MAX_TTL:
        raise PanelError("value", "ttl", text, f"Invalid TTL '{text}': whole seconds from 0 to {MAX_TTL}")
    return int(text)


def record(zone: str, params: Mapping[str, str]) -> Record:
    """The record of ``zone`` that ``domain.record.edit``'s parameters describe: ``name``,
    ``rtype``, the value in ``value`` or the type's own fields (``ip`` for A and AAAA;
    ``domain`` for CNAME and NS; ``priority`` and ``domain`` for MX; ``priority``,
    ``weight``, ``port`` and ``domain`` for SRV; a field given wins over ``value``) and
    ``ttl`` (default :data:`DEFAULT_TTL`).

    :raises PanelError: ``value`` on the parameter at fault"""
    kind = rtype(params.get("rtype", ""))
    name = record_name(params.get("name", ""), zone)
    seconds = ttl(params.get("ttl") or str(DEFAULT_TTL))
    return Record(name, kind, value(kind, zone, params), seconds)


def value(kind: str, zone: str, params: Mapping[str, str]) -> str:
    """The canonical value of a record of type ``kind`` (:func:`record` says from which
    parameters). :raises PanelError: ``value`` on the parameter at fault"""
    if kind == "TXT":
        return _txt(params.get("value", ""))
    fields = {key: params[key].strip() for key in _FIELDS[kind] if params.get(key, "").strip()}
    text = params.get("value", "").strip()
    if kind in ("A", "AAAA"):
        field = "ip" if "ip" in fields else "value"
        return _parsed(kind, fields.get("ip", text), zone, field)
    if kind in ("CNAME", "NS"):
        field = "domain" if "domain" in fields else "value"
        return _target(fields.get("domain", text), zone, field)
    if kind == "CAA":
        return _parsed(kind, text, zone, "value")
    return _numbered(kind, zone, fields, text)


def _numbered(kind: str, zone: str, fields: Mapping[str, str], text: str) -> str:
    """An MX or SRV value: numbers then a target, each from its own field, else from
    ``value``'s words in that order (an MX value of one word is the target; an MX priority
    given nowhere is :data:`DEFAULT_PRIORITY`)."""
    names = _FIELDS[kind]
    words = text.split()
    if kind == "MX" and len(words) == 1:
        words = [str(DEFAULT_PRIORITY), *words]
    if words and len(words) != len(names) and len(fields) < len(names):
        raise PanelError("value", "value", text, f"Invalid {kind} value '{text}': '{' '.join(names)}'")
    parts = {**dict(zip(names, words, strict=False)), **fields}
    if kind == "MX":
        parts.setdefault("priority", str(DEFAULT_PRIORITY))

    def where(field: str) -> str:
        return field if field in fields or not words else "value"

    for number in names[:-1]:
        found = parts.get(number, "")
        if not (found.isascii() and found.isdigit() and int(found) <= 65535):
            message = f"Invalid {number} '{found}' of the {kind} record: a whole number from 0 to 65535"
            raise PanelError("value", where(number), found, message)
        parts[number] = str(int(found))
    target = _target(parts.get("domain", ""), zone, where("domain"))
    return _parsed(kind, " ".join([*(parts[n] for n in names[:-1]), target]), zone, where("domain"))


def _target(text: str, zone: str, field: str) -> str:
    """A name a record points to (CNAME, NS, MX, SRV), absolute: relative to ``zone``
    unless it ends with a dot, as in a zone file."""
    if not text:
        raise PanelError("value", field, text, f"Parameter '{field}' is required: the name the record points to")
    return _name(text, dns.name.from_text(zone), field, wildcard=False).to_text()


def _txt(text: str) -> str:
    """A TXT value: any text that is UTF-8, holds no control character (our choice: XML
    cannot carry one back, so the value and rkey listed would not be the record's) and
    whose record fits :data:`MAX_RDATA` bytes once split into :data:`TXT_CHUNK`-byte
    strings."""
    if text == "":
        raise PanelError("value", "value", text, "Parameter 'value' is required: the text of the TXT record")
    control = next((position for position, char in enumerate(text, 1) if char < " " or char == "\x7f"), 0)
    if control:
        message = f"The text of the TXT record holds a control character at position {control}"
        raise PanelError("value", "value", text, message)
    try:
        data = text.encode("utf-8")
    except UnicodeEncodeError:
        raise PanelError("value", "value", text, "The text of the TXT record is not UTF-8") from None
    if len(txt_rdata(text).to_wire() or b"") > MAX_RDATA:
        message = f"The text of the TXT record is too long ({len(data)} bytes): a record holds at most {MAX_RDATA}"
        raise PanelError("value", "value", text[:64], message)
    return text


def txt_rdata(text: str) -> dns.rdtypes.ANY.TXT.TXT:
    """The TXT record data of ``text``: its UTF-8 bytes in strings of at most
    :data:`TXT_CHUNK` bytes, in order (a character is never split: RFC 7208 §3.3 joins them
    back without separator, and a DKIM key is ASCII anyway)."""
    data = text.encode("utf-8")
    chunks: list[bytes] = []
    while data:
        cut = TXT_CHUNK
        while cut < len(data) and cut > 0 and data[cut] & 0xC0 == 0x80:
            cut -= 1  # (never inside a character)
        chunks.append(data[:cut])
        data = data[cut:]
    return dns.rdtypes.ANY.TXT.TXT(_IN, dns.rdatatype.TXT, chunks or [b""])


def rdata(rec: Record) -> dns.rdata.Rdata:
    """The record data of ``rec`` for a zone file (TXT split by :func:`txt_rdata`)."""
    if rec.rtype == "TXT":
        return txt_rdata(rec.value)
    return dns.rdata.from_text(_IN, rec.rtype, rec.value)


def parse_rkey(rkey: str, zone: str) -> tuple[str, str, str] | None:
    """The :attr:`Record.key` a record key names, made canonical as :func:`record` makes a
    record's (a client may build the key in another case or with a Unicode name); ``None``:
    it is not a record key of ``zone``."""
    name, _, rest = rkey.partition(" ")
    kind, separator, text = rest.partition("  ")
    if not separator:
        return None
    try:
        canonical = rtype(kind)
        return (record_name(name, zone), canonical, value(canonical, zone, {"value": text}))
    except PanelError:
        return None


def conflict(new: Record, others: Iterable[Record], apex: str) -> PanelError | None:
    """Why ``new`` cannot join the other records ``others`` of its zone (whose apex,
    absolute, is ``apex``), else ``None``: a CNAME must be alone at its name and never at the
    apex (RFC 1034 §3.6.2, RFC 2181 §10.1): ``value`` on ``rtype`` at the apex, ``exists``
    on ``name`` beside other records."""
    same_name = [other for other in others if other.name == new.name]
    if new.rtype == "CNAME" and new.name == apex:
        message = f"A CNAME record cannot be at the zone's apex '{apex}' (it has the SOA and NS records)"
        return PanelError("value", "rtype", new.rtype, message)
    if new.rtype == "CNAME" and same_name:
        message = f"The name '{new.name}' already has a {same_name[0].rtype} record: a CNAME record must be alone"
        return PanelError("exists", "name", new.name, message)
    if new.rtype != "CNAME" and any(other.rtype == "CNAME" for other in same_name):
        return PanelError("exists", "name", new.name, f"The name '{new.name}' has a CNAME record: nothing else may")
    return None


def _parsed(kind: str, text: str, zone: str, field: str) -> str:
    """``text`` as dnspython reads a ``kind`` record's data in a zone file of ``zone``,
    written back canonical with absolute names."""
    if not text:
        raise PanelError("value", field, text, f"Parameter '{field}' is required for a {kind} record")
    try:
        data = dns.rdata.from_text(_IN, kind, text, origin=dns.name.from_text(zone), relativize=False)
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        raise PanelError("value", field, text, f"Invalid {kind} value '{text}': {_reason(exc)}") from None
    return data.to_text()


def _absolute(text: str, field: str, wildcard: bool) -> dns.name.Name:
    return _name(text.strip(), dns.name.root, field, wildcard)


def _name(text: str, origin: dns.name.Name, field: str, wildcard: bool) -> dns.name.Name:
    """``text`` read as a zone file reads a name (relative to ``origin`` without a trailing
    dot; Unicode to A-labels by IDNA 2008, UTS 46), each label checked (:data:`_LABEL`)."""
    try:
        name = dns.name.from_text(text, origin=origin)
    except (dns.exception.DNSException, ValueError, UnicodeError) as exc:
        raise PanelError("value", field, text, f"Invalid name '{text}': {_reason(exc)}") from None
    labels = name.labels[:-1]
    for position, label in enumerate(labels):
        if label == b"*" and wildcard and position == 0:
            continue
        if not _LABEL.fullmatch(label.lower()):
            shown = label.decode("ascii", "backslashreplace")
            message = f"Invalid name '{text}': the label '{shown}' may hold only letters, digits, '-' and '_'"
            raise PanelError("value", field, text, message)
    return name.canonicalize()


def _reason(exc: Exception) -> str:
    return str(exc) or type(exc).__name__
