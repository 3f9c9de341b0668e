"""Which functions the built-in core serves under each panel name (``--mgr``). Pure.

Every product has the user functions (``user``, ``user.*``) and ``desktop`` with the
caller's ``<user>``; BILLmanager's ``desktop`` adds the caller's ``<balance>``;
DNSmanager and ISPmanager have the DNS functions (``domain``, ``domain.edit``,
``domain.delete``, ``domain.record``, ``domain.record.edit``, ``domain.record.delete``;
:mod:`mgrhooks.dns.functions`). Another panel name gets what every product has (our choice).
"""

from __future__ import annotations

from .core import BILLING, USERS, Product

#: the panel names that have the DNS functions
DNS_PRODUCTS = ("dnsmgr", "ispmgr")


def product(mgr: str) -> Product:
    """The product the panel name ``mgr`` serves (the DNS functions, and dnspython with
    them, load only for a panel that has them)."""
    if mgr in DNS_PRODUCTS:
        from .dns.functions import DNS

        return USERS.joined(DNS)
    return BILLING if mgr == "billmgr" else USERS
