"""DNSmanager's and ISPmanager's DNS functions on the built-in core's database. I/O.

``domain`` (the zones), ``domain.edit`` (view, create, change a zone), ``domain.delete``
(group ``elid``), ``domain.record`` (a zone's records, ``elid`` = the zone),
``domain.record.edit`` (``plid`` = the zone; ``elid`` empty to create, else the rkey of
the record to change) and ``domain.record.delete`` (``plid`` = the zone, ``elid`` = rkeys
joined by ", "), as HTTP-API.md "DNS functions" lists them. Each runs inside the core's
one write transaction (:meth:`mgrhooks.core.BuiltinCore.action`): a change is written
whole or not at all, and its zone file ``var/named/<zone>`` is rewritten (serial
incremented) before the transaction commits, so a file that cannot be written undoes the
change.

Callers need :attr:`Level.USER <mgrhooks.model.Level.USER>` (16); an administrator
(:attr:`Level.ADMIN <mgrhooks.model.Level.ADMIN>`, 29, or more) sees and changes every
zone, any other caller only the zones it owns: another's zone is ``missed`` as one that
does not exist (our choice). The record rules are :mod:`mgrhooks.dns.records`; the
choices are written down in docs/dns.md.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

from ..core import GROUP_SEPARATOR, BuiltinCore, Product
from ..errors import PanelError, RootError
from ..model import Level, Request
from ..xmldoc import Element, add

if TYPE_CHECKING:  # dnspython loads when a domain function runs, not at start-up
    import sqlite3
    from datetime import date
    from pathlib import Path

    from .records import Record

SCHEMA = """
CREATE TABLE IF NOT EXISTS dns_domains (
    name TEXT PRIMARY KEY,
    owner TEXT NOT NULL,
    serial INTEGER NOT NULL,
    mname TEXT NOT NULL,
    rname TEXT NOT NULL
);
CREATE TABLE IF NOT EXISTS dns_records (
    zone TEXT NOT NULL,
    name TEXT NOT NULL,
    rtype TEXT NOT NULL,
    value TEXT NOT NULL,
    ttl INTEGER NOT NULL,
    PRIMARY KEY (zone, name, rtype, value)
);
"""
#: the zone type and state every zone of the built-in core has (a primary zone, served)
DTYPE, STATUS = "master", "active"
#: the parameters of ``domain.record.edit`` a record is made of
RECORD_FIELDS = ("name", "rtype", "value", "ip", "domain", "priority", "weight", "port", "ttl")


def zone_dir(core: BuiltinCore) -> Path:
    """``var/named``: the zone files, beside the core's database."""
    return core.db_path.parent / "named"


def domain_list(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``domain``: one ``<elem>`` (name, user, dtype, status) per zone the caller sees, by
    name; with ``filter=on``, only those whose name holds ``name`` (as some clients look
    one zone up)."""
    wanted = _filter(request)
    for row in _visible(conn, request):
        if wanted in row["name"]:
            elem = add(doc, "elem")
            for key, text in (("name", row["name"]), ("user", row["owner"]), ("dtype", DTYPE), ("status", STATUS)):
                add(elem, key, text)


def domain_edit(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``domain.edit``: view a zone (no ``sok``), create one (``sok``, no ``elid``: ``name``,
    ``user``, ``ns``, ``ip``), or give one to another ``user`` (``sok`` and ``elid``)."""
    elid = request.get("elid")
    if not request.get("sok"):
        row = _zone(conn, request, elid, "elid") if elid else None
        add(doc, "elid", elid)
        add(doc, "name", row["name"] if row else "")
        add(doc, "user", row["owner"] if row else request.user)
        add(doc, "dtype", DTYPE)
        zone = row["name"] if row else ""
        servers = [rec.value for rec in _records(conn, zone) if (rec.name, rec.rtype) == (f"{zone}.", "NS")]
        add(doc, "ns", " ".join(servers))
    elif not elid:
        _create_zone(core, conn, request, doc)
    else:
        row = _zone(conn, request, elid, "elid")
        owner = _owner(conn, request, row["owner"])
        conn.execute("UPDATE dns_domains SET owner = ? WHERE name = ?", (owner, row["name"]))
        add(doc, "ok")
        add(doc, "id", row["name"])


def _create_zone(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """A new zone: its SOA, an NS record per name server (``ns``: names joined by spaces or
    commas; default ``ns1.<zone>. ns2.<zone>.``) and, with ``ip``, A (or AAAA) records for
    the apex, ``www`` and the name servers inside the zone."""
    from . import records, zonefile

    zone = records.zone_name(request.get("name"))
    owner = _owner(conn, request, request.user)
    if conn.execute("SELECT 1 FROM dns_domains WHERE name = ?", (zone,)).fetchone():
        raise PanelError("exists", "name", zone, f"Zone '{zone}' already exists")
    _not_in_anothers(conn, request, zone)
    servers = _servers(request.get("ns"), zone)
    apex = f"{zone}."
    inside = [server for server in servers if server == apex or server.endswith(f".{apex}")]
    made = [records.Record(apex, "NS", server) for server in servers]
    ip = request.get("ip").strip()
    if ip:
        kind = "AAAA" if ":" in ip else "A"
        address = records.value(kind, zone, {"ip": ip})
        made += [records.Record(name, kind, address) for name in dict.fromkeys([apex, f"www.{apex}", *inside])]
    elif inside:
        message = f"The name server {inside[0]} is inside the zone: give its address in 'ip' (or other servers in 'ns')"
        raise PanelError("value", "ip", "", message)
    serial = zonefile.first_serial(_today())
    conn.execute(
        "INSERT INTO dns_domains (name, owner, serial, mname, rname) VALUES (?, ?, ?, ?, ?)",
        (zone, owner, serial, servers[0], f"hostmaster.{apex}"),
    )
    for rec in made:
        _insert(conn, zone, rec)
    _publish(core, conn, zone, bump=False)
    add(doc, "ok")
    add(doc, "id", zone)


def domain_delete(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``domain.delete``: every zone of the group ``elid``, with its records and zone file,
    all or none."""
    zones = [_zone(conn, request, elid, "elid")["name"] for elid in _group(request.get("elid"), "zone")]
    for zone in zones:
        conn.execute("DELETE FROM dns_records WHERE zone = ?", (zone,))
        conn.execute("DELETE FROM dns_domains WHERE name = ?", (zone,))
        path = zone_dir(core) / zone
        try:
            path.unlink(missing_ok=True)
        except OSError as exc:
            raise RootError(f"cannot remove the zone file {path}: {exc.strerror}") from None
    add(doc, "ok")


def record_list(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``domain.record`` (``elid`` = the zone): one ``<elem>`` (name, ttl, rtype, value,
    rkey, info) per record but the SOA, apex first."""
    zone = _zone(conn, request, request.get("elid"), "elid")["name"]
    for rec in _records(conn, zone):
        elem = add(doc, "elem")
        for key, text in (("name", rec.name), ("ttl", str(rec.ttl)), ("rtype", rec.rtype), ("value", rec.value)):
            add(elem, key, text)
        add(elem, "rkey", rec.rkey)
        add(elem, "info", "")


def record_edit(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``domain.record.edit`` (``plid`` = the zone): view a record (no ``sok``; ``elid`` its
    rkey, or empty for a blank form), create one (``sok``, ``elid`` empty) or change the
    record ``elid`` names (``sok``; the parameters not given keep their value). Answers
    ``<ok/>`` and the record's rkey in ``<id>``, as ``user.add`` answers the new name."""
    from . import records

    zone = _zone(conn, request, request.get("plid"), "plid")["name"]
    existing = _records(conn, zone)
    elid = request.get("elid")
    old = _by_rkey(existing, elid, zone) if elid else None
    if not request.get("sok"):
        add(doc, "plid", zone)
        add(doc, "elid", elid)
        add(doc, "name", old.name if old else "")
        add(doc, "rtype", old.rtype if old else "A")
        add(doc, "value", old.value if old else "")
        add(doc, "ttl", str(old.ttl if old else records.DEFAULT_TTL))
        return
    given = {key: request.get(key) for key in RECORD_FIELDS if request.get(key)}
    if old is not None:
        kept = {"name": old.name, "rtype": old.rtype, "ttl": str(old.ttl)}
        if records.rtype(given.get("rtype", old.rtype)) == old.rtype:
            kept["value"] = old.value
        given = {**kept, **given}
    new = records.record(zone, given)
    others = [rec for rec in existing if rec != old]
    if new.key in {rec.key for rec in others}:
        raise PanelError("exists", "rkey", new.rkey, f"The record '{new.rkey}' already exists")
    problem = records.conflict(new, others, f"{zone}.")
    if problem is not None:
        raise problem
    _keeps_ns(zone, [*others, new])
    if old is not None:
        _delete(conn, zone, old)
    _insert(conn, zone, new)
    _publish(core, conn, zone)
    add(doc, "ok")
    add(doc, "id", new.rkey)


def record_delete(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``domain.record.delete`` (``plid`` = the zone): every record whose rkey is in
    ``elid`` (joined by ", "; an ``elid`` that is itself one record's rkey is that record,
    though its text holds ", "), all or none."""
    zone = _zone(conn, request, request.get("plid"), "plid")["name"]
    existing = _records(conn, zone)
    elid = request.get("elid")
    whole = _find_rkey(existing, elid, zone) if elid else None
    doomed = [whole] if whole is not None else [_by_rkey(existing, key, zone) for key in _group(elid, "record")]
    _keeps_ns(zone, [rec for rec in existing if rec not in doomed])
    for rec in dict.fromkeys(doomed):
        _delete(conn, zone, rec)
    _publish(core, conn, zone)
    add(doc, "ok")


def _filter(request: Request) -> str:
    """The text a zone's name must hold: ``name`` (in A-labels when it is a name) with
    ``filter=on``, else empty."""
    if request.get("filter") != "on" or not request.get("name"):
        return ""
    from . import records

    try:
        return records.zone_name(request.get("name"))
    except PanelError:
        return request.get("name").strip().lower().rstrip(".")


def _visible(conn: sqlite3.Connection, request: Request) -> list[sqlite3.Row]:
    if request.level >= Level.ADMIN:
        return conn.execute("SELECT * FROM dns_domains ORDER BY name").fetchall()
    return conn.execute("SELECT * FROM dns_domains WHERE owner = ? ORDER BY name", (request.user,)).fetchall()


def _zone(conn: sqlite3.Connection, request: Request, text: str, field: str) -> sqlite3.Row:
    """The zone named ``text`` (Unicode or A-labels, any case) that the caller sees.

    :raises PanelError: ``value`` on ``field`` when empty; ``missed`` on ``domain`` when no
        such zone, or another's for a caller below an administrator"""
    from . import records

    if not text:
        raise PanelError("value", field, "", f"No zone given (parameter '{field}' is empty)")
    try:
        zone = records.zone_name(text, field)
    except PanelError:
        zone = ""
    row: sqlite3.Row | None = conn.execute("SELECT * FROM dns_domains WHERE name = ?", (zone,)).fetchone()
    if row is None or (request.level < Level.ADMIN and row["owner"] != request.user):
        raise PanelError("missed", "domain", text, f"Zone '{text}' not found")
    return row


def _owner(conn: sqlite3.Connection, request: Request, current: str) -> str:
    """The owner ``user`` names (``current`` when not given): an administrator may name any
    user the core knows (or itself), anyone else only itself."""
    owner = request.get("user") or current
    if owner == current:
        return owner
    if request.level < Level.ADMIN:
        raise PanelError("access", "user", owner, "Only an administrator may give a zone to another user")
    if owner != request.user and not conn.execute("SELECT 1 FROM users WHERE name = ?", (owner,)).fetchone():
        raise PanelError("missed", "user", owner, f"User '{owner}' not found")
    return owner


def _not_in_anothers(conn: sqlite3.Connection, request: Request, zone: str) -> None:
    """:raises PanelError: ``exists`` on ``name``: a caller below an administrator makes a
    zone inside another user's zone, or around one (our choice: no one takes over names
    another user's zone serves)"""
    if request.level >= Level.ADMIN:
        return
    for row in conn.execute("SELECT name, owner FROM dns_domains WHERE owner != ?", (request.user,)):
        if zone.endswith(f".{row['name']}") or row["name"].endswith(f".{zone}"):
            message = f"Zone '{zone}' would overlap the zone '{row['name']}' of another user"
            raise PanelError("exists", "name", zone, message)


def _servers(text: str, zone: str) -> list[str]:
    """The name servers of ``ns``: absolute names joined by spaces or commas (a trailing dot
    optional: a server's name is always whole), each once."""
    from . import records

    names = text.replace(",", " ").split() or [f"ns1.{zone}.", f"ns2.{zone}."]
    return list(dict.fromkeys(records.value("NS", zone, {"domain": n if n.endswith(".") else f"{n}."}) for n in names))


def _group(elid: str, what: str) -> list[str]:
    """The keys of the group ``elid``, each once, in order."""
    if not elid:
        raise PanelError("value", "elid", "", f"No {what} selected (parameter 'elid' is empty)")
    keys = list(dict.fromkeys(elid.split(GROUP_SEPARATOR)))
    if "" in keys:
        raise PanelError("value", "elid", elid, f"Empty {what} in the group '{elid}' (keys are joined by ', ')")
    return keys


def _records(conn: sqlite3.Connection, zone: str) -> list[Record]:
    """The records of ``zone``: the apex first, then by name, type (as :data:`RTYPES
    <mgrhooks.dns.records.RTYPES>` orders them) and value."""
    from .records import RTYPES, Record

    rows = conn.execute("SELECT name, rtype, value, ttl FROM dns_records WHERE zone = ?", (zone,))
    found = [Record(row["name"], row["rtype"], row["value"], row["ttl"]) for row in rows]
    apex = f"{zone}."
    return sorted(found, key=lambda rec: (rec.name != apex, rec.name, RTYPES.index(rec.rtype), rec.value))


def _find_rkey(existing: list[Record], rkey: str, zone: str) -> Record | None:
    """The record of ``existing`` whose rkey is ``rkey`` (as given, or made canonical:
    :func:`~mgrhooks.dns.records.parse_rkey`), else ``None``."""
    from .records import parse_rkey

    key = parse_rkey(rkey, zone)
    return next((rec for rec in existing if rec.rkey == rkey or rec.key == key), None)


def _by_rkey(existing: list[Record], rkey: str, zone: str) -> Record:
    """:func:`_find_rkey`'s record. :raises PanelError: ``missed`` on ``rkey``: there is none"""
    found = _find_rkey(existing, rkey, zone)
    if found is None:
        raise PanelError("missed", "rkey", rkey, f"No record '{rkey}' in the zone '{zone}'")
    return found


def _keeps_ns(zone: str, remaining: list[Record]) -> None:
    """:raises PanelError: ``value`` on ``rtype``: the zone would have no NS record at its
    apex (a name server would refuse to load it)"""
    if not any(rec.rtype == "NS" and rec.name == f"{zone}." for rec in remaining):
        message = f"The zone '{zone}' must keep an NS record at its apex '{zone}.'"
        raise PanelError("value", "rtype", "NS", message)


def _insert(conn: sqlite3.Connection, zone: str, rec: Record) -> None:
    conn.execute(
        "INSERT INTO dns_records (zone, name, rtype, value, ttl) VALUES (?, ?, ?, ?, ?)",
        (zone, rec.name, rec.rtype, rec.value, rec.ttl),
    )


def _delete(conn: sqlite3.Connection, zone: str, rec: Record) -> None:
    conn.execute(
        "DELETE FROM dns_records WHERE zone = ? AND name = ? AND rtype = ? AND value = ?",
        (zone, rec.name, rec.rtype, rec.value),
    )


def _today() -> date:
    """Today's date in UTC (serials are dated in UTC: our choice)."""
    from datetime import UTC, datetime

    return datetime.now(UTC).date()


def _publish(core: BuiltinCore, conn: sqlite3.Connection, zone: str, bump: bool = True) -> None:
    """Increment ``zone``'s serial (unless ``bump`` is false: a new zone) and write its zone
    file ``var/named/<zone>`` at once (:func:`mgrhooks.files.replace`, mode 644), from the
    transaction's own view of the zone, before it commits.

    :raises RootError: the file cannot be written; the transaction is then rolled back"""
    from ..files import replace
    from . import zonefile

    row = conn.execute("SELECT * FROM dns_domains WHERE name = ?", (zone,)).fetchone()
    serial = zonefile.next_serial(row["serial"], _today()) if bump else row["serial"]
    conn.execute("UPDATE dns_domains SET serial = ? WHERE name = ?", (serial, zone))
    soa = zonefile.Soa(row["mname"], row["rname"], serial)
    folder = zone_dir(core)
    try:
        folder.mkdir(mode=0o755, exist_ok=True)
        replace(folder / zone, zonefile.render(zone, soa, _records(conn, zone)).encode(), 0o644)
    except FileExistsError:  # (mkdir: var/named is there, not as a folder)
        raise RootError(f"cannot write the zone file {folder / zone}: {folder} is not a folder") from None
    except OSError as exc:
        raise RootError(f"cannot write the zone file {folder / zone}: {exc.strerror}") from None


#: the DNS functions, all for callers of :attr:`Level.USER <mgrhooks.model.Level.USER>` and up
DNS = Product(
    {
        "domain": domain_list,
        "domain.edit": domain_edit,
        "domain.delete": domain_delete,
        "domain.record": record_list,
        "domain.record.edit": record_edit,
        "domain.record.delete": record_delete,
    },
    {},
    {
        "domain": ("filter", "name"),
        "domain.edit": ("elid", "name", "user", "ns", "ip", "sok"),
        "domain.delete": ("elid",),
        "domain.record": ("elid",),
        "domain.record.edit": ("plid", "elid", *RECORD_FIELDS, "sok"),
        "domain.record.delete": ("plid", "elid"),
    },
    dict.fromkeys(
        ("domain", "domain.edit", "domain.delete", "domain.record", "domain.record.edit", "domain.record.delete"),
        int(Level.USER),
    ),
    SCHEMA,
)
