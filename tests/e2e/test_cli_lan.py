"""A lab that listens beyond 127.0.0.1 (here 127.0.0.5, as an instructor's lab listens on its LAN address), driven
by every CLI group; and `mdmlab doctor` judging it for a phone on the LAN."""
from __future__ import annotations

import json
import re
import threading
from pathlib import Path

import pytest
from dnslib import QTYPE, RR, A
from dnslib.server import BaseResolver, DNSServer

from tests.conftest import IDENTIFIER, PASSWORD
from tests.e2e.test_cli import mdmlab, start_lab, stop_lab

LISTEN = "127.0.0.5"
OUTSIDE = "203.0.113.7"  # what the stand-in upstream answers for every name


class _Upstream(BaseResolver):
    """The network's resolver, as the lab forwards names outside its zones to it."""

    def __init__(self):
        self.asked: list[str] = []
        self.lock = threading.Lock()

    def resolve(self, request, handler):
        reply = request.reply()
        with self.lock:
            self.asked.append(str(request.q.qname))
        if request.q.qtype == QTYPE.A:
            reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A(OUTSIDE), ttl=60))
        return reply


@pytest.fixture(scope="module")
def upstream():
    resolver = _Upstream()
    server = DNSServer(resolver, port=0, address="127.0.0.1")
    server.start_thread()
    yield resolver, server.server.server_address[1]
    server.stop()
    server.server.server_close()  # dnslib's stop() shuts the loop down but leaves the UDP socket open


@pytest.fixture(scope="module")
def lan_lab(tmp_path_factory, upstream):
    state_dir = tmp_path_factory.mktemp("cli-lan")
    proc = start_lab(state_dir, "--fresh", "--listen", LISTEN, "--upstream", f"127.0.0.1:{upstream[1]}")
    yield state_dir
    if proc.poll() is None:
        stop_lab(proc)


def run(state_dir, *args, code: int = 0) -> str:
    result = mdmlab(*args, state_dir=state_dir)
    assert result.returncode == code, result.stdout + result.stderr
    assert "warning" not in result.stderr, result.stderr
    return result.stdout


def test_the_lab_listens_only_where_it_was_told(lan_lab):
    info = json.loads((lan_lab / "lab.json").read_text())
    assert info["listen"] == LISTEN and info["dns_address"] == LISTEN


def test_enroll_and_the_device_groups(lan_lab):
    out = run(lan_lab, "enroll", IDENTIFIER, "--password", PASSWORD)
    assert "ENROLLED" in out
    device_id = re.search(r"device id: (LAB[0-9A-F]{8})", out).group(1)
    assert device_id in run(lan_lab, "device", "list")
    assert "queued ProfileList" in run(lan_lab, "device", "command", device_id, "ProfileList")
    run(lan_lab, "device", "sync", device_id)
    assert re.search(r"ProfileList\s+Acknowledged", run(lan_lab, "device", "commands", device_id))
    # the device's own trace reached the lab's timeline (the console was reached at 127.0.0.5)
    events = json.loads(run(lan_lab, "events", "--kind", "device", "--json", "--last", "500"))
    assert any(e["component"] == "device" for e in events)


def test_fault_dns_ca_and_events(lan_lab, tmp_path):
    assert "armed well-known-404" in run(lan_lab, "fault", "set", "well-known-404")
    assert "[armed on" in run(lan_lab, "fault", "list")
    assert run(lan_lab, "fault", "clear").strip() == "cleared 1 fault(s)"
    run(lan_lab, "dns", "add", "extra.betterbag.test", "A", LISTEN)
    assert "extra.betterbag.test" in run(lan_lab, "dns", "list")
    run(lan_lab, "dns", "remove", "extra.betterbag.test", "A")
    pem = tmp_path / "ca.pem"
    mdmlab("ca", "export", "-o", str(pem), state_dir=lan_lab)
    info = json.loads((lan_lab / "lab.json").read_text())
    assert pem.read_bytes() == Path(info["ca_cert"]).read_bytes()
    assert "fault well-known-404 set" in run(lan_lab, "events", "--component", "faults")


def test_fleet_enrolls_against_the_lan_lab(lan_lab):
    summary = json.loads(run(lan_lab, "fleet", "-n", "2", "-c", "2", "--json"))
    assert summary["enrolled"] == 2 and summary["failed"] == 0


def test_doctor_checks_what_a_phone_needs_and_names_each_fix(lan_lab, upstream):
    result = mdmlab("doctor", "--json", state_dir=lan_lab)
    assert result.returncode == 1, result.stdout + result.stderr  # loopback and ports 53/443: no phone can use it
    checks = {c["name"]: c for c in json.loads(result.stdout)}
    assert checks["lab process"]["status"] == "ok"
    for phone_only in ("LAN address", "DNS port", "HTTPS port"):
        assert checks[phone_only]["status"] == "fail" and checks[phone_only]["fix"], checks[phone_only]
    assert "--dns-port 53" in checks["DNS port"]["fix"] and "--https-port 443" in checks["HTTPS port"]["fix"]
    # ... but the lab is still tested where it listens
    for name in ("DNS betterbag.test (UDP)", "DNS betterbag.test (TCP)", "HTTPS betterbag.test",
                 "HTTPS mdm.lab.test", "HTTPS console.lab.test", "CA profile", "upstream"):
        assert checks[name]["status"] == "ok", checks[name]
    assert OUTSIDE in checks["upstream"]["detail"]
    assert any(name.startswith("apple.com") for name in upstream[0].asked)
    text = mdmlab("doctor", state_dir=lan_lab).stdout
    assert re.search(r"FAIL\s+DNS port\s+.*\n\s+fix: restart with --dns-port 53", text), text
    assert text.rstrip().endswith("cannot use this lab yet: 3 check(s) failed.")


def test_doctor_names_the_fix_for_a_broken_certificate_and_a_dns_fault(lan_lab):
    run(lan_lab, "fault", "set", "tls-untrusted", "--host", "mdm.lab.test")
    run(lan_lab, "fault", "set", "dns-nxdomain")
    try:
        checks = {c["name"]: c for c in json.loads(mdmlab("doctor", "--json", state_dir=lan_lab).stdout)}
    finally:
        run(lan_lab, "fault", "clear")
    assert checks["HTTPS mdm.lab.test"]["status"] == "fail" and "fault" in checks["HTTPS mdm.lab.test"]["fix"]
    assert checks["DNS betterbag.test (UDP)"]["status"] == "fail"
    assert checks["HTTPS console.lab.test"]["status"] == "ok"


def test_fleet_interrupted_prints_a_partial_summary_and_says_the_journal_kept_the_finished(lan_lab, tmp_path):
    import os
    import signal
    import subprocess
    import sys
    import time

    journal = tmp_path / "fleet.jsonl"
    proc = subprocess.Popen([sys.executable, "-m", "lab", "fleet", "-n", "500", "-c", "2", "--journal", str(journal),
                             "--state-dir", str(lan_lab)], stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    deadline = time.monotonic() + 60
    while (not journal.exists() or len(journal.read_text().splitlines()) < 2) and time.monotonic() < deadline:
        time.sleep(0.1)
    proc.send_signal(signal.SIGINT)
    out, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, out + err
    kept = len(journal.read_text().splitlines())
    assert re.search(rf"^{kept} of 500 devices enrolled", out, re.M), out
    assert "STOPPED: interrupted (Ctrl-C)" in out
    assert f"the journal {journal} kept the {kept} device(s) that finished" in err
    assert f"'mdmlab fleet --recheck {journal} --state-dir {lan_lab}'" in err  # the same lab, not ./.mdmlab's
