"""Central delivery: ``mgrhooks worker --central``, a Celery worker delivering the records
that panels relayed to the broker (:mod:`mgrhooks.relay`), with the drivers of
:mod:`mgrhooks.drivers` and the ``[notify.NAME]`` sections of its own root. I/O.

One task, :data:`~mgrhooks.broker.TASK`, one attempt per run, acknowledged late (a worker
that dies mid-attempt leaves it to another: ``acks_late``, ``task_reject_on_worker_lost``).
A failed attempt is retried through Celery (``Task.retry``) after the notifier's backoff
(:func:`mgrhooks.delivery.backoff`: doubled per failure, jittered, capped at
``max_backoff``), in whole seconds and at least one (the granularity of RabbitMQ's native
delayed delivery, which keeps the waits on the broker; our choice for Redis too). After
its ``attempts`` the task goes to the dead letters (``QUEUE.dead``: :mod:`mgrhooks.broker`)
and is acknowledged. The retries and their waits are the broker's and Celery's: nothing
of the spool's leases or polling is used here. Each thread of the pool (each process,
with ``-P prefork``) keeps its HTTP connections alive from one task to the next
(:class:`mgrhooks.drivers.Connections`).
"""

from __future__ import annotations

import threading
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any

from . import logs
from .delivery import NOTIFY, backoff
from .drivers import Connections, attempt
from .root import Root
from .settings import Settings
from .spool import Delivery

if TYPE_CHECKING:
    from celery import Celery

#: options always given to ``celery worker`` (before the caller's, which win): no start-up
#: exchange with other workers (mingle) and no gossip, which central delivery does not use
WORKER_OPTIONS = ("--without-mingle", "--without-gossip")


def application(root: Root, settings: Settings) -> Celery:
    """The Celery application of the central root ``root`` with its delivery task.

    :raises RootError: ``[relay]`` is missing (no broker)
    """
    from .broker import TASK, send
    from .broker import application as broker_application
    from .errors import RootError

    relay = settings.relay
    if not relay.broker_url:
        raise RootError(f"{root.path / 'etc/mgrhooks.conf'}: no [relay] broker_url: central workers need the broker")
    app = broker_application(relay)
    by_name = {n.name: n for n in settings.notifiers}
    kept = threading.local()  # each pool thread's keep-alive connections (drivers.Connections)

    def connections() -> Connections:
        own: Connections | None = getattr(kept, "connections", None)
        if own is None:
            own = kept.connections = Connections()
        return own

    @app.task(name=TASK, bind=True, max_retries=None, acks_late=True, reject_on_worker_lost=True)  # type: ignore[untyped-decorator]
    def deliver(task: Any, notifier_name: str, record: str, event: str, body: str) -> None:  # noqa: ANN401
        attempts = int(task.request.retries) + 1
        delivery = Delivery(record, notifier_name, "pending", attempts - 1, 0.0, "", event, body)
        notifier = by_name.get(notifier_name)
        if notifier is None:
            error: str | None = f"no [notify.{notifier_name}] in {root.path / 'etc/mgrhooks.conf'}"
        else:
            error = attempt(root, notifier, delivery, notifier.timeout, connections())
        if error is None:
            NOTIFY.log(logs.EXTINFO, "delivered %s '%s' to %s", event, record, notifier_name)
            return
        if notifier is not None and attempts < notifier.attempts:
            NOTIFY.warning(
                "%s '%s' to %s: attempt %d failed: %s (will retry)", event, record, notifier_name, attempts, error
            )
            raise task.retry(countdown=max(1, round(backoff(notifier, attempts))))
        headers = {"mgrhooks_error": error, "mgrhooks_attempts": str(attempts)}
        send(app, relay, (notifier_name, record, event, body), headers)
        NOTIFY.warning(
            "%s '%s' to %s: attempt %d failed: %s (dead letter)", event, record, notifier_name, attempts, error
        )

    return app


def run(root: Root, settings: Settings, options: Sequence[str]) -> None:
    """Run ``celery worker`` on the root's application until it is stopped, named
    ``mgrhooks-PID@HOST``; ``options`` go to ``celery worker`` (``-c 4``, ``-P threads``,
    ``--loglevel``, ``-n NAME``)."""
    import os

    app = application(root, settings)
    # a node name of its own (Celery's default, celery@HOST, is one per machine: a second
    # worker on the machine fails to take its exclusive control queue); -n overrides it
    name = f"mgrhooks-{os.getpid()}@%h"
    app.worker_main(["worker", "--loglevel=INFO", *WORKER_OPTIONS, "-n", name, "-Q", settings.relay.queue, *options])
