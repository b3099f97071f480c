"""Renewing the enrollment profile (Apple: "Update an MDM enrollment profile"; the com.apple.mdm payload's rules).

The MDM renews by sending InstallProfile with a profile of the same PayloadIdentifier as the enrollment profile.
The update may bring a new identity (IdentityCertificateUUID and its payload) and change what Apple lets change;
it must keep Topic, ServerURL, CheckInURL, AssignedManagedAppleID, EnrollmentMode and RequiredAppIDForMDM, must not
add access rights, and must not add or remove the per-user-connections capability. The device refuses any other
update whole, and the installed enrollment stays as it was.
"""
from __future__ import annotations

from dataclasses import dataclass

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization.pkcs12 import PKCS12PrivateKeyTypes

from lab.device.profile import ProfileProblem, identity_of
from lab.device.separation import Profile

KEPT = ("Topic", "ServerURL", "CheckInURL", "AssignedManagedAppleID", "EnrollmentMode", "RequiredAppIDForMDM")
# What devices show for a refused update: the ServerURL text is seen in the field (github.com/fleetdm/fleet/issues/
# 27450, 14238); the others follow its pattern.
SHOWN = {"ServerURL": "server URL", "CheckInURL": "check-in URL", "Topic": "topic",
         "AssignedManagedAppleID": "Managed Apple Account", "EnrollmentMode": "enrollment mode",
         "RequiredAppIDForMDM": "required app"}
PER_USER = "com.apple.mdm.per-user-connections"
KEEPABLE = (str, int, float, bool, list)  # what the enrollment record keeps of the payload (JSON)


@dataclass
class Renewal:
    mdm: dict
    key: PKCS12PrivateKeyTypes
    cert: x509.Certificate
    profile: Profile


def kept(mdm: dict) -> dict:
    return {k: v for k, v in mdm.items() if isinstance(v, KEEPABLE)}


def refusal(installed: dict, update: dict) -> str | None:
    """The text the device shows when ``update`` may not replace ``installed``, or None."""
    for key in KEPT:
        if installed.get(key) != update.get(key):
            return f"Update to MDM profile contains different {SHOWN[key]}."
    added = int(update.get("AccessRights") or 0) & ~int(installed.get("AccessRights") or 0)
    if added:
        return "Update to MDM profile adds access rights."
    if (PER_USER in (installed.get("ServerCapabilities") or [])) != (PER_USER in (update.get("ServerCapabilities")
                                                                                   or [])):
        return "Update to MDM profile changes the per-user connections capability."
    return None


def prepare(installed: dict, profile: dict, payloads: list[dict], profile_type: str) -> Renewal | str:
    """The renewal to apply, or the text of the refusal."""
    mdm = next(p for p in payloads if p.get("PayloadType") == "com.apple.mdm")
    refused = refusal(installed, mdm)
    if refused:
        return refused
    try:
        key, cert = identity_of(payloads, mdm)
    except ProfileProblem as problem:
        return f"The MDM payload's identity cannot be used: {problem.explanation}."
    types = tuple(str(p.get("PayloadType")) for p in payloads)
    identifier = str(profile["PayloadIdentifier"])
    return Renewal(mdm, key, cert, Profile(identifier, str(profile.get("PayloadUUID") or "").upper(),
                                           str(profile.get("PayloadDisplayName") or identifier), profile_type, types,
                                           str(profile.get("PayloadOrganization") or "")))


def apply(device, renewal: Renewal) -> None:
    """The new identity goes into the managed keychain; the enrollment keeps its place, URLs and account."""
    key_pem = renewal.key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                        serialization.NoEncryption())
    device.contents.keychain_put("mdm-identity", key_pem + renewal.cert.public_bytes(serialization.Encoding.PEM))
    device.contents.install_profile(renewal.profile)
    enrollment = device.enrollment
    enrollment.identity_subject = renewal.cert.subject.rfc4514_string()
    enrollment.check_out_when_removed = bool(renewal.mdm.get("CheckOutWhenRemoved", False))
    enrollment.mdm_payload = kept(renewal.mdm)
