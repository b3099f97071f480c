"""lab.schema.check and keys_for on Apple's facts: each Problem code fires where the schema says so, and not on the
same message put right; keys_for gives the device the keys of its platform, version, enrollment and channel."""
import pytest

from lab import schema
from lab.schema import check, keys_for, supported

IPHONE_UE = dict(platform="iOS", os_version="17.4", enrollment="user")
IPHONE_ADDE = dict(platform="iOS", os_version="17.4", enrollment="adde")
MAC_UE = dict(platform="macOS", os_version="14.4", enrollment="user")
TOPIC = "com.apple.mgmt.External.x"


def report(**keys) -> dict:
    return {"Status": "Acknowledged", "CommandUUID": "C-1", "EnrollmentID": "E-1", **keys}


def mac_authenticate(**extra) -> dict:
    return {"MessageType": "Authenticate", "Topic": TOPIC, "EnrollmentID": "E-1", "DeviceName": "Mac of Robin",
            "ModelName": "MacBook Air", "Model": "Mac15,12", **extra}


def profile_item(**extra) -> dict:
    return {"PayloadIdentifier": "p", "PayloadUUID": "U", "PayloadContent": [
        {"PayloadType": "com.apple.wifi.managed", "PayloadVersion": 1, "PayloadIdentifier": "p.0", **extra}]}


def mdm_payload(**extra) -> dict:
    return {"PayloadType": "com.apple.mdm", "PayloadVersion": 1, "PayloadIdentifier": "m", "PayloadUUID": "U",
            "IdentityCertificateUUID": "I", "Topic": TOPIC, "ServerURL": "https://mdm.test/s", **extra}


def restrictions(**keys) -> dict:
    return {"PayloadType": "com.apple.applicationaccess", "PayloadVersion": 1, "PayloadIdentifier": "r",
            "PayloadUUID": "U", **keys}


# (code, kind, name, wrong message, right message, context, path, severity)
CASES = [
    ("unknown-name", "command", "NoSuchCommand", {}, None, IPHONE_UE, "", "error"),
    ("missing-required", "checkin", "Authenticate", mac_authenticate(DeviceName=None), mac_authenticate(), MAC_UE,
     "DeviceName", "error"),
    ("unknown-key", "response", "ProfileList", report(ProfileList=[], SerialNumber="S"), report(ProfileList=[]),
     IPHONE_UE, "SerialNumber", "error"),
    ("wrong-type", "checkin", "TokenUpdate",
     {"MessageType": "TokenUpdate", "Topic": TOPIC, "EnrollmentID": "E", "Token": "abc", "PushMagic": "M"},
     {"MessageType": "TokenUpdate", "Topic": TOPIC, "EnrollmentID": "E", "Token": b"abc", "PushMagic": "M"},
     IPHONE_UE, "Token", "error"),
    ("value-not-allowed", "response", "SecurityInfo", report(Status="Done", SecurityInfo={}),
     report(SecurityInfo={}), IPHONE_UE, "Status", "error"),
    ("out-of-range", "payload", "com.apple.applicationaccess", restrictions(ratingApps=1001),
     restrictions(ratingApps=1000), IPHONE_ADDE, "ratingApps", "error"),
    ("not-on-platform", "response", "SecurityInfo", report(SecurityInfo={"HardwareEncryptionCaps": 3}),
     report(SecurityInfo={}), MAC_UE, "SecurityInfo.HardwareEncryptionCaps", "error"),
    ("not-yet-introduced", "response", "ProfileList", report(ProfileList=[{**profile_item(), "Source": "MDM"}]),
     report(ProfileList=[profile_item(PayloadUUID="V")]), IPHONE_UE, "ProfileList[0].Source", "error"),
    ("removed", "payload", "com.apple.mdm", mdm_payload(ManagedAppleID="a@b.test"), mdm_payload(),
     dict(platform="iOS", os_version="18.1", enrollment="profile-user"), "ManagedAppleID", "error"),
    ("forbidden-under-user-enrollment", "response", "SecurityInfo", report(SecurityInfo={"PasscodePresent": True}),
     report(SecurityInfo={"PasscodeCompliant": True}), IPHONE_UE, "SecurityInfo.PasscodePresent", "error"),
    ("only-under-user-enrollment", "checkin", "CheckOut",
     {"MessageType": "CheckOut", "Topic": TOPIC, "UDID": "D", "EnrollmentID": "E"},
     {"MessageType": "CheckOut", "Topic": TOPIC, "UDID": "D"}, IPHONE_ADDE, "EnrollmentID", "error"),
    ("forbidden-on-shared-ipad", "checkin", "TokenUpdate",
     {"MessageType": "TokenUpdate", "Topic": TOPIC, "UDID": "D", "Token": b"t", "PushMagic": "M",
      "UnlockToken": b"u", "UserID": "U", "UserShortName": "u"},
     {"MessageType": "TokenUpdate", "Topic": TOPIC, "UDID": "D", "Token": b"t", "PushMagic": "M",
      "UserID": "U", "UserShortName": "u"},
     dict(platform="iPadOS", os_version="17.0", enrollment="ade", shared_ipad=True), "UnlockToken", "error"),
    ("only-on-shared-ipad", "checkin", "TokenUpdate",
     {"MessageType": "TokenUpdate", "Topic": TOPIC, "UDID": "D", "Token": b"t", "PushMagic": "M",
      "UserShortName": "u"},
     {"MessageType": "TokenUpdate", "Topic": TOPIC, "UDID": "D", "Token": b"t", "PushMagic": "M"},
     IPHONE_ADDE, "UserShortName", "error"),
    ("not-on-channel", "checkin", "TokenUpdate",
     {"MessageType": "TokenUpdate", "Topic": TOPIC, "EnrollmentID": "E", "Token": b"t", "PushMagic": "M",
      "NotOnConsole": False},
     {"MessageType": "TokenUpdate", "Topic": TOPIC, "EnrollmentID": "E", "Token": b"t", "PushMagic": "M"},
     MAC_UE, "NotOnConsole", "error"),
    ("needs-supervision", "command", "RestartDevice", {}, None, IPHONE_ADDE, "", "error"),
    ("needs-ade", "command", "DeviceConfigured", {}, None, dict(platform="macOS", os_version="14.0",
                                                                enrollment="adde"), "", "error"),
    ("needs-access-right", "command", "EraseDevice", {}, None, {**IPHONE_ADDE, "access_rights": 8191 - 8}, "",
     "error"),
    ("deprecated", "response", "DeviceInformation", report(QueryResponses={"IMEI": "35 0000"}, EnrollmentID=None,
     UDID="D"), report(QueryResponses={}, EnrollmentID=None, UDID="D"), dict(platform="iOS", os_version="16.0",
                                                                              enrollment="adde"),
     "QueryResponses.IMEI", "warning"),
    ("ignored-under-user-enrollment", "payload", "com.apple.mdm",
     mdm_payload(AccessRights=1, ManagedAppleID="a@b.test"), mdm_payload(ManagedAppleID="a@b.test"),
     dict(platform="iOS", os_version="16.0", enrollment="profile-user", supervised=False), "AccessRights",
     "warning"),
    ("unknown-value", "command", "DeviceInformation", {"Queries": ["OSVersion", "FavouriteColour"]},
     {"Queries": ["OSVersion"]}, IPHONE_UE, "Queries[1]", "warning"),
]


def _clean(message: dict) -> dict:
    return {k: v for k, v in message.items() if v is not None}


def test_every_code_has_a_case():
    assert sorted(c[0] for c in CASES) == sorted(schema.CODES)


@pytest.mark.parametrize("code, kind, name, wrong, right, context, path, severity", CASES, ids=[c[0] for c in CASES])
def test_each_code_fires_where_the_schema_says_and_not_on_the_right_message(code, kind, name, wrong, right,
                                                                             context, path, severity):
    problems = check(kind, name, _clean(wrong), **context)
    found = [p for p in problems if p.code == code]
    assert [(p.path, p.severity) for p in found] == [(path, severity)], problems
    assert found[0].message and "\n" not in found[0].message
    if right is not None:
        assert check(kind, name, _clean(right), **context) == [], "the corrected message must conform"
    else:  # a whole command: the context that allows it takes it
        allowed = {"needs-supervision": {**context, "enrollment": "ade"}, "needs-ade": {**context, "enrollment": "ade"},
                   "needs-access-right": {**context, "access_rights": 8191}}.get(code)
        if allowed:
            assert supported(kind, name, **allowed) == []


def test_entry_level_rules_stop_the_walk_and_name_the_whole_message():
    problems = check("command", "EraseDevice", {"PIN": "123456"}, **IPHONE_UE)
    assert [(p.path, p.code) for p in problems] == [("", "forbidden-under-user-enrollment")]
    assert "EraseDevice" in problems[0].message and "User Enrollment" in problems[0].message


def test_account_driven_user_enrollment_forbids_what_profile_based_user_enrollment_needed():
    """ManagedAppleID was required for profile-based UE until iOS 18; account-driven UE must never carry it, and
    must carry AssignedManagedAppleID and EnrollmentMode; AccessRights makes it cancel (PROTOCOL.md 3.2)."""
    adue = mdm_payload(AssignedManagedAppleID="a@b.test", EnrollmentMode="BYOD")
    assert check("payload", "com.apple.mdm", adue, **IPHONE_UE) == []
    legacy = check("payload", "com.apple.mdm", {**adue, "ManagedAppleID": "a@b.test", "AccessRights": 8191},
                   **IPHONE_UE)
    assert {(p.path, p.code) for p in problems_of(legacy)} == {("ManagedAppleID", "forbidden-under-user-enrollment"),
                                                              ("AccessRights", "forbidden-under-user-enrollment")}
    missing = check("payload", "com.apple.mdm", mdm_payload(), **IPHONE_ADDE)
    assert {p.path for p in missing if p.code == "missing-required"} == {"AssignedManagedAppleID", "EnrollmentMode"}
    assert check("payload", "com.apple.mdm", mdm_payload(), platform="iOS", os_version="17.4",
                 enrollment="device") == []
    profile_ue = check("payload", "com.apple.mdm", mdm_payload(), platform="iOS", os_version="16.0",
                       enrollment="profile-user")
    assert [(p.path, p.code) for p in profile_ue] == [("ManagedAppleID", "missing-required")]


def problems_of(problems):
    return [p for p in problems if p.severity == "error"]


def test_a_profile_is_checked_payload_by_payload():
    profile = {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadIdentifier": "p", "PayloadUUID": "U",
               "PayloadContent": [{"PayloadType": "com.apple.vpn.managed", "PayloadVersion": 1,
                                   "PayloadIdentifier": "p.vpn", "PayloadUUID": "V", "VPNType": "IKEv2",
                                   "UserDefinedName": "Work", "Bogus": 1},
                                  {"PayloadType": "com.apple.no.such", "PayloadVersion": 1,
                                   "PayloadIdentifier": "p.x", "PayloadUUID": "W"}]}
    problems = check("payload", "Configuration", profile, platform="iOS", os_version="17.0", enrollment="adde")
    assert ("PayloadContent[0].Bogus", "unknown-key") in {(p.path, p.code) for p in problems}
    assert ("PayloadContent[1]", "unknown-name") in {(p.path, p.code) for p in problems}
    assert all(p.path.startswith("PayloadContent[") for p in problems), problems


def test_a_device_wide_vpn_is_not_a_user_enrollment_payload():
    """Issue 12 §1: User Enrollment allows only per-app VPN; the schema forbids com.apple.vpn.managed there."""
    vpn = {"PayloadType": "com.apple.vpn.managed", "PayloadVersion": 1, "PayloadIdentifier": "v", "PayloadUUID": "U",
           "VPNType": "IKEv2", "UserDefinedName": "Work"}
    assert supported("payload", "com.apple.vpn.managed", **IPHONE_ADDE) == []
    [problem] = supported("payload", "com.apple.vpn.managed", **IPHONE_UE)
    assert problem.code == "forbidden-under-user-enrollment"
    assert [p.code for p in check("payload", "com.apple.vpn.managed", vpn, **IPHONE_UE)] == [problem.code]
    assert supported("payload", "com.apple.vpn.managed.applayer", **IPHONE_UE) == []


def test_a_report_that_is_not_acknowledged_needs_no_results_but_a_command_uuid():
    assert check("response", "DeviceInformation", {"Status": "NotNow", "CommandUUID": "C", "EnrollmentID": "E"},
                 **IPHONE_UE) == []
    problems = check("response", "DeviceInformation", {"Status": "Acknowledged", "EnrollmentID": "E"}, **IPHONE_UE)
    assert {p.path for p in problems if p.code == "missing-required"} == {"CommandUUID", "QueryResponses"}
    assert check("response", None, {"Status": "Idle", "EnrollmentID": "E"}, **IPHONE_UE) == []
    error = {"Status": "Error", "CommandUUID": "C", "EnrollmentID": "E", "ErrorChain": [
        {"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain", "LocalizedDescription": "x"}]}
    assert check("response", "RestartDevice", error, **IPHONE_ADDE) == supported("response", "RestartDevice",
                                                                                 **IPHONE_ADDE)


def test_user_enrollment_identifies_by_enrollment_id_device_enrollment_by_udid():
    ue = {"MessageType": "TokenUpdate", "Topic": TOPIC, "UDID": "D", "Token": b"t", "PushMagic": "M"}
    assert {(p.path, p.code) for p in check("checkin", "TokenUpdate", ue, **IPHONE_UE)} == {
        ("UDID", "forbidden-under-user-enrollment"), ("EnrollmentID", "missing-required")}
    assert check("checkin", "TokenUpdate", ue, **IPHONE_ADDE) == []


def test_access_rights_limit_what_an_account_driven_device_enrollment_reports():
    """AccessRights without 32 (network information): the device answers no network query and sends no UnlockToken
    without 4; the MDM payload of the lab's ADDE profile grants all (8191)."""
    rights = dict(IPHONE_ADDE, access_rights=8191 - 32 - 4)
    answers = keys_for("response", "DeviceInformation", **rights)["QueryResponses"].keys
    assert "OSVersion" in answers and not {"ICCID", "BluetoothMAC", "WiFiMAC"} & set(answers)
    assert {"ICCID", "WiFiMAC"} <= set(keys_for("response", "DeviceInformation", **IPHONE_ADDE)["QueryResponses"].keys)
    message = {"MessageType": "TokenUpdate", "Topic": TOPIC, "UDID": "D", "Token": b"t", "PushMagic": "M",
               "UnlockToken": b"u"}
    assert [(p.path, p.code) for p in check("checkin", "TokenUpdate", message, **rights)] == [
        ("UnlockToken", "needs-access-right")]
    assert check("checkin", "TokenUpdate", message, **IPHONE_ADDE) == []


def test_documents_of_the_enrollment_flow():
    """MachineInfo, the device's enrollment request body: device identifiers for Device Enrollment only, OS_VERSION
    from iOS 17. The Enrollment SSO document is JSON: its profile travels as base64."""
    body = {"PRODUCT": "iPhone17,2", "VERSION": "21E236", "OS_VERSION": "17.4", "LANGUAGE": "en-US"}
    assert check("document", "MachineInfo", body, **IPHONE_UE) == []
    assert {(p.path, p.code) for p in check("document", "MachineInfo", body, **IPHONE_ADDE)} == {
        ("UDID", "missing-required"), ("SERIAL", "missing-required")}
    assert [(p.path, p.code) for p in check("document", "MachineInfo", {**body, "UDID": "D"}, **IPHONE_UE)] == [
        ("UDID", "forbidden-under-user-enrollment")]
    assert [p.code for p in check("document", "MachineInfo", {k: v for k, v in body.items() if k != "OS_VERSION"},
                                  **IPHONE_UE)] == ["missing-required"]
    document = {"iTunesStoreID": 1, "ConfigurationProfile": "cHJvZmlsZQ=="}
    assert check("document", "EnrollmentSSODocument", document, **IPHONE_UE) == []
    broken = check("document", "EnrollmentSSODocument", {**document, "ConfigurationProfile": "not base64!"},
                   **IPHONE_UE)
    assert [(p.path, p.code) for p in broken] == [("ConfigurationProfile", "wrong-type")]
    assert [p.code for p in supported("document", "EnrollmentSSODocument", **MAC_UE)] == ["not-on-platform"]


def test_bad_contexts_are_refused():
    for bad in (dict(platform="Android"), dict(enrollment="byod-ish"), dict(channel="both")):
        with pytest.raises(ValueError):
            check("checkin", "Authenticate", {}, **{**IPHONE_UE, **bad})
    assert schema.Context("iOS", "17", "BYOD").enrollment == "user"
    assert schema.Context("macOS", "14", "ADDE").enrollment == "adde"


def test_a_message_that_is_not_a_dictionary_is_one_problem():
    assert [p.code for p in check("checkin", "Authenticate", ["x"], **IPHONE_UE)] == ["wrong-type"]


# -- keys_for ------------------------------------------------------------------------------------------------------
def test_profile_list_items_require_payload_uuid_from_ios_17_and_macos_14():
    def item_keys(**context):
        content = keys_for("response", "ProfileList", **context)["ProfileList"].item.keys["PayloadContent"]
        return content.item.keys

    assert item_keys(platform="iOS", os_version="17.0", enrollment="user")["PayloadUUID"].required
    assert "PayloadUUID" not in item_keys(platform="iOS", os_version="16.7", enrollment="user")
    assert item_keys(platform="macOS", os_version="14.0", enrollment="user")["PayloadUUID"].required
    assert "PayloadUUID" not in item_keys(platform="macOS", os_version="13.6", enrollment="user")
    top = keys_for("response", "ProfileList", platform="iOS", os_version="18.0", enrollment="user")
    assert {"PayloadUUID", "PayloadIdentifier", "Source"} <= set(top["ProfileList"].item.keys)
    assert "IsManaged" not in keys_for("response", "ProfileList", **MAC_UE)["ProfileList"].item.keys


def test_query_responses_follow_the_queries_a_user_enrollment_may_ask():
    ue = keys_for("response", "DeviceInformation", **IPHONE_UE)["QueryResponses"].keys
    de = keys_for("response", "DeviceInformation", **IPHONE_ADDE)["QueryResponses"].keys
    assert {"UDID", "SerialNumber", "IMEI", "MEID"} <= set(de) and not {"UDID", "SerialNumber"} & set(ue)
    assert {"OSVersion", "BuildVersion", "ProductName", "DeviceName"} <= set(ue)
    queries = keys_for("command", "DeviceInformation", **IPHONE_UE)["Queries"].item.choices
    assert set(queries) <= set(ue) | {"DevicePropertiesAttestation"} and "UDID" not in queries
    mac = keys_for("response", "DeviceInformation", **MAC_UE)["QueryResponses"].keys
    assert "IMEI" not in mac and "OSVersion" in mac


def test_security_info_keys_per_platform_and_enrollment():
    ios = keys_for("response", "SecurityInfo", **IPHONE_UE)["SecurityInfo"].keys
    assert "PasscodePresent" not in ios and "HardwareEncryptionCaps" in ios
    assert "PasscodePresent" in keys_for("response", "SecurityInfo", **IPHONE_ADDE)["SecurityInfo"].keys
    mac = keys_for("response", "SecurityInfo", **MAC_UE)["SecurityInfo"].keys
    assert "HardwareEncryptionCaps" not in mac and "FDE_Enabled" in mac and "FDE_HasPersonalRecoveryKey" not in mac
    assert "IsUserEnrollment" in mac["ManagementStatus"].keys
    assert "EnrolledViaDEP" not in ios.get("ManagementStatus").keys


def test_channels_and_enrollment_identify_the_sender():
    device = keys_for("checkin", "TokenUpdate", **MAC_UE)
    user = keys_for("checkin", "TokenUpdate", **MAC_UE, channel="user")
    assert device["EnrollmentID"].required and "UDID" not in device and "EnrollmentUserID" not in device
    assert user["EnrollmentUserID"].required and user["NotOnConsole"].required
    assert keys_for("checkin", "Authenticate", **MAC_UE, channel="user") == {}
    [problem] = supported("checkin", "Authenticate", **MAC_UE, channel="user")
    assert problem.code == "not-on-channel"
    ade = keys_for("checkin", "TokenUpdate", platform="iOS", os_version="17.0", enrollment="adde")
    assert ade["UDID"].required and "EnrollmentID" not in ade


def test_commands_a_user_enrollment_may_not_run():
    forbidden = {n for n in schema.names("command") if supported("command", n, **IPHONE_UE)}
    assert {"EraseDevice", "RestartDevice", "DeviceLocation", "ClearPasscode"} <= forbidden
    assert not {"DeviceInformation", "SecurityInfo", "ProfileList", "InstallProfile", "RemoveProfile",
                "InstallApplication", "CertificateList"} & forbidden


def test_recursive_structures_resolve():
    pages = keys_for("payload", "com.apple.homescreenlayout", platform="iOS", os_version="17.0",
                     enrollment="ade")["Pages"]
    deeper = pages.item.item.keys["Pages"].item.item.keys["Pages"]
    assert deeper.type == "array" and deeper.item.item.keys["Type"].required
    layout = {"PayloadType": "com.apple.homescreenlayout", "PayloadVersion": 1, "PayloadIdentifier": "h",
              "PayloadUUID": "U", "Pages": [[{"Type": "Folder", "DisplayName": "Work",
                                              "Pages": [[{"Type": "Application", "Bundlid": "x"}]]}]]}
    problems = check("payload", "com.apple.homescreenlayout", layout, platform="iOS", os_version="17.0",
                     enrollment="ade")
    assert ("Pages[0][0].Pages[0][0].Bundlid", "unknown-key") in {(p.path, p.code) for p in problems}


def test_keys_for_an_unknown_name_raises():
    with pytest.raises(schema.UnknownName):
        keys_for("command", "NoSuchCommand", **IPHONE_UE)
