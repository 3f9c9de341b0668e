#!/usr/bin/env python3
"""Event records through the spool and through Celery: throughput, latency, the outbox's cost.

Usage: .venv/bin/python bench/central.py [--records N] [--calls N] [--broker rabbitmq|redis]
                                        [--only local|central|e2e|outbox]

Starts a private broker (tests/services.py: RabbitMQ by default) and a real HTTP receiver
in a temporary directory, then measures:

* into the spool: records written by :meth:`mgrhooks.spool.Spool.add`, each in its own
  transaction, per second;
* out of the spool, locally: ``--records`` records drained by 1 and by 2 ``mgrhooks worker
  --once`` processes at once, through the ``log`` driver and through the ``http`` driver to
  the receiver (every id is checked to have arrived);
* relayed: ``--records`` records published by one ``mgrhooks worker --once`` to the broker,
  in batches, each batch's confirmations awaited (``[relay]``);
* delivered centrally: the same records, already at the broker, delivered over HTTP by 1
  and by 2 ``mgrhooks worker --central`` (``-P threads -c 8``), from the moment every
  worker is ready to the last arrival; every id is checked to have arrived; with the CPU
  the central workers and the receiver (this process) spent per record;
* end to end: ``--records`` records relayed by one ``mgrhooks worker --once`` while 2
  central workers (ready before it starts) deliver them: seconds from the relay's start to
  the last arrival (target: 10,000 in under 20 s);
* latency: ``--calls`` sequential ``user.add`` calls (the API, in this process) with the
  record relayed by a running ``mgrhooks worker --interval 0.05`` and delivered by a
  central worker; from the record's ``timestamp`` (the change's commit) to its arrival,
  p50 and p99; the same for the local path (an http notifier, delivered inline after the
  call);
* the outbox's cost on ``user.add``: ``--calls`` calls (the API, in this process) with no
  notifier against the same with one relayed notifier (the call writes the record's intent
  in the core's transaction and completes it, and tries nothing: the relay sends it),
  alternating rounds, wall and CPU time (this process's), the median of the differences of
  neighbouring rounds; target <= 5 %.

The receiver is :class:`services.Receiver` (``http.server``, a thread per connection, HTTP/1.1
keep-alive) in this process: its CPU per request is printed, to tell whether it is what
limits a row (about 0.2 ms a request: some 5,000 requests/s on one core).

Absolute figures on a shared machine mean little; the machine's load is printed with them.
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import signal
import statistics
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
from contextlib import contextmanager
from datetime import datetime
from pathlib import Path
from typing import NamedTuple

import psutil

HERE = Path(__file__).resolve().parent
sys.path.insert(0, str(HERE.parent))
sys.path.insert(0, str(HERE.parent / "tests"))

from services import RabbitMQ, Receiver, Redis  # noqa: E402

from mgrhooks import Panel  # noqa: E402
from mgrhooks.spool import Spool  # noqa: E402

MGR = "billmgr"


def make_root(path: Path, conf: str) -> Path:
    for folder in ("etc/xml", "addon", "var"):
        (path / folder).mkdir(parents=True, exist_ok=True)
    (path / "etc/mgrhooks.conf").write_text(conf)
    return path


def argv(root: Path, *command: str) -> list[str]:
    return [sys.executable, "-m", "mgrhooks", *command[:1], "--root", str(root), "--mgr", MGR, *command[1:]]


def fill(root: Path, count: int, notifier: str) -> tuple[set[str], float]:
    """``count`` records for ``notifier`` in the spool; their ids and records per second."""
    spool = Spool(root / f"var/{MGR}.db")
    ids = set()
    started = time.perf_counter()
    for _ in range(count):
        record = secrets.token_hex(16)
        spool.add(record, "user.add", json.dumps({"id": record, "event": "user.add"}), [notifier], time.time())
        ids.add(record)
    return ids, count / (time.perf_counter() - started)


def drain_local(base: Path, count: int, workers: int, driver: str) -> float:
    """Records per second ``workers`` ``mgrhooks worker --once`` at once take out of a spool
    of ``count`` records, through the ``log`` driver or the ``http`` one (to a receiver)."""
    with Receiver() as receiver:
        conf = "driver = log\n" if driver == "log" else f"driver = http\nurl = {receiver.url}\n"
        root = make_root(base / f"local-{driver}{workers}", f"[notify.audit]\n{conf}")
        ids, _ = fill(root, count, "audit")
        started = time.perf_counter()
        command = argv(root, "worker", "--once")
        processes = [subprocess.Popen(command, stdout=subprocess.DEVNULL) for _ in range(workers)]
        for process in processes:
            process.wait()
        seconds = time.perf_counter() - started
    if driver == "log":
        lines = (root / f"var/{MGR}.events.jsonl").read_text().count("\n")
        assert lines >= count, f"{lines} of {count} delivered"
    else:
        assert not ids - set(receiver.ids), f"{len(ids - set(receiver.ids))} of {count} never arrived"
    return count / seconds


def relay_conf(broker: str, receiver: Receiver, queue: str) -> str:
    return (
        f"[relay]\nengine = celery\nbroker_url = {broker}\nnotifiers = crm\nqueue = {queue}\n\n"
        f"[notify.crm]\ndriver = http\nurl = {receiver.url}\ntimeout = 5\n"
    )


def start_central(root: Path) -> subprocess.Popen[bytes]:
    """A central worker; its output in ``var/central-PID.out``."""
    options = ("--", "-P", "threads", "-c", "8", "--loglevel=INFO")
    log = root / f"var/central-{secrets.token_hex(3)}.out"
    with log.open("wb") as out:
        process = subprocess.Popen(
            argv(root, "worker", "--central", *options), stdout=out, stderr=subprocess.STDOUT, start_new_session=True
        )
    log.rename(root / f"var/central-{process.pid}.out")
    return process


def stop(process: subprocess.Popen[bytes]) -> None:
    if process.poll() is not None:
        return
    os.killpg(process.pid, signal.SIGTERM)
    try:
        process.wait(30)
    except subprocess.TimeoutExpired:
        os.killpg(process.pid, signal.SIGKILL)
        process.wait()


class Central(NamedTuple):
    """Central workers running: when the last of them said it is ready (epoch seconds), and
    their processes (for their CPU time)."""

    ready: float
    processes: list[psutil.Process]

    def cpu(self) -> float:
        """CPU seconds the workers used so far."""
        return sum(sum(p.cpu_times()[:2]) for p in self.processes)


@contextmanager
def central_workers(root: Path, count: int) -> Iterator[Central]:
    """``count`` central workers of ``root`` (:func:`start_central`), given once every one
    said it is ready; stopped when the block ends, also when it raises."""
    processes = [start_central(root) for _ in range(count)]
    try:
        outs = [root / f"var/central-{p.pid}.out" for p in processes]
        while not all(" ready." in out.read_text() for out in outs):
            for process, out in zip(processes, outs, strict=True):
                assert process.poll() is None, f"a central worker exited:\n{out.read_text()}"
            time.sleep(0.05)
        yield Central(time.time(), [psutil.Process(p.pid) for p in processes])
    finally:
        for process in processes:
            stop(process)


class Delivered(NamedTuple):
    """A central row: records relayed and delivered per second, and the CPU milliseconds
    per record of the central workers and of the receiver."""

    relayed: float
    delivered: float
    workers_ms: float
    receiver_ms: float


def central(base: Path, broker: str, count: int, workers: int) -> Delivered:
    """Relay ``count`` records, then deliver them with ``workers`` central workers."""
    with Receiver() as receiver:
        root = make_root(base / f"central{workers}", relay_conf(broker, receiver, f"bench{secrets.token_hex(3)}"))
        ids, _ = fill(root, count, "crm")
        started = time.perf_counter()
        done = subprocess.run(argv(root, "worker", "--once"), capture_output=True, text=True, check=True)
        relayed = count / (time.perf_counter() - started)
        assert done.stdout.strip().endswith(f"relayed {count}"), done.stdout
        with central_workers(root, workers) as running:
            cpu, receiving = running.cpu(), time.process_time()
            missing = receiver.wait(ids, 600)
            cpu, receiving = running.cpu() - cpu, time.process_time() - receiving
    assert not missing, f"{len(missing)} records never arrived"
    after = sorted(t for t in receiver.arrived if t >= running.ready)  # once every worker is up
    return Delivered(relayed, (len(after) - 1) / (after[-1] - after[0]), cpu / count * 1000, receiving / count * 1000)


def end_to_end(base: Path, broker: str, count: int, workers: int = 2) -> float:
    """Seconds from the start of one ``mgrhooks worker --once`` relaying ``count`` records
    to the arrival of the last, ``workers`` central workers running (ready) all along."""
    with Receiver() as receiver:
        root = make_root(base / f"e2e{workers}", relay_conf(broker, receiver, f"e2e{secrets.token_hex(3)}"))
        ids, _ = fill(root, count, "crm")
        with central_workers(root, workers):
            started = time.time()
            done = subprocess.run(argv(root, "worker", "--once"), capture_output=True, text=True, check=True)
            assert done.stdout.strip().endswith(f"relayed {count}"), done.stdout
            missing = receiver.wait(ids, 600)
    assert not missing, f"{len(missing)} records never arrived"
    return max(receiver.arrived) - started


def latency(base: Path, broker: str, calls: int) -> tuple[list[float], list[float]]:
    """Commit-to-receiver seconds of ``calls`` calls: relayed through the broker, and local (inline)."""
    results = []
    for relayed in (True, False):
        with Receiver() as receiver:
            conf = relay_conf(broker, receiver, f"lat{secrets.token_hex(3)}")
            root = make_root(base / f"latency{relayed}", conf if relayed else conf.split("\n\n", 1)[1])
            with central_workers(root, 1 if relayed else 0), relaying(root, relayed):
                panel = Panel(root, MGR)
                for n in range(calls):
                    assert not panel.call("user.add", {"name": f"u{n}", "passwd": "pw", "sok": "ok"}).error
                deadline = time.monotonic() + 60
                while len(receiver.bodies) < calls and time.monotonic() < deadline:
                    time.sleep(0.05)
        delays = []
        for body, arrival in zip(receiver.bodies, receiver.arrived, strict=True):
            stamp = datetime.fromisoformat(json.loads(body)["timestamp"].replace("Z", "+00:00")).timestamp()
            delays.append(arrival - stamp)
        assert len(delays) == calls, f"{len(delays)} of {calls} arrived"
        results.append(delays)
    return results[0], results[1]


@contextmanager
def relaying(root: Path, relayed: bool) -> Iterator[None]:
    """A ``mgrhooks worker --interval 0.05`` of ``root`` running (when ``relayed``)."""
    if not relayed:
        yield
        return
    relay = subprocess.Popen(argv(root, "worker", "--interval", "0.05"), start_new_session=True)
    try:
        yield
    finally:
        stop(relay)


def outbox_cost(base: Path, calls: int, rounds: int = 15) -> list[tuple[str, float, float]]:
    """Seconds per ``user.add`` call without a notifier, and what one relayed notifier adds
    to it, as wall and as CPU time (this process's, which load moves less): rounds of
    ``calls`` calls alternate between the two; the median of the rounds without, the median
    of the differences between neighbouring rounds (most of a call is the password's
    scrypt, whose time drifts with the machine's load: pairs cancel the drift)."""
    plain = Panel(make_root(base / "plain", ""), MGR)
    conf = "[relay]\nengine = celery\nbroker_url = amqp://127.0.0.1:1//\nnotifiers = crm\n\n"
    outboxed = Panel(make_root(base / "outbox", conf + "[notify.crm]\ndriver = http\nurl = http://127.0.0.1:1/\n"), MGR)
    runs: dict[str, dict[int, list[float]]] = {"wall": {0: [], 1: []}, "CPU": {0: [], 1: []}}
    for round_ in range(rounds):
        for side, panel in enumerate((plain, outboxed)):
            started, used = time.perf_counter(), time.process_time()
            for n in range(calls):
                panel.call("user.add", {"name": f"r{round_}u{n}", "passwd": "pw", "sok": "ok"})
            runs["wall"][side].append((time.perf_counter() - started) / calls)
            runs["CPU"][side].append((time.process_time() - used) / calls)
    costs = []
    for name, sides in runs.items():
        added = statistics.median(b - a for a, b in zip(sides[0], sides[1], strict=True))
        costs.append((name, statistics.median(sides[0]), added))
    return costs


def print_outbox_cost(costs: list[tuple[str, float, float]]) -> None:
    for name, plain, added in costs:
        line = f"{plain * 1000:.2f} ms, the outbox adds {added * 1000:+.2f} ms: {added / plain * 100:+.1f} %"
        print(f"user.add ({name}): {line} (target <= 5 %)")


def percentile(values: list[float], share: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(share * len(ordered)))]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--records", type=int, default=10000)
    parser.add_argument("--calls", type=int, default=200)
    parser.add_argument("--broker", choices=("rabbitmq", "redis"), default="rabbitmq")
    parser.add_argument(
        "--only",
        choices=("local", "central", "e2e", "outbox"),
        help="only the spool's rows (no broker), the relay and central rows, the end-to-end row, or the outbox cost",
    )
    args = parser.parse_args()
    print(f"load average {os.getloadavg()[0]:.2f} on {os.cpu_count()} cpu(s)")
    with tempfile.TemporaryDirectory(prefix="mgrhooks-bench-") as temp:
        base = Path(temp)
        if args.only in (None, "local"):
            local_rows(base, args.records)
        if args.only != "local":
            server = RabbitMQ(base / "rabbitmq") if args.broker == "rabbitmq" else Redis(base / "redis")
            server.start()
            try:
                broker_rows(base, server.url, args)
            finally:
                server.close()
    print(f"load average {os.getloadavg()[0]:.2f} after")


def local_rows(base: Path, records: int) -> None:
    _, into = fill(make_root(base / "into", ""), records, "audit")
    print(f"into the spool:          {into:8.0f} records/s")
    for driver in ("log", "http"):
        for workers in (1, 2):
            rate = drain_local(base, records, workers, driver)
            print(f"out, {workers} local worker(s), {driver:4}: {rate:8.0f} records/s")


def broker_rows(base: Path, url: str, args: argparse.Namespace) -> None:
    if args.only == "outbox":
        print_outbox_cost(outbox_cost(base, args.calls))
        return
    if args.only != "e2e":
        for workers in (1, 2):
            row = central(base, url, args.records, workers)
            print(f"relayed to {args.broker}:     {row.relayed:8.0f} records/s")
            print(
                f"delivered, {workers} central:    {row.delivered:8.0f} records/s ({args.records} records, all"
                f" arrived; CPU per record: workers {row.workers_ms:.2f} ms, receiver {row.receiver_ms:.2f} ms)"
            )
    seconds = end_to_end(base, url, args.records)
    print(f"end to end, 2 central:   {seconds:8.1f} s for {args.records} records (relay to last arrival)")
    if args.only:
        return
    remote, local = latency(base, url, args.calls)
    for name, delays in (("relayed", remote), ("local", local)):
        p50, p99 = percentile(delays, 0.5) * 1000, percentile(delays, 0.99) * 1000
        print(f"latency {name:8}         p50 {p50:7.1f} ms  p99 {p99:7.1f} ms")
    print_outbox_cost(outbox_cost(base, args.calls))


if __name__ == "__main__":
    main()
