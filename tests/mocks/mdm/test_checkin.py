"""mocks/mdm/checkin.py: every body through one bounded plist parser; a report is stored as it was received."""
from __future__ import annotations

import plistlib

import pytest

from lab.pki import CertificateAuthority
from tests.mdm_support import (IDENTIFIER, ORIGIN, PASSWORD, PATH, TOPIC, Clock, bearer, check_in, client_of,
                               enrolled, location_query, make_state, poll)
from tests.test_plists import binary, bomb

EID = "ENROLLMENT-0001"


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"]).issue_profile_signer("BetterBag")


@pytest.fixture
def state(tmp_path, signer):
    mdm = make_state(tmp_path / "mdm", signer, Clock())
    yield mdm
    mdm.close()


@pytest.fixture
def client(state):
    return client_of(state)


@pytest.fixture
def token(client):
    response = client.post(PATH["auth_url"], data={"user-identifier": IDENTIFIER, "password": PASSWORD},
                           base_url=ORIGIN)
    access = location_query(response)["access-token"]
    enrolled(client, access, {"EnrollmentID": EID})
    return access


def put(client, path: str, body: bytes, access: str):
    return client.put(PATH[path], data=body, headers=bearer(access), base_url=ORIGIN)


def test_a_reference_bomb_as_a_command_report_is_a_400_that_says_why_and_nothing_is_stored(client, state, token):
    command = state.queue_command(EID, "DeviceInformation")
    assert poll(client, {"Status": "Idle", "EnrollmentID": EID}, token).status_code == 200
    response = put(client, "server_url", bomb(19), token)
    assert response.status_code == 400
    body = response.get_json()
    assert body["error"] == "plist-too-large" and "the command report was refused" in body["message"]
    assert state.commands.listing(EID)[0]["status"] == "Sent"  # still waiting for a real answer
    assert state.commands.listing(EID)[0]["command_uuid"] == command


def test_bounds_apply_to_check_in_messages_too(client, token):
    deep: object = "x"
    for _ in range(40):
        deep = [deep]
    message = {"MessageType": "TokenUpdate", "Topic": TOPIC, "EnrollmentID": EID, "Token": b"t", "PushMagic": "m",
               "Deep": deep}
    response = check_in(client, message, token)
    assert response.status_code == 400 and response.get_json()["error"] == "plist-too-deep"
    cyclic = binary([bytes([0xD1, 1, 0]), b"\x5bMessageType"])  # {"MessageType": <itself>}
    response = put(client, "checkin_url", cyclic, token)
    assert response.status_code == 400 and response.get_json()["error"] == "bad-binary-plist"


def test_a_report_is_kept_as_the_bytes_the_device_sent(client, state, token):
    command = state.queue_command(EID, "DeviceInformation")
    poll(client, {"Status": "Idle", "EnrollmentID": EID}, token)
    report = plistlib.dumps({"Status": "Acknowledged", "CommandUUID": command, "EnrollmentID": EID,
                             "QueryResponses": {"OSVersion": "26.1"}}, fmt=plistlib.FMT_BINARY)
    assert put(client, "server_url", report, token).status_code == 200
    stored = state.store.one("SELECT result FROM commands WHERE command_uuid = ?", (command,))["result"]
    assert stored == report
    assert state.commands.listing(EID)[0]["result"]["QueryResponses"] == {"OSVersion": "26.1"}
