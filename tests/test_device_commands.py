"""lab.device.commands: what the device answers to each command, by platform and enrollment mode (Apple's schema,
mdm/commands/*.yaml): forbidden commands are refused with MCMDMErrorDomain 12021, never run."""
from __future__ import annotations

import plistlib

import pytest

from lab import cms
from lab.device import Device, Network
from lab.device.commands import FORBIDDEN_UE, RULES, execute, refusal
from lab.device.device import Enrollment
from lab.device.separation import Profile
from lab.pki import CertificateAuthority

PROFILE_ID = "test.mdmlab.mdm.lab.test.enrollment"
PLATFORM = {"iPhone": "iOS", "iPad": "iPadOS", "Mac": "macOS", "Vision": "visionOS"}


@pytest.fixture(scope="module")
def ca(tmp_path_factory):
    return CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"])


@pytest.fixture
def make(ca):
    made = []

    def build(family="iPhone", mode="BYOD", os_version="", **kwargs) -> Device:
        device = Device(Network("127.0.0.1", 1, str(ca.cert_path)), model_family=family, os_version=os_version,
                        **kwargs)
        eid = device.udid if mode == "ADDE" else "ENROLLMENT-0001"
        device.enrollment = Enrollment(eid, "eliza@betterbag.test", mode, "https://mdm.lab.test/mdm/server",
                                       "https://mdm.lab.test/mdm/checkin", "com.apple.mgmt.External.x", "CN=x",
                                       profile_identifier=PROFILE_ID)
        device.contents.create_volume(eid)
        device.contents.install_profile(Profile(PROFILE_ID, "U1", "Enrollment", "enrollment", ("com.apple.mdm",)))
        device.contents.add_work_account("BetterBag", "eliza@betterbag.test")
        made.append(device)
        return device

    yield build
    for device in made:
        device.close()


def run(device, request_type, **keys):
    return device.run_command({"CommandUUID": "C1", "Command": {"RequestType": request_type, **keys}})


def refused_with_12021(outcome, request_type):
    assert outcome.status == "Error", outcome
    [chain] = outcome.response["ErrorChain"]
    assert chain == {"ErrorCode": 12021, "ErrorDomain": "MCMDMErrorDomain",
                     "LocalizedDescription": f"“{request_type}” is not a valid request type.",
                     "USEnglishDescription": f"“{request_type}” is not a valid request type."}
    return True


FORBIDDEN_CASES = [(family, rt) for family, os in PLATFORM.items() for rt in FORBIDDEN_UE[os]]


def test_the_forbidden_lists_follow_apples_schema():
    ios = {"EraseDevice", "RestartDevice", "ShutDownDevice", "ClearPasscode", "Restrictions", "EnableLostMode",
           "DeviceLocation", "ScheduleOSUpdate", "ActivationLockBypassCode", "UserList", "DeviceConfigured",
           "InviteToProgram"}
    assert set(FORBIDDEN_UE["iOS"]) == ios
    assert set(FORBIDDEN_UE["macOS"]) >= {"DeviceLock", "InstalledApplicationList", "RemoveApplication",
                                          "EraseDevice", "RestartDevice", "UserList"}
    assert "DeviceLock" not in FORBIDDEN_UE["iOS"] and "InstalledApplicationList" not in FORBIDDEN_UE["iOS"]


@pytest.mark.parametrize("family, request_type", FORBIDDEN_CASES)
def test_user_enrollment_refuses_each_forbidden_command_and_runs_nothing(make, family, request_type):
    device = make(family)
    before = (dict(device.contents.apps), dict(device.contents.profiles), device.locked)
    outcome = run(device, request_type, Identifier="test.mdmlab.chat", UnlockToken=b"x", Message="m")
    assert refused_with_12021(outcome, request_type)
    assert outcome.after is None
    assert (dict(device.contents.apps), dict(device.contents.profiles), device.locked) == before
    assert "User Enrollment forbids" in outcome.explanation or "not account-driven" in outcome.explanation \
        or "has no command" in outcome.explanation


@pytest.mark.parametrize("request_type", ["EraseDevice", "ClearPasscode", "Restrictions", "DeviceLock",
                                          "InstalledApplicationList"])
def test_device_enrollment_runs_the_wider_set(make, request_type):
    outcome = run(make("iPhone", "ADDE", "17.4"), request_type, UnlockToken=b"x")
    assert outcome.status == "Acknowledged", outcome


@pytest.mark.parametrize("request_type", ["RestartDevice", "ShutDownDevice", "EnableLostMode", "DeviceLocation",
                                          "ScheduleOSUpdate", "ActivationLockBypassCode", "DeviceConfigured",
                                          "InviteToProgram", "UserList"])
def test_an_iphone_in_device_enrollment_is_unsupervised(make, request_type):
    outcome = run(make("iPhone", "ADDE", "17.4"), request_type)
    assert refused_with_12021(outcome, request_type)


@pytest.mark.parametrize("request_type", ["RestartDevice", "ShutDownDevice", "EraseDevice", "DeviceLock",
                                          "RemoveApplication", "InstalledApplicationList"])
def test_a_mac_in_device_enrollment_runs_what_user_enrollment_forbids(make, request_type):
    mac = make("Mac", "ADDE", "15.2")
    mac.contents.install_managed_app("test.mdmlab.work-notes", "Work Notes", 1_660_000_002)
    outcome = run(mac, request_type, Identifier="test.mdmlab.work-notes")
    assert outcome.status == "Acknowledged", outcome


def test_a_mac_in_device_enrollment_is_unsupervised_for_os_updates(make):
    # Apple's schema: ScheduleOSUpdate is supervised-only on macOS too (it ran before the schema facts were used)
    assert refused_with_12021(run(make("Mac", "ADDE", "15.2"), "ScheduleOSUpdate", Updates=[]), "ScheduleOSUpdate")


def test_unknown_request_types_are_invalid_everywhere(make):
    assert refused_with_12021(run(make(), "Shout"), "Shout")
    assert refusal(make("Mac").command_context(), "EnableLostMode") == "macOS has no command EnableLostMode"


@pytest.mark.parametrize("command", [{}, {"RequestType": 7}])
def test_commands_without_a_request_type_are_format_errors(make, command):
    assert execute(make().command_context(), {"CommandUUID": "C", "Command": command}).status == "CommandFormatError"


@pytest.mark.parametrize("request_type", ["DeviceInformation", "RemoveProfile", "RemoveApplication",
                                          "InstallProfile", "InstallApplication"])
def test_missing_required_keys_are_format_errors(make, request_type):
    assert run(make(), request_type).status == "CommandFormatError"


def test_device_information_hides_device_identifiers_in_user_enrollment(make):
    queries = ["UDID", "SerialNumber", "OSVersion", "ModelName", "IMEI", "IsCloudBackupEnabled"]
    byod = run(make("iPhone", "BYOD", "26.1"), "DeviceInformation", Queries=queries)
    assert set(byod.response["QueryResponses"]) == {"OSVersion", "ModelName"}
    adde = make("iPhone", "ADDE", "17.4")
    answers = run(adde, "DeviceInformation", Queries=queries).response["QueryResponses"]
    assert answers["UDID"] == adde.udid and answers["SerialNumber"] == adde.serial


def test_profile_list_in_user_enrollment_lists_managed_profiles_only(make):
    device = make()
    device.contents.install_profile(Profile("me.personal.vpn", "P1", "My VPN", "person", ("com.apple.vpn.managed",)))
    listed = {p["PayloadIdentifier"] for p in run(device, "ProfileList").response["ProfileList"]}
    assert listed == {PROFILE_ID}
    adde = make("Mac", "ADDE", "15.2")
    adde.contents.install_profile(Profile("me.personal.vpn", "P1", "My VPN", "person", ("com.apple.vpn.managed",)))
    assert len(run(adde, "ProfileList").response["ProfileList"]) == 2


def test_install_and_remove_profile_bring_and_take_work_data(make, ca):
    device = make("iPhone", "BYOD", "26.1")
    signer = ca.issue_profile_signer("BetterBag")
    profile = {"PayloadType": "Configuration", "PayloadIdentifier": "org.mail", "PayloadUUID": "P-1",
               "PayloadContent": [{"PayloadType": "com.apple.mail.managed", "PayloadIdentifier": "org.mail.p"}]}
    outcome = run(device, "InstallProfile", Payload=cms.sign(plistlib.dumps(profile), signer.cert, signer.key))
    assert outcome.status == "Acknowledged" and "data-separated volume" in outcome.explanation
    assert "org.mail/mail" in device.contents.vault.ids("mail")
    assert run(device, "RemoveProfile", Identifier="org.mail").status == "Acknowledged"
    assert "org.mail/mail" not in device.contents.vault.ids("mail") and "org.mail" not in device.contents.profiles
    missing = run(device, "RemoveProfile", Identifier="org.mail")
    assert missing.status == "Error" and missing.response["ErrorChain"][0]["ErrorCode"] == 12075


def test_install_profile_refuses_a_second_mdm_payload_and_garbage(make):
    device = make()
    second = plistlib.dumps({"PayloadType": "Configuration", "PayloadIdentifier": "x",
                             "PayloadContent": [{"PayloadType": "com.apple.mdm"}]})
    assert run(device, "InstallProfile", Payload=second).response["ErrorChain"][0]["ErrorCode"] == 12001
    garbage = run(device, "InstallProfile", Payload=b"not a profile")
    assert garbage.response["ErrorChain"][0]["ErrorDomain"] == "MCProfileErrorDomain"


def test_removing_the_enrollment_profile_unenrolls_after_reporting(make):
    outcome = run(make(), "RemoveProfile", Identifier=PROFILE_ID)
    assert (outcome.status, outcome.after) == ("Acknowledged", "unenroll")


def test_an_app_installed_before_enrollment_cannot_become_managed(make):
    device = make()  # the person installed test.mdmlab.chat
    for keys, reason in (({}, "AppAlreadyInstalled"), ({"ChangeManagementState": "Managed"},
                                                       "ManagementChangeNotSupported")):
        outcome = run(device, "InstallApplication", Identifier="test.mdmlab.chat", **keys)
        assert outcome.status == "Error" and outcome.response["RejectionReason"] == reason
        assert outcome.response["ErrorChain"][0]["ErrorCode"] == 12025
    assert device.contents.apps["test.mdmlab.chat"].managed is False


def test_user_enrollment_installs_app_store_apps_with_a_license_only(make):
    device = make()
    refused = run(device, "InstallApplication", iTunesStoreID=1_660_000_002)
    assert refused.response["RejectionReason"] == "PurchaseMethodNotSupported"
    ok = run(device, "InstallApplication", iTunesStoreID=1_660_000_002, Options={"PurchaseMethod": 1})
    assert ok.status == "Acknowledged" and ok.response == {"Identifier": "test.mdmlab.work-notes", "State": "Managed"}
    assert device.contents.vault.open("managed-apps", "test.mdmlab.work-notes").startswith(b"Work Notes")
    unknown = run(device, "InstallApplication", iTunesStoreID=42, Options={"PurchaseMethod": 1})
    assert unknown.response["ErrorChain"][0]["ErrorCode"] == 12023


def test_managed_and_installed_application_lists(make):
    device = make()
    run(device, "InstallApplication", iTunesStoreID=1_660_000_002, Options={"PurchaseMethod": 1})
    managed = run(device, "ManagedApplicationList").response["ManagedApplicationList"]
    assert list(managed) == ["test.mdmlab.work-notes"] and managed["test.mdmlab.work-notes"]["Status"] == "Managed"
    installed = run(device, "InstalledApplicationList").response["InstalledApplicationList"]
    assert [a["Identifier"] for a in installed] == ["test.mdmlab.work-notes"]  # User Enrollment: managed only
    adde = make("Mac", "ADDE", "15.2")
    assert {a["Identifier"] for a in run(adde, "InstalledApplicationList").response["InstalledApplicationList"]} \
        == {"test.mdmlab.chat"}
    assert run(device, "RemoveApplication", Identifier="test.mdmlab.chat").response["ErrorChain"][0][
        "ErrorCode"] == 12029
    assert run(device, "RemoveApplication", Identifier="test.mdmlab.work-notes").status == "Acknowledged"
    assert "test.mdmlab.work-notes" not in device.contents.vault.ids("managed-apps")


def test_a_locked_device_answers_not_now_except_to_what_never_waits(make):
    device = make("iPhone", "BYOD", "26.1")
    assert run(device, "DeviceLock").status == "Acknowledged" and device.locked
    assert run(device, "InstallApplication", iTunesStoreID=1_660_000_002,
               Options={"PurchaseMethod": 1}).status == "NotNow"
    assert run(device, "ProfileList").status == "Acknowledged"
    assert run(device, "EraseDevice").status == "Error"  # forbidden beats NotNow
    device.unlock()
    assert run(device, "ManagedApplicationList").status == "Acknowledged"


def test_every_rule_that_can_run_somewhere_has_a_handler():
    from lab.device.commands import _HANDLERS

    runnable = {rt for rt, r in RULES.items() if not r.never_account_driven and set(r.platforms) - set(r.supervised)}
    assert runnable <= set(_HANDLERS)


def _vpn_profile(kind="com.apple.vpn.managed") -> bytes:
    return plistlib.dumps({"PayloadType": "Configuration", "PayloadIdentifier": "org.vpn", "PayloadUUID": "V-1",
                           "PayloadContent": [{"PayloadType": kind, "PayloadIdentifier": "org.vpn.p",
                                               "PayloadUUID": "V-2", "PayloadDisplayName": "Work VPN"}]})


@pytest.mark.parametrize("family", ["iPhone", "Mac"])
def test_user_enrollment_refuses_a_device_wide_vpn_and_installs_nothing(make, family):
    device = make(family)
    outcome = run(device, "InstallProfile", Payload=_vpn_profile())
    assert outcome.status == "Error" and "forbidden under User Enrollment" in outcome.explanation
    assert [(e["ErrorDomain"], e["ErrorCode"]) for e in outcome.response["ErrorChain"]] == [
        ("MCInstallationErrorDomain", 4001), ("MCInstallationErrorDomain", 4029)]
    assert "Work VPN" in outcome.response["ErrorChain"][1]["LocalizedDescription"]
    assert "org.vpn" not in device.contents.profiles


def test_per_app_vpn_under_user_enrollment_and_a_device_vpn_under_device_enrollment_install(make):
    assert run(make(), "InstallProfile", Payload=_vpn_profile("com.apple.vpn.managed.applayer")).status == \
        "Acknowledged"
    assert run(make("iPhone", "ADDE", "17.4"), "InstallProfile", Payload=_vpn_profile()).status == "Acknowledged"


@pytest.mark.parametrize("family, os_version, mode, request_type", [
    ("Vision", "1.1", "BYOD", "DeviceLock"),  # visionOS has DeviceLock from 2.0 on
    ("iPhone", "17.4", "ADDE", "ScheduleOSUpdate"),
])
def test_commands_apples_schema_does_not_offer_this_device_are_refused(make, family, os_version, mode, request_type):
    assert refused_with_12021(run(make(family, mode, os_version), request_type, Updates=[]), request_type)
