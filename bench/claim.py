#!/usr/bin/env python3
"""How long a worker's claim takes in a big spool, and how fast a worker drains one.

Usage: .venv/bin/python bench/claim.py [--rows N] [--pending N] [--drain N]

Fills a spool in a temporary directory with ``--rows`` deliveries (all delivered but
``--pending`` of them, as a spool looks whose purge is behind), then times
:meth:`mgrhooks.spool.Spool.claim` of one due delivery (median of 200, each claim
released again) and the same claim without the spool's indexes; then times one
``mgrhooks worker --once`` draining ``--drain`` records through the ``log`` driver.
"""

from __future__ import annotations

import argparse
import json
import sqlite3
import statistics
import subprocess
import sys
import tempfile
import time
from contextlib import AbstractContextManager
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent))

from mgrhooks.spool import Spool  # noqa: E402


def fill(path: Path, rows: int, pending: int) -> Spool:
    spool = Spool(path)
    with spool.transaction() as conn:
        now = time.time()
        conn.executemany(
            "INSERT INTO records (id, event, created, body) VALUES (?, 'user.add', ?, '{}')",
            ((f"r{n:08}", now) for n in range(rows)),
        )
        conn.executemany(
            "INSERT INTO deliveries (record, notifier, state, due, done) VALUES (?, 'crm', ?, ?, ?)",
            ((f"r{n:08}", "pending" if n >= rows - pending else "delivered", now - rows + n, now) for n in range(rows)),
        )
    return spool


def claim_ms(spool: Spool, rounds: int = 200) -> float:
    times = []
    for _ in range(rounds):
        started = time.perf_counter()
        (delivery,) = spool.claim(time.time(), lease=7.0, limit=1)
        times.append((time.perf_counter() - started) * 1000)
        with spool.transaction() as conn:  # released for the next round
            conn.execute("UPDATE deliveries SET lease = 0 WHERE record = ?", (delivery.record,))
    return statistics.median(times)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rows", type=int, default=1_000_000)
    parser.add_argument("--pending", type=int, default=1000)
    parser.add_argument("--drain", type=int, default=2000)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory() as tmp:
        path = Path(tmp) / "spool.db"
        started = time.perf_counter()
        spool = fill(path, args.rows, args.pending)
        print(f"filled {args.rows:,} deliveries ({args.pending:,} pending) in {time.perf_counter() - started:.1f} s")
        print(f"claim, with the spool's indexes: {claim_ms(spool):.2f} ms (median of 200)")
        with sqlite3.connect(path) as db:
            db.execute("DROP INDEX deliveries_due")
            db.execute("DROP INDEX deliveries_done")
        slow = Spool(path)
        slow.transaction = lambda write=True: _plain(path, write)  # type: ignore[method-assign]
        print(f"claim, without them: {claim_ms(slow, 20):.2f} ms (median of 20)")
    with tempfile.TemporaryDirectory() as tmp:
        root = Path(tmp)
        (root / "etc").mkdir()
        (root / "var").mkdir()
        (root / "etc/mgrhooks.conf").write_text("[notify.audit]\ndriver = log\n")
        spool = Spool(root / "var/billmgr.db")
        for n in range(args.drain):
            spool.add(f"r{n:06}", "user.add", json.dumps({"id": n}), ["audit"], time.time())
        started = time.perf_counter()
        argv = [sys.executable, "-m", "mgrhooks", "worker", "--once", "--root", str(root), "--mgr", "billmgr"]
        out = subprocess.run(argv, capture_output=True, text=True, check=True).stdout.strip()
        seconds = time.perf_counter() - started
        print(f"worker --once, log driver: {out} in {seconds:.2f} s: {args.drain / seconds:.0f} records/s")


def _plain(path: Path, write: bool) -> AbstractContextManager[sqlite3.Connection]:
    """A transaction that does not make the indexes again."""
    from mgrhooks.db import transaction

    return transaction(path, "", write)


if __name__ == "__main__":
    main()
