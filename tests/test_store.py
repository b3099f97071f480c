"""lab.store: transactions on disk, nested ones joining the transaction of their thread."""
from __future__ import annotations

import os
import sqlite3
import stat
import threading

import pytest

from lab.store import Store

SCHEMA = "CREATE TABLE IF NOT EXISTS items (name TEXT PRIMARY KEY)"


@pytest.fixture
def store(tmp_path):
    s = Store(tmp_path / "s.db", SCHEMA)
    yield s
    s.close()


def names(store) -> list[str]:
    return [row["name"] for row in store.query("SELECT name FROM items ORDER BY name")]


def test_a_nested_transaction_commits_with_the_outer_one(store, tmp_path):
    with store.transaction() as outer:
        outer.execute("INSERT INTO items VALUES ('a')")
        with store.transaction() as inner:
            inner.execute("INSERT INTO items VALUES ('b')")
        other = sqlite3.connect(tmp_path / "s.db")  # another connection sees nothing before the outer commit
        try:
            assert other.execute("SELECT count(*) FROM items").fetchone() == (0,)
        finally:
            other.close()
    assert names(store) == ["a", "b"]


def test_a_failure_inside_a_nested_transaction_rolls_back_the_whole(store):
    with pytest.raises(RuntimeError):
        with store.transaction() as outer:
            outer.execute("INSERT INTO items VALUES ('a')")
            with store.transaction() as inner:
                inner.execute("INSERT INTO items VALUES ('b')")
                raise RuntimeError("the rule failed half-way")
    assert names(store) == []
    with store.transaction() as db:  # and the store is usable again
        db.execute("INSERT INTO items VALUES ('c')")
    assert names(store) == ["c"]


def test_another_thread_waits_for_the_transaction_instead_of_joining_it(store):
    inside, release, seen = threading.Event(), threading.Event(), []

    def writer():
        with store.transaction() as db:
            db.execute("INSERT INTO items VALUES ('first')")
            inside.set()
            release.wait(10)
            db.execute("INSERT INTO items VALUES ('second')")

    def other():
        inside.wait(10)
        with pytest.raises(RuntimeError):
            with store.transaction() as db:
                seen.append(names(store))
                db.execute("INSERT INTO items VALUES ('third')")
                raise RuntimeError("roll back only this one")

    threads = [threading.Thread(target=writer), threading.Thread(target=other)]
    for t in threads:
        t.start()
    inside.wait(10)
    release.set()
    for t in threads:
        t.join(10)
    assert seen == [["first", "second"]]  # it started after the writer's commit, not inside its transaction
    assert names(store) == ["first", "second"]


def test_a_database_and_its_directory_are_owner_only_whatever_the_umask(tmp_path):
    old = os.umask(0o022)
    try:
        s = Store(tmp_path / "state" / "s.db", SCHEMA)
        with s.transaction() as db:
            db.execute("INSERT INTO items VALUES ('a')")
        files = [tmp_path / "state" / name for name in ("s.db", "s.db-wal", "s.db-shm")]
        assert all(f.exists() for f in files)
        assert {f.name: stat.S_IMODE(f.stat().st_mode) for f in files} == {f.name: 0o600 for f in files}
        assert stat.S_IMODE((tmp_path / "state").stat().st_mode) == 0o700
        s.close()
    finally:
        os.umask(old)


def test_a_database_written_before_is_made_owner_only(tmp_path):
    path = tmp_path / "old.db"
    sqlite3.connect(path).close()
    os.chmod(path, 0o644)
    os.chmod(tmp_path, 0o755)
    Store(path, SCHEMA).close()
    assert stat.S_IMODE(path.stat().st_mode) == 0o600
    assert stat.S_IMODE(tmp_path.stat().st_mode) == 0o700
