"""A zone as a standard master file (RFC 1035 §5) that BIND, Knot or NSD load, and its SOA
serial. Pure: the file is written by :mod:`mgrhooks.dns.functions`.
"""

from __future__ import annotations

from collections.abc import Iterable
from datetime import date
from typing import NamedTuple

from .records import Record, rdata

#: the SOA timers of a new zone, in seconds (our choice: RIPE-203's advice for small zones,
#: the negative-caching TTL of RFC 2308 at an hour)
REFRESH, RETRY, EXPIRE, MINIMUM = 86400, 7200, 3600000, 3600
#: the largest serial (RFC 1982: 32-bit sequence space arithmetic)
SERIAL_SPACE = 2**32


class Soa(NamedTuple):
    """A zone's SOA record: primary name server and mailbox (absolute names), serial, and
    timers in seconds; ``ttl`` is the record's own and the file's ``$TTL``."""

    mname: str
    rname: str
    serial: int
    refresh: int = REFRESH
    retry: int = RETRY
    expire: int = EXPIRE
    minimum: int = MINIMUM
    ttl: int = MINIMUM


def first_serial(today: date) -> int:
    """The serial of a zone made ``today``: ``YYYYMMDD01`` (the usual date convention, our
    choice)."""
    return int(today.strftime("%Y%m%d")) * 100 + 1


def next_serial(serial: int, today: date) -> int:
    """The serial after ``serial`` on ``today``: ``YYYYMMDD01`` once the date passed it,
    else one more, so it always increases (RFC 1982 arithmetic, wrapping at 2**32)."""
    dated = first_serial(today)
    following = (serial + 1) % SERIAL_SPACE
    return dated if 0 < (dated - serial) % SERIAL_SPACE < 2**31 else following


def render(zone: str, soa: Soa, records: Iterable[Record]) -> str:
    """The master file of ``zone`` (``example.com``): a comment, the
    ``$ORIGIN`` and ``$TTL``, the SOA, then ``records`` in order, one a line with absolute
    names and its own TTL; TXT values split into 255-byte strings
    (:func:`~mgrhooks.dns.records.txt_rdata`), every name in A-labels."""
    origin = f"{zone}."
    lines = [
        f"; zone {origin} written by mgrhooks (var/named/{zone}): changes made here are overwritten",
        f"$ORIGIN {origin}",
        f"$TTL {soa.ttl}",
        f"{origin} {soa.ttl} IN SOA {soa.mname} {soa.rname} "
        f"{soa.serial} {soa.refresh} {soa.retry} {soa.expire} {soa.minimum}",
    ]
    lines += (f"{rec.name} {rec.ttl} IN {rec.rtype} {rdata(rec).to_text()}" for rec in records)
    return "\n".join(lines) + "\n"
