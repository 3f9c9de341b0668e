"""How long a failed login holds the next answer, from the failures counted. Pure.

Failures are counted per client address and per user name (:mod:`mgrhooks.http.sessions`
stores them). The delay of the n-th failure in a row is ``base * 2**(n-1)`` seconds,
at most ``cap`` (1, 2, 4, 8, 16, 30, 30, ... with the defaults); a count is forgotten
``window`` seconds after its last failure, and a successful login forgets it at once.
Until the delay of the last failure has passed, the address or user is *held*: another
attempt is refused without its password being checked (so that parallel guesses are no
faster than sequential ones). Our choice (the panel's own numbers are not documented).
"""

from __future__ import annotations

from typing import NamedTuple


class Policy(NamedTuple):
    """The delays: ``base`` and ``cap`` in seconds, ``window`` in seconds."""

    base: float = 1.0
    cap: float = 30.0
    window: float = 900.0


class Count(NamedTuple):
    """Failures in a row of one address or user, and when the last one was (seconds, epoch)."""

    failures: int
    last: float


#: the delays the Gate uses unless given others
DEFAULT = Policy()


def delay(failures: int, policy: Policy = DEFAULT) -> float:
    """Seconds the answer to the ``failures``-th failure in a row waits (0 for none)."""
    if failures <= 0:
        return 0.0
    return min(policy.cap, policy.base * 2.0 ** min(failures - 1, 62))


def current(count: Count | None, now: float, policy: Policy = DEFAULT) -> int:
    """The failures of ``count`` still counted at ``now`` (0 once ``window`` has passed)."""
    if count is None or now - count.last > policy.window:
        return 0
    return count.failures


def held_for(count: Count | None, now: float, policy: Policy = DEFAULT) -> float:
    """Seconds from ``now`` until the address or user of ``count`` may try again (0: now)."""
    failures = current(count, now, policy)
    if failures == 0 or count is None:
        return 0.0
    return max(0.0, count.last + delay(failures, policy) - now)
