"""Commands the device receives on ServerURL, routed by RequestType, and what it answers (PROTOCOL.md 3.4, 4;
dev:sending-mdm-commands-to-a-device; Apple's schema, github.com/apple/device-management mdm/commands/*.yaml).

Which commands exist where comes from the schema's ``supportedOS``: ``userenrollment: {mode: forbidden}`` per OS,
``supervised: true`` (an account-driven Device Enrollment of an iPhone or iPad is unsupervised), ``requiresdep``.
A command the enrollment may not run is refused, never silently run: ``Status`` ``Error`` with the ErrorChain
real devices send, MCMDMErrorDomain 12021 "Invalid request type" (Apple's MDM Protocol Reference, "Error Codes >
MCMDMErrorDomain": 12021 = Invalid request type; seen from devices as “RestartDevice” is not a valid request type.,
github.com/micromdm/micromdm/issues/970, and for EnableLostMode, github.com/fleetdm/fleet/issues/51653).
"""
from __future__ import annotations

import plistlib
import uuid
from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization

from lab import cms
from lab.device import messages, renewal
from lab.device import payloads as effects_of
from lab.device.contents import Contents
from lab.device.model import Client
from lab.device.rules import FORBIDDEN_UE, RULES, Rule, refusal  # noqa: F401 (re-exported)
from lab.device.separation import APP_STORE, STORE_IDS, Profile

ERROR_DOMAIN = "MCMDMErrorDomain"
INVALID_REQUEST_TYPE = 12021  # "Invalid request type"
PROFILE_NOT_MANAGED = 12013  # "Profile not managed"
APP_NOT_VALIDATED = 12023  # "The iTunes Store ID of the application could not be validated"
APP_ALREADY_INSTALLED = 12025  # "App already installed"
APP_NOT_MANAGED = 12029  # "App not managed"
APP_CANNOT_BE_PURCHASED = 12035  # "App cannot be purchased"
PROFILE_NOT_INSTALLED = 12075  # "Specified profile not installed"
MDM_UPDATE_REFUSED = 12004  # Apple's table: "Cannot replace MDM"; devices add what differs (renewal.py)
PROFILE_ERROR_DOMAIN, MALFORMED_PROFILE = "MCProfileErrorDomain", 1000
# A profile whose payload User Enrollment does not allow: MCInstallationErrorDomain 4001 "Profile Installation
# Failed" over 4029, the code devices answer for such a payload (seen for a device-wide VPN sent to an account-driven
# User Enrollment: github.com/pl4nty/intune-change-tracking/issues/96); the second description is the lab's words.
INSTALLATION_ERROR_DOMAIN, PROFILE_FAILED, PAYLOAD_NOT_ALLOWED = "MCInstallationErrorDomain", 4001, 4029

# Commands an iOS device never answers NotNow to (dev:handling-notnow-status-responses).
NEVER_NOT_NOW = ("DeviceInformation", "ProfileList", "DeviceLock", "EraseDevice", "ClearPasscode",
                 "InstalledApplicationList", "Restrictions")
# DeviceInformation queries a User Enrollment never answers (schema: userenrollment forbidden per query key).
UE_HIDDEN_QUERIES = ("UDID", "SerialNumber", "IMEI", "MEID", "ModemFirmwareVersion", "IsActivationLockEnabled",
                     "IsCloudBackupEnabled", "LastCloudBackupDate", "AwaitingConfiguration",
                     "iTunesStoreAccountIsActive", "iTunesStoreAccountHash", "IsDoNotDisturbInEffect",
                     "ProvisioningUDID")


def error(code: int, text: str, domain: str = ERROR_DOMAIN) -> dict:
    return {"ErrorCode": code, "ErrorDomain": domain, "LocalizedDescription": text, "USEnglishDescription": text}


@dataclass(frozen=True)
class Facts:
    """What the device knows about itself and its enrollment when a command arrives."""
    client: Client
    udid: str
    serial: str
    name: str  # DeviceName: what the person called the device
    mode: str  # EnrollmentMode: BYOD (User Enrollment) or ADDE (Device Enrollment)
    account: str  # the Managed Apple Account of the enrollment
    profile_identifier: str
    identity: x509.Certificate | None = None
    locked: bool = False
    mdm_payload: dict | None = None  # the installed com.apple.mdm payload

    @property
    def user_enrollment(self) -> bool:
        return self.mode == "BYOD"


@dataclass(frozen=True)
class CommandContext:
    """What a command may read (facts) and change (contents)."""
    contents: Contents
    facts: Facts


@dataclass
class Outcome:
    status: str  # Acknowledged, Error, CommandFormatError, NotNow
    response: dict
    explanation: str
    after: str | None = None  # "unenroll" or "erase": done once the result is reported
    lock: bool = False  # the device locks (DeviceLock, restart: until the first unlock)
    renewal: renewal.Renewal | None = None  # the enrollment profile renewed: the device applies it


def _error(explanation: str, *chain: dict, **response) -> Outcome:
    return Outcome("Error", {**response, "ErrorChain": list(chain)}, explanation)


def execute(context: CommandContext, envelope: dict) -> Outcome:
    command = envelope.get("Command")
    if not isinstance(command, dict) or not isinstance(command.get("RequestType"), str):
        return Outcome("CommandFormatError", {}, "the command has no Command dictionary with a RequestType")
    request_type = command["RequestType"]
    why = refusal(context, request_type)
    if why is not None:
        return _error(f"refused: {why}",
                      error(INVALID_REQUEST_TYPE, f"“{request_type}” is not a valid request type."))
    if context.facts.locked and request_type not in NEVER_NOT_NOW:
        return Outcome("NotNow", {}, f"{request_type} waits: the device is locked (unlock it, then sync again)")
    return _HANDLERS[request_type](context, command)


def _missing(command: dict, key: str, kind) -> Outcome | None:
    if not isinstance(command.get(key), kind):
        return Outcome("CommandFormatError", {}, f"{command['RequestType']} needs {key} ({kind.__name__})")
    return None


# -- queries -------------------------------------------------------------------------------------------------------
def _device_information(context, command):
    bad = _missing(command, "Queries", list)
    if bad:
        return bad
    device, client = context.facts, context.facts.client
    facts = {"DeviceName": device.name, "OSVersion": client.os_version,
             "BuildVersion": client.build, "ModelName": client.model_family, "Model": client.product,
             "ProductName": client.product, "UDID": device.udid, "SerialNumber": device.serial,
             "DeviceCapacity": 128.0, "AvailableDeviceCapacity": 61.5, "IsSupervised": False,
             "IsMultiUser": False, "IsCloudBackupEnabled": True, "IsActivationLockEnabled": False,
             "EASDeviceIdentifier": device.serial[::-1]}
    hidden = UE_HIDDEN_QUERIES if device.user_enrollment else ()
    answers = {q: facts[q] for q in command["Queries"] if q in facts and q not in hidden}
    left_out = [q for q in command["Queries"] if q in hidden]
    note = f"; a User Enrollment leaves out {', '.join(left_out)}" if left_out else ""
    return Outcome("Acknowledged", {"QueryResponses": answers}, f"answered {len(answers)} queries{note}")


def _security_info(context, command):
    """What the device knows about its security; its report carries what the schema allows here."""
    info = {"HardwareEncryptionCaps": 3, "PasscodePresent": True, "PasscodeCompliant": True,
            "PasscodeCompliantWithProfiles": True, "PasscodeLockGracePeriodEnforced": 0,
            "FDE_Enabled": True, "SystemIntegrityProtectionEnabled": True, "AuthenticatedRootVolumeEnabled": True,
            "FirewallSettings": {"FirewallEnabled": True, "BlockAllIncoming": False, "StealthMode": False},
            "SecureBoot": {"SecureBootLevel": "full", "ExternalBootLevel": "disallowed"},
            "ManagementStatus": {"EnrolledViaDEP": False, "UserApprovedEnrollment": True,
                                 "IsUserEnrollment": context.facts.user_enrollment,
                                 "IsActivationLockManageable": False}}
    return Outcome("Acknowledged", {"SecurityInfo": info}, "security information")


def _certificate_list(context, command):
    items = []
    if context.facts.identity is not None:
        cert = context.facts.identity
        items.append({"CommonName": cert.subject.rfc4514_string(), "IsIdentity": True,
                      "Data": cert.public_bytes(serialization.Encoding.DER)})
    return Outcome("Acknowledged", {"CertificateList": items}, f"{len(items)} managed certificate(s)")


def _profile_list(context, command):
    user_enrollment = context.facts.user_enrollment
    listed = [p for p in context.contents.profiles.values() if p.managed or not user_enrollment]
    items = [{"PayloadIdentifier": p.identifier, "PayloadUUID": p.uuid, "PayloadVersion": 1,
              "PayloadDisplayName": p.display_name, "PayloadOrganization": p.organization, "IsManaged": p.managed,
              "PayloadContent": [{"PayloadType": t, "PayloadVersion": 1, "PayloadIdentifier": f"{p.identifier}.{i}",
                                  "PayloadUUID": _payload_uuid(p, i)} for i, t in enumerate(p.payload_types)]}
             for p in listed]
    note = " (a User Enrollment lists managed profiles only)" if user_enrollment else ""
    return Outcome("Acknowledged", {"ProfileList": items}, f"{len(items)} profile(s){note}")


def _payload_uuid(profile: Profile, index: int) -> str:
    return str(uuid.uuid5(uuid.NAMESPACE_URL, f"{profile.uuid}/{profile.identifier}/{index}")).upper()


def _app_items(apps) -> list[dict]:
    return [{"Identifier": a.bundle_id, "Name": a.name, "Version": a.version, "ShortVersion": a.version,
             "Installing": False, **({"ExternalVersionIdentifier": a.store_id} if a.store_id else {})} for a in apps]


def _installed_application_list(context, command):
    apps = list(context.contents.apps.values())
    if context.facts.user_enrollment or command.get("ManagedAppsOnly"):
        apps = [a for a in apps if a.managed]  # User Enrollment: managed apps only (PROTOCOL.md 3.4)
    wanted = command.get("Identifiers")
    if isinstance(wanted, list):
        apps = [a for a in apps if a.bundle_id in wanted]
    return Outcome("Acknowledged", {"InstalledApplicationList": _app_items(apps)}, f"{len(apps)} app(s)")


def _managed_application_list(context, command):
    listed = {a.bundle_id: {"Status": "Managed", "ManagementFlags": a.management_flags, "UnusedRedemptionCode": "",
                            "HasConfiguration": False,
                            "HasFeedback": False, "IsValidated": True, "ExternalVersionIdentifier": a.store_id or 0}
              for a in context.contents.managed_apps()}
    return Outcome("Acknowledged", {"ManagedApplicationList": listed}, f"{len(listed)} managed app(s)")


# -- profiles --------------------------------------------------------------------------------------------------------
def _install_profile(context, command):
    bad = _missing(command, "Payload", bytes)
    if bad:
        return bad
    body, signed_by = command["Payload"], None
    try:
        if cms.looks_like_cms(body):
            signed = cms.parse(body)
            body, signed_by = signed.content, signed.signer.subject.rfc4514_string()
        profile = plistlib.loads(body)
    except Exception:
        return _error("the profile is not a (signed) property list",
                      error(MALFORMED_PROFILE, "The profile is malformed.", PROFILE_ERROR_DOMAIN))
    payloads = profile.get("PayloadContent") if isinstance(profile, dict) else None
    if profile.get("PayloadType") != "Configuration" or not isinstance(payloads, list) \
            or not isinstance(profile.get("PayloadIdentifier"), str):
        return _error("not a Configuration profile with PayloadIdentifier and PayloadContent",
                      error(MALFORMED_PROFILE, "The profile is malformed.", PROFILE_ERROR_DOMAIN))
    types = tuple(p.get("PayloadType", "?") for p in payloads if isinstance(p, dict))
    barred = _barred_by_enrollment(context, payloads)
    if barred:
        return _error(f"refused: {barred['reason']}", error(PROFILE_FAILED, "Profile Installation Failed",
                                                             INSTALLATION_ERROR_DOMAIN),
                      error(PAYLOAD_NOT_ALLOWED, f"The payload “{barred['name']}” is not allowed with User "
                                                 "Enrollment.", INSTALLATION_ERROR_DOMAIN))
    identifier = profile["PayloadIdentifier"]
    if "com.apple.mdm" in types:
        if identifier != context.facts.profile_identifier:
            return _error("a second MDM payload cannot be installed", error(12001, "Multiple MDM instances"))
        renewed = renewal.prepare(context.facts.mdm_payload or {}, profile, payloads, "enrollment")
        if isinstance(renewed, str):
            return _error(f"the enrollment profile update is refused: {renewed}", error(MDM_UPDATE_REFUSED, renewed))
        return Outcome("Acknowledged", {}, f"renewed the enrollment profile {identifier}: identity "
                       f"{renewed.cert.subject.rfc4514_string()}", renewal=renewed)
    if identifier in context.contents.profiles and not context.contents.profiles[identifier].managed:
        return _error(f"{identifier} was installed by the person; the MDM cannot replace it",
                      error(PROFILE_NOT_MANAGED, "Profile not managed"))
    context.contents.install_profile(Profile(identifier, str(profile.get("PayloadUUID") or uuid.uuid4()).upper(),
                                            str(profile.get("PayloadDisplayName", identifier)), "mdm", types,
                                            str(profile.get("PayloadOrganization", ""))))
    effects = effects_of.apply(context.contents, identifier, types, context.facts.account)
    return Outcome("Acknowledged", {}, f"installed {identifier} ({', '.join(types)})"
                   + (f", signed by {signed_by}" if signed_by else ", unsigned") + (f"; {effects}" if effects else ""))


def _barred_by_enrollment(context, payloads: list) -> dict | None:
    """The first payload User Enrollment does not allow here (Apple's schema), or None."""
    client, mode = context.facts.client, context.facts.mode
    for payload in payloads:
        kind = payload.get("PayloadType") if isinstance(payload, dict) else None
        if not isinstance(kind, str):
            continue
        problem = messages.refusal("payload", kind, client.os_name, client.os_version, mode)
        if problem is not None and problem.code == "forbidden-under-user-enrollment":
            return {"name": str(payload.get("PayloadDisplayName") or kind), "reason": problem.message}
    return None


def _remove_profile(context, command):
    bad = _missing(command, "Identifier", str)
    if bad:
        return bad
    identifier = command["Identifier"]
    if identifier == context.facts.profile_identifier:
        return Outcome("Acknowledged", {}, "the MDM removes the enrollment profile: the device unenrolls",
                       after="unenroll")
    profile = context.contents.profiles.get(identifier)
    if profile is None:
        return _error(f"no profile {identifier}", error(PROFILE_NOT_INSTALLED, "Specified profile not installed"))
    if not profile.managed:
        return _error(f"{identifier} was installed by the person, not by this MDM",
                      error(PROFILE_NOT_MANAGED, "Profile not managed"))
    context.contents.profiles.pop(identifier)
    effects = effects_of.remove(context.contents, identifier, profile.payload_types)
    return Outcome("Acknowledged", {}, f"removed {identifier}" + (f"; {effects}" if effects else ""))


# -- apps --------------------------------------------------------------------------------------------------------------
def _install_application(context, command):
    store_id, bundle = command.get("iTunesStoreID"), command.get("Identifier")
    if store_id is None and bundle is None and command.get("ManifestURL") is None:
        return Outcome("CommandFormatError", {}, "InstallApplication needs iTunesStoreID, Identifier or ManifestURL")
    if store_id is not None:
        if store_id not in APP_STORE:
            return _error(f"iTunesStoreID {store_id} is not in the App Store",
                          error(APP_NOT_VALIDATED, "The iTunes Store ID of the application could not be validated."),
                          RejectionReason="CouldNotVerifyAppID")
        bundle, name = APP_STORE[store_id]
        options = command.get("Options") if isinstance(command.get("Options"), dict) else {}
        mobile = context.facts.client.os_name != "macOS"
        if context.facts.user_enrollment and mobile and options.get("PurchaseMethod") != 1:
            # Schema: "Set [PurchaseMethod] to 1 ... to install an iOS app with user enrollment."
            return _error("a User Enrollment installs App Store apps only with a VPP license (PurchaseMethod 1)",
                          error(APP_CANNOT_BE_PURCHASED, "App cannot be purchased"),
                          RejectionReason="PurchaseMethodNotSupported")
    else:
        bundle = bundle or str(command["ManifestURL"]).rstrip("/").rsplit("/", 1)[-1].removesuffix(".plist")
        store_id, name = STORE_IDS.get(bundle), bundle.rsplit(".", 1)[-1].title()
    existing = context.contents.apps.get(bundle)
    if existing is not None and not existing.managed:
        asked = command.get("ChangeManagementState") == "Managed"
        reason = "ManagementChangeNotSupported" if asked else "AppAlreadyInstalled"
        return _error(f"{bundle} was installed by the person before enrollment and cannot become managed "
                      "(delete it, then install it again from the MDM)",
                      error(APP_ALREADY_INSTALLED, "App already installed"), Identifier=bundle,
                      RejectionReason=reason)
    context.contents.install_managed_app(bundle, name, store_id)
    update = " (update)" if existing is not None else ""
    return Outcome("Acknowledged", {"Identifier": bundle, "State": "Managed"},
                   f"installed {bundle} as a managed app{update}; its container is on the data-separated volume")


def _remove_application(context, command):
    bad = _missing(command, "Identifier", str)
    if bad:
        return bad
    app = context.contents.apps.get(command["Identifier"])
    if app is None or not app.managed:
        return _error(f"{command['Identifier']} is not a managed app", error(APP_NOT_MANAGED, "App not managed"))
    context.contents.remove_app(app.bundle_id)
    return Outcome("Acknowledged", {}, f"removed {app.bundle_id} and its data")


# -- device actions (Device Enrollment) --------------------------------------------------------------------------
def _device_lock(context, command):
    return Outcome("Acknowledged", {"MessageResult": "Success"} if command.get("Message") else {},
                   "locked: commands that need the person's data wait (NotNow) until it is unlocked", lock=True)


def _erase_device(context, command):
    return Outcome("Acknowledged", {}, "erasing all content and settings", after="erase")


def _restart(context, command):
    return Outcome("Acknowledged", {}, f"{command['RequestType']}: the device restarts and waits for its first unlock",
                   lock=True)


def _acknowledge(text: str, **response):
    return lambda context, command: Outcome("Acknowledged", response, text)


_HANDLERS = {
    "DeviceInformation": _device_information, "SecurityInfo": _security_info, "CertificateList": _certificate_list,
    "ProfileList": _profile_list, "InstallProfile": _install_profile, "RemoveProfile": _remove_profile,
    "InstallApplication": _install_application, "ManagedApplicationList": _managed_application_list,
    "RemoveApplication": _remove_application, "InstalledApplicationList": _installed_application_list,
    "DeviceLock": _device_lock, "EraseDevice": _erase_device, "RestartDevice": _restart,
    "ShutDownDevice": _restart, "ClearPasscode": _acknowledge("passcode cleared"),
    "Restrictions": _acknowledge("no restrictions in effect", GlobalRestrictions={}, ProfileRestrictions={}),
    "ScheduleOSUpdate": _acknowledge("no update available", UpdateResults=[]),
}
assert all(name in _HANDLERS for name, rule in RULES.items()
           if not rule.never_account_driven and set(rule.platforms) - set(rule.supervised))
