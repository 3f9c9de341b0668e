"""Central delivery on Celery: panels relay their spool to a broker, central workers deliver.

Real services: a private RabbitMQ node and a private Redis server (tests/services.py), one of
each per module, real ``mgrhooks exec``, ``mgrhooks worker`` and ``celery worker`` processes
(``mgrhooks worker --central``), a real HTTP receiver. Each test uses queues of its own.
"""

from __future__ import annotations

import json
import os
import secrets
import signal
import sqlite3
import subprocess
import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from services import RabbitMQ, Receiver, Redis

from conftest import PanelRoot
from mgrhooks.errors import RootError
from mgrhooks.settings import Relay, load_settings
from mgrhooks.spool import Spool

# --- [relay] settings ----------------------------------------------------------------------


@pytest.mark.parametrize(
    ("text", "line", "reason"),
    [
        ("[relay]\nengine = kafka\n", 2, "[relay] engine: expected celery, got 'kafka'"),
        (
            "[relay]\nengine = celery\nbroker_url = http://x\n",
            3,
            "[relay] broker_url: expected a URL starting amqp://, pyamqp://, redis://, rediss://, got 'http://x'",
        ),
        (
            "[relay]\nengine = celery\nbroker_url = redis://h\nnotifiers = crm\n",
            4,
            "[relay] notifiers: no [notify.crm] section (relayed notifiers need one for their events)",
        ),
        (
            "[relay]\nengine = celery\nbroker_url = redis://h\ndelivery_limit = 0\n",
            4,
            "[relay] delivery_limit: expected a whole number >= 1, got '0'",
        ),
        (
            "[relay]\nengine = celery\nbroker_url = redis://h\nqueue = a b\n",
            4,
            "[relay] queue: expected letters, digits and _.:- (at most 200), got 'a b'",
        ),
        (
            "[relay]\nengine = celery\nbroker = redis://h\n",
            3,
            "[relay] unknown key(s) broker; known: broker_url, delivery_limit, engine, notifiers, queue",
        ),
    ],
)
def test_bad_relay_settings_name_file_line_and_key(tmp_path: Path, text: str, line: int, reason: str) -> None:
    path = tmp_path / "mgrhooks.conf"
    path.write_text(text)
    with pytest.raises(RootError) as caught:
        load_settings(path)
    assert str(caught.value) == f"{path}: line {line}: {reason}"


def test_relay_settings(tmp_path: Path) -> None:
    path = tmp_path / "mgrhooks.conf"
    path.write_text(
        "[notify.crm]\ndriver = log\n[relay]\nengine = celery\nbroker_url = amqp://u:p@mq//\nnotifiers = crm\n"
    )
    assert load_settings(path).relay == Relay("celery", "amqp://u:p@mq//", ("crm",), "mgrhooks", 10)
    assert load_settings(tmp_path / "none.conf").relay == Relay()


# --- the services --------------------------------------------------------------------------


@pytest.fixture(scope="module")
def rabbitmq(tmp_path_factory: pytest.TempPathFactory) -> Iterator[RabbitMQ]:
    server = RabbitMQ(tmp_path_factory.mktemp("rabbitmq"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture(scope="module")
def redis(tmp_path_factory: pytest.TempPathFactory) -> Iterator[Redis]:
    server = Redis(tmp_path_factory.mktemp("redis"))
    try:
        server.start()
        yield server
    finally:
        server.close()


@pytest.fixture
def receiver() -> Iterator[Receiver]:
    receiver = Receiver()
    yield receiver
    receiver.stop()


class Worker:
    """A real ``mgrhooks worker --central`` (a ``celery worker``), in a process group of its own."""

    def __init__(self, root: PanelRoot, *options: str) -> None:
        self.log = root.path / f"var/worker-{secrets.token_hex(3)}.out"
        celery = ("-P", "threads", "-c", "4", "--loglevel=WARNING", *options)
        with self.log.open("wb") as out:
            self.process = subprocess.Popen(
                root.argv("worker --central", "--", *celery),
                stdout=out,
                stderr=subprocess.STDOUT,
                start_new_session=True,
            )

    def kill(self) -> None:
        os.killpg(self.process.pid, signal.SIGKILL)
        self.process.wait()

    def stop(self) -> None:
        if self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(20)
            except subprocess.TimeoutExpired:
                self.kill()

    def output(self) -> str:
        return self.log.read_text(errors="replace")


@pytest.fixture
def workers() -> Iterator[list[Worker]]:
    started: list[Worker] = []
    yield started
    for worker in started:
        worker.stop()


def configure(root: PanelRoot, broker: str, receiver: Receiver, queue: str, extra: str = "") -> None:
    """A root relaying [notify.crm] (an http notifier to ``receiver``) to ``broker``: the
    panel relays with it, the central worker delivers with it."""
    (root.path / "etc/mgrhooks.conf").write_text(
        f"[relay]\nengine = celery\nbroker_url = {broker}\nnotifiers = crm\nqueue = {queue}\n\n"
        f"[notify.crm]\ndriver = http\nurl = {receiver.url}\ntimeout = 2\nattempts = 3\nbackoff = 0.2\n{extra}"
    )


def spool(root: PanelRoot, count: int) -> set[str]:
    """``count`` records for crm in the root's spool (as calls leave them): their ids."""
    store = Spool(root.path / f"var/{root.mgr}.db")
    ids = set()
    for _ in range(count):
        record = secrets.token_hex(16)
        store.add(record, "user.add", json.dumps({"id": record, "event": "user.add"}), ["crm"], time.time())
        ids.add(record)
    return ids


def relay(root: PanelRoot) -> str:
    done = root.mgrhooks("worker", "--once")
    assert done.returncode == 0, done.stderr
    return done.stdout.strip()


@pytest.fixture
def queue_name() -> str:
    return f"q{secrets.token_hex(4)}"


# --- RabbitMQ ------------------------------------------------------------------------------


def test_a_call_only_writes_the_spool_and_the_worker_relays_to_central_workers(
    root: PanelRoot, rabbitmq: RabbitMQ, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    dead_port = "amqp://guest:guest@127.0.0.1:1//"  # nothing listens on port 1
    configure(root, dead_port, receiver, queue_name, "\n[notify.audit]\ndriver = log\n")
    started = time.monotonic()
    call = root.mgrhooks("exec", "user.add", "name=al", "passwd=secret", "sok=ok")
    assert call.returncode == 0, call.stderr
    assert time.monotonic() - started < 10
    (audit,) = [json.loads(line) for line in root.read("var/billmgr.events.jsonl").splitlines()]  # local: delivered
    record = audit["id"]
    assert relay(root).startswith("delivered 0, to retry 0, dead 0, relayed 0 (cannot relay to the broker: ")
    pending = root.mgrhooks("queue list").stdout
    assert f"{record} crm pending attempts=0 user.add  cannot relay to the broker: " in pending
    configure(root, rabbitmq.url, receiver, queue_name, "\n[notify.audit]\ndriver = log\n")
    assert relay(root) == "delivered 0, to retry 0, dead 0, relayed 1"
    assert root.mgrhooks("queue list").stdout == ""
    workers.append(Worker(root))
    assert receiver.wait({record}, 30) == set(), workers[0].output()
    (body,) = receiver.bodies
    assert json.loads(body)["params"] == {"name": "al", "passwd": "***", "sok": "ok"}
    assert relay(root) == "delivered 0, to retry 0, dead 0, relayed 0"  # nothing twice


def test_two_workers_drain_many_records(
    root: PanelRoot, rabbitmq: RabbitMQ, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    configure(root, rabbitmq.url, receiver, queue_name)
    ids = spool(root, 1000)
    assert relay(root).endswith("relayed 1000")
    workers += [Worker(root), Worker(root)]
    assert receiver.wait(ids, 90) == set(), workers[0].output()
    assert [worker.process.poll() for worker in workers] == [None, None], workers[1].output()  # both ran


def test_a_central_workers_threads_keep_their_connections_alive(
    root: PanelRoot, rabbitmq: RabbitMQ, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    configure(root, rabbitmq.url, receiver, queue_name)
    ids = spool(root, 100)
    assert relay(root).endswith("relayed 100")
    workers.append(Worker(root))  # -P threads -c 4
    assert receiver.wait(ids, 60) == set(), workers[0].output()
    assert receiver.connections <= 4  # one per thread, not one per record


def test_a_worker_killed_mid_delivery_leaves_it_to_another(
    root: PanelRoot, rabbitmq: RabbitMQ, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    configure(root, rabbitmq.url, receiver, queue_name)
    receiver.hold = 1.5  # the first attempt is in progress when the worker is killed (and never succeeds)
    ids = spool(root, 1)
    relay(root)
    first = Worker(root)
    workers.append(first)
    assert receiver.first.wait(30), first.output()
    first.kill()
    workers.append(Worker(root))
    assert receiver.wait(ids, 30) == set(), workers[-1].output()


def test_nothing_is_lost_when_rabbitmq_restarts_mid_stream(
    root: PanelRoot, rabbitmq: RabbitMQ, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    configure(root, rabbitmq.url, receiver, queue_name)
    ids = spool(root, 200)
    relay(root)
    workers.append(Worker(root))
    while len(receiver.ids) < 20:
        time.sleep(0.02)
    rabbitmq.stop()
    ids |= spool(root, 100)
    assert "relayed 0 (cannot relay to the broker" in relay(root)  # the broker is down: left pending
    rabbitmq.start()
    assert relay(root).endswith("relayed 100")
    assert receiver.wait(ids, 60) == set(), workers[0].output()


def relayed_and_pending(root: PanelRoot) -> tuple[set[str], set[str]]:
    """The record ids of the root's deliveries marked relayed, and of those still pending."""
    with sqlite3.connect(root.path / f"var/{root.mgr}.db") as db:
        rows = db.execute("SELECT record, state FROM deliveries").fetchall()
    return {r for r, state in rows if state == "relayed"}, {r for r, state in rows if state == "pending"}


def test_a_broker_killed_mid_batch_marks_relayed_only_what_it_confirmed(
    root: PanelRoot, rabbitmq: RabbitMQ, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    """The relay publishes batches and waits for their confirmations: RabbitMQ SIGKILLed
    while it runs. Every delivery marked relayed was on the broker's disk (it arrives after
    the restart, before anything is relayed again); the others are left pending, not leased,
    and the next pass relays them."""
    configure(root, rabbitmq.url, receiver, queue_name)
    ids = spool(root, 3000)
    running = subprocess.Popen(root.argv("worker", "--once"), stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    while not relayed_and_pending(root)[0]:  # the first batch is confirmed: the pass is under way
        assert running.poll() is None, running.communicate()
        time.sleep(0.005)
    rabbitmq.kill()
    out, err = running.communicate(timeout=120)
    assert running.returncode == 0, err
    relayed, pending = relayed_and_pending(root)
    assert f"relayed {len(relayed)} (cannot relay to the broker: " in out
    assert relayed and pending and relayed | pending == ids and not relayed & pending
    rabbitmq.start()
    workers.append(Worker(root))
    assert receiver.wait(relayed, 120) == set(), workers[0].output()  # nothing marked relayed was lost
    assert relay(root).endswith(f"relayed {len(pending)}")  # nothing left leased
    assert receiver.wait(ids, 120) == set(), workers[0].output()


def test_rabbitmq_dead_letters_a_message_past_its_delivery_limit(
    root: PanelRoot, rabbitmq: RabbitMQ, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    """A message given back to the queue again and again (a consumer rejecting it with
    requeue, as a worker failing on it would) is dead-lettered by RabbitMQ at the quorum
    queue's ``x-delivery-limit``: ``queue list --central`` shows it, ``retry`` sends it again."""
    import kombu

    from mgrhooks.broker import queues

    configure(root, rabbitmq.url, receiver, queue_name)
    conf = root.path / "etc/mgrhooks.conf"
    conf.write_text(conf.read_text().replace(f"queue = {queue_name}\n", f"queue = {queue_name}\ndelivery_limit = 2\n"))
    (record,) = spool(root, 1)
    assert relay(root).endswith("relayed 1")
    main, _ = queues(load_settings(conf).relay)
    returned = 0
    with kombu.Connection(rabbitmq.url) as connection:
        bound = main(connection.channel())
        while (message := bound.get(no_ack=False)) is not None:
            assert message.headers["id"] == record
            message.requeue()  # basic.reject, requeue: a failed delivery
            returned += 1
            assert returned < 10, "never dead-lettered"
    assert returned == 3  # delivered 3 times: the limit (2) counts the deliveries after the first
    assert (
        root.mgrhooks("queue list", "--central").stdout
        == f"{record} crm dead attempts=0 user.add  delivery limit reached\n"
    )
    assert root.mgrhooks("queue retry", "--central").stdout == "1 delivery(ies) pending again\n"
    workers.append(Worker(root))
    assert receiver.wait({record}, 30) == set(), workers[0].output()
    assert root.mgrhooks("queue list", "--central").stdout == ""


def test_a_receiver_down_comes_back_and_dead_letters_go_back(
    root: PanelRoot, rabbitmq: RabbitMQ, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    configure(root, rabbitmq.url, receiver, queue_name)
    receiver.stop()
    back = spool(root, 1)
    relay(root)
    workers.append(Worker(root))
    time.sleep(0.5)  # an attempt or two fail meanwhile
    receiver.start()
    assert receiver.wait(back, 30) == set(), workers[0].output()

    receiver.status = 500
    dead = spool(root, 2)
    relay(root)
    deadline = time.monotonic() + 30
    while len(lines := root.mgrhooks("queue list", "--central").stdout.splitlines()) < 2:
        assert time.monotonic() < deadline, workers[0].output()
        time.sleep(0.3)
    assert sorted(lines) == sorted(
        f"{record} crm dead attempts=3 user.add  HTTP 500 from {receiver.url}" for record in dead
    )
    receiver.status = 200
    kept, again = sorted(dead)
    assert root.mgrhooks("queue retry", "--central", again).stdout == "1 delivery(ies) pending again\n"
    assert receiver.wait({again}, 30) == set(), workers[0].output()
    assert root.mgrhooks("queue list", "--central").stdout.split()[0] == kept
    assert root.mgrhooks("queue drop", "--central").stdout == "1 delivery(ies) dropped\n"
    assert root.mgrhooks("queue list", "--central").stdout == ""
    assert kept not in receiver.ids


# --- Redis ---------------------------------------------------------------------------------


def test_redis_relays_delivers_and_keeps_dead_letters(
    root: PanelRoot, redis: Redis, receiver: Receiver, workers: list[Worker], queue_name: str
) -> None:
    configure(root, redis.url, receiver, queue_name)
    ids = spool(root, 200)
    assert relay(root).endswith("relayed 200")
    workers += [Worker(root), Worker(root)]
    assert receiver.wait(ids, 60) == set(), workers[0].output()
    receiver.status = 500
    (dead,) = spool(root, 1)
    relay(root)
    deadline = time.monotonic() + 30
    while not (listed := root.mgrhooks("queue list", "--central").stdout):
        assert time.monotonic() < deadline, workers[0].output()
        time.sleep(0.3)
    assert listed == f"{dead} crm dead attempts=3 user.add  HTTP 500 from {receiver.url}\n"
    receiver.status = 200
    assert root.mgrhooks("queue retry", "--central").stdout == "1 delivery(ies) pending again\n"
    assert receiver.wait({dead}, 30) == set(), workers[0].output()


def test_celery_options_need_central(root: PanelRoot) -> None:
    done = root.mgrhooks("worker", "--once", "--", "-c", "4")
    assert done.returncode == 2
    assert "unexpected argument(s) -c 4 (options for Celery need --central)" in done.stderr


def test_central_needs_a_broker(root: PanelRoot) -> None:
    done = root.mgrhooks("queue list", "--central")
    assert done.returncode == 3
    assert f"{root.path / 'etc/mgrhooks.conf'}: no [relay] section: no broker" in done.stderr


def test_relay_without_celery_installed_is_a_clean_error(root: PanelRoot, tmp_path: Path) -> None:
    (tmp_path / "nocelery/celery").mkdir(parents=True)
    (tmp_path / "nocelery/celery/__init__.py").write_text("raise ImportError('No module named celery')\n")
    receiver_url = "http://127.0.0.1:1/hook"
    (root.path / "etc/mgrhooks.conf").write_text(
        f"[relay]\nengine = celery\nbroker_url = redis://127.0.0.1:1/0\nnotifiers = crm\n\n[notify.crm]\ndriver = http\nurl = {receiver_url}\n"
    )
    assert (
        root.mgrhooks("exec", "user.add", "name=al", "passwd=secret", "sok=ok").returncode == 0
    )  # calls never need it
    spool(root, 1)
    env = {**os.environ, "PYTHONPATH": str(tmp_path / "nocelery")}
    done = root.mgrhooks("worker", "--once", env=env)
    assert done.returncode == 3
    assert "[relay] needs Celery: pip install 'mgrhooks[celery]'" in done.stderr
