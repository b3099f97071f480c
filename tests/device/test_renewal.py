"""lab.device.renewal: the MDM reissues the enrollment profile with InstallProfile; the device takes what Apple lets
an update change (a new identity) and refuses the rest with the text devices show."""
from __future__ import annotations

import plistlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12

from lab.device import Device, Network
from lab.device.model import Enrollment
from lab.device.renewal import kept
from lab.device.separation import Profile
from lab.pki import CertificateAuthority, self_signed

PROFILE_ID = "test.mdmlab.enrollment"
MDM = {"PayloadType": "com.apple.mdm", "PayloadIdentifier": f"{PROFILE_ID}.mdm", "PayloadUUID": "MDM-1",
       "PayloadVersion": 1, "IdentityCertificateUUID": "ID-1", "Topic": "com.apple.mgmt.External.x",
       "ServerURL": "https://mdm.lab.test/mdm/server", "CheckInURL": "https://mdm.lab.test/mdm/checkin",
       "AssignedManagedAppleID": "eliza@betterbag.test", "EnrollmentMode": "BYOD", "CheckOutWhenRemoved": True,
       "ServerCapabilities": ["com.apple.mdm.per-user-connections"], "AccessRights": 8191}


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"])


@pytest.fixture
def device(ca):
    made = Device(Network("127.0.0.1", 1, str(ca.cert_path)), model_family="Mac", os_version="15.2")
    made.enrollment = Enrollment("E-1", "eliza@betterbag.test", "BYOD", MDM["ServerURL"], MDM["CheckInURL"],
                                 MDM["Topic"], "CN=first", profile_identifier=PROFILE_ID, mdm_payload=kept(MDM))
    made.contents.create_volume("E-1")
    made.contents.install_profile(Profile(PROFILE_ID, "P-1", "Enrollment", "enrollment",
                                          ("com.apple.security.pkcs12", "com.apple.mdm")))
    yield made
    made.close()


def enrollment_profile(subject="renewed identity", identifier=PROFILE_ID, **changes) -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    bundle = pkcs12.serialize_key_and_certificates(b"id", key, self_signed(subject, key), None,
                                                   serialization.BestAvailableEncryption(b"pw"))
    identity = {"PayloadType": "com.apple.security.pkcs12", "PayloadIdentifier": f"{identifier}.id",
                "PayloadUUID": "ID-1", "PayloadVersion": 1, "PayloadContent": bundle, "Password": "pw"}
    mdm = {k: v for k, v in {**MDM, **changes}.items() if v is not None}
    return plistlib.dumps({"PayloadType": "Configuration", "PayloadIdentifier": identifier, "PayloadUUID": "P-2",
                           "PayloadVersion": 1, "PayloadContent": [identity, mdm]})


def install(device, payload: bytes):
    return device.run_command({"CommandUUID": "R", "Command": {"RequestType": "InstallProfile", "Payload": payload}})


def test_an_identical_renewal_is_installed_and_brings_its_new_identity(device):
    outcome = install(device, enrollment_profile("renewed identity"))
    assert outcome.status == "Acknowledged", outcome
    assert device.identity[1].subject.rfc4514_string() == "CN=renewed identity"
    assert device.enrollment.identity_subject == "CN=renewed identity"
    assert device.enrollment.server_url == MDM["ServerURL"] and device.enrollment.enrollment_id == "E-1"
    assert device.contents.profiles[PROFILE_ID].kind == "enrollment"


@pytest.mark.parametrize("changes, shown", [
    ({"ServerURL": "https://mdm.lab.test/mdm/server?tenant=2"}, "Update to MDM profile contains different server URL."),
    ({"CheckInURL": "https://mdm.lab.test/mdm/checkin2"}, "Update to MDM profile contains different check-in URL."),
    ({"CheckInURL": None}, "Update to MDM profile contains different check-in URL."),
    ({"Topic": "com.apple.mgmt.External.y"}, "Update to MDM profile contains different topic."),
    ({"AssignedManagedAppleID": "ali@betterbag.test"}, "Update to MDM profile contains different Managed Apple "
                                                       "Account."),
    ({"ServerCapabilities": []}, "Update to MDM profile changes the per-user connections capability."),
])
def test_a_renewal_that_changes_what_apple_keeps_is_refused_and_changes_nothing(device, changes, shown):
    outcome = install(device, enrollment_profile(**changes))
    assert outcome.status == "Error"
    assert outcome.response["ErrorChain"] == [{"ErrorCode": 12004, "ErrorDomain": "MCMDMErrorDomain",
                                               "LocalizedDescription": shown, "USEnglishDescription": shown}]
    assert device.identity is None and device.enrollment.identity_subject == "CN=first"


def test_access_rights_may_shrink_but_not_grow(device):
    assert install(device, enrollment_profile(AccessRights=4095)).status == "Acknowledged"
    grown = install(device, enrollment_profile(AccessRights=8191))
    assert grown.response["ErrorChain"][0]["LocalizedDescription"] == "Update to MDM profile adds access rights."


def test_an_mdm_payload_under_another_identifier_is_a_second_mdm(device):
    outcome = install(device, enrollment_profile(identifier="other.mdm"))
    assert outcome.response["ErrorChain"][0]["ErrorCode"] == 12001
