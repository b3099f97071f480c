"""The schema facts cover everything the lab puts on the wire: every RequestType the device answers, every
MessageType the MDM takes, every PayloadType and error code the lab's servers send; and the data is the derivation
of Apple's repository, in the project's own shape."""
from __future__ import annotations

import json
from importlib import resources

import pytest

from lab import schema
from lab.device import commands as device_commands
from lab.pki import CertificateAuthority
from mocks.mdm.commands import REPORT_STATUSES
from mocks.mdm.profiles import SAMPLE_PROFILES, sample_profile
from tests.mdm_support import (
    IDENTIFIER,
    ORIGIN,
    PASSWORD,
    PATH,
    TOPIC,
    Clock,
    check_in,
    client_of,
    location_query,
    make_state,
)

# The check-in messages the lab's device sends and its MDM takes. The MDM test below fails when the MDM starts taking
# another MessageType, so this list (and the schema check on it) follows the code.
LAB_MESSAGE_TYPES = ("Authenticate", "TokenUpdate", "CheckOut", "GetToken")
# PayloadTypes the lab's servers send: the enrollment profile (identity, MDM), sample profiles, the Enrollment SSO
# extension, and those the tests install; error codes its servers answer with.
LAB_PAYLOAD_TYPES = ("Configuration", "com.apple.mdm", "com.apple.security.pkcs12", "com.apple.security.scep",
                     "com.apple.security.acme", "com.apple.security.root", "com.apple.security.pem",
                     "com.apple.security.pkcs1", "com.apple.extensiblesso", "com.apple.vpn.managed",
                     "com.apple.vpn.managed.applayer", "com.apple.wifi.managed", "com.apple.mail.managed",
                     "com.apple.caldav.account")
LAB_ERROR_CODES = ("com.apple.unrecognized.device", "com.apple.well-known.failed")


def test_every_request_type_the_device_knows_is_in_the_schema():
    known = set(device_commands.RULES) | set(device_commands._HANDLERS)
    assert known - set(schema.names("command")) == set()
    assert known - set(schema.names("response")) == set()


def test_every_message_type_the_lab_uses_is_in_the_schema():
    assert set(LAB_MESSAGE_TYPES) - set(schema.names("checkin")) == set()


def test_every_payload_type_and_error_code_the_lab_sends_is_in_the_schema():
    samples = {p["PayloadType"] for kind in SAMPLE_PROFILES
               for p in sample_profile(kind, "Org", "test.org", IDENTIFIER)["PayloadContent"]}
    assert samples <= set(LAB_PAYLOAD_TYPES)
    assert set(LAB_PAYLOAD_TYPES) - set(schema.names("payload")) == set()
    assert set(LAB_ERROR_CODES) - set(schema.names("error")) == set()


def test_report_statuses_are_the_schema_s():
    status = schema.keys_for("response", None, platform="iOS", os_version="17.0", enrollment="user")["Status"]
    assert set(REPORT_STATUSES) == set(status.values)


@pytest.fixture
def mdm(tmp_path):
    signer = CertificateAuthority(tmp_path / "pki", ["lab.test"]).issue_profile_signer("BetterBag")
    state = make_state(tmp_path / "mdm", signer, Clock())
    yield client_of(state)
    state.close()


def test_the_mdm_takes_no_message_type_beyond_the_lab_s_list(mdm):
    """Every other MessageType of the schema, and one of none, is refused as unknown by the MDM."""
    response = mdm.post(PATH["auth_url"], data={"user-identifier": IDENTIFIER, "password": PASSWORD},
                        base_url=ORIGIN)
    access = location_query(response)["access-token"]
    others = [t for t in schema.names("checkin") if t not in LAB_MESSAGE_TYPES] + ["Frobnicate"]
    for message_type in others:
        answer = check_in(mdm, {"MessageType": message_type, "Topic": TOPIC, "EnrollmentID": "E"}, access)
        assert answer.status_code == 400 and answer.get_json()["error"] == "unknown-message-type", message_type


def test_the_data_covers_apple_s_areas_and_names_its_source():
    counts = {kind: len(schema.names(kind)) for kind in schema.KINDS}
    assert counts == {"checkin": 8, "checkin-reply": 2, "command": 66, "response": 66, "payload": 121, "error": 4,
                      "document": 2}
    for area in ("checkin", "commands", "payloads", "errors", "documents"):
        data = json.loads(resources.files("lab.schema").joinpath("data", f"{area}.json").read_text())
        assert data["origin"]["repository"] == "apple/device-management" and len(data["origin"]["commit"]) == 40


def test_the_data_holds_facts_only():
    """No prose carried over from Apple's files: only our field names, and no text longer than a key name needs."""
    fields = {"name", "type", "required", "os", "any", "values", "range", "pattern", "keys", "item", "choices",
              "same_as_parent"}
    facts = {"since", "deprecated", "removed", "ue", "adue", "account_driven", "device_channel", "user_channel",
             "supervised", "ade_only", "user_approved", "multiple", "manual_install", "shared_ipad",
             "shared_ipad_device_channel", "shared_ipad_user_channel", "access_right"}

    def walk(node):
        assert set(node) <= fields, set(node) - fields
        for values in node.get("os", {}).values():
            assert set(values) <= facts, set(values) - facts
        for child in node.get("keys", []) + ([node["item"]] if "item" in node else []):
            walk(child)

    for area in ("checkin", "commands", "payloads", "errors", "documents"):
        data = json.loads(resources.files("lab.schema").joinpath("data", f"{area}.json").read_text())
        for entry in data["items"].values():
            assert set(entry) <= {"os", "keys", "reply", "request", "response", "json"}
            for part in ("keys", "reply", "request", "response"):
                for key in entry.get(part, []):
                    walk(key)
