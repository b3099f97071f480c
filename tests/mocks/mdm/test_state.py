"""mocks/mdm/state.py, the facade: service discovery through lab.protocol's one rule, the MDM's policy refusals
(Apple's ErrorWellKnownFailed at discovery), and a server that parses the enrollment request by its Content-Type."""
from __future__ import annotations

import plistlib

import pytest

from tests.mdm_support import (
    DEVICE_INFO,
    IDENTIFIER,
    ORIGIN,
    PATH,
    URLS,
    Clock,
    client_of,
    device_info,
    make_state,
)


def test_service_discovery_routes_by_user_then_family_and_falls_back_like_the_org_domain(tmp_path, signer):
    mdm = make_state(tmp_path / "a", signer, Clock(), versions={"Mac": "mdm-adde"})
    try:
        assert mdm.service_discovery("eliza@betterbag.test", "Mac")["Servers"] == [
            {"Version": "mdm-adde", "BaseURL": URLS["adde_base_url"]}]
    finally:
        mdm.close()
    mdm = make_state(tmp_path / "b", signer, Clock(), version="mdm-adde", adde_base_url="")
    try:  # before: an ADDE Version with an empty BaseURL, where the org domain answered the one base URL
        assert mdm.service_discovery("eliza@betterbag.test", "iPhone")["Servers"] == [
            {"Version": "mdm-adde", "BaseURL": URLS["base_url"]}]
    finally:
        mdm.close()


def test_a_refused_family_or_personal_devices_get_apples_well_known_failed_at_discovery(tmp_path, signer):
    mdm = make_state(tmp_path / "c", signer, Clock(), refused_families=("Mac",), personal_devices=False,
                     versions={"iPad": "mdm-adde"})
    client = client_of(mdm)
    try:
        for family, said in (("Mac", "does not manage this kind of device"), ("iPhone", "only devices it owns")):
            response = client.get(PATH["discovery_url"], query_string={"user-identifier": IDENTIFIER,
                                                                       "model-family": family}, base_url=ORIGIN)
            assert response.status_code == 403 and response.mimetype == "application/json"
            body = response.get_json()
            assert body["code"] == "com.apple.well-known.failed" and said in body["message"]
            assert body["description"]
        assert mdm.service_discovery(IDENTIFIER, "iPad")["Servers"][0]["Version"] == "mdm-adde"  # owned: fine
    finally:
        mdm.close()


@pytest.mark.parametrize("setup, product, path, code", [
    ({"refused_families": ("Mac",)}, "Mac15,12", "adde_base_url", "device-type-refused"),
    ({"personal_devices": False}, "iPhone17,2", "base_url", "personal-devices-refused"),
])
def test_policy_refusals_at_the_enrollment_request_come_before_sign_in(tmp_path, signer, setup, product, path, code):
    mdm = make_state(tmp_path / "d", signer, Clock(), **setup)
    try:
        body = plistlib.dumps(device_info(path, PRODUCT=product))
        response = client_of(mdm).post(PATH[path], data=body, base_url=ORIGIN)
        assert response.status_code == 403 and response.get_json()["error"] == code
        assert "WWW-Authenticate" not in response.headers
    finally:
        mdm.close()


@pytest.mark.parametrize("content_type, status", [
    ("application/x-www-form-urlencoded", 400), ("application/pkcs7-signature", 401), (None, 401)])
def test_an_mdm_that_parses_by_content_type_breaks_on_ios_15s_form_label(tmp_path, signer, content_type, status):
    mdm = make_state(tmp_path / "e", signer, Clock(), parse_by_content_type=True)
    try:
        response = client_of(mdm).post(PATH["base_url"], data=plistlib.dumps(DEVICE_INFO), base_url=ORIGIN,
                                       headers={"Content-Type": content_type} if content_type else {})
        assert response.status_code == status
        if status == 400:
            assert response.get_json()["error"] == "body-parsed-as-form"
    finally:
        mdm.close()
    lenient = make_state(tmp_path / "f", signer, Clock())
    try:  # the default reads the body whatever its label
        assert client_of(lenient).post(PATH["base_url"], data=plistlib.dumps(DEVICE_INFO), base_url=ORIGIN,
                                       content_type="application/x-www-form-urlencoded").status_code == 401
    finally:
        lenient.close()


def test_the_snapshot_never_reads_stored_reports(state):
    """Its cost does not grow with what devices sent (ROBUSTNESS.md F3): the reports stay unread, even unreadable."""
    with state.store.transaction() as db:
        db.execute("INSERT INTO enrollments (enrollment_id, user, mode, topic, status, created, updated)"
                   " VALUES ('E1', ?, 'BYOD', 't', 'enrolled', 0, 0)", (IDENTIFIER,))
    command = state.queue_command("E1", "DeviceInformation")
    with state.store.transaction() as db:
        db.execute("UPDATE commands SET status = 'Acknowledged', result = ? WHERE command_uuid = ?",
                   (b"bplist00 not a plist at all", command))
    listed = state.snapshot()["commands"]
    assert [(c["command_uuid"], c["status"]) for c in listed] == [(command, "Acknowledged")]
    assert "result" not in listed[0] and "error_chain" not in listed[0]
