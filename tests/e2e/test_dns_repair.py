"""Exercise 6's scenario through the lab's real DNS: a record really missing from the zone, shown as missing by
every tool, and repaired by restoring it (not by clearing a fault)."""
from __future__ import annotations

import subprocess
import sys

import pytest

from lab.device import Device, Network
from lab.launcher import Lab
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD, ROOT, require_tool

HOST = "betterbag.test"
TIMEOUT = 60


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("domain-no-address-ios17"), tmp_path_factory.mktemp("lab"), https_port=0, dns_port=0) as running:
        yield running


def dig(lab, *args: str) -> str:
    result = subprocess.run([require_tool("dig"), "@127.0.0.1", "-p", str(lab.dns.port), *args, "+time=2",
                             "+tries=1"], capture_output=True, text=True, timeout=TIMEOUT)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def mdmlab(lab, *args: str) -> subprocess.CompletedProcess:
    return subprocess.run([sys.executable, "-m", "lab", *args, "--state-dir", str(lab.state_dir)],
                          capture_output=True, text=True, timeout=TIMEOUT, cwd=ROOT)


def enroll(lab):
    network = Network("127.0.0.1", lab.dns.port, str(lab.pki.cert_path), lab.https_port,
                      lab.scenario.abm_hosts["fallback"])
    device = Device(network, model_family="iPhone", os_version="17.5")
    try:
        return device.enroll(IDENTIFIER, PASSWORD)
    finally:
        device.close()


def test_the_missing_record_is_missing_everywhere_and_restoring_it_is_the_repair(lab):
    answer = dig(lab, HOST, "A")
    assert "status: NOERROR" in answer and "ANSWER: 0," in answer  # the name exists: no NXDOMAIN at the apex
    assert "status: NOERROR" in dig(lab, HOST, "SOA")
    assert lab.faults.armed() == []  # nothing armed: the zone itself lacks the record

    listing = mdmlab(lab, "dns", "list")
    assert listing.returncode == 0, listing.stderr
    rows = [ln.split()[:3] for ln in listing.stdout.splitlines()]
    assert ["mdm.lab.test", "A", "127.0.0.1"] in rows and not any(r[:2] == [HOST, "A"] for r in rows)

    trace = enroll(lab)
    assert (trace.outcome, trace.diagnosis) == ("failed", "dns-nodata"), trace.render()

    added = mdmlab(lab, "dns", "add", HOST, "A", "127.0.0.1")
    assert added.returncode == 0, added.stderr
    assert dig(lab, HOST, "A", "+short").split() == ["127.0.0.1"]
    assert enroll(lab).outcome == "enrolled"
