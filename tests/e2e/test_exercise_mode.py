"""In an exercise the lab breaks as the scenario says but never names the fault the trainee must find."""
from __future__ import annotations

import re

import pytest
import requests

from lab.device import Device
from lab.launcher import Lab
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("json-served-as-html"), tmp_path_factory.mktemp("exercise"), fresh=True,
             exercise=2) as running:
        yield running


def test_the_fault_acts_but_nothing_names_it(lab):
    after = lab.events.last_id()
    device = Device(lab.network(), os_version="17.5")
    try:
        trace = device.enroll(IDENTIFIER, PASSWORD)
    finally:
        device.close()
    assert trace.diagnosis == "well-known-content-type"  # the trainee's device sees the real symptom
    timeline = repr(lab.events.query(limit=5000))
    assert "json-as-html" not in timeline
    assert [e for e in lab.events.query(after=after) if e["host"] == "betterbag.test" and e["status"] == 200]
    session = requests.Session()
    session.trust_env = False
    faults = session.get(f"https://localhost:{lab.https_port}/api/faults", verify=str(lab.pki.cert_path),
                         timeout=5).json()
    assert faults["armed"] == []
    assert "json-as-html" not in repr(session.get(f"https://localhost:{lab.https_port}/api/state",
                                                  verify=str(lab.pki.cert_path), timeout=5).json())


def test_health_lab_json_dashboard_reset_and_timeline_never_name_the_scenario(lab):
    """Through the lab's own DNS and TLS, as a trainee's browser or curl would ask."""
    from lab.net import LabResolver, lab_session

    secrets = ("json-served-as-html", "json-as-html")
    session = lab_session(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path))
    base = f"https://{lab.scenario.console_host}:{lab.https_port}"
    try:
        health = session.get(f"{base}/api/health", timeout=10).json()
        page = session.get(f"{base}/", timeout=10).text
        reset = session.post(f"{base}/api/reset", timeout=30).json()
        timeline = session.get(f"{base}/api/events?limit=5000", timeout=10).json()
    finally:
        session.close()
    lab_json = (lab.state_dir / "lab.json").read_text()
    assert health["scenario"] == "exercise 2" and health["exercise"] == 2
    assert "<title>mdmlab · exercise 2</title>" in page
    summaries = repr([e["summary"] for e in timeline])
    for text in (repr(health), repr(reset), summaries, lab_json):
        assert not any(secret in text for secret in secrets), text[:300]
    assert "json-served-as-html" not in repr(timeline)  # the catalogue is public, the scenario's name is not
    # the page lists the whole catalogue to arm from, but names no scenario and shows nothing armed
    assert "json-served-as-html" not in page and not re.search(r"fault-toggle[^>]*checked", page)
