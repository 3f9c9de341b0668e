"""Which parameters are secret, and keeping their values out of what mgrhooks writes. Pure.

The rule is one function, :func:`is_secret`: a parameter is secret when its name holds
``pass``, ``secret``, ``token``, ``key``, ``auth``, ``confirm`` or ``cookie``, in any case
(``passwd``, ``confirm``, the panel's repeated password, ``authinfo``, ``api_key``, the
``HTTP_COOKIE`` of a served call holding the session key; our
choice, broad on purpose: a name wrongly taken for secret costs a ``***`` in a record).
Every writer uses it:

* the event records (:func:`mgrhooks.notify.redact`) and ``--out devel``'s ``<tparams>``
  (:mod:`mgrhooks.render`) show such a value as :data:`MASK`;
* the panel log's dumps of what handlers get and give (``*.external 9``: the environment,
  stdin: the document, a POST body, the old generation's ``<params>``; stdout; and every
  stderr line at any level) pass through :meth:`Hider.hide`, which replaces each secret value
  wherever it appears, in the forms mgrhooks hands it on: as it is (``PARAM_passwd``),
  percent-encoded (``QUERY_STRING``, the POST body) and XML-escaped (``<params>``).
"""

from __future__ import annotations

import re
from collections.abc import Iterable, Mapping

#: what makes a parameter name secret, in any case (see the module docstring)
WORDS = ("pass", "secret", "token", "key", "auth", "confirm", "cookie")
#: the rule as a pattern (case-insensitive), for names that are not ASCII: Unicode's case
#: matching is not ``str.lower``'s there (``\u212a``, the Kelvin sign, matches ``k``)
SECRET = "|".join(WORDS)
#: what a secret value is shown as
MASK = "***"
#: variables mgrhooks itself sets whose names match the rule but hold no secret
_PROTOCOL = frozenset({"AUTH_USER", "AUTH_LEVEL", "AUTHID"})


def is_secret(name: str) -> bool:
    """Whether the parameter ``name`` holds a secret (the rule of the module docstring).
    An ASCII name, the common case, is matched without the pattern (compiling it was
    ~0.4 ms of every call, whose request line is masked)."""
    if name.isascii():
        lowered = name.lower()
        return any(word in lowered for word in WORDS)
    return re.search(SECRET, name, re.IGNORECASE) is not None


def masked(params: Iterable[tuple[str, str]]) -> list[tuple[str, str]]:
    """``params`` in order, the value of each secret one replaced by :data:`MASK`."""
    return [(key, MASK if is_secret(key) else value) for key, value in params]


class Hider:
    """Hides the secret values of one call's parameters in text (:meth:`hide`).

    Made once per call; a call without secret values hides nothing and costs nothing.
    """

    __slots__ = ("_pattern", "longest")

    def __init__(self, params: Iterable[tuple[str, str]]) -> None:
        forms = {form for key, value in params if value and is_secret(key) for form in _forms(value)}
        longest_first = sorted(forms, key=len, reverse=True)
        self._pattern = re.compile("|".join(map(re.escape, longest_first))) if forms else None
        #: the length in UTF-8 bytes of the longest form hidden (0: nothing to hide), so
        #: that a text cut after N bytes is hidden whole when N + longest bytes are read
        self.longest = max((len(form.encode("utf-8", "surrogateescape")) for form in forms), default=0)

    def hide(self, text: str) -> str:
        """``text`` with every occurrence of a secret value, in each of its forms, replaced
        by :data:`MASK` (a very short value hides every place it appears: the price of
        never showing it)."""
        return text if self._pattern is None else self._pattern.sub(MASK, text)

    def environment(self, env: Mapping[str, str]) -> list[tuple[str, str]]:
        """``env``'s variables sorted by name, each value hidden; a variable whose name the
        rule calls secret (``PARAM_passwd``, a ``pass_env`` variable ``API_TOKEN``) shown
        as :data:`MASK` whatever its value (mgrhooks' own ``AUTH_USER``, ``AUTH_LEVEL`` and
        ``AUTHID`` are not secrets)."""
        return [
            (name, MASK if name not in _PROTOCOL and is_secret(name) else self.hide(value))
            for name, value in sorted(env.items())
        ]


def _forms(value: str) -> set[str]:
    """``value`` as mgrhooks hands it to handlers: as it is, percent-encoded as
    :func:`urllib.parse.urlencode` does (``QUERY_STRING``, a POST body) and with
    ``%20`` for a space, and escaped as XML text (lxml writes ``&amp;``, ``&lt;``,
    ``&gt;``, ``&#13;``)."""
    from urllib.parse import quote, quote_plus

    encoded = {f(value, safe="", encoding="utf-8", errors="surrogateescape") for f in (quote, quote_plus)}
    xml = value.replace("&", "&amp;").replace("<", "&lt;").replace(">", "&gt;").replace("\r", "&#13;")
    return {value, xml, *encoded}
