"""mocks/mdm/validation.py and its use by the check-in channel: what the MDM tells a device about its messages
(Apple's schema facts, lab.schema; here a stand-in checker, so these tests judge the MDM's side only)."""
from __future__ import annotations

from lab.schema import Problem
from mocks.mdm.validation import device_of, problems
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
    state, client, token = _enrolled(tmp_path, signer)
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
