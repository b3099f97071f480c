"""Concurrency: under a concurrent fleet no command is lost or sent twice, and SQLite is right from many threads."""
from __future__ import annotations

import threading
from concurrent.futures import ThreadPoolExecutor

from lab.events import Event, EventLog
from lab.store import Store
from tests.conftest import IDENTIFIER, PASSWORD

DEVICES = 12
THREADS = 8
FIRST = ("DeviceInformation", "ProfileList", "CertificateList")
SECOND = ("SecurityInfo", "ManagedApplicationList")
PARAMS = {"DeviceInformation": {"Queries": ["OSVersion", "ModelName"]}}


def _ran(trace) -> list[str]:
    """The request types a sync ran, in order (steps 'RequestType → Status')."""
    return [s.action.split(" → ")[0] for s in trace.steps if s.stage == "commands" and " → " in s.action
            and not s.action.startswith("PUT ")]


def test_no_command_is_lost_or_duplicated_under_a_concurrent_fleet(lab, device):
    devices = [device(model_family="iPhone" if i % 3 else "Mac") for i in range(DEVICES)]
    with ThreadPoolExecutor(THREADS) as pool:
        traces = list(pool.map(lambda d: d.enroll(IDENTIFIER, PASSWORD), devices))
    assert [t.outcome for t in traces] == ["enrolled"] * DEVICES
    ids = [d.enrollment.enrollment_id for d in devices]
    assert len(set(ids)) == DEVICES

    # Round 1: commands queued from many threads at once, then every device polls at once.
    with ThreadPoolExecutor(THREADS) as pool:
        def queue_first(eid: str) -> list:
            return [lab.mdm.queue_command(eid, rt, PARAMS.get(rt)) for rt in FIRST]

        queued = dict(zip(ids, pool.map(queue_first, ids), strict=True))
        synced = list(pool.map(lambda d: d.sync(), devices))
    for trace in synced:
        assert trace.outcome == "synced", trace.render()
        assert _ran(trace) == list(FIRST)  # each of its own commands once, in the order queued

    # Round 2: commands are queued while the devices poll; a device picks each up in this sync or the next.
    barrier = threading.Barrier(2)

    def queue_more():
        barrier.wait()
        return {eid: [lab.mdm.queue_command(eid, rt, PARAMS.get(rt)) for rt in SECOND] for eid in ids}

    def poll_all():
        barrier.wait()
        with ThreadPoolExecutor(THREADS) as pool:
            return list(pool.map(lambda d: d.sync(), devices))

    with ThreadPoolExecutor(2) as pair:
        more, first_polls = pair.submit(queue_more), pair.submit(poll_all)
        more, first_polls = more.result(), first_polls.result()
    with ThreadPoolExecutor(THREADS) as pool:
        second_polls = list(pool.map(lambda d: d.sync(), devices))
    for i, eid in enumerate(ids):
        ran = _ran(first_polls[i]) + _ran(second_polls[i])
        assert ran == list(SECOND), (eid, ran)
        listing = lab.mdm.commands.listing(eid)
        assert [c["command_uuid"] for c in listing] == queued[eid] + more[eid]
        assert {(c["status"], c["attempts"]) for c in listing} == {("Acknowledged", 1)}


def test_store_read_modify_write_from_many_threads_loses_nothing(tmp_path):
    store = Store(tmp_path / "t.db", "CREATE TABLE counter (n INTEGER NOT NULL);"
                                     "CREATE TABLE rows (thread INTEGER, i INTEGER, UNIQUE (thread, i))")
    with store.transaction() as db:
        db.execute("INSERT INTO counter VALUES (0)")
    per_thread, threads = 150, 12
    seen_totals: list[int] = []

    def writer(t: int) -> None:
        for i in range(per_thread):
            with store.transaction() as db:
                n = db.execute("SELECT n FROM counter").fetchone()[0]
                db.execute("UPDATE counter SET n = ?", (n + 1,))
                db.execute("INSERT INTO rows VALUES (?, ?)", (t, i))

    def reader() -> None:
        for _ in range(200):
            total = store.one("SELECT (SELECT n FROM counter) - (SELECT count(*) FROM rows) AS d")["d"]
            seen_totals.append(total)

    workers = [threading.Thread(target=writer, args=(t,)) for t in range(threads)] + \
              [threading.Thread(target=reader) for _ in range(2)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    assert store.one("SELECT n FROM counter")["n"] == per_thread * threads
    assert store.one("SELECT count(*) AS c FROM rows")["c"] == per_thread * threads
    assert set(seen_totals) == {0}  # a reader never sees half a transaction
    store.close()


def test_event_log_from_many_threads_keeps_every_event_once_in_id_order(tmp_path):
    log = EventLog(tmp_path / "events.db")
    per_thread, threads = 250, 8
    ids: list[list[int]] = [[] for _ in range(threads)]

    def record(t: int) -> None:
        for i in range(per_thread):
            ids[t].append(log.record(Event(component="test", summary=f"{t}:{i}")))

    workers = [threading.Thread(target=record, args=(t,)) for t in range(threads)]
    for w in workers:
        w.start()
    for w in workers:
        w.join(timeout=60)
    every = sorted(i for chunk in ids for i in chunk)
    assert every == list(range(every[0], every[0] + per_thread * threads))  # unique and without gaps
    assert log.last_id() == every[-1]  # a read sees every recorded event at once
    rows = []
    while len(rows) < len(every):
        rows += log.query(after=rows[-1]["id"] if rows else 0, limit=5000)
    assert [r["id"] for r in rows] == every
    by_id = {r["id"]: r["summary"] for r in rows}
    for t, chunk in enumerate(ids):
        assert [by_id[i] for i in chunk] == [f"{t}:{i}" for i in range(per_thread)]
    log.close()
    reopened = EventLog(tmp_path / "events.db")
    try:
        assert reopened.last_id() == every[-1]
        assert reopened.record(Event(component="test")) == every[-1] + 1  # ids go on after a restart
    finally:
        reopened.close()
