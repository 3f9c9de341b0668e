"""The relay: a panel's pending deliveries of relayed notifiers (``[relay] notifiers``)
sent from the spool, the outbox, to the broker of central delivery. I/O.

A call only ever writes the spool (:mod:`mgrhooks.delivery`): it never waits on the broker
nor fails for it. ``mgrhooks worker`` relays: it claims the pending deliveries of the
relayed notifiers (a lease, as the local drivers' claims) a batch at a time, publishes the
batch (:class:`mgrhooks.broker.Publisher`: a task per delivery, then the broker's
confirmations of the whole batch) and marks *relayed* exactly the deliveries whose
messages the broker confirmed. A broker that is down, refuses (nack), does not confirm in
time or goes away mid-batch leaves the others pending, tried again at the next pass; a
worker killed between the broker's confirmation and the mark sends those again (at least
once: receivers drop duplicates by ``X-Mgrhooks-Id``).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from . import logs
from .delivery import NOTIFY, spool_of
from .root import Root
from .settings import Relay
from .spool import Delivery, Spool

#: deliveries claimed, published and confirmed at once
BATCH = 500
#: seconds a claimed batch stays reserved for the relay: a relay killed mid-batch delays
#: those deliveries by this much (more than the wait for the broker's confirmations)
LEASE = 60.0


class Relayed(NamedTuple):
    """What one relay pass did: deliveries the broker confirmed, and the error that
    stopped it (empty: none)."""

    relayed: int = 0
    error: str = ""


def relay(root: Root, settings: Relay) -> Relayed:
    """Publish every due pending delivery of ``settings.notifiers`` to the broker, a batch
    at a time, each marked relayed once the broker confirmed it; stop at the first batch
    not wholly confirmed (the rest stays pending). Nothing to do (and Celery not imported)
    when no notifier is relayed.

    :raises RootError: the spool's database cannot be used
    """
    if not settings.notifiers:
        return Relayed()
    from .broker import RELAY_TRANSPORT, Publisher, application

    spool = spool_of(root)
    app = application(settings)
    started = time.time()
    count = 0
    with app.connection_for_write(transport_options=RELAY_TRANSPORT) as connection:
        publisher = None
        while batch := spool.claim(time.time(), LEASE, limit=BATCH, due_by=started, notifiers=settings.notifiers):
            if publisher is None:
                try:
                    connection.ensure_connection(
                        max_retries=1, interval_start=0, interval_step=0
                    )  # a broker that is down: at once, not after retries
                    publisher = Publisher(app, settings, connection)
                except Exception as exc:  # noqa: BLE001 (a broker's failure leaves deliveries pending)
                    return _stopped(spool, batch, count, f"{type(exc).__name__}: {exc}")
            published = publisher.publish([(d.notifier, d.record, d.event, d.body) for d in batch])
            confirmed = [d for n, d in enumerate(batch) if n in published.confirmed]
            count += spool.relayed(confirmed, time.time())
            if published.error:
                left = [d for n, d in enumerate(batch) if n not in published.confirmed]
                return _stopped(spool, left, count, published.error)
    if count:
        NOTIFY.log(logs.EXTINFO, "relayed %d delivery(ies) to the broker", count)
    return Relayed(count)


def _stopped(spool: Spool, left: list[Delivery], count: int, reason: str) -> Relayed:
    """Release ``left`` (not confirmed), keeping why; the pass's outcome."""
    error = f"cannot relay to the broker: {reason}"
    spool.release(left, error)
    NOTIFY.warning("%s (%d delivery(ies) left pending, tried again next pass)", error, len(left))
    if count:
        NOTIFY.log(logs.EXTINFO, "relayed %d delivery(ies) to the broker", count)
    return Relayed(count, error)
