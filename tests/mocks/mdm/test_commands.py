"""mocks.mdm's command channel on ServerURL and the enrollment modes (PROTOCOL.md 3.4, 4), through Flask's test
client: the queue, results, NotNow, ErrorUnrecognizedDevice, ADDE by UDID, EnrollmentUserID, token binding."""
from __future__ import annotations

import base64
import hashlib
import plistlib
import sqlite3

import pytest

from lab import cms
from tests.mdm_support import (
    IDENTIFIER,
    OTHER,
    OTHER_PASSWORD,
    TOPIC,
    Clock,
    check_in,
    enroll,
    enrolled,
    make_state,
    poll,
    web_sign_in,
)

EID = {"EnrollmentID": "ENROLLMENT-0001"}
UDID = {"UDID": "0A1B2C3D-0000-4000-8000-000000000001", "SerialNumber": "LAB00000001"}
ERROR_CHAIN = [{"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
                "LocalizedDescription": "“EraseDevice” is not a valid request type.",
                "USEnglishDescription": "“EraseDevice” is not a valid request type."}]



@pytest.fixture
def token(client):
    access = web_sign_in(client)
    enrolled(client, access, EID)
    return access


def command_of(response) -> dict:
    assert response.status_code == 200, response.get_data(as_text=True)
    assert response.mimetype == "application/xml"
    return plistlib.loads(response.get_data())


def test_idle_poll_with_an_empty_queue_is_an_empty_200(client, token):
    response = poll(client, {"Status": "Idle", **EID}, token)
    assert response.status_code == 200 and response.get_data() == b""


def test_commands_go_out_in_order_as_apple_documents_them_and_results_are_stored(client, state, token):
    first = state.queue_command(EID["EnrollmentID"], "DeviceInformation", {"Queries": ["OSVersion"]})
    second = state.queue_command(EID["EnrollmentID"], "EraseDevice")
    envelope = command_of(poll(client, {"Status": "Idle", **EID}, token))
    assert envelope == {"CommandUUID": first, "Command": {"RequestType": "DeviceInformation",
                                                          "Queries": ["OSVersion"]}}
    answer = {"Status": "Acknowledged", "CommandUUID": first, "QueryResponses": {"OSVersion": "26.1"}, **EID}
    envelope = command_of(poll(client, answer, token))
    assert envelope["CommandUUID"] == second and envelope["Command"]["RequestType"] == "EraseDevice"
    refused = {"Status": "Error", "CommandUUID": second, "ErrorChain": ERROR_CHAIN, **EID}
    assert poll(client, refused, token).get_data() == b""
    listing = {c["command_uuid"]: c for c in state.commands.listing(EID["EnrollmentID"])}
    assert listing[first]["status"] == "Acknowledged"
    assert listing[first]["result"]["QueryResponses"] == {"OSVersion": "26.1"}
    assert listing[second]["status"] == "Error" and listing[second]["error_chain"] == ERROR_CHAIN


def test_a_command_without_an_answer_is_sent_again(client, state, token):
    uuid = state.queue_command(EID["EnrollmentID"], "ProfileList")
    assert command_of(poll(client, {"Status": "Idle", **EID}, token))["CommandUUID"] == uuid
    assert command_of(poll(client, {"Status": "Idle", **EID}, token))["CommandUUID"] == uuid
    assert state.commands.listing()[0]["attempts"] == 2


def test_not_now_ends_the_connection_and_the_command_comes_back_at_the_next_poll(client, state, token):
    uuid = state.queue_command(EID["EnrollmentID"], "InstallProfile")
    state.queue_command(EID["EnrollmentID"], "ProfileList")
    command_of(poll(client, {"Status": "Idle", **EID}, token))
    response = poll(client, {"Status": "NotNow", "CommandUUID": uuid, **EID}, token)
    assert response.status_code == 200 and response.get_data() == b""
    assert command_of(poll(client, {"Status": "Idle", **EID}, token))["CommandUUID"] == uuid


@pytest.mark.parametrize("report, code", [
    ({"Status": "Done"}, "bad-status"), ({}, "bad-status"), ({"Status": "Acknowledged"}, "missing-command-uuid"),
    ({"Status": "Error", "CommandUUID": "NOT-A-COMMAND"}, "unknown-command"),
])
def test_bad_reports_are_400(client, token, report, code):
    response = poll(client, {**report, **EID}, token)
    assert response.status_code == 400 and response.get_json()["error"] == code


def test_polls_need_the_token_of_this_enrollment(client, token):
    assert poll(client, {"Status": "Idle", **EID}, None).status_code == 401
    other = web_sign_in(client)
    enrolled(client, other, {"EnrollmentID": "ENROLLMENT-0002"})
    response = poll(client, {"Status": "Idle", **EID}, other)
    assert response.status_code == 403 and response.get_json()["error"] == "token-bound-to-other-enrollment"


def test_a_new_sign_in_of_the_same_user_binds_to_the_enrollment_another_user_does_not(client, token):
    renewed = web_sign_in(client)
    assert poll(client, {"Status": "Idle", **EID}, renewed).status_code == 200
    bob = web_sign_in(client, OTHER, OTHER_PASSWORD)
    response = poll(client, {"Status": "Idle", **EID}, bob)
    assert response.status_code == 403 and response.get_json()["error"] == "token-user-mismatch"


def test_unknown_or_checked_out_enrollments_get_error_unrecognized_device(client, state, token):
    stranger = poll(client, {"Status": "Idle", "EnrollmentID": "NEVER-ENROLLED"}, web_sign_in(client))
    assert stranger.status_code == 403 and stranger.get_json()["code"] == "com.apple.unrecognized.device"
    pending = state.queue_command(EID["EnrollmentID"], "ProfileList")
    assert check_in(client, {"MessageType": "CheckOut", "Topic": TOPIC, **EID}, token).status_code == 200
    assert {c["command_uuid"]: c["status"] for c in state.commands.listing()}[pending] == "Cancelled"
    response = poll(client, {"Status": "Idle", **EID}, web_sign_in(client))
    assert response.status_code == 403 and response.get_json()["code"] == "com.apple.unrecognized.device"
    with pytest.raises(Exception, match="checked out"):
        state.queue_command(EID["EnrollmentID"], "ProfileList")


def test_queueing_for_an_unknown_enrollment_or_a_bad_request_type_is_refused(state, token):
    with pytest.raises(Exception, match="no enrollment"):
        state.queue_command("NOBODY", "ProfileList")
    with pytest.raises(Exception, match="not a command name"):
        state.queue_command(EID["EnrollmentID"], "Profile List")


def test_install_profile_gets_a_signed_sample_profile_or_the_given_payload(client, state, token, signer):
    state.queue_command(EID["EnrollmentID"], "InstallProfile", {"Profile": "mail"})
    payload = command_of(poll(client, {"Status": "Idle", **EID}, token))["Command"]["Payload"]
    signed = cms.parse(payload)
    assert signed.signer == signer.cert
    profile = plistlib.loads(signed.content)
    assert [p["PayloadType"] for p in profile["PayloadContent"]] == ["com.apple.mail.managed"]
    raw = plistlib.dumps({"PayloadType": "Configuration"})
    uuid = state.queue_command(EID["EnrollmentID"], "InstallProfile", {"Payload": base64.b64encode(raw).decode()})
    answer = {"Status": "Acknowledged", "CommandUUID": command_of(poll(client, {"Status": "Idle", **EID},
                                                                       token))["CommandUUID"], **EID}
    envelope = command_of(poll(client, answer, token))
    assert envelope["CommandUUID"] == uuid and envelope["Command"]["Payload"] == raw
    with pytest.raises(Exception, match="sample profile"):
        state.queue_command(EID["EnrollmentID"], "InstallProfile", {"Profile": "vpn"})


def test_unenroll_queues_remove_profile_of_the_enrollment_profile(client, state, token):
    state.unenroll(EID["EnrollmentID"])
    command = command_of(poll(client, {"Status": "Idle", **EID}, token))["Command"]
    assert command == {"RequestType": "RemoveProfile", "Identifier": state.enrollment_profile_id}
    profile = plistlib.loads(cms.parse(enroll(client, token).get_data()).content)
    assert profile["PayloadIdentifier"] == state.enrollment_profile_id


def test_push_carries_the_push_magic(state, token):
    assert state.push(EID["EnrollmentID"]) == {"topic": TOPIC, "payload": {"mdm": "MAGIC"}}


# -- enrollment modes ----------------------------------------------------------------------------------------------
def test_device_enrollment_profile_and_check_in_by_udid(client, state):
    access = web_sign_in(client)
    profile = plistlib.loads(cms.parse(enroll(client, access, "adde_base_url").get_data()).content)
    [mdm] = [p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.mdm"]
    assert (mdm["EnrollmentMode"], mdm["AccessRights"]) == ("ADDE", 8191)
    response = check_in(client, {"MessageType": "Authenticate", "Topic": TOPIC, **EID}, access)
    assert response.status_code == 400 and response.get_json()["error"] == "missing-udid"
    assert check_in(client, {"MessageType": "Authenticate", "Topic": TOPIC, **UDID}, access).status_code == 200
    assert check_in(client, {"MessageType": "TokenUpdate", "Topic": TOPIC, "Token": b"\x02" * 32,
                             "PushMagic": "M", **UDID}, access).status_code == 200
    assert state.enrollment(UDID["UDID"])["mode"] == "ADDE"
    state.queue_command(UDID["UDID"], "EraseDevice")
    assert command_of(poll(client, {"Status": "Idle", **UDID}, access))["Command"]["RequestType"] == "EraseDevice"
    # a token from a later sign-in carries no mode: the enrollment it is used for tells (UDID, not EnrollmentID)
    assert poll(client, {"Status": "Idle", **UDID}, web_sign_in(client)).status_code == 200


def test_user_enrollment_keeps_enrollment_user_id_from_the_user_channel(client, state, token):
    message = {"MessageType": "TokenUpdate", "Topic": TOPIC, "Token": b"\x03" * 32, "PushMagic": "USER-MAGIC",
               "EnrollmentUserID": "USER-0001", **EID}
    assert check_in(client, message, token).status_code == 200
    assert state.enrollment(EID["EnrollmentID"])["enrollment_user_id"] == "USER-0001"


def test_state_dirs_from_before_oauth2_keep_their_tokens(tmp_path, signer):
    """The old single ``tokens`` table is migrated into grants, so a lab resumed after the upgrade keeps working."""
    directory = tmp_path / "old"
    directory.mkdir()
    db = sqlite3.connect(directory / "mdm.db")
    db.executescript("""
        CREATE TABLE tokens (token_hash TEXT PRIMARY KEY, user TEXT NOT NULL, created REAL NOT NULL,
            expires REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, enrollment_id TEXT, mode TEXT);
        CREATE TABLE enrollments (enrollment_id TEXT PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL,
            topic TEXT NOT NULL, status TEXT NOT NULL, push_token BLOB, push_magic TEXT, created REAL NOT NULL,
            updated REAL NOT NULL);
    """)
    db.execute("INSERT INTO tokens VALUES (?,?,?,?,0,?,?)", (hashlib.sha256(b"old-token").hexdigest(), IDENTIFIER,
                                                             1_800_000_000.0, 1_800_003_600.0, None, "BYOD"))
    db.commit()
    db.close()
    mdm = make_state(directory, signer, Clock())
    try:
        assert mdm.signin.check_token("Bearer old-token").user == IDENTIFIER
        columns = {r[1] for r in mdm.store.query("PRAGMA table_info(enrollments)")}
        assert {"enrollment_user_id", "last_seen"} <= columns
        assert mdm.store.one("SELECT name FROM sqlite_master WHERE name = 'tokens'") is None
    finally:
        mdm.close()
