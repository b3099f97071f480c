"""Crash safety: kill -9 of the lab in the middle of a fleet run, then `mdmlab up` on the same state dir.

No database is corrupted, every enrollment the fleet saw complete is still there, and those devices check in again
with the tokens they kept. The lab comes back on the same ports, as a real lab on 8443 would, so the URLs in the
devices' profiles still lead to it.
"""
from __future__ import annotations

import json
import os
import signal
import socket
import sqlite3
import subprocess
import time
from pathlib import Path

import pytest

from lab.fleet import Journal
from tests.e2e.test_cli import MDMLAB, mdmlab, stop_lab

JOURNAL_BEFORE_KILL = 12  # completed enrollments before the kill
FLEET_DEVICES = 400  # far more than complete before the kill, so devices are in flight when it comes


def free_port() -> int:
    """A port free for both TCP and UDP on loopback (the lab's DNS takes both)."""
    for _ in range(50):
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as tcp, \
                socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
            tcp.bind(("127.0.0.1", 0))
            port = tcp.getsockname()[1]
            try:
                udp.bind(("127.0.0.1", port))
            except OSError:
                continue
            return port
    pytest.fail("no free port on loopback")


def started_by(state_dir: Path, proc: subprocess.Popen) -> bool:
    """lab.json written by this process: a killed lab leaves its own behind, until the new one replaces it."""
    try:
        return json.loads((state_dir / "lab.json").read_text())["pid"] == proc.pid
    except (OSError, ValueError, KeyError):
        return False


def start_on(state_dir: Path, https_port: int, dns_port: int, *extra: str) -> subprocess.Popen:
    """Start the lab on fixed ports; right after a kill the kernel may need a moment to free them."""
    deadline = time.monotonic() + 20
    while True:
        proc = subprocess.Popen([*MDMLAB, "up", "--state-dir", str(state_dir), "--https-port", str(https_port),
                                 "--dns-port", str(dns_port), *extra], stdout=subprocess.PIPE,
                                stderr=subprocess.PIPE, text=True)
        while not started_by(state_dir, proc) and proc.poll() is None:
            time.sleep(0.05)
        if proc.poll() is None:
            return proc
        _, err = proc.communicate()
        if "in use" not in err or time.monotonic() > deadline:
            pytest.fail(f"mdmlab up failed: {err}")
        time.sleep(0.2)


def integrity(db: Path) -> str:
    conn = sqlite3.connect(db)
    try:
        return conn.execute("PRAGMA integrity_check").fetchone()[0]
    finally:
        conn.close()


def wait_for_lines(path: Path, count: int, proc: subprocess.Popen, timeout: float = 60) -> None:
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        if path.exists() and len(Journal.read(path)) >= count:
            return
        if proc.poll() is not None:
            pytest.fail(f"the fleet ended before the kill: {proc.communicate()}")
        time.sleep(0.02)
    pytest.fail(f"fewer than {count} enrollments completed within {timeout} s")


def test_kill_9_mid_fleet_then_up_keeps_every_completed_enrollment(tmp_path):
    state_dir, journal = tmp_path / "lab", tmp_path / "journal"
    https_port, dns_port = free_port(), free_port()
    lab = start_on(state_dir, https_port, dns_port, "--fresh")
    env = {**os.environ, "MDMLAB_STATE_DIR": str(state_dir)}
    fleet = subprocess.Popen([*MDMLAB, "fleet", "-n", str(FLEET_DEVICES), "-c", "8", "--journal", str(journal),
                              "--json"], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env)
    try:
        wait_for_lines(journal, JOURNAL_BEFORE_KILL, fleet)
        lab.send_signal(signal.SIGKILL)
        lab.communicate(timeout=10)  # reaps it and closes its pipes
        out, err = fleet.communicate(timeout=120)
    finally:
        if fleet.poll() is None:
            fleet.kill()
        if lab.poll() is None:
            lab.kill()
    assert fleet.returncode == 1, err  # devices in flight failed, and the fleet says so
    summary = json.loads(out)
    assert summary["failed"] > 0 and summary["enrolled"] >= JOURNAL_BEFORE_KILL
    assert summary["stopped"] and summary["not_started"] > 0  # it noticed the lab was gone and stopped
    completed = Journal.read(journal)
    assert len(completed) >= summary["enrolled"]  # plus those enrolled whose check-in the kill cut

    # The killed lab left its databases consistent (SQLite WAL: committed transactions survive, half ones vanish).
    databases = sorted(state_dir.rglob("*.db"))
    assert {p.name for p in databases} >= {"mdm.db", "events.db"}
    for db in databases:
        assert integrity(db) == "ok", db
    conn = sqlite3.connect(state_dir / "mdm" / "mdm.db")
    stored = dict(conn.execute("SELECT enrollment_id, status FROM enrollments").fetchall())
    conn.close()
    for record in completed:
        assert stored.get(record["enrollment_id"]) == "enrolled", record["enrollment_id"]

    # mdmlab up on the same state dir: the same CA, every completed device checks in again with its token.
    ca_before = (state_dir / "pki" / "ca.pem").read_bytes()
    lab = start_on(state_dir, https_port, dns_port)
    try:
        assert (state_dir / "pki" / "ca.pem").read_bytes() == ca_before
        again = mdmlab("fleet", "--recheck", str(journal), "--json", state_dir=state_dir)
        assert again.returncode == 0, again.stdout + again.stderr
        assert json.loads(again.stdout) == {"checked": len(completed), "ok": len(completed), "failures": {}}
        fresh = mdmlab("fleet", "-n", "4", "-c", "4", "--json", state_dir=state_dir)
        assert fresh.returncode == 0 and json.loads(fresh.stdout)["enrolled"] == 4
    finally:
        stop_lab(lab)
    for db in sorted(state_dir.rglob("*.db")):
        assert integrity(db) == "ok", db
