"""Stopping the lab ends every open event stream at once (a stream must not hold up the listener's shutdown)."""
from __future__ import annotations

import json
import threading
import time

import requests

from lab.launcher import Lab
from lab.scenario import load


def test_stopping_the_lab_ends_open_streams_with_the_lab_stopped_event(tmp_path):
    lab = Lab(load("betterbag"), tmp_path / "lab").start()
    received: list[str] = []
    ended = threading.Event()
    session = requests.Session()
    session.trust_env = False
    session.verify = str(lab.pki.cert_path)
    responses = [session.get(f"https://localhost:{lab.https_port}/api/events/stream", stream=True, timeout=(5, 30))
                 for _ in range(3)]

    def read(response):
        try:
            received.extend(line for line in response.iter_lines(decode_unicode=True) if line.startswith("data:"))
        except requests.RequestException:
            pass
        ended.set()

    threads = [threading.Thread(target=read, args=(r,), daemon=True) for r in responses]
    for t in threads:
        t.start()
    time.sleep(0.3)
    started = time.monotonic()
    lab.stop()
    assert time.monotonic() - started < 2.5, "open streams held up the lab's shutdown"
    for t in threads:
        t.join(5)
        assert not t.is_alive(), "a stream stayed open after the lab stopped"
    stopped = [json.loads(line[5:]) for line in received]
    assert [e["outcome"] for e in stopped].count("lab-stopped") == 3
    session.close()
