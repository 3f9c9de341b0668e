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

What the caller marks as sent is with the broker: the relay publishes a batch on a
channel in confirm mode and waits for the broker's confirmations of the whole batch
(:class:`Publisher`; Redis answers each push); the other publishes wait for each one's
(py-amqp's ``confirm_publish``).
"""

from __future__ import annotations

import time
from collections.abc import Sequence
from typing import TYPE_CHECKING, Any, NamedTuple

if TYPE_CHECKING:
    from celery import Celery
    from kombu import Connection, Queue

    from .settings import Relay

#: the name of the delivery task
TASK = "mgrhooks.deliver"
#: seconds Redis leaves a message fetched but not acknowledged before giving it to another
#: worker (kombu's ``visibility_timeout``; its default is an hour): a killed worker's
#: messages come back after this long; a retry's backoff longer than it may be delivered
#: twice (our choice: 5 minutes)
REDIS_VISIBILITY = 300.0
#: seconds the relay waits for the broker's confirmations of a batch it published; those
#: not confirmed by then stay pending (our choice)
CONFIRM_TIMEOUT = 30.0

#: a delivery's task arguments: ``(notifier, record id, event, record as JSON)``
Args = tuple[str, str, str, str]


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


#: transport options of the relay's connection: no wait for each publish's confirmation
#: (:class:`Publisher` waits for a batch's)
RELAY_TRANSPORT = {"confirm_publish": False}


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


class Published(NamedTuple):
    """What publishing a batch did: the positions (in the batch) of the messages the
    broker confirmed, and the error that kept the others from being confirmed (empty:
    none; a nack, a timeout, a connection lost)."""

    confirmed: frozenset[int]
    error: str = ""


class Publisher:
    """Publishes batches of deliveries to ``QUEUE`` on one connection to the broker (the
    relay's, made with :data:`RELAY_TRANSPORT`), and tells which of them the broker confirmed.

    On RabbitMQ the channel is put in confirm mode (``confirm.select``, a RabbitMQ
    extension of AMQP 0-9-1): every message of a batch is published, then the broker's
    ``basic.ack`` and ``basic.nack`` (each for one delivery tag, or with ``multiple`` for
    every tag up to it) are read until each message is settled or
    :data:`CONFIRM_TIMEOUT` has passed. A message counts as confirmed only on its ack: a
    nack, the timeout or a connection lost mid-batch leave it unconfirmed, whatever
    RabbitMQ may have kept. On Redis each push is answered before the next is made: the
    messages before the first failure are confirmed. Both queues are declared first (the
    dead-letter queue too: RabbitMQ drops what it dead-letters to a queue that does not
    exist).
    """

    def __init__(self, app: Celery, relay: Relay, connection: Connection) -> None:
        from kombu.common import maybe_declare

        self.app = app
        self.relay = relay
        self.connection = connection
        self.channel = connection.channel()
        self.main, dead = queues(relay)
        for queue in (self.main, dead):
            maybe_declare(queue, self.channel)
        self.confirms = is_rabbitmq(relay.broker_url)
        self.tag = 0  # the delivery tag of the last message published on the channel
        self.unsettled: dict[int, int] = {}  # tag -> position in the batch
        self.acked: set[int] = set()
        self.nacked: set[int] = set()
        if self.confirms:
            self.channel.confirm_select()
            self.channel.events["basic_ack"].add(self._on_ack)
            self.channel.events["basic_nack"].add(self._on_nack)
        self.producer = app.amqp.Producer(self.channel)

    def _settle(self, tag: int, multiple: bool, into: set[int]) -> None:
        tags = [t for t in self.unsettled if t <= tag] if multiple else [tag]
        for settled in tags:
            position = self.unsettled.pop(settled, None)
            if position is not None:
                into.add(position)

    def _on_ack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.acked)

    def _on_nack(self, tag: int, multiple: bool) -> None:
        self._settle(tag, multiple, self.nacked)

    def publish(self, batch: Sequence[Args], timeout: float = CONFIRM_TIMEOUT) -> Published:
        """Publish ``batch`` (one task per delivery, the record id as task id) and wait for
        the broker's confirmations, at most ``timeout`` seconds; never raises: a failure
        is in the result (the channel is not used again after one)."""
        self.unsettled, self.acked, self.nacked = {}, set(), set()
        try:
            for position, args in enumerate(batch):
                self.tag += 1
                if self.confirms:
                    self.unsettled[self.tag] = position
                self.app.send_task(
                    TASK,
                    args=args,
                    task_id=args[1],
                    queue=self.main,
                    producer=self.producer,
                    retry=False,
                    declare=(),  # declared once, above
                    argsrepr=f"({args[0]!r}, {args[1]!r}, {args[2]!r}, ...)",  # not the record (logs, events)
                    kwargsrepr="{}",
                )
                if not self.confirms:
                    self.acked.add(position)  # Redis answered the push
            error = self._wait(len(batch), timeout) if self.confirms else ""
            return Published(frozenset(self.acked), error)
        except Exception as exc:  # noqa: BLE001 (the broker's failure: those not confirmed stay pending)
            return Published(frozenset(self.acked), f"{type(exc).__name__}: {exc}")

    def _wait(self, count: int, timeout: float) -> str:
        """Read the broker's confirmations until every message is settled or ``timeout``
        seconds passed. :returns: the error (empty: every one acked)
        :raises Exception: the connection's errors"""
        deadline = time.monotonic() + timeout
        while self.unsettled and (left := deadline - time.monotonic()) > 0:
            try:
                self.connection.drain_events(timeout=left)
            except TimeoutError:
                pass
        if self.nacked:
            return f"the broker refused {len(self.nacked)} of {count} message(s) (nack)"
        if self.unsettled:
            return f"the broker confirmed {len(self.acked)} of {count} message(s) within {timeout:g}s"
        return ""


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
