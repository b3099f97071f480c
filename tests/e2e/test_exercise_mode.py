"""In an exercise the lab breaks as the scenario says but never names the fault the trainee must find."""
from __future__ import annotations

import pytest
import requests

from lab.device import Device
from lab.launcher import Lab
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("json-served-as-html"), tmp_path_factory.mktemp("exercise"), fresh=True,
             conceal_faults=True) as running:
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
