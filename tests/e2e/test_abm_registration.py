"""An MDM that ABM will not register (ORG_NOT_SUPPORTED armed by the scenario): the lab starts and keeps serving, the
registration failure is an event of the timeline, and Apple's fallback has nowhere to send the device."""
from __future__ import annotations

import pytest
import requests

from lab.device import Device, Network
from lab.launcher import Lab
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("abm-org-not-supported"), tmp_path_factory.mktemp("lab"), https_port=0, dns_port=0) as running:
        yield running


def test_a_refused_registration_is_an_event_and_the_lab_keeps_serving(lab):
    failed = [e for e in lab.events.query(limit=5000) if e.get("outcome") == "registration-failed"]
    assert len(failed) == 1 and "ORG_NOT_SUPPORTED" in failed[0]["summary"]
    assert lab.abm.snapshot()["servers"][0]["mdm_service_discovery_url"] is None
    health = requests.get(f"https://localhost:{lab.https_port}/api/health", verify=str(lab.pki.cert_path), timeout=30)
    assert health.status_code == 200

    network = Network("127.0.0.1", lab.dns.port, str(lab.pki.cert_path), lab.https_port,
                      lab.scenario.abm_hosts["fallback"])
    device = Device(network, model_family="iPhone", os_version="18.2")
    try:
        trace = device.enroll(IDENTIFIER, PASSWORD)
    finally:
        device.close()
    assert (trace.outcome, trace.diagnosis) == ("failed", "abm-org-not-supported"), trace.render()
