"""lab.store: transactions on disk, nested ones joining the transaction of their thread."""
from __future__ import annotations

import sqlite3
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
