"""Who is calling: the HTTP API's authentication, as the panel does it (docs/auth.md,
with its sources). I/O (the session store, the log).

:class:`Gate` takes one request as the front parsed it (:class:`Asked`) and decides:

* :class:`Allowed`: run the call as :class:`Caller` (user, level from the login, never
  from a parameter), with the parameters the Gate consumes (:data:`CONSUMED`) removed;
* :class:`Answered`: answer without running anything: ``func=auth`` (a session),
  ``logout``, ``session.newkey``, ``whoami``, and every refusal (``<error type="auth">``
  and others), with the cookies to set and the seconds to wait before answering.

Credentials, in this order: ``authinfo=USER:PASS``; the session key in ``auth=KEY``; the
session cookie ``<mgr>ses5``. Passwords are checked against :class:`Users` (the core's
users table for every user but ``root``) with :func:`mgrhooks.core.verify_password`
(scrypt, compared in constant time); ``root``, the super user, has its password in the
session store (:mod:`mgrhooks.http.sessions`), set by ``mgrhooks passwd root``. No secret
is ever logged or echoed: a log line names the user and the address, never a password,
``authinfo``, ``auth`` or ``key`` (all secret for :mod:`mgrhooks.secret`).
"""

from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from collections.abc import Callable, Mapping
from typing import TYPE_CHECKING, NamedTuple, Protocol

from lxml import etree

from .. import logs
from ..core import BuiltinCore, hash_password, is_user_name, verify_password
from ..errors import PanelError, UsageError
from ..model import Level
from ..root import Root
from ..xmldoc import Element, add, error_doc, error_text, find_error
from . import throttle
from .sessions import Store, store_file

if TYPE_CHECKING:
    from ..api import Panel

#: the super user's name: its password is the session store's, never the core's
SUPER_USER = "root"
#: the parameters the Gate consumes: never passed on to the call
CONSUMED = frozenset({"authinfo", "auth", "su", "username", "password", "key"})
#: the shortest key ``session.newkey`` takes (HTTP-API.md: "K of 16+ characters")
MIN_KEY = 16
#: passwords a Gate remembers having verified (see :meth:`Gate._verified`)
VERIFIED_LIMIT = 1024
#: the most seconds a session's last use is left unrecorded (each record is a write)
TOUCH_EVERY = 60.0
#: the functions the Gate answers itself
LOGIN, LOGOUT, NEWKEY, WHOAMI = "auth", "logout", "session.newkey", "whoami"
_LOG = logs.Channel("auth")


class Asked(NamedTuple):
    """One HTTP request as the front parsed it, before authentication."""

    func: str  # "" when the request names none
    params: tuple[tuple[str, str], ...]  # every parameter but func, in order (authinfo, auth, su, ... included)
    cookies: Mapping[str, str]  # the request's cookies (name -> value)
    address: str  # the client's address (X-Forwarded-For already resolved by the front, trusted proxies only)
    mgr: str  # the product: the session cookie is f"{mgr}ses5"


class Caller(NamedTuple):
    """Who a call runs as: ``user`` at ``level``; ``session`` the session key the caller
    came with, if any (after ``su``: the administrator's own session)."""

    user: str
    level: int
    session: str | None = None


class Allowed(NamedTuple):
    """Run the call: as ``caller``, with ``params`` (authinfo/auth/su/username/password/key removed)."""

    caller: Caller
    params: tuple[tuple[str, str], ...]


class Answered(NamedTuple):
    """Answer without running anything: ``doc`` is the whole response document (lxml <doc>,
    e.g. <doc><auth id=.. level=..>KEY</auth></doc>, <doc><ok/></doc>, an <error type="auth">),
    ``set_cookies`` the Set-Cookie header values to send, ``delay`` seconds the front waits
    (asynchronously) before answering (failed logins)."""

    doc: Element
    set_cookies: tuple[str, ...] = ()
    delay: float = 0.0


class Account(NamedTuple):
    """A user as the Gate needs it: ``password`` a :func:`mgrhooks.core.hash_password`
    string, ``level`` 0-31, ``active`` ``False`` when suspended."""

    password: str
    level: int
    active: bool


class Users(Protocol):
    """Where the Gate finds users (the core's users table)."""

    def account(self, name: str) -> Account | None:
        """The user ``name``, or ``None`` when there is none."""
        ...


class CoreUsers:
    """:class:`Users` of the built-in core: its ``users`` table (``state`` other than
    ``active`` is not active).

    :raises RootError: (:meth:`account`) the core's database cannot be used
    """

    def __init__(self, core: BuiltinCore) -> None:
        self._core = core

    def account(self, name: str) -> Account | None:
        """The user ``name`` of the core's ``users`` table, or ``None``."""
        if not is_user_name(name):  # no such user can exist
            return None
        with self._core.transaction(write=False) as conn:
            row = conn.execute("SELECT password, level, state FROM users WHERE name = ?", (name,)).fetchone()
        return None if row is None else Account(str(row["password"]), int(row["level"]), row["state"] == "active")


class Gate:
    """Authenticates the requests of one root (see the module docstring and docs/auth.md).

    :param users: the users (the built-in core's: :class:`CoreUsers`)
    :param session_idle: seconds without a request after which a session, or a key of
        ``session.newkey`` not used, lapses (settings' ``[serve] session_idle``)
    :param clock: the time in seconds since the epoch (tests move it)
    :param policy: the delays of failed logins (:mod:`mgrhooks.http.throttle`)
    :param secure_cookies: mark the session cookie ``Secure`` (the front passes ``True``
        when it serves HTTPS; our choice: the Gate does not see the scheme)
    """

    def __init__(
        self,
        root: Root,
        users: Users,
        *,
        session_idle: float = 3600.0,
        clock: Callable[[], float] = time.time,
        policy: throttle.Policy = throttle.DEFAULT,
        secure_cookies: bool = False,
    ) -> None:
        self._root = root
        self._users = users
        self._idle = session_idle
        self._clock = clock
        self._policy = policy
        self._secure = secure_cookies
        self.store = Store(store_file(root))
        self._decoy: str | None = None
        self._touch_every = min(TOUCH_EVERY, session_idle / 60)
        # (user, stored hash) -> HMAC of the password verified: see _verified
        self._pepper = secrets.token_bytes(32)
        self._remembered: dict[tuple[str, str], bytes] = {}
        self._lock = threading.Lock()

    def decide(self, asked: Asked) -> Allowed | Answered:
        """Run or answer ``asked`` (blocking: scrypt and SQLite; the front runs it in a
        worker thread).

        :raises RootError: the session store or the core's database cannot be used
        """
        if asked.func == LOGIN:
            return self._login(asked)
        if asked.func == LOGOUT:
            return self._logout(asked)
        caller = self._authenticate(asked)
        if isinstance(caller, Answered):
            return caller
        su = _first(asked.params, "su")
        if su:
            caller = self._su(asked, caller, su)
            if isinstance(caller, Answered):
                return caller
        if asked.func == WHOAMI:
            return Answered(_whoami(caller))
        if asked.func == NEWKEY:
            return self._newkey(asked, caller)
        return Allowed(caller, tuple((key, value) for key, value in asked.params if key not in CONSUMED))

    # --- credentials -------------------------------------------------------------------

    def _authenticate(self, asked: Asked) -> Caller | Answered:
        authinfo = _first(asked.params, "authinfo")
        if authinfo is not None:
            user, _, password = authinfo.partition(":")
            return self._check_password(asked, user, password)
        key = _first(asked.params, "auth") or asked.cookies.get(cookie_name(asked.mgr))
        if not key:
            msg = f"Not logged in: pass authinfo=USER:PASS, auth=KEY or the cookie {cookie_name(asked.mgr)}"
            return Answered(error_doc(asked.func, "auth", "auth", "", msg))
        return self._resume(asked, key)

    def _resume(self, asked: Asked, key: str) -> Caller | Answered:
        """The caller of the session ``key``, touched, if it is live, from its address and
        its user may still log in."""
        now = self._clock()
        session = self.store.session(key)
        if session is None or now - session.used > self._idle:
            if session is not None:
                self.store.end(key)
            return Answered(error_doc(asked.func, "auth", "session", "", "Session expired or unknown: log in again"))
        if session.address != asked.address:
            self._log(
                logs.WARNING,
                "session of '%s' used from %s (bound to %s): refused",
                session.user,
                asked.address,
                session.address,
            )
            return Answered(
                error_doc(asked.func, "auth", "session", "", "Session bound to another address: log in again")
            )
        account = self._account(session.user)
        if account is None or not account.active:
            self.store.end(key)
            return Answered(
                error_doc(asked.func, "auth", "session", "", "Session ended: its user may no longer log in")
            )
        if now - session.used >= self._touch_every:
            self.store.touch(key, now)
        return Caller(session.user, account.level, key)

    def _account(self, name: str) -> Account | None:
        if name == SUPER_USER:
            hashed = self.store.super_user_password(name)
            return None if hashed is None else Account(hashed, Level.SUPER_USER, True)
        return self._users.account(name)

    def _check_password(self, asked: Asked, user: str, password: str) -> Caller | Answered:
        """The caller ``user`` when ``password`` is theirs and they are active; else a
        failed login (counted, logged, delayed)."""
        now = self._clock()
        subjects = _subjects(asked.address, user)
        counts = self.store.failures(subjects)
        held = self._held(asked, user, counts, now)
        if held is not None:
            return held
        account = self._account(user)
        if account is None:
            verify_password(password, self._decoy_hash())  # the same time as a real check
            return self._failed(asked, user, subjects, now, "unknown user")
        if not self._verified(user, password, account.password):
            return self._failed(asked, user, subjects, now, "wrong password")
        if not account.active:
            return self._failed(asked, user, subjects, now, "user suspended")
        if counts:  # a success forgets the failures
            self.store.forget(subjects)
        return Caller(user, account.level)

    def _verified(self, user: str, password: str, stored: str) -> bool:
        """Whether ``password`` matches ``stored`` (:func:`mgrhooks.core.verify_password`).

        A match is remembered as an HMAC of the password under a key of this Gate's own
        (random, never stored), for the user and that hash: ``authinfo`` on every call
        then costs a SHA-256 instead of scrypt's tens of milliseconds (our choice; a new
        password is a new hash, so an old one is never taken again; at most
        :data:`VERIFIED_LIMIT` kept, the oldest forgotten first). Compared in constant time.
        """
        tag = hmac.new(self._pepper, password.encode("utf-8", "surrogateescape"), hashlib.sha256).digest()
        with self._lock:
            known = self._remembered.get((user, stored))
        if known is not None and hmac.compare_digest(known, tag):
            return True
        if not _matches(password, stored):
            return False
        with self._lock:
            self._remembered[(user, stored)] = tag
            while len(self._remembered) > VERIFIED_LIMIT:
                del self._remembered[next(iter(self._remembered))]
        return True

    def _decoy_hash(self) -> str:
        if self._decoy is None:
            self._decoy = hash_password("decoy: no user has this password")
        return self._decoy

    # --- failed logins -----------------------------------------------------------------

    def _held(self, asked: Asked, user: str, counts: Mapping[str, throttle.Count], now: float) -> Answered | None:
        """A refusal when the address or user is held after failed logins (``counts``: the
        failures of each), else ``None``."""
        held = max((throttle.held_for(count, now, self._policy) for count in counts.values()), default=0.0)
        if held <= 0:
            return None
        self._log(
            logs.WARNING,
            "login of '%s' from %s refused unchecked: held %.1f s after failed logins",
            user,
            asked.address,
            held,
        )
        return Answered(_authfail(asked.func, user, f"Too many failed logins: try again in {held:.0f} s"), delay=held)

    def _failed(self, asked: Asked, user: str, subjects: tuple[str, ...], now: float, reason: str) -> Answered:
        counts = self.store.fail(subjects, now, self._policy.window)
        failures = max(count.failures for count in counts.values())
        delay = throttle.delay(failures, self._policy)
        by_address = counts[subjects[0]].failures
        by_user = counts[subjects[1]].failures if len(subjects) > 1 else 0
        self._log(
            logs.WARNING,
            "login failed for user '%s' from %s: %s (failure %d in a row from this address, %d for this user;"
            " answer delayed %.1f s)",
            user,
            asked.address,
            reason,
            by_address,
            by_user,
            delay,
        )
        return Answered(_authfail(asked.func, user, "Login failed: wrong user name, password or key"), delay=delay)

    def _log(self, level: int, message: str, *args: object) -> None:
        with self._root.logging():
            _LOG.log(level, message, *args)

    # --- the functions the Gate answers ----------------------------------------------

    def _login(self, asked: Asked) -> Answered:
        """``func=auth``: a session from ``username`` and ``password``, or from a one-time ``key``."""
        user = _first(asked.params, "username") or ""
        password = _first(asked.params, "password")
        key = _first(asked.params, "key")
        if password is None and key:
            caller: Caller | Answered = self._key_login(asked, user, key)
        elif password is None:
            return Answered(_authfail(asked.func, user, "Log in with username and password, or with key"))
        else:
            caller = self._check_password(asked, user, password)
        if isinstance(caller, Answered):
            return caller
        session = self.store.open(caller.user, asked.address, self._clock(), self._idle)
        self._log(logs.INFO, "user '%s' logged in from %s (new session)", caller.user, asked.address)
        doc = etree.Element("doc")
        add(doc, "auth", session, id=session, level=str(caller.level))
        return Answered(doc, (self._cookie(asked.mgr, session),))

    def _key_login(self, asked: Asked, user: str, key: str) -> Caller | Answered:
        now = self._clock()
        subjects = _subjects(asked.address, user)
        counts = self.store.failures(subjects)
        held = self._held(asked, user, counts, now)
        if held is not None:
            return held
        owner = self.store.take_key(key, now, self._idle)
        if owner is None:
            return self._failed(asked, user, subjects, now, "unknown, used or expired key")
        if user and user != owner:
            return self._failed(asked, user, subjects, now, "key of another user")
        account = self._account(owner)
        if account is None or not account.active:
            return self._failed(asked, owner, subjects, now, "user unknown or suspended")
        if counts:
            self.store.forget(subjects)
        return Caller(owner, account.level)

    def _logout(self, asked: Asked) -> Answered:
        """``func=logout``: end the session named (``auth`` or the cookie), if any; always
        ``<ok/>`` and the cookie cleared (our choice: a session already over is ended)."""
        key = _first(asked.params, "auth") or asked.cookies.get(cookie_name(asked.mgr))
        if key:
            self.store.end(key)
        return Answered(_ok(), (self._cookie(asked.mgr, "", clear=True),))

    def _su(self, asked: Asked, caller: Caller, target: str) -> Caller | Answered:
        """``su=USER``: an administrator acts as ``target`` at its level; only the super
        user may act as a user at or above its own level (as the core's ``user.*``)."""
        if caller.level < Level.ADMIN:
            msg = f"Acting as another user (su) needs level {Level.ADMIN.value}"
            return Answered(error_doc(asked.func, "access", "su", target, msg))
        account = self._account(target)
        if account is None or not account.active:
            return Answered(error_doc(asked.func, "missed", "user", target, f"User '{target}' not found or suspended"))
        refusal = _above(asked.func, caller, target, account)
        if refusal is not None:
            return refusal
        return Caller(target, account.level, caller.session)

    def _newkey(self, asked: Asked, caller: Caller) -> Answered:
        """``session.newkey``: keep a one-time key for ``username`` (an administrator only)."""
        if caller.level < Level.ADMIN:
            msg = f"Access to '{NEWKEY}' needs level {Level.ADMIN.value}"
            return Answered(error_doc(asked.func, "access", "func", NEWKEY, msg))
        user = _first(asked.params, "username") or ""
        key = _first(asked.params, "key") or ""
        if not user:
            return Answered(error_doc(asked.func, "value", "username", "", "Parameter 'username' is required"))
        if len(key) < MIN_KEY:  # (never echoed: the value stays empty)
            msg = f"Parameter 'key' must have {MIN_KEY} characters or more"
            return Answered(error_doc(asked.func, "value", "key", "", msg))
        account = self._account(user)
        if account is None:
            return Answered(error_doc(asked.func, "missed", "user", user, f"User '{user}' not found"))
        refusal = _above(asked.func, caller, user, account)
        if refusal is not None:
            return refusal
        self.store.add_key(user, key, self._clock())
        self._log(logs.INFO, "one-time key for user '%s' made by '%s' from %s", user, caller.user, asked.address)
        return Answered(_ok())

    def _cookie(self, mgr: str, value: str, clear: bool = False) -> str:
        """The Set-Cookie value of the session cookie (HttpOnly, Path=/, SameSite=Lax;
        Secure with ``secure_cookies``; ``Max-Age=0`` to clear it)."""
        from http.cookies import SimpleCookie

        jar: SimpleCookie = SimpleCookie()
        name = cookie_name(mgr)
        jar[name] = value
        morsel = jar[name]
        morsel["path"] = "/"
        morsel["httponly"] = True
        morsel["samesite"] = "Lax"
        if self._secure:
            morsel["secure"] = True
        if clear:
            morsel["max-age"] = 0
        return morsel.OutputString()


def cookie_name(mgr: str) -> str:
    """The session cookie of the product ``mgr``: ``<mgr>ses5`` (HTTP-API.md)."""
    return f"{mgr}ses5"


def _first(params: tuple[tuple[str, str], ...], name: str) -> str | None:
    return next((value for key, value in params if key == name), None)


def _subjects(address: str, user: str) -> tuple[str, ...]:
    """What failed logins are counted against: the address, and the user when one is named."""
    return (f"address:{address}", f"user:{user}") if user else (f"address:{address}",)


def _matches(password: str, stored: str) -> bool:
    try:
        return verify_password(password, stored)
    except ValueError:  # not a hash of ours: nothing matches it
        return False


def _above(func: str, caller: Caller, target: str, account: Account) -> Answered | None:
    if account.level >= caller.level and caller.level < Level.SUPER_USER:
        msg = f"User '{target}' has level {account.level}: only a caller above that level may act as it"
        return Answered(error_doc(func, "access", "user", target, msg))
    return None


def _authfail(func: str, user: str, msg: str) -> Element:
    """A failed login: ``<error type="auth" object="authfail" value=USER>`` (docs/auth.md)."""
    return error_doc(func, "auth", "authfail", user, msg)


def _ok() -> Element:
    doc = etree.Element("doc")
    add(doc, "ok")
    return doc


def _whoami(caller: Caller) -> Element:
    """``<doc><user><name>U</name><level>N</level></user></doc>`` (the shape of the core's
    ``desktop.user``; our choice)."""
    doc = etree.Element("doc", func=WHOAMI)
    user = add(doc, "user")
    add(user, "name", caller.user)
    add(user, "level", str(caller.level))
    return doc


def set_password(panel: Panel, user: str, password: str) -> None:
    """Give ``user`` the password ``password`` and end its sessions and keys: ``root``'s
    in the session store, any other user's in the core (``user.edit`` as the super user,
    handlers included).

    :raises UsageError: ``password`` is empty
    :raises PanelError: the core refused (``missed``: no such user)
    :raises RootError: the session store or the core's database cannot be used
    """
    if not password:
        raise UsageError("the password is empty")
    store = Store(store_file(panel.root))
    if user == SUPER_USER:
        store.set_super_user_password(user, hash_password(password))
    else:
        params = [("elid", user), ("passwd", password), ("confirm", password), ("sok", "ok")]
        response = panel.call("user.edit", params)
        error = find_error(response.doc) if response.error else None
        if error is not None:
            kind, obj, value = (error.get(name, "") for name in ("type", "object", "value"))
            raise PanelError(kind, obj, value, error_text(error))
    store.end_user(user)
