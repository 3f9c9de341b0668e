"""The broker of central delivery (``[relay]`` in ``etc/mgrhooks.conf``): the Celery
application that a panel's relay and the central workers both build, its queues, and the
dead letters kept there. I/O (imports Celery: only for ``[relay]`` and ``--central``).

Queues (docs/notifications.md "Central delivery"):

* ``QUEUE`` (``[relay] queue``, ``mgrhooks`` by default) holds one task
  :data:`TASK` per delivery: arguments ``(notifier, record id, event, record as JSON)``,
  the record id as task id. On RabbitMQ it is a quorum queue (replicated, durable, its
  messages persistent) with a delivery limit (``[relay] delivery_limit``): a message that
  keeps coming back, because the workers handling it die, goes to the dead letters
  through the dead-letter exchange ``QUEUE.dead``. Its exchange is a topic exchange, as
  Celery's native delayed delivery (the retries' backoff, kept by the broker) wants.
* ``QUEUE.dead`` holds the dead letters: the same tasks, with the last error in the header
  ``mgrhooks_error`` (empty for one dead-lettered by RabbitMQ's delivery limit, which adds
  its ``x-death`` header). Nothing consumes it: :func:`dead_letters`, :func:`retry` and
  :func:`drop` (``mgrhooks queue ... --central``) look at it and manage it.

Every publish waits for the broker's confirmation (py-amqp's ``confirm_publish``; Redis
answers each push), so that what the caller marks as sent is with the broker.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Queue

    from .settings import Relay

#: the name of the delivery task
TASK = "mgrhooks.deliver"
#: seconds Redis leaves a message fetched but not acknowledged before giving it to another
#: worker (kombu's ``visibility_timeout``; its default is an hour): a killed worker's
#: messages come back after this long; a retry's backoff longer than it may be delivered
#: twice (our choice: 5 minutes)
REDIS_VISIBILITY = 300.0


class DeadLetter(NamedTuple):
    """One message of ``QUEUE.dead``: the record id, the notifier, the event, the attempts
    made and the last error (``delivery limit reached`` when RabbitMQ dead-lettered it)."""

    record: str
    notifier: str
    event: str
    attempts: int
    error: str


def is_rabbitmq(url: str) -> bool:
    """Whether ``url`` is an AMQP broker's (RabbitMQ), not Redis."""
    return url.partition("://")[0] in ("amqp", "pyamqp")


def queues(relay: Relay) -> tuple[Queue, Queue]:
    """The task queue and the dead-letter queue of ``relay`` (see the module docstring)."""
    from kombu import Exchange, Queue

    dead = f"{relay.queue}.dead"
    if not is_rabbitmq(relay.broker_url):
        exchange = Exchange(relay.queue, type="direct", durable=True)
        return Queue(relay.queue, exchange, routing_key=relay.queue), Queue(dead, exchange, routing_key=dead)
    dead_exchange = Exchange(dead, type="direct", durable=True)
    arguments = {
        "x-queue-type": "quorum",
        "x-dead-letter-exchange": dead,
        "x-dead-letter-routing-key": dead,
        "x-delivery-limit": relay.delivery_limit,
    }
    exchange = Exchange(relay.queue, type="topic", durable=True)
    main = Queue(relay.queue, exchange, routing_key=relay.queue, queue_arguments=arguments)
    return main, Queue(dead, dead_exchange, routing_key=dead, queue_arguments={"x-queue-type": "quorum"})


def application(relay: Relay) -> Celery:
    """A Celery application for ``relay``'s broker: late acknowledgement, a task whose
    worker died given back to the queue, publisher confirms, no results; its own, never
    the process's current application.

    :raises RootError: Celery is not installed (``pip install 'mgrhooks[celery]'``)
    """
    try:
        from celery import Celery
    except ImportError:
        from .errors import RootError

        raise RootError("[relay] needs Celery: pip install 'mgrhooks[celery]'") from None

    main, _ = queues(relay)
    transport: dict[str, Any] = (
        {"confirm_publish": True} if is_rabbitmq(relay.broker_url) else {"visibility_timeout": REDIS_VISIBILITY}
    )
    app = Celery("mgrhooks", broker=relay.broker_url, set_as_current=False)
    app.conf.update(
        task_queues=[main],
        task_default_queue=main.name,
        task_default_exchange=main.exchange.name,
        task_default_exchange_type=main.exchange.type,
        task_default_routing_key=main.routing_key,
        task_create_missing_queues=False,
        task_acks_late=True,
        task_reject_on_worker_lost=True,
        task_ignore_result=True,
        broker_transport_options=transport,
        broker_connection_retry_on_startup=True,
        broker_connection_timeout=4.0,
        worker_cancel_long_running_tasks_on_connection_loss=True,
        worker_prefetch_multiplier=4,
        worker_hijack_root_logger=False,
        enable_utc=True,
    )
    return app


def send(
    app: Celery,
    relay: Relay,
    args: tuple[str, str, str, str],
    headers: dict[str, str] | None = None,
    producer: Any = None,  # noqa: ANN401 (kombu's Producer)
) -> None:
    """Publish one delivery (``(notifier, record id, event, body)``) to ``QUEUE``, or with
    ``headers`` (a dead letter's) to ``QUEUE.dead``, and return once the broker confirmed
    it; no retry (the caller's next pass is the retry). ``producer``: the one to use
    (default: one of the application's pool; one kept for many messages is twice as fast).

    :raises Exception: kombu's and the transport's errors (the broker is down, refused it)
    """
    main, dead = queues(relay)
    app.send_task(TASK, args=args, task_id=args[1], queue=dead if headers else main, headers=headers or {}, retry=False)


def _messages(app: Celery, relay: Relay, act: Any) -> int:  # noqa: ANN401 (a callback on kombu's Message)
    """Fetch every message of ``QUEUE.dead`` unacknowledged, call ``act(message, letter)``
    on each; the messages it did not acknowledge go back when the connection closes.
    :returns: how many ``act`` returned true for"""
    _, dead = queues(relay)
    count = 0
    with app.connection_for_write() as connection:
        channel = connection.channel()
        bound = dead(channel)
        bound.declare()
        while (message := bound.get(no_ack=False)) is not None:
            count += bool(act(message, _letter(message)))
        channel.close()
    return count


def _letter(message: Any) -> DeadLetter:  # noqa: ANN401 (kombu's Message)
    headers = message.headers or {}
    args = message.decode()[0]
    notifier, record, event = (str(value) for value in args[:3])
    error = headers.get("mgrhooks_error") or ("delivery limit reached" if headers.get("x-death") else "")
    return DeadLetter(
        record, notifier, event, int(headers.get("mgrhooks_attempts") or headers.get("retries") or 0), error
    )


def dead_letters(relay: Relay) -> list[DeadLetter]:
    """The dead letters in ``QUEUE.dead``, oldest first (left there).

    :raises Exception: kombu's errors (the broker cannot be reached)
    """
    app = application(relay)
    letters: list[DeadLetter] = []
    _messages(app, relay, lambda message, letter: letters.append(letter))
    return letters


def retry(relay: Relay, records: Sequence[str]) -> int:
    """Send the dead letters of ``records`` (every one when empty) to ``QUEUE`` again, as
    new tasks with their attempts counted anew; each leaves ``QUEUE.dead`` once the broker
    confirmed its new task. :returns: how many"""
    app = application(relay)

    def again(message: Any, letter: DeadLetter) -> bool:  # noqa: ANN401 (kombu's Message)
        if records and letter.record not in records:
            return False
        args = tuple(str(value) for value in message.decode()[0][:4])
        send(app, relay, (args[0], args[1], args[2], args[3]))
        message.ack()
        return True

    return _messages(app, relay, again)


def drop(relay: Relay, records: Sequence[str]) -> int:
    """Forget the dead letters of ``records`` (every one when empty). :returns: how many"""

    def forget(message: Any, letter: DeadLetter) -> bool:  # noqa: ANN401 (kombu's Message)
        if records and letter.record not in records:
            return False
        message.ack()
        return True

    return _messages(application(relay), relay, forget)
