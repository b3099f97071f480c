"""Every message the device sends conforms to Apple's schema (lab.schema) for its model, OS version, enrollment
type and channel: each check-in message and each command report, captured as sent, across every OS version the
device models, both enrollment types and both channels (the user channel of a Mac in User Enrollment)."""
from __future__ import annotations

import plistlib

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab import schema
from lab.device import Device, Network, channel, esso, messages
from lab.device.model import ABM_FALLBACK_MINIMUM, ADDE_MINIMUM, ADUE_MINIMUM, DEFAULT_OS, Client, Enrollment
from lab.device.separation import Profile
from lab.device.trace import Trace
from lab.pki import CertificateAuthority, self_signed
from tests.device.recording import RecordingMDM

PROFILE_ID = "test.mdmlab.enrollment"
MAIL_PROFILE = plistlib.dumps({"PayloadType": "Configuration", "PayloadIdentifier": "org.mail", "PayloadUUID": "M-1",
                               "PayloadVersion": 1, "PayloadContent": [
                                   {"PayloadType": "com.apple.mail.managed", "PayloadIdentifier": "org.mail.p",
                                    "PayloadUUID": "M-2", "PayloadVersion": 1}]})
COMMANDS = [
    {"RequestType": "DeviceInformation", "Queries": [
        "UDID", "SerialNumber", "OSVersion", "BuildVersion", "ModelName", "Model", "ProductName", "DeviceName",
        "DeviceCapacity", "AvailableDeviceCapacity", "IsSupervised", "IsMultiUser", "IsCloudBackupEnabled",
        "IsActivationLockEnabled", "EASDeviceIdentifier", "IMEI"]},
    {"RequestType": "SecurityInfo"}, {"RequestType": "CertificateList"},
    {"RequestType": "InstallProfile", "Payload": MAIL_PROFILE}, {"RequestType": "ProfileList"},
    {"RequestType": "RemoveProfile", "Identifier": "org.mail"},
    {"RequestType": "RemoveProfile", "Identifier": "org.nothing"},
    {"RequestType": "InstallApplication", "iTunesStoreID": 1_660_000_002, "Options": {"PurchaseMethod": 1}},
    {"RequestType": "InstallApplication", "iTunesStoreID": 42, "Options": {"PurchaseMethod": 1}},
    {"RequestType": "InstalledApplicationList"}, {"RequestType": "ManagedApplicationList"},
    {"RequestType": "RemoveApplication", "Identifier": "test.mdmlab.work-notes"},
    {"RequestType": "Restrictions"}, {"RequestType": "ScheduleOSUpdate", "Updates": []},
    {"RequestType": "ClearPasscode", "UnlockToken": b"x"}, {"RequestType": "EnableLostMode", "Message": "m"},
    {"RequestType": "DeviceInformation"},  # a format error
    {"RequestType": "DeviceLock", "Message": "Locked by IT"}, {"RequestType": "ProfileList"},
    {"RequestType": "InstallApplication", "iTunesStoreID": 1_660_000_004, "Options": {"PurchaseMethod": 1}},
    {"RequestType": "RestartDevice"}, {"RequestType": "ShutDownDevice"},
]
OS = {"iPhone": "iOS", "iPad": "iPadOS", "Mac": "macOS", "Vision": "visionOS"}


def modelled_versions(family: str) -> list[str]:
    """Every OS version at which the device's behaviour changes, and its default."""
    first = ADUE_MINIMUM[family]
    marks = {first, ADDE_MINIMUM[family], ABM_FALLBACK_MINIMUM[family], esso.MINIMUM.get(family, first),
             esso.DECLARATIONS_MINIMUM.get(family, first)}
    return sorted({f"{major}.{minor}" for major, minor in marks} | {DEFAULT_OS[family]},
                  key=lambda v: tuple(map(int, v.split("."))))


CASES = [(family, version, mode) for family in ("iPhone", "iPad", "Mac", "Vision") for version in
         modelled_versions(family) for mode in ("BYOD", "ADDE")
         if mode == "BYOD" or tuple(map(int, version.split("."))) >= ADDE_MINIMUM[family]]


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"])


def enrolled(ca, family: str, version: str, mode: str) -> Device:
    device = Device(Network("127.0.0.1", 1, str(ca.cert_path)), model_family=family, os_version=version)
    eid = device.udid if mode == "ADDE" else "5A1E0C6B9C0D4D0E8F7A6B5C4D3E2F10"
    device.enrollment = Enrollment(eid, "eliza@betterbag.test", mode, "https://mdm.lab.test/mdm/server",
                                   "https://mdm.lab.test/mdm/checkin", "com.apple.mgmt.External.x", "CN=x",
                                   profile_identifier=PROFILE_ID)
    device.contents.create_volume(eid)
    key = ec.generate_private_key(ec.SECP256R1())
    device.contents.keychain_put("mdm-identity", key.private_bytes(
        serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8, serialization.NoEncryption()) +
        self_signed("mdm identity", key).public_bytes(serialization.Encoding.PEM))
    device.contents.install_profile(Profile(PROFILE_ID, "E-1", "Enrollment", "enrollment",
                                            ("com.apple.security.pkcs12", "com.apple.mdm")))
    return device


def sent_by(device: Device) -> RecordingMDM:
    """Everything the device sends from its first check-in to its CheckOut."""
    mdm = RecordingMDM(COMMANDS)
    device.session.close()
    device.session = mdm
    channel.first_check_ins(device, Trace())
    if messages.refusal("checkin", "GetToken", device.os_name, device.os_version, device.enrollment.mode) is None:
        channel.get_token(device, "com.apple.maid", Trace())  # the Managed Apple Account step (iOS 17, macOS 14)
    assert device.sync().outcome in ("synced", "commands-failed")  # some commands are refused on purpose
    device.unlock()
    assert device.unenroll().outcome == "unenrolled"
    return mdm


def problems(sent, os_name: str, version: str, mode: str) -> list[str]:
    enrollment = {"BYOD": "user", "ADDE": "adde"}[mode]
    context = dict(platform=os_name, os_version=version, enrollment=enrollment)
    found = []
    for item in sent:
        message = item.message
        if "MessageType" in message:
            kind, name = "checkin", message["MessageType"]
            where = "user" if {"EnrollmentUserID", "UserID"} & set(message) else "device"
        else:
            kind, name, where = "response", item.command, "device"
            unknown = name is not None and any(p.severity == "error" for p in schema.supported(
                "command", name, **context)) if name in schema.names("command") else True
            if name is None or unknown:
                name = None  # a refused command is answered with the bare report
        for problem in schema.check(kind, name, message, channel=where, **context):
            if problem.severity == "error":
                found.append(f"{kind} {name or 'report'} ({where} channel): {problem}")
    return found


@pytest.mark.parametrize("family, version, mode", CASES)
def test_every_message_the_device_sends_conforms_to_apples_schema(ca, family, version, mode):
    device = enrolled(ca, family, version, mode)
    sent = sent_by(device).sent
    kinds = {m.message.get("MessageType") or "report" for m in sent}
    assert {"Authenticate", "TokenUpdate", "CheckOut", "report"} <= kinds
    assert len(sent) > len(COMMANDS)
    assert problems(sent, device.os_name, version, mode) == []


def test_a_mac_in_user_enrollment_also_speaks_on_its_user_channel(ca):
    sent = sent_by(enrolled(ca, "Mac", "14.0", "BYOD")).sent
    [user] = [m.message for m in sent if "EnrollmentUserID" in m.message and m.message["MessageType"] == "TokenUpdate"]
    assert user["MessageType"] == "TokenUpdate" and {"UserLongName", "NotOnConsole"} <= set(user)


def test_the_matrix_covers_each_model_its_os_versions_and_both_enrollment_types():
    assert {(f, m) for f, _, m in CASES} == {(f, m) for f in ("iPhone", "iPad", "Mac", "Vision")
                                             for m in ("BYOD", "ADDE")}
    assert {v for f, v, _ in CASES if f == "iPhone"} >= {"15.0", "17.0", "18.2", "26.1"}


def _captured(ca, family, version, mode, kind_name):
    sent = sent_by(enrolled(ca, family, version, mode)).sent
    return next(m for m in sent if (m.message.get("MessageType") or m.command) == kind_name
                and m.message.get("Status", "Acknowledged") == "Acknowledged")


def _without_payload_uuid(message):
    for item in message["ProfileList"]:
        for payload in item["PayloadContent"]:
            payload.pop("PayloadUUID")


@pytest.mark.parametrize("family, version, mode, name, deviate", [
    ("iPhone", "26.1", "BYOD", "SecurityInfo", lambda m: m["SecurityInfo"].update(PasscodePresent=True)),
    ("iPhone", "17.0", "ADDE", "ProfileList", _without_payload_uuid),
    ("Mac", "14.0", "BYOD", "ProfileList", _without_payload_uuid),
    ("Mac", "26.1", "ADDE", "Authenticate", lambda m: m.pop("DeviceName")),
    ("iPad", "26.1", "BYOD", "CertificateList", lambda m: m.update(Topic="com.apple.mgmt.External.x")),
    ("Mac", "15.2", "ADDE", "SecurityInfo", lambda m: m["SecurityInfo"].update(HardwareEncryptionCaps=3)),
])
def test_the_conformance_check_catches_each_deviation_the_device_once_had(ca, family, version, mode, name, deviate):
    captured, os_name = _captured(ca, family, version, mode, name), OS[family]
    assert problems([captured], os_name, version, mode) == []
    deviate(captured.message)
    assert problems([captured], os_name, version, mode)


@pytest.mark.parametrize("family, version, mode", CASES)
def test_the_enrollment_request_conforms_to_apples_machine_info(family, version, mode):
    """The signed MachineInfo of the first enrollment request: Device Enrollment (mdm-adde) names the device,
    User Enrollment (mdm-byod) never does; OS_VERSION from iOS 17 / macOS 14 on."""
    client = Client(family, version)
    info = messages.machine_info(client, "UDID-1", "SERIAL-1", mode)
    enrollment = {"BYOD": "user", "ADDE": "adde"}[mode]
    assert [str(p) for p in schema.check("document", "MachineInfo", info, platform=client.os_name, os_version=version,
                                         enrollment=enrollment) if p.severity == "error"] == []
    assert {"PRODUCT", "VERSION", "LANGUAGE"} <= set(info)
    assert ({"UDID", "SERIAL"} <= set(info)) == (mode == "ADDE")
    assert not {"UDID", "SERIAL", "IMEI", "MEID"} & set(info) or mode == "ADDE"
    has_os_version = client.version >= {"iOS": (17, 0), "iPadOS": (17, 0), "macOS": (14, 0)}.get(client.os_name, (0, 0))
    assert ("OS_VERSION" in info) == has_os_version


def test_the_check_catches_machine_info_that_names_a_user_enrolled_device_or_hides_an_enrolled_one():
    context = dict(platform="iOS", os_version="26.1")
    byod = messages.machine_info(Client("iPhone", "26.1"), "UDID-1", "SERIAL-1", "BYOD")
    adde = messages.machine_info(Client("iPhone", "26.1"), "UDID-1", "SERIAL-1", "ADDE")
    codes = {p.code for p in schema.check("document", "MachineInfo", {**byod, "UDID": "U"}, enrollment="user",
                                          **context)}
    assert "forbidden-under-user-enrollment" in codes
    hidden = {k: v for k, v in adde.items() if k != "SERIAL"}
    assert [p.path for p in schema.check("document", "MachineInfo", hidden, enrollment="adde", **context)] == ["SERIAL"]
    old_style = {k: v for k, v in adde.items() if k != "OS_VERSION"}  # what the device sent before (PROTOCOL.md 2.1)
    assert [p.path for p in schema.check("document", "MachineInfo", old_style, enrollment="adde", **context)] == \
        ["OS_VERSION"]


@pytest.mark.parametrize("family, version, mode", [c for c in CASES if c[0] in ("Mac", "iPhone", "Vision")])
def test_check_out_carries_the_identifiers_apple_requires_for_the_os_and_enrollment_type(ca, family, version, mode):
    """Apple's CheckOut requires UDID on a Mac even under User Enrollment (beside EnrollmentID), and forbids it
    under User Enrollment on iOS and visionOS; Authenticate and TokenUpdate hide it on every platform."""
    device = enrolled(ca, family, version, mode)
    sent = [m.message for m in sent_by(device).sent if "MessageType" in m.message]
    check_out = next(m for m in sent if m["MessageType"] == "CheckOut")
    user_enrollment = mode == "BYOD"
    assert ("UDID" in check_out) == (not user_enrollment or family == "Mac")
    assert ("EnrollmentID" in check_out) == user_enrollment
    for message in sent:
        if user_enrollment and message["MessageType"] != "CheckOut":
            assert not {"UDID", "SerialNumber"} & set(message), message["MessageType"]
