"""The built-in core: the panel's own functions on an embedded SQLite database. I/O.

Functions (PROTOCOL §6 conventions): ``user`` (list), ``user.add`` and ``user.edit``
(view without ``sok``; create with ``sok`` and no ``elid``; change with ``sok`` and
``elid``), ``user.delete``, ``user.suspend``, ``user.resume`` (group ``elid`` joined by
", "), and ``desktop``. Each action runs in one ``BEGIN IMMEDIATE`` transaction: it is
committed whole or, on any error, rolled back whole.

The ``user.*`` functions need an administrator (:attr:`Level.ADMIN`, 29, or more; our
choice), who cannot give any user, itself included, a level above its own, nor change,
suspend, resume or delete a user at or above its own level; the super user
(:attr:`Level.SUPER_USER`, 30) may act on anyone. A refusal is ``<error type="access">``
and changes nothing (our choice). A user's level is one of :class:`~mgrhooks.model.Level`.
"""

from __future__ import annotations

import os
import re
from collections.abc import Callable, Mapping, Sequence
from contextlib import AbstractContextManager
from pathlib import Path
from typing import TYPE_CHECKING, NamedTuple, Protocol

from .db import transaction
from .errors import PanelError
from .model import Base, InternalHandler, Level, Request, Stage
from .xmldoc import Element, add

if TYPE_CHECKING:  # sqlite3 and the hashing modules load when a function needs them
    import sqlite3

#: the level of a user created without one
DEFAULT_LEVEL = Level.USER
#: a user name (compiled on first use, re caches it: a call that looks up no user pays nothing)
NAME_PATTERN = r"[A-Za-z0-9][A-Za-z0-9_.@-]{0,63}"
GROUP_SEPARATOR = ", "
#: a balance: a plain decimal number, sign and point optional
BALANCE_PATTERN = r"[-+]?(?:[0-9]+(?:\.[0-9]*)?|\.[0-9]+)"  # compiled on first use (re caches it)
#: digits a balance may have before the point (a whole 15-digit amount in cents still fits
#: a 64-bit integer and Decimal's default 28 digits of precision)
BALANCE_DIGITS = 15
_SCRYPT = {"n": 2**14, "r": 8, "p": 1}
_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    name TEXT PRIMARY KEY,
    level INTEGER NOT NULL,
    state TEXT NOT NULL DEFAULT 'active',
    password TEXT NOT NULL,
    balance TEXT NOT NULL DEFAULT '0.00'
);
"""


class Core(Protocol):
    """What the dispatcher needs from a core: its functions and how to run them."""

    def catalogue(self) -> Mapping[str, Sequence[InternalHandler]]:
        """Every function the core implements, with its internal handlers in order."""
        ...

    def action(self, request: Request, doc: Element) -> None:
        """Run the main logic of ``request.func``, adding its result to ``doc``.

        :raises PanelError: a typed error; nothing was changed
        """
        ...

    def internal(self, handler: InternalHandler, request: Request, doc: Element) -> None:
        """Run one internal handler, adding to ``doc``."""
        ...


def needed_level(core: Core, func: str) -> int:
    """The lowest caller level ``core``'s function ``func`` accepts: what the core's own
    ``needed_level(func)`` says (the built-in core has one), else 0: a core may leave the
    method out and check levels in :meth:`Core.action` alone (used by ``eventlist``)."""
    method: Callable[[str], int] | None = getattr(core, "needed_level", None)
    return method(func) if method is not None else 0


def hash_password(password: str) -> str:
    """``scrypt$n$r$p$salt$hash``: the standard library's scrypt (n=2**14, r=8, p=1; tens
    of milliseconds) over a random 16-byte salt, salt and hash in hex (our choice)."""
    import hashlib

    salt = os.urandom(16)
    digest = hashlib.scrypt(password.encode("utf-8", "surrogateescape"), salt=salt, **_SCRYPT)
    return f"scrypt${_SCRYPT['n']}${_SCRYPT['r']}${_SCRYPT['p']}${salt.hex()}${digest.hex()}"


def verify_password(password: str, stored: str) -> bool:
    """Whether ``password`` matches a :func:`hash_password` string (compared in constant time).

    :raises ValueError: ``stored`` is not such a string
    """
    import hashlib
    import hmac

    _, n, r, p, salt, digest = stored.split("$")
    secret = password.encode("utf-8", "surrogateescape")
    candidate = hashlib.scrypt(secret, salt=bytes.fromhex(salt), n=int(n), r=int(r), p=int(p))
    return hmac.compare_digest(candidate.hex(), digest)


Action = Callable[["BuiltinCore", "sqlite3.Connection", Request, Element], None]
#: what must commit with a change (the event record's intent, :mod:`mgrhooks.spool`):
#: called in the action's transaction with its connection, the database's path and the
#: response so far; raising rolls the change back
Within = Callable[["sqlite3.Connection", Path, Element], None]


class Product(NamedTuple):
    """What the built-in core serves under one panel name (``--mgr``): its functions, their
    internal handlers in order, the parameters each reads (``mgrctl -i FUNC``), the lowest
    caller level of those that need more than :meth:`BuiltinCore.needed_level`'s rule, and
    the SQL that makes the product's own tables."""

    actions: Mapping[str, Action]
    internals: Mapping[str, tuple[InternalHandler, ...]]
    parameters: Mapping[str, tuple[str, ...]]
    levels: Mapping[str, int]
    schema: str = ""

    def joined(self, other: Product) -> Product:
        """This product with ``other``'s functions, internals, parameters, levels and tables
        added (``other``'s win where both have one)."""
        return Product(
            {**self.actions, **other.actions},
            {**self.internals, **other.internals},
            {**self.parameters, **other.parameters},
            {**self.levels, **other.levels},
            self.schema + other.schema,
        )


class BuiltinCore:
    """The embedded default core, on the SQLite database ``db_path`` (created on use),
    serving ``product``'s functions (:data:`BILLING`, BILLmanager's, unless told:
    :func:`mgrhooks.products.product` picks it by panel name)."""

    def __init__(
        self, db_path: Path, product: Product | None = None, prehashed: Mapping[str, str] | None = None
    ) -> None:
        self.db_path = db_path
        self.product = product if product is not None else BILLING
        self._hashes: Mapping[str, str] = prehashed or {}  # never changed: calls in threads share a core

    def hashed(self, password: str) -> str:
        """``password`` hashed (:func:`hash_password`): the hash :meth:`action` worked out
        for this call before it took the write lock when it is that password, else made now."""
        return self._hashes.get(password) or hash_password(password)

    def catalogue(self) -> Mapping[str, Sequence[InternalHandler]]:
        """Every function of the product, each with its internal handlers in order
        (BILLmanager's ``desktop`` has ``desktop.user``, then ``desktop.balance``; other
        products' only ``desktop.user``)."""
        return {name: self.product.internals.get(name, ()) for name in self.product.actions}

    def parameters(self, func: str) -> tuple[str, ...]:
        """The parameters the product's function ``func`` reads (``mgrctl -i FUNC``)."""
        return self.product.parameters.get(func, ())

    def transaction(self, write: bool = True) -> AbstractContextManager[sqlite3.Connection]:
        """A transaction on the core's database, its ``users`` table and the product's own
        made if new.

        :raises RootError: the database cannot be used (see :func:`mgrhooks.db.transaction`)
        """
        return transaction(self.db_path, _SCHEMA + self.product.schema, write)

    def needed_level(self, func: str) -> int:
        """The lowest caller level the function ``func`` accepts: :attr:`Level.ADMIN <mgrhooks.model.Level.ADMIN>` for
        ``user`` and ``user.*``, the product's own level for its other functions, else 0
        (our choice)."""
        if func == "user" or func.startswith("user."):
            return Level.ADMIN
        return self.product.levels.get(func, 0)

    def action(self, request: Request, doc: Element, within: Within | None = None) -> None:
        """Run ``request.func`` (one of :meth:`catalogue`; the dispatcher calls no other)
        in one transaction, adding its result to ``doc``; ``within`` writes in the same
        transaction, after the function, what must commit with its change. A read
        (:meth:`Request.is_change <mgrhooks.model.Request.is_change>`: a list, a form shown)
        runs in a read-only transaction: calls side by side read at once instead of
        queueing for the write lock (SQLite's busy wait let one of 50 served list calls wait
        over 2 s).

        :raises PanelError: ``access`` for a ``user*`` function below
            :attr:`Level.ADMIN <mgrhooks.model.Level.ADMIN>`, else the function's own
            (``value``, ``exists``, ``missed``); nothing was written then
        :raises RootError: the database cannot be used (:func:`mgrhooks.db.transaction`)
        """
        needed = self.needed_level(request.func)
        if request.level < needed:
            raise PanelError("access", "func", request.func, f"Access to '{request.func}' needs level {needed}")
        password = request.get("passwd")
        core = self
        if password and request.get("sok"):
            # scrypt takes tens of milliseconds: not while holding the database's write lock;
            # the hash goes with this call's own core (calls side by side share this one)
            core = BuiltinCore(self.db_path, self.product, {password: hash_password(password)})
        with self.transaction(write=request.is_change()) as conn:
            self.product.actions[request.func](core, conn, request, doc)
            if within is not None:
                within(conn, self.db_path, doc)

    def internal(self, handler: InternalHandler, request: Request, doc: Element) -> None:
        """Run an internal handler of :data:`INTERNALS` for the caller (``request.user``):
        ``desktop.user`` adds ``<user><name/><level/></user>``, ``desktop.balance`` adds
        ``<balance>`` (``0.00`` for a caller the database does not know).

        :raises RootError: the database cannot be used (:func:`mgrhooks.db.transaction`)
        """
        with self.transaction(write=False) as conn:
            row = _find(conn, request.user)
        if handler.name == "desktop.user":
            user = add(doc, "user")
            add(user, "name", request.user)
            add(user, "level", str(request.level))
        elif handler.name == "desktop.balance":
            add(doc, "balance", row["balance"] if row else "0.00")


def is_user_name(name: str) -> bool:
    """Whether ``name`` may name a user of the built-in core (:data:`NAME_PATTERN`)."""
    return re.fullmatch(NAME_PATTERN, name) is not None


def _find(conn: sqlite3.Connection, name: str) -> sqlite3.Row | None:
    if not is_user_name(name):  # no such user can exist (and SQLite takes no lone surrogate)
        return None
    row: sqlite3.Row | None = conn.execute("SELECT * FROM users WHERE name = ?", (name,)).fetchone()
    return row


def _existing(conn: sqlite3.Connection, name: str) -> sqlite3.Row:
    row = _find(conn, name)
    if row is None:
        raise PanelError("missed", "user", name, f"User '{name}' not found")
    return row


def _elids(request: Request) -> list[str]:
    """The names of the group ``elid``, each once, in order (a name given twice is acted on once)."""
    elid = request.get("elid")
    if not elid:
        raise PanelError("value", "elid", "", "No user selected (parameter 'elid' is empty)")
    names = list(dict.fromkeys(elid.split(GROUP_SEPARATOR)))
    if "" in names:
        raise PanelError("value", "elid", elid, f"Empty user name in the group '{elid}' (names are joined by ', ')")
    return names


def _may_grant(request: Request, level: int) -> None:
    """Refuse to give ``level`` when it is above the caller's own."""
    if level > request.level:
        message = f"Level {level} is above your own ({request.level}): nobody can give more than they have"
        raise PanelError("access", "level", str(level), message)


def _may_change(request: Request, row: sqlite3.Row) -> None:
    """Refuse to act on the user ``row`` when its level is at or above the caller's, unless
    the caller is the super user."""
    if row["level"] >= request.level and request.level < Level.SUPER_USER:
        message = (
            f"User '{row['name']}' has level {row['level']}: only a caller above that level may change it"
            f" (yours is {request.level})"
        )
        raise PanelError("access", "user", row["name"], message)


def user_list(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``user``: one ``<elem>`` row (name, level, state) per user, by name."""
    for row in conn.execute("SELECT name, level, state FROM users ORDER BY name"):
        elem = add(doc, "elem")
        for key in ("name", "level", "state"):
            add(elem, key, str(row[key]))


def user_edit(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``user.add``/``user.edit``: view, create or change one user (never echoes passwords)."""
    elid = request.get("elid")
    if not request.get("sok"):
        _user_form(conn, elid, doc)
    elif not elid:
        _user_create(core, conn, request, doc)
    else:
        _user_change(core, conn, request, elid, doc)


def _user_form(conn: sqlite3.Connection, elid: str, doc: Element) -> None:
    row = _existing(conn, elid) if elid else None
    add(doc, "elid", elid)
    add(doc, "name", row["name"] if row else "")
    add(doc, "level", str(row["level"] if row else DEFAULT_LEVEL))
    add(doc, "state", row["state"] if row else "active")
    add(doc, "balance", row["balance"] if row else "0.00")


def _user_create(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    name = _valid_name(request.get("name"))
    password = request.get("passwd")
    if not password:
        raise PanelError("value", "passwd", "", "Parameter 'passwd' is required to create a user")
    if _find(conn, name) is not None:
        raise PanelError("exists", "user", name, f"User '{name}' already exists")
    level = _valid_level(request.get("level", str(DEFAULT_LEVEL)))
    _may_grant(request, level)
    balance = _valid_balance(request.get("balance", "0.00"))
    conn.execute(
        "INSERT INTO users (name, level, password, balance) VALUES (?, ?, ?, ?)",
        (name, level, core.hashed(password), balance),
    )
    add(doc, "ok")
    add(doc, "id", name)


def _user_change(core: BuiltinCore, conn: sqlite3.Connection, request: Request, elid: str, doc: Element) -> None:
    row = _existing(conn, elid)
    _may_change(request, row)
    name = _valid_name(request.get("name", elid))
    if name != elid and _find(conn, name) is not None:
        raise PanelError("exists", "user", name, f"User '{name}' already exists")
    level = _valid_level(request.get("level", str(row["level"])))
    _may_grant(request, level)
    balance = _valid_balance(request.get("balance", row["balance"]))
    password = request.get("passwd")
    stored = core.hashed(password) if password else row["password"]
    conn.execute(
        "UPDATE users SET name = ?, level = ?, balance = ?, password = ? WHERE name = ?",
        (name, level, balance, stored, elid),
    )
    add(doc, "ok")
    add(doc, "id", name)


def _valid_name(name: str) -> str:
    if not is_user_name(name):
        raise PanelError("value", "name", name, f"Invalid user name '{name}': letters, digits, '_.@-', 1 to 64")
    return name


def _valid_level(text: str) -> int:
    if text not in {str(level) for level in Level}:
        raise PanelError("value", "level", text, f"Invalid level '{text}': one of {', '.join(map(str, Level))}")
    return int(text)


def _valid_balance(text: str) -> str:
    """``text`` rounded to cents (half to even), when it is a plain decimal number with at
    most :data:`BALANCE_DIGITS` digits before the point (no exponent; our choice)."""
    if not re.fullmatch(BALANCE_PATTERN, text):
        raise PanelError("value", "balance", text, f"Invalid balance '{text}': a decimal number like -12.50")
    from decimal import Decimal

    value = Decimal(text)
    if abs(value) < 10**BALANCE_DIGITS:  # (a larger one may not fit Decimal's precision in cents)
        value = value.quantize(Decimal("0.01"))
    if abs(value) >= 10**BALANCE_DIGITS:
        message = f"Invalid balance '{text}': at most {BALANCE_DIGITS} digits before the decimal point"
        raise PanelError("value", "balance", text, message)
    return str(value)


def user_delete(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``user.delete``: remove every user in the group ``elid``, all or none."""
    for name in _elids(request):
        _may_change(request, _existing(conn, name))
        conn.execute("DELETE FROM users WHERE name = ?", (name,))
    add(doc, "ok")


def _set_state(state: str) -> Action:
    def action(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
        for name in _elids(request):
            _may_change(request, _existing(conn, name))
            conn.execute("UPDATE users SET state = ? WHERE name = ?", (state, name))
        add(doc, "ok")

    action.__doc__ = f"Set the state of every user in the group ``elid`` to ``{state}``."
    return action


def desktop(core: BuiltinCore, conn: sqlite3.Connection, request: Request, doc: Element) -> None:
    """``desktop``: the main logic adds nothing; its internal handlers fill the page."""


ACTIONS: dict[str, Action] = {
    "user": user_list,
    "user.add": user_edit,
    "user.edit": user_edit,
    "user.delete": user_delete,
    "user.suspend": _set_state("suspended"),
    "user.resume": _set_state("active"),
    "desktop": desktop,
}
#: what each function reads (``mgrctl -i FUNC``)
PARAMETERS: dict[str, tuple[str, ...]] = {
    "user.add": ("elid", "name", "passwd", "level", "balance", "sok"),
    "user.edit": ("elid", "name", "passwd", "level", "balance", "sok"),
    "user.delete": ("elid",),
    "user.suspend": ("elid",),
    "user.resume": ("elid",),
}
#: the seed's example: core adds the caller's data, the product (project) adds <balance>
INTERNALS: dict[str, tuple[InternalHandler, ...]] = {
    "desktop": (
        InternalHandler("desktop.user", Stage.AFTER, Base.CORE),
        InternalHandler("desktop.balance", Stage.AFTER, Base.PROJECT),
    ),
}
#: what every product has: the user functions and ``desktop`` with the caller's data
USERS = Product(ACTIONS, {"desktop": INTERNALS["desktop"][:1]}, PARAMETERS, {})
#: BILLmanager's: the users' functions, its ``desktop`` adds the caller's ``<balance>``
BILLING = Product(ACTIONS, INTERNALS, PARAMETERS, {})
