"""`mdmlab probe` against the lab through its DNS and CA, as an admin would aim it at a real domain."""
from __future__ import annotations

import json
import subprocess
import sys

import pytest

from tests.conftest import IDENTIFIER


def probe(lab, *args):
    return subprocess.run([sys.executable, "-m", "lab", "probe", *args, "--dns", f"127.0.0.1:{lab.dns.port}",
                           "--ca", str(lab.pki.cert_path), "--port", str(lab.https_port)],
                          capture_output=True, text=True, timeout=60)


@pytest.fixture(autouse=True)
def no_faults(lab):
    lab.faults.clear()
    yield
    lab.faults.clear()


def test_probe_passes_every_check_of_a_working_domain(lab):
    result = probe(lab, IDENTIFIER)
    assert result.returncode == 0, result.stdout
    for check in ("resolve betterbag.test", "Content-Type application/json", "Version mdm-byod",
                  "challenge method apple-as-web", "PROBE OK"):
        assert check in result.stdout


@pytest.mark.parametrize("fault, code", [
    ("json-as-html", "well-known-content-type"),
    ("redirect-to-http", "redirect-to-http"),
    ("dns-nxdomain", "dns-nxdomain"),
    ("tls-expired", "tls-expired"),
])
def test_probe_names_the_failing_check(lab, fault, code):
    lab.faults.set(fault, "betterbag.test")
    result = probe(lab, IDENTIFIER, "--json")
    assert result.returncode == 1
    report = json.loads(result.stdout)
    assert (report["outcome"], report["diagnosis"]) == ("failed", code)
    assert report["steps"][-1]["verdict"] == "fail"


def test_probe_judges_the_challenge_of_the_first_enrollment_request(lab):
    result = probe(lab, IDENTIFIER, "--json")
    steps = json.loads(result.stdout)["steps"]
    challenge = [s for s in steps if s["stage"] == "authentication"]
    assert challenge[0]["action"].endswith("→ 401")
    assert "url=https://mdm.lab.test:" in challenge[-1]["explanation"]


def test_probe_rejects_a_bad_dns_option(lab):
    result = subprocess.run([sys.executable, "-m", "lab", "probe", IDENTIFIER, "--dns", "nowhere:port"],
                            capture_output=True, text=True, timeout=60)
    assert result.returncode == 2 and "--dns" in result.stderr
