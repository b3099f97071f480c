"""mocks/mdm/validation.py and its use by the check-in channel: what the MDM tells a device about its messages
(Apple's schema facts, lab.schema; here a stand-in checker, so these tests judge the MDM's side only)."""
from __future__ import annotations

import plistlib

import pytest

from lab.schema import Problem
from mocks.mdm.validation import check_enrollment_request, device_of, machine_info_device, problems
from tests.mdm_support import (
    IDENTIFIER,
    ORIGIN,
    PASSWORD,
    PATH,
    TOPIC,
    Clock,
    check_in,
    client_of,
    enroll,
    location_query,
    make_state,
    poll,
)

EID = "ENROLLMENT-0001"
AUTHENTICATE = {"MessageType": "Authenticate", "Topic": TOPIC, "EnrollmentID": EID, "ProductName": "iPhone17,2",
                "OSVersion": "17.5", "BuildVersion": "21F79"}


class Checker:
    """Finds a key Apple has not defined (Colour) and remembers what it was asked."""

    def __init__(self):
        self.asked = []

    def __call__(self, kind, name, message, *, platform, os_version, enrollment, channel):
        self.asked.append((kind, name, platform, os_version, enrollment, channel))
        found = [Problem("Colour", "unknown-key", "Apple defines no such key")] \
            if "Colour" in message.get("QueryResponses", message) else []
        return found + [Problem("", "note", "only a warning", "warning")]


def _enrolled(tmp_path, signer, **setup):
    state = make_state(tmp_path / "mdm", signer, Clock(), **setup)
    state.channel.checker = Checker()
    client = client_of(state)
    token = location_query(client.post(PATH["auth_url"], data={"user-identifier": IDENTIFIER,
                                                               "password": PASSWORD}, base_url=ORIGIN))["access-token"]
    assert enroll(client, token).status_code == 200
    assert check_in(client, AUTHENTICATE, token).status_code == 200
    return state, client, token


def test_the_device_is_read_from_what_authenticate_said():
    assert device_of("iPhone17,2", "17.5", "BYOD", {}).platform == "iOS"
    assert device_of("Mac15,12", "15.2", "ADDE", {"UserID": "U"}).channel == "user"
    assert device_of(None, "17.5", "BYOD", {}) is None and device_of("iPad16,3", None, "BYOD", {}) is None
    assert problems("checkin", "Authenticate", {}, None, Checker()) == []  # nothing known: nothing judged


def test_strict_answers_400_with_every_problem_and_changes_nothing(tmp_path, signer):
    state, client, token = _enrolled(tmp_path, signer, schema_check="strict")
    bad = {"MessageType": "TokenUpdate", "Topic": TOPIC, "EnrollmentID": EID, "Token": b"t", "PushMagic": "m",
           "Colour": "teal"}
    response = check_in(client, bad, token)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "schema-violation"
    assert body["problems"] == [{"path": "Colour", "code": "unknown-key", "message": "Apple defines no such key"}]
    assert "TokenUpdate message departs from Apple's schema for iOS 17.5" in body["message"]
    assert state.enrollment(EID)["status"] == "authenticated"
    assert state.channel.checker.asked[-1] == ("checkin", "TokenUpdate", "iOS", "17.5", "BYOD", "device")


def test_warn_answers_as_usual_and_says_what_is_wrong(tmp_path, signer):
    state, client, token = _enrolled(tmp_path, signer, schema_check="warn")
    command = state.queue_command(EID, "DeviceInformation")
    poll(client, {"Status": "Idle", "EnrollmentID": EID}, token)
    report = {"Status": "Acknowledged", "CommandUUID": command, "EnrollmentID": EID,
              "QueryResponses": {"Colour": "teal"}}
    assert poll(client, report, token).status_code == 200
    assert state.channel.checker.asked[-1] == ("response", "DeviceInformation", "iOS", "17.5", "BYOD", "device")
    assert state.commands.listing(EID)[0]["status"] == "Acknowledged"


def test_off_asks_nothing(tmp_path, signer):
    state, client, token = _enrolled(tmp_path, signer, schema_check="off")
    assert state.channel.checker.asked == []


# -- the enrollment request (MachineInfo), against lab.schema itself --------------------------------------------
ADDE_INFO = {"UDID": "0000-UDID", "SERIAL": "LAB0001", "PRODUCT": "iPhone17,2", "VERSION": "23B101",
             "OS_VERSION": "26.1", "LANGUAGE": "en-US"}
BYOD_INFO = {k: v for k, v in ADDE_INFO.items() if k not in ("UDID", "SERIAL")}


def _first_post(client, info: dict, mode_path: str):
    return client.post(PATH[mode_path], data=plistlib.dumps(info), base_url=ORIGIN)


@pytest.mark.parametrize("mode_path, info, path, code", [
    ("base_url", {**BYOD_INFO, "UDID": "0000-UDID"}, "UDID", "forbidden-under-user-enrollment"),
    ("base_url", {**BYOD_INFO, "IMEI": "35 000000 000000 0"}, "IMEI", "forbidden-under-user-enrollment"),
    ("adde_base_url", {k: v for k, v in ADDE_INFO.items() if k != "SERIAL"}, "SERIAL", "missing-required"),
    ("adde_base_url", {k: v for k, v in ADDE_INFO.items() if k != "OS_VERSION"}, "UDID", "missing-required"),
    ("adde_base_url", {**ADDE_INFO, "PRODUCT": "Mac15,12", "IMEI": "35"}, "IMEI", "not-on-platform"),
])
def test_strict_refuses_an_enrollment_request_apple_would_not_send_and_says_which_key(tmp_path, signer, mode_path,
                                                                                      info, path, code):
    state = make_state(tmp_path / "mdm", signer, Clock(), schema_check="strict")
    client = client_of(state)
    if path == "UDID" and code == "missing-required":  # no OS_VERSION: read as iOS 16, where UDID is still required
        info = {k: v for k, v in info.items() if k != "UDID"}
    response = _first_post(client, info, mode_path)
    assert response.status_code == 400, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == "schema-violation"
    assert (path, code) in {(p["path"], p["code"]) for p in body["problems"]}
    assert "MachineInfo" in body["message"] and path in body["message"]
    state.close()


@pytest.mark.parametrize("mode_path, info", [
    ("base_url", BYOD_INFO), ("adde_base_url", ADDE_INFO),
    ("base_url", {"LANGUAGE": "en-US", "PRODUCT": "iPhone14,2", "VERSION": "20A362"}),  # iOS 16: no OS_VERSION yet
    ("adde_base_url", {**ADDE_INFO, "PRODUCT": "Mac15,12", "VERSION": "23A344", "OS_VERSION": "14.0"}),
])
def test_strict_challenges_a_conforming_enrollment_request_as_usual(tmp_path, signer, mode_path, info):
    state = make_state(tmp_path / "mdm", signer, Clock(), schema_check="strict")
    assert _first_post(client_of(state), info, mode_path).status_code == 401
    state.close()


def test_warn_challenges_a_user_enrollment_that_names_its_device_and_tells_the_timeline(tmp_path, signer):
    state = make_state(tmp_path / "mdm", signer, Clock(), schema_check="warn")
    client = client_of(state)
    with client.application.test_request_context():
        found = check_enrollment_request({**BYOD_INFO, "SERIAL": "LAB0001"}, "BYOD", "warn")
    assert [(p["path"], p["code"]) for p in found] == [("SERIAL", "forbidden-under-user-enrollment")]
    assert _first_post(client, {**BYOD_INFO, "SERIAL": "LAB0001"}, "base_url").status_code == 401
    assert check_enrollment_request({**BYOD_INFO, "SERIAL": "LAB0001"}, "BYOD", "off") == []
    state.close()


def test_a_request_without_os_version_is_read_as_from_the_os_before_apple_added_it():
    assert machine_info_device({"PRODUCT": "iPhone14,2"}, "BYOD").os_version == "16"
    assert machine_info_device({"PRODUCT": "Mac14,2"}, "ADDE").os_version == "13"
    assert machine_info_device({"PRODUCT": "RealityDevice14,1"}, "BYOD").os_version == "1.1"  # had it from the start
    assert machine_info_device({"PRODUCT": "iPhone17,2", "OS_VERSION": "18.2"}, "BYOD").os_version == "18.2"
    assert machine_info_device({"PRODUCT": "Toaster1,1"}, "BYOD") is None


# -- device identifiers under User Enrollment, as Apple's schema has them -----------------------------------------
@pytest.mark.parametrize("product, os_version, accepted", [("Mac15,12", "14.0", True), ("iPhone17,2", "17.5", False)])
def test_a_user_enrolled_check_out_carries_udid_where_apple_requires_it_and_nowhere_else(tmp_path, signer, product,
                                                                                       os_version, accepted):
    state = make_state(tmp_path / "mdm", signer, Clock(), schema_check="strict")
    client = client_of(state)
    token = location_query(client.post(PATH["auth_url"], data={"user-identifier": IDENTIFIER,
                                                               "password": PASSWORD}, base_url=ORIGIN))["access-token"]
    assert enroll(client, token).status_code == 200
    authenticate = {**AUTHENTICATE, "ProductName": product, "OSVersion": os_version}
    if product.startswith("Mac"):  # Authenticate of a Mac requires these, which iOS does not have
        authenticate.update(DeviceName="Robin's Mac", Model=product, ModelName="MacBook Air")
    assert check_in(client, authenticate, token).status_code == 200
    check_out = {"MessageType": "CheckOut", "Topic": TOPIC, "EnrollmentID": EID, "UDID": "0000-UDID"}
    response = check_in(client, check_out, token)
    assert response.status_code == (200 if accepted else 400), response.get_data(as_text=True)
    if not accepted:
        assert response.get_json()["error"] == "device-identifier-in-user-enrollment"
    assert state.enrollment(EID)["status"] == ("checked-out" if accepted else "authenticated")
    state.close()
