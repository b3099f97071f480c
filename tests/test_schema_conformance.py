"""What the lab's Apple-facing servers send conforms to the schema facts (issue 12 §1): the MDM's enrollment
profiles (account-driven User and Device Enrollment, each OS the device models at its first and its default
version), its sample profiles, its Enrollment SSO profile, its ErrorUnrecognizedDevice body and the org domain's
ErrorWellKnownFailed body. The MDM's profile faults are caught by the same facts."""
from __future__ import annotations

import base64
import json
import plistlib

import pytest

from lab import cms, schema
from lab.device.device import ADDE_MINIMUM, ADUE_MINIMUM, DEFAULT_OS, FAMILIES
from lab.faults import FaultBoard, catalogue
from lab.pki import CertificateAuthority
from mocks.mdm.profiles import SAMPLE_PROFILES, sample_profile
from mocks.org_domain import FAULTS as ORG_FAULTS
from mocks.org_domain import DomainSetup, OrgDomainState
from mocks.org_domain import create_app as org_app
from tests.mdm_support import (
    IDENTIFIER,
    ORIGIN,
    PATH,
    Clock,
    check_in,
    client_of,
    enroll,
    enrolled,
    fault_board,
    make_state,
    poll,
    web_sign_in,
)

MODES = {"base_url": ("user", ADUE_MINIMUM), "adde_base_url": ("adde", ADDE_MINIMUM)}


def versions(minimum: dict) -> list[tuple[str, str]]:
    """(platform, version) for each model family the device models: its first version for the mode and its
    default."""
    out = []
    for family, (_, _, platform) in FAMILIES.items():
        first = ".".join(map(str, minimum[family]))
        out += [(platform, first), (platform, DEFAULT_OS[family])]
    return out


@pytest.fixture(scope="module")
def signer(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"]).issue_profile_signer("BetterBag")


@pytest.fixture
def mdm(tmp_path, signer):
    board = fault_board()
    state = make_state(tmp_path / "mdm", signer, Clock(), faults=board)
    yield state, client_of(state), board
    state.close()



def profile_of(client, mode_path: str) -> dict:
    response = enroll(client, web_sign_in(client), mode_path)
    assert response.status_code == 200, response.get_data(as_text=True)
    return plistlib.loads(cms.parse(response.get_data()).content)


def problems(message: dict, platform: str, version: str, enrollment: str, kind="payload", name="Configuration"):
    return schema.check(kind, name, message, platform=platform, os_version=version, enrollment=enrollment)


@pytest.mark.parametrize("mode_path", list(MODES))
def test_enrollment_profiles_conform_on_every_os_the_device_models(mdm, mode_path):
    _, client, _ = mdm
    profile = profile_of(client, mode_path)
    enrollment, minimum = MODES[mode_path]
    assert {p["PayloadType"] for p in profile["PayloadContent"]} == {"com.apple.mdm", "com.apple.security.pkcs12"}
    for platform, version in versions(minimum):
        assert problems(profile, platform, version, enrollment) == [], (platform, version)


@pytest.mark.parametrize("fault, path, code", [
    ("profile-access-rights", "PayloadContent[1].AccessRights", "forbidden-under-user-enrollment"),
    ("profile-missing-maa", "PayloadContent[1].AssignedManagedAppleID", "missing-required"),
])
def test_the_profile_faults_break_the_schema_where_apple_says(mdm, fault, path, code):
    _, client, board = mdm
    board.set(fault, times=1)
    profile = profile_of(client, "base_url")
    assert profile["PayloadContent"][1]["PayloadType"] == "com.apple.mdm"
    found = problems(profile, "iOS", "17.0", "user")
    assert [(p.path, p.code) for p in found] == [(path, code)]


@pytest.mark.parametrize("kind", SAMPLE_PROFILES)
def test_sample_profiles_conform(kind):
    """Their content, on the channel that takes them (a Mac takes accounts on its user channel)."""
    profile = sample_profile(kind, "BetterBag", "test.mdmlab.betterbag", IDENTIFIER)
    [payload_type] = [p["PayloadType"] for p in profile["PayloadContent"]]
    for platform, version in versions(ADUE_MINIMUM):
        context = dict(platform=platform, os_version=version, enrollment="user")
        channel = "device" if not schema.supported("payload", payload_type, **context) else "user"
        assert schema.supported("payload", payload_type, **context, channel=channel) == [], (platform, version)
        assert schema.check("payload", "Configuration", profile, **context, channel=channel) == [], (platform, version)


def test_the_enrollment_sso_profile_conforms(tmp_path, signer):
    state = make_state(tmp_path / "esso", signer, Clock(), auth="oauth2", esso=True)
    try:
        response = client_of(state).get(PATH["esso_url"], base_url=ORIGIN)
    finally:
        state.close()
    assert response.status_code == 200
    document = json.loads(response.get_data())
    assert schema.check("document", "EnrollmentSSODocument", document, platform="iOS", os_version="17.0",
                        enrollment="user") == []
    profile = plistlib.loads(cms.parse(base64.b64decode(document["ConfigurationProfile"])).content)
    for platform, version in (("iOS", "17.0"), ("iPadOS", "18.1"), ("visionOS", "2.0")):
        assert problems(profile, platform, version, "user") == [], (platform, version)


def test_the_get_token_reply_conforms(mdm):
    _, client, _ = mdm
    access = web_sign_in(client)
    enrolled(client, access, {"EnrollmentID": "E-1"})
    message = {"MessageType": "GetToken", "TokenServiceType": "com.apple.maid", "EnrollmentID": "E-1"}
    context = dict(platform="iOS", os_version="17.0", enrollment="user")
    assert schema.check("checkin", "GetToken", message, **context) == []
    response = check_in(client, message, access)
    assert response.status_code == 200, response.get_data(as_text=True)
    reply = plistlib.loads(response.get_data())
    assert schema.check("checkin-reply", "GetToken", reply, **context) == []
    assert [p.code for p in schema.check("checkin-reply", "GetToken", {"TokenData": "text"}, **context)] == [
        "wrong-type"]


def test_the_unrecognized_device_body_conforms(mdm):
    _, client, _ = mdm
    response = poll(client, {"Status": "Idle", "EnrollmentID": "NEVER-ENROLLED"}, web_sign_in(client))
    assert response.status_code == 403
    body = response.get_json()
    for platform, version in (("iOS", "17.0"), ("macOS", "14.0"), ("iPadOS", "26.1")):
        assert problems(body, platform, version, "user", "error", "com.apple.unrecognized.device") == []
    assert [p.code for p in problems({**body, "detail": 1}, "iOS", "17.0", "user", "error",
                                     "com.apple.unrecognized.device")] == ["unknown-key"]


def test_the_well_known_failed_body_conforms():
    board = FaultBoard(catalogue(ORG_FAULTS), {"org-domain": {"betterbag.test"}}, "betterbag.test")
    state = OrgDomainState([DomainSetup("betterbag.test", "mdm-byod", "https://mdm.lab.test/enroll")], faults=board)
    board.set("well-known-refused", times=1)
    response = org_app(state).test_client().get(
        "/.well-known/com.apple.remotemanagement?user-identifier=eliza@betterbag.test&model-family=iPhone",
        base_url="https://betterbag.test")
    assert response.status_code == 403
    body = response.get_json()
    for platform, version in (("iOS", "17.5"), ("macOS", "14.5"), ("visionOS", "1.2")):
        assert problems(body, platform, version, "user", "error", "com.apple.well-known.failed") == []
    [early] = problems(body, "iOS", "17.4", "user", "error", "com.apple.well-known.failed")
    assert early.code == "not-yet-introduced"
