"""Exercise 17 end to end, through the lab's real DNS and TLS: a Managed Apple Account Apple does not know.

The trainee sees Apple's vague "password was incorrect" alert after the profile installed; the timeline shows the
MDM's enrollment, Apple's refusal and the device's CheckOut, never the scenario's name. The repair is made in ABM
(the account added on the admin site), and the grading says so."""
from __future__ import annotations

import pytest

from lab import exercises, runner
from lab.device import Device
from lab.launcher import Lab
from lab.net import LabResolver, lab_session
from lab.scenario import load
from tests.conftest import IDENTIFIER, PASSWORD

NUMBER = 17


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    scenario = load(exercises.find(NUMBER).scenario)
    with Lab(scenario, tmp_path_factory.mktemp("ex17") / "exercise", exercise=NUMBER) as running:
        yield running


def attempt(lab) -> dict:
    after = lab.events.last_id()
    device = Device(lab.network())
    try:
        trace = device.enroll(IDENTIFIER, PASSWORD)
    finally:
        device.close()
    runner.record_trace(lab.events, trace, device, IDENTIFIER)  # as `mdmlab enroll` hands its trace to the lab
    return trace, exercises.attempt(lab, after)


def test_the_refused_sign_in_then_the_repair_in_abm(lab):
    trace, graded = attempt(lab)
    assert trace.outcome == "failed" and trace.diagnosis == "maa-account-not-found"
    assert "Your Apple Account or password was incorrect." in trace.explanation
    assert not graded["repaired"] and "at enrollment" in graded["verdict"]
    lab.events.flush()
    seen = [(e["component"], e["message_type"] or e["path"], e["status"]) for e in lab.events.query(limit=5000)
            if e["kind"] == "http" and e["component"] in ("mdm", "apple-id")][-3:]
    assert seen == [("mdm", "GetToken", 200), ("apple-id", "/v1/managed-account/sign-in", 401),
                    ("mdm", "CheckOut", 200)]
    assert all(lab.scenario.name not in (e["summary"] or "") for e in lab.events.query(limit=5000))

    # the repair an admin makes: the account, on ABM's admin site, as a browser posts it (CSRF token included)
    admin = f"https://{lab.scenario.abm_hosts['admin']}:{lab.https_port}"
    with lab_session(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path)) as session:
        page = session.get(f"{admin}/", timeout=10).text
        token = page.split('name="csrf_token" value="')[1].split('"')[0]
        added = session.post(f"{admin}/accounts/add", data={"identifier": IDENTIFIER, "csrf_token": token},
                             headers={"Origin": admin}, timeout=10)
    assert added.status_code < 400, added.text[:300]
    trace, graded = attempt(lab)
    assert trace.outcome == "enrolled", trace.render()
    assert graded["repaired"] and "organization's domain" in graded["verdict"]
