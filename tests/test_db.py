"""db.transaction against real SQLite files: what the file or the machine gets wrong is a
RootError naming the file; what our own SQL gets wrong stays the bug it is."""

from __future__ import annotations

import sqlite3
import threading
from pathlib import Path

import pytest

from mgrhooks import db
from mgrhooks.errors import RootError

SCHEMA = "CREATE TABLE IF NOT EXISTS t (v TEXT);"


def values(path: Path) -> list[str]:
    with db.transaction(path, SCHEMA, write=False) as conn:
        return [row["v"] for row in conn.execute("SELECT v FROM t")]


def test_a_file_that_is_not_a_database_is_named_and_left_as_it_was(tmp_path: Path) -> None:
    path = tmp_path / "var" / "billmgr.db"
    path.parent.mkdir()
    path.write_bytes(b"not a database " * 100)
    with pytest.raises(RootError) as raised, db.transaction(path, SCHEMA):
        pass
    assert str(raised.value) == f"cannot use the database {path}: file is not a database"
    assert path.read_bytes() == b"not a database " * 100


def test_a_lock_not_had_in_time_is_a_root_error_and_nothing_is_committed(tmp_path: Path, monkeypatch) -> None:
    path = tmp_path / "billmgr.db"
    with db.transaction(path, SCHEMA) as conn:
        conn.execute("INSERT INTO t VALUES ('kept')")
    monkeypatch.setattr(db, "LOCK_TIMEOUT", 0.2)
    holding, release = threading.Event(), threading.Event()

    def hold_the_write_lock() -> None:
        with db.transaction(path, SCHEMA):
            holding.set()
            release.wait(10)

    holder = threading.Thread(target=hold_the_write_lock)
    holder.start()
    try:
        holding.wait(10)
        with pytest.raises(RootError, match="database is locked"), db.transaction(path, SCHEMA) as conn:
            conn.execute("INSERT INTO t VALUES ('lost')")
    finally:
        release.set()
        holder.join()
    assert values(path) == ["kept"]


def test_a_mistake_in_our_own_sql_is_not_blamed_on_the_root(tmp_path: Path) -> None:
    path = tmp_path / "billmgr.db"
    with pytest.raises(sqlite3.OperationalError, match="syntax error"), db.transaction(path, SCHEMA) as conn:
        conn.execute("INSERT INTO t VALUES ('half') ")
        conn.execute("SELEKT 1")
    assert values(path) == []  # rolled back


def test_a_database_directory_that_cannot_be_made_is_named(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where var/ should be")
    path = tmp_path / "var" / "billmgr.db"
    with pytest.raises(RootError) as raised, db.transaction(path, SCHEMA):
        pass
    assert str(raised.value) == f"cannot use the database {path}: cannot make {path.parent}: File exists"


def test_a_database_path_that_cannot_be_looked_at_is_a_root_error(tmp_path: Path) -> None:
    (tmp_path / "var").write_text("a file where the folder should be")
    path = tmp_path / "var" / "billmgr.db"
    with pytest.raises(RootError) as raised:
        db.exists(path)
    assert str(raised.value) == f"cannot use the database {path}: Not a directory"


def test_a_symlink_planted_where_the_database_will_be_is_not_followed(tmp_path: Path) -> None:
    """A missing database is made with O_NOFOLLOW: a dangling symlink in its place (to a
    file of someone else's choosing) is refused, and nothing is made at its target."""
    target = tmp_path / "elsewhere.db"
    path = tmp_path / "var" / "billmgr.db"
    path.parent.mkdir()
    path.symlink_to(target)
    with pytest.raises(RootError) as raised, db.transaction(path, SCHEMA):
        pass
    assert str(raised.value).startswith(f"cannot use the database {path}: cannot make it:")
    assert not target.exists()


def test_a_read_transaction_cannot_write(tmp_path: Path) -> None:
    path = tmp_path / "billmgr.db"
    with db.transaction(path, SCHEMA) as conn:
        conn.execute("INSERT INTO t VALUES ('kept')")
    with pytest.raises(RootError, match="readonly"), db.transaction(path, SCHEMA, write=False) as conn:
        conn.execute("INSERT INTO t VALUES ('written by a read')")
    assert values(path) == ["kept"]
