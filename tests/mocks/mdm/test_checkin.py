"""mocks/mdm/checkin.py: every body through one bounded plist parser; a report is stored as it was received; an
enrollment belongs to its account; GetToken (com.apple.maid)."""
from __future__ import annotations

import base64
import json
import plistlib

import pytest
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from lab import cms
from tests.mdm_support import (
    DEVICE_INFO,
    ORIGIN,
    OTHER,
    OTHER_PASSWORD,
    PATH,
    TOPIC,
    Clock,
    bearer,
    check_in,
    enrolled,
    poll,
    web_sign_in,
)
from tests.test_plists import binary, bomb

EID = "ENROLLMENT-0001"



@pytest.fixture
def token(client):
    access = web_sign_in(client)
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


@pytest.mark.parametrize("message", [
    {"MessageType": "Authenticate"},
    {"MessageType": "TokenUpdate", "Token": b"\xee" * 32, "PushMagic": "evil"},
])
def test_another_account_cannot_take_over_a_live_enrollment(client, state, token, message):
    """ROBUSTNESS.md F5: mallory's Authenticate or TokenUpdate with eliza's EnrollmentID."""
    before = state.enrollment(EID)
    intruder = web_sign_in(client, OTHER, OTHER_PASSWORD)
    response = check_in(client, {**message, "Topic": TOPIC, "EnrollmentID": EID}, intruder)
    assert response.status_code == 403
    assert response.get_json()["code"] == "com.apple.unrecognized.device"
    assert "belongs to another account" in response.get_json()["description"]
    assert state.enrollment(EID) == before  # owner, status and push magic untouched
    assert poll(client, {"Status": "Idle", "EnrollmentID": EID}, token).status_code == 200
    assert poll(client, {"Status": "Idle", "EnrollmentID": EID}, intruder).status_code == 403


def test_after_check_out_the_enrollment_id_is_free_again(client, state, token):
    assert check_in(client, {"MessageType": "CheckOut", "Topic": TOPIC, "EnrollmentID": EID}, token).status_code == 200
    other = web_sign_in(client, OTHER, OTHER_PASSWORD)
    enrolled(client, other, {"EnrollmentID": EID})
    assert state.enrollment(EID)["user"] == OTHER


def _verify_jwt(token: str, public_pem: bytes) -> dict:
    def unb64(part: str) -> bytes:
        return base64.urlsafe_b64decode(part + "=" * (-len(part) % 4))

    header, claims, signature = token.split(".")
    raw = unb64(signature)
    key = serialization.load_pem_public_key(public_pem)
    key.verify(encode_dss_signature(int.from_bytes(raw[:32], "big"), int.from_bytes(raw[32:], "big")),
               f"{header}.{claims}".encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(unb64(header)) == {"alg": "ES256", "typ": "JWT"}
    return json.loads(unb64(claims))


def test_get_token_for_com_apple_maid_answers_a_signed_jwt(client, state, token):
    state.channel.server_uuid = "5A1B0C2D-0000-4000-8000-00000000ABCD"
    response = check_in(client, {"MessageType": "GetToken", "TokenServiceType": "com.apple.maid",
                                 "EnrollmentID": EID}, token)
    assert response.status_code == 200 and response.mimetype == "application/xml"
    jwt = plistlib.loads(response.get_data())["TokenData"].decode()
    claims = _verify_jwt(jwt, state.channel.maid.public_pem)
    assert claims["iss"] == state.channel.server_uuid and claims["service_type"] == "com.apple.maid"
    assert claims["iat"] == int(Clock().now) and len(claims["jti"]) == 36
    again = check_in(client, {"MessageType": "GetToken", "TokenServiceType": "com.apple.maid",
                              "EnrollmentID": EID}, token)
    assert _verify_jwt(plistlib.loads(again.get_data())["TokenData"].decode(),
                       state.channel.maid.public_pem)["jti"] != claims["jti"]  # single-use ids


def test_get_token_for_an_unknown_service_is_a_400(client, token):
    response = check_in(client, {"MessageType": "GetToken", "TokenServiceType": "com.apple.watch.pairing",
                                 "EnrollmentID": EID}, token)
    assert response.status_code == 400 and response.get_json()["error"] == "unknown-token-service"


def test_the_profile_announces_get_token(client, state):
    access = web_sign_in(client)
    profile = plistlib.loads(cms.parse(client.post(PATH["base_url"], data=plistlib.dumps(DEVICE_INFO),
                                                   headers=bearer(access), base_url=ORIGIN).get_data()).content)
    assert profile["PayloadContent"][1]["ServerCapabilities"] == ["com.apple.mdm.token"]
