"""The relay: a panel's pending deliveries of relayed notifiers (``[relay] notifiers``)
sent from the spool, the outbox, to the broker of central delivery. I/O.

A call only ever writes the spool (:mod:`mgrhooks.delivery`): it never waits on the broker
nor fails for it. ``mgrhooks worker`` relays: it claims the pending deliveries of the
relayed notifiers (a lease, as the local drivers' claims), publishes each as a task
(:mod:`mgrhooks.broker`) and marks it *relayed* once the broker confirmed it. A broker that
is down, or refuses, leaves the rest pending, tried again at the next pass; a worker killed
between the broker's confirmation and the mark sends those again (at least once: receivers
drop duplicates by ``X-Mgrhooks-Id``).
"""

from __future__ import annotations

import time
from typing import NamedTuple

from . import logs
from .delivery import NOTIFY, spool_of
from .root import Root
from .settings import Relay

#: deliveries claimed (and published, each confirmed) at once
BATCH = 200
#: seconds a claimed batch stays reserved for the relay: a relay killed mid-batch delays
#: those deliveries by this much
LEASE = 60.0


class Relayed(NamedTuple):
    """What one relay pass did: deliveries the broker confirmed, and the error that
    stopped it (empty: none)."""

    relayed: int = 0
    error: str = ""


def relay(root: Root, settings: Relay) -> Relayed:
    """Publish every due pending delivery of ``settings.notifiers`` to the broker, each
    marked relayed once confirmed; stop at the first failure (the others stay pending).
    Nothing to do (and Celery not imported) when no notifier is relayed.

    :raises RootError: the spool's database cannot be used
    """
    if not settings.notifiers:
        return Relayed()
    from .broker import application, send

    spool = spool_of(root)
    app = application(settings)
    started = time.time()
    count = 0
    with app.connection_for_write() as connection:
        producer = app.amqp.Producer(connection)
        while batch := spool.claim(time.time(), LEASE, limit=BATCH, due_by=started, notifiers=settings.notifiers):
            sent = []
            try:
                connection.ensure_connection(
                    max_retries=1, interval_start=0, interval_step=0
                )  # a broker that is down: at once, not after retries
                for delivery in batch:
                    args = (delivery.notifier, delivery.record, delivery.event, delivery.body)
                    send(app, settings, args, producer=producer)
                    sent.append(delivery)
            except Exception as exc:  # noqa: BLE001 (a broker's failure leaves deliveries pending)
                error = f"cannot relay to the broker: {type(exc).__name__}: {exc}"
                count += spool.relayed(sent, time.time())
                spool.release(batch[len(sent) :], error)
                left = len(batch) - len(sent)
                NOTIFY.warning("%s (%d delivery(ies) left pending, tried again next pass)", error, left)
                return Relayed(count, error)
            count += spool.relayed(batch, time.time())
    if count:
        NOTIFY.log(logs.EXTINFO, "relayed %d delivery(ies) to the broker", count)
    return Relayed(count)
