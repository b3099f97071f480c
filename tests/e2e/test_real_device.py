"""`mdmlab up --real-device`: upstream forwarding for names outside the lab, the phone's set-up steps, and a
clear message when a port cannot be bound. Ports stay ephemeral and everything stays on loopback."""
from __future__ import annotations

import json
import socket
import subprocess
import sys
import time

import pytest

from lab.dns import LabDNS, Zone, ZoneResolver, query
from tests.e2e.test_cli import start_lab, stop_lab


@pytest.fixture(scope="module")
def upstream():
    """A stand-in for the network's DNS server: authoritative for example.org only."""
    zone = Zone(["example.org"])
    zone.add("www.example.org", "A", "192.0.2.10")
    server = LabDNS(ZoneResolver(zone), "127.0.0.1", 0)
    server.start()
    yield server
    server.stop()


def test_real_device_mode_forwards_other_names_and_prints_the_steps(tmp_path, upstream):
    state = tmp_path / "real"
    proc = start_lab(state, "--real-device", "--upstream", f"127.0.0.1:{upstream.port}")
    try:
        banner = []
        deadline = time.monotonic() + 10
        while time.monotonic() < deadline and not any("no phone instructions" in line for line in banner):
            line = proc.stdout.readline()
            if not line:
                break  # the lab ended its output
            banner.append(line)
        text = "".join(banner)
        # loopback is no address a phone can reach: the banner says so with the fix instead of phone steps
        assert "no phone instructions: 127.0.0.1 is a loopback address" in text and "--listen" in text
        assert "Configure DNS" not in text and "eliza@betterbag.test" in text
        info = json.loads((state / "lab.json").read_text())
        forwarded = query("www.example.org", "A", "127.0.0.1", info["dns_port"])
        assert [str(rr.rdata) for rr in forwarded.rr] == ["192.0.2.10"]
        assert not forwarded.header.ad
        local = query("betterbag.test", "A", "127.0.0.1", info["dns_port"])
        assert [str(rr.rdata) for rr in local.rr] == ["127.0.0.1"] and local.header.aa
    finally:
        stop_lab(proc)


def test_silent_upstream_becomes_servfail(tmp_path):
    silent = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    silent.bind(("127.0.0.1", 0))  # receives, never answers
    state = tmp_path / "silent"
    proc = start_lab(state, "--upstream", f"127.0.0.1:{silent.getsockname()[1]}")
    try:
        info = json.loads((state / "lab.json").read_text())
        reply = query("www.example.org", "A", "127.0.0.1", info["dns_port"], timeout=10)
        assert reply.header.rcode == 2  # SERVFAIL, after the bounded upstream timeout
    finally:
        stop_lab(proc)
        silent.close()


def test_a_port_in_use_is_a_one_line_error(tmp_path):
    busy = socket.socket()
    busy.bind(("127.0.0.1", 0))
    busy.listen()
    try:
        result = subprocess.run([sys.executable, "-m", "lab", "up", "--state-dir", str(tmp_path / "s"),
                                 "--https-port", str(busy.getsockname()[1]), "--dns-port", "0"],
                                capture_output=True, text=True, timeout=30)
    finally:
        busy.close()
    assert result.returncode == 1
    lines = result.stderr.strip().splitlines()
    assert len(lines) == 1 and "cannot listen for HTTPS" in lines[0] and "port" in lines[0]
