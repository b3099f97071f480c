"""The console over a large timeline (issue 13 §2, §7): each page and API call against an events.db holding N
events, through the lab's TLS listener. Every answer should stay a bounded, indexed query: its time must not grow
with N.

    python -m benchmarks.console_timeline [--events 300000] [--runs 20]
"""
from __future__ import annotations

import argparse
import json
import sqlite3
import tempfile
import time
from pathlib import Path

import requests

from benchmarks._common import print_results, summary
from lab.events import EventLog
from lab.launcher import Lab
from lab.scenario import load

DETAIL = json.dumps({"query": "", "request_headers": {"Host": "mdm.lab.test", "User-Agent": "x" * 40},
                     "request_body": "", "response_headers": {"Content-Type": "application/json"},
                     "response_body": "y" * 200, "elapsed_ms": 1.0, "client": "127.0.0.1"})
ENDPOINTS = ["/api/health", "/", "/fragments/timeline", "/fragments/events", "/api/events?last=100",
             "/api/events?after=0&limit=100", "/api/enrollments", "/api/events?component=dns&last=50",
             "/api/events?outcome=enrolled&last=10"]


def fill(path: Path, count: int) -> None:
    EventLog(path).close()  # the schema, as the lab writes it
    db = sqlite3.connect(path)
    now = time.time() - count * 0.01
    rows = ((now + i * 0.01, "dns" if i % 3 == 0 else "mdm", "dns" if i % 3 == 0 else "http", "mdm.lab.test",
             "PUT", "/mdm/checkin", 200, "check-in", f"E{i % 5000}", f"event {i}", DETAIL, f"E{i % 5000}")
            for i in range(count))
    db.executemany("INSERT INTO events (ts, component, kind, host, method, path, status, stage, device, summary,"
                   " detail, enrollment) VALUES (?,?,?,?,?,?,?,?,?,?,?,?)", rows)
    db.commit()
    db.close()


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--events", type=int, default=300_000)
    parser.add_argument("--runs", type=int, default=20)
    args = parser.parse_args()
    results = []
    with tempfile.TemporaryDirectory(prefix="mdmlab-bench-") as tmp:
        state = Path(tmp) / "lab"
        state.mkdir()
        started = time.perf_counter()
        fill(state / "events.db", args.events)
        print(f"filled {args.events} events in {time.perf_counter() - started:.1f} s")
        with Lab(load("betterbag"), state) as lab, requests.Session() as session:
            session.trust_env = False
            session.verify = str(lab.pki.cert_path)
            base = f"https://localhost:{lab.https_port}"
            for path in ENDPOINTS:
                times = []
                for _ in range(args.runs):
                    t0 = time.perf_counter()
                    response = session.get(base + path, timeout=60)
                    times.append((time.perf_counter() - t0) * 1000)
                    response.raise_for_status()
                results.append(summary(f"GET {path} ({args.events} events)", times))
    print_results(results)


if __name__ == "__main__":
    main()
