"""A simulated iPhone enrolls through the lab's real DNS and TLS; the timeline records every exchange."""
from __future__ import annotations

import pytest

from tests.conftest import IDENTIFIER, PASSWORD


def test_iphone_enrolls_with_simple_authentication(lab, device):
    after = lab.events.last_id()
    phone = device(model_family="iPhone", os_version="18.2")
    trace = phone.enroll(IDENTIFIER, PASSWORD)

    assert trace.outcome == "enrolled", trace.render()
    # ... then GetToken (com.apple.maid) and the Managed Apple Account sign-in at Apple complete the enrollment
    assert [s.stage for s in trace.steps if s.action.startswith(("GET", "POST", "PUT"))] == [
        "discovery", "authentication", "authentication", "authentication", "enrollment", "check-in", "check-in",
        "check-in", "enrollment"]
    assert not trace.warnings

    http = [e for e in lab.events.query(after=after) if e["kind"] == "http"]
    assert [(e["host"], e["method"], e["path"], e["status"], e["stage"]) for e in http] == [
        ("betterbag.test", "GET", "/.well-known/com.apple.remotemanagement", 200, "discovery"),
        ("mdm.lab.test", "POST", "/enroll", 401, "authentication"),
        ("mdm.lab.test", "GET", "/auth/web", 200, "authentication"),
        ("mdm.lab.test", "POST", "/auth/web", 308, "authentication"),
        ("mdm.lab.test", "POST", "/enroll", 200, "enrollment"),
        ("mdm.lab.test", "PUT", "/mdm/checkin", 200, "check-in"),
        ("mdm.lab.test", "PUT", "/mdm/checkin", 200, "check-in"),
        ("mdm.lab.test", "PUT", "/mdm/checkin", 200, "check-in"),
        ("gsa.lab.test", "POST", "/v1/managed-account/sign-in", 200, "enrollment"),
    ]
    enrollment_id = phone.enrollment.enrollment_id
    assert http[-2]["enrollment"] == enrollment_id and http[-2]["device"] == http[-2]["user"] == IDENTIFIER
    assert http[-2]["message_type"] == "GetToken" and http[-1]["user"] == IDENTIFIER
    assert lab.mdm.enrollment(enrollment_id)["status"] == "enrolled"
    dns = [e for e in lab.events.query(after=after) if e["kind"] == "dns"]
    assert {e["host"] for e in dns} >= {"betterbag.test", "mdm.lab.test"}


def test_timeline_never_holds_the_password_or_token(lab, device):
    after = lab.events.last_id()
    phone = device()
    assert phone.enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
    dump = repr(lab.events.query(after=after))
    assert PASSWORD not in dump
    assert phone.enrollment.access_token not in dump
    assert phone.enrollment.access_token[:4] + "…[redacted]" in dump


def test_wrong_password_fails_at_sign_in_with_a_diagnosis(lab, device):
    trace = device().enroll(IDENTIFIER, "not-the-password")
    assert trace.outcome == "failed"
    assert trace.diagnosis == "sign-in-refused"
    assert trace.steps[-1].stage == "authentication"
    assert "password" in trace.explanation


@pytest.mark.parametrize("identifier, code", [
    ("eliza", "identifier-malformed"),
    ("eliza@bag@betterbag.test", "identifier-malformed"),
    ("eliza@localhost", "identifier-malformed"),
])
def test_malformed_identifier_fails_before_any_request(lab, device, identifier, code):
    after = lab.events.last_id()
    trace = device().enroll(identifier, PASSWORD)
    assert (trace.outcome, trace.diagnosis) == ("failed", code)
    assert lab.events.query(after=after) == []


def test_unknown_domain_fails_in_dns(lab, device):
    trace = device(os_version="17.5").enroll("eliza@unknown.lab.test", PASSWORD)
    assert (trace.outcome, trace.diagnosis) == ("failed", "dns-nxdomain")
    assert "unknown.lab.test" in trace.explanation


def test_domain_outside_the_lab_is_refused_by_the_lab_dns(lab, device):
    trace = device(os_version="17.5").enroll("eliza@example.com", PASSWORD)
    assert (trace.outcome, trace.diagnosis) == ("failed", "dns-refused")


def test_on_ios_18_2_a_domain_abm_does_not_know_fails_at_the_fallback(lab, device, network):
    from dataclasses import replace

    from lab.device import Device

    phone = Device(replace(network, apple_host=lab.scenario.abm_hosts["fallback"]), os_version="18.2")
    try:
        trace = phone.enroll("eliza@unknown.lab.test", PASSWORD)
    finally:
        phone.close()
    assert (trace.outcome, trace.path, trace.diagnosis) == ("failed", None, "abm-domain-not-verified")
    assert "dns" in trace.explanation.lower() or "does not exist" in trace.explanation


def test_os_too_old_for_user_enrollment_shows_no_entry_point_and_sends_nothing(lab, device):
    # Behaviour changed (issue 12 §4): below iOS 15 there is nothing to tap, so not even the well-known fetch happens
    after = lab.events.last_id()
    trace = device(model_family="iPhone", os_version="14.8").enroll(IDENTIFIER, PASSWORD)
    assert (trace.outcome, trace.diagnosis) == ("failed", "no-entry-point")
    assert "iOS 15.0" in trace.explanation
    assert [e for e in lab.events.query(after=after, limit=100) if e["kind"] == "http"] == []


def test_an_ios_15_device_that_cannot_do_device_enrollment_says_so(lab, device):
    # The org domain offers User Enrollment here; the device knows its own limits for Device Enrollment
    assert "iOS 17.0" in device(model_family="iPhone", os_version="15.8").client.unsupported_version_reason(
        "mdm-adde")


def test_a_device_managed_by_another_mdm_is_not_offered_the_work_account(lab, device):
    after = lab.events.last_id()
    trace = device(model_family="iPhone", os_version="26.1", managed_by="Other MDM Inc.").enroll(IDENTIFIER,
                                                                                                PASSWORD)
    assert (trace.outcome, trace.diagnosis, trace.steps[-1].stage) == ("failed", "already-managed", "identifier")
    assert "Other MDM Inc." in trace.explanation
    assert [e for e in lab.events.query(after=after, limit=100) if e["kind"] == "http"] == []


def test_ios_15_labels_its_signed_enrollment_request_as_a_form(lab, device):
    phone = device(model_family="iPhone", os_version="15.8")
    trace = phone.enroll(IDENTIFIER, PASSWORD)
    assert trace.outcome == "enrolled", trace.render()
    posts = [s.request for s in trace.steps if s.request and s.request["method"] == "POST"
             and s.request["url"].endswith("/enroll")]
    assert {dict(p["headers"])["Content-Type"] for p in posts} == {"application/x-www-form-urlencoded"}


def test_a_device_that_trusts_another_ca_fails_with_a_tls_diagnosis(lab, tmp_path):
    import trustme

    from lab.device import Device, Network

    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    phone = Device(Network("127.0.0.1", lab.dns.port, str(other), lab.https_port))
    try:
        trace = phone.enroll(IDENTIFIER, PASSWORD)
    finally:
        phone.close()
    assert (trace.outcome, trace.diagnosis) == ("failed", "tls-untrusted")
    assert "betterbag.test" in trace.explanation


def test_revoked_or_unknown_token_is_refused_at_check_in(lab, device):
    phone = device()
    assert phone.enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
    response = phone.session.put(phone.enrollment.checkin_url, data=b"<plist/>",
                                 headers={"Authorization": "Bearer not-a-token"}, timeout=5)
    assert response.status_code == 401
    assert response.headers["WWW-Authenticate"].startswith('Bearer method="apple-as-web", url="https://mdm.lab.test:')
    assert response.json()["error"] == "invalid-token"
