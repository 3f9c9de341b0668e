"""Which functions the built-in core serves under each panel name (``--mgr``). Pure.

Every product has the user functions (``user``, ``user.*``) and ``desktop`` with the
caller's ``<user>``; BILLmanager's ``desktop`` adds the caller's ``<balance>``;
DNSmanager and ISPmanager have the DNS functions (``domain``, ``domain.edit``,
``domain.delete``, ``domain.record``, ``domain.record.edit``, ``domain.record.delete``;
:mod:`mgrhooks.dns.functions`). Another panel name gets what every product has (our choice).
"""

from __future__ import annotations

from .core import BILLING, USERS, Product
from .dns.functions import DNS

#: the products by panel name; any other name serves :data:`~mgrhooks.core.USERS`
PRODUCTS = {"billmgr": BILLING, "dnsmgr": USERS.joined(DNS), "ispmgr": USERS.joined(DNS)}


def product(mgr: str) -> Product:
    """The product the panel name ``mgr`` serves."""
    return PRODUCTS.get(mgr, USERS)
