"""Stage 3: checking and installing the enrollment profile (PROTOCOL.md 3.1-3.3)."""
from __future__ import annotations

import plistlib
from dataclasses import dataclass
from urllib.parse import urlsplit

from cryptography import x509
from cryptography.hazmat.primitives.serialization import pkcs12

from lab import cms
from lab.device.trace import OK, WARN, Trace

STAGE = "enrollment"
PROFILE_TYPE = "application/x-apple-aspen-config"
MODES = {"mdm-byod": "BYOD", "mdm-adde": "ADDE"}
ACTION = "check the enrollment profile"
IDENTITY_TYPES = ("com.apple.security.pkcs12", "com.apple.security.scep", "com.apple.security.acme")


@dataclass
class InstalledProfile:
    mdm: dict
    identity_cert: x509.Certificate
    identity_key: object
    signed_by: str | None
    identifier: str = ""
    uuid: str = ""
    display_name: str = ""
    organization: str = ""
    payload_types: tuple[str, ...] = ()

    @property
    def checkin_url(self) -> str:
        return self.mdm.get("CheckInURL") or self.mdm["ServerURL"]


class ProfileProblem(ValueError):
    def __init__(self, code: str, explanation: str):
        super().__init__(explanation)
        self.code, self.explanation = code, explanation


def identity_of(payloads: list[dict], mdm: dict):
    """The (key, certificate) of the identity payload that IdentityCertificateUUID names; ProfileProblem if none."""
    identity = next((p for p in payloads if p.get("PayloadUUID") == mdm.get("IdentityCertificateUUID")), None)
    if identity is None or identity.get("PayloadType") not in IDENTITY_TYPES:
        raise ProfileProblem("profile-identity-missing", "IdentityCertificateUUID names no identity payload (pkcs12, "
                             "scep or acme) in the profile; make it the identity payload's PayloadUUID")
    if identity["PayloadType"] != "com.apple.security.pkcs12":
        raise ProfileProblem("identity-type-unsupported", f"the simulated device cannot run {identity['PayloadType']} "
                             "yet; deliver the identity as com.apple.security.pkcs12")
    try:
        password = identity.get("Password")
        key, cert, _ = pkcs12.load_key_and_certificates(identity["PayloadContent"],
                                                        password.encode() if password else None)
    except Exception:
        raise ProfileProblem("identity-unreadable", "the PKCS#12 identity cannot be opened with its Password; check "
                             "both") from None
    if cert is None or key is None:
        raise ProfileProblem("identity-unreadable", "the PKCS#12 identity lacks its certificate or private key")
    return key, cert


def install(response, version: str, identifier: str, trusted_roots: list[x509.Certificate],
            trace: Trace) -> InstalledProfile:
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if media_type != PROFILE_TYPE:
        trace.stop(STAGE, "profile-content-type", f"the enrollment profile came as {media_type or 'no type'}; the MDM "
                   f"must answer Content-Type: {PROFILE_TYPE}", ACTION)
    body, signed_by = response.content, None
    if cms.looks_like_cms(body):
        try:
            signed = cms.parse(body)
        except cms.CMSError as exc:
            trace.stop(STAGE, "profile-signature-invalid", f"the profile's signature is broken: {exc}; re-sign it",
                       ACTION)
        body = signed.content
        try:
            cms.verify_chain(signed.signer, trusted_roots)
            signed_by = signed.signer.subject.rfc4514_string()
            trace.add(STAGE, "verify the profile signature", OK, f"signed by {signed_by} (Verified)")
        except cms.CMSError as exc:
            trace.add(STAGE, "verify the profile signature", WARN, f"{exc}: the profile shows as Not Verified; "
                      "sign it with a certificate the device trusts", code="profile-signer-untrusted")
    else:
        trace.add(STAGE, "verify the profile signature", WARN, "the profile is not signed and shows as Not "
                  "Verified; sign it (CMS) with a trusted certificate", code="profile-unsigned")
    try:
        profile = plistlib.loads(body)
    except Exception:
        trace.stop(STAGE, "profile-malformed", "the enrollment profile is not a property list", ACTION)
    if not isinstance(profile, dict) or profile.get("PayloadType") != "Configuration" \
            or not isinstance(profile.get("PayloadContent"), list):
        trace.stop(STAGE, "profile-malformed", "the profile is not a Configuration profile with a PayloadContent array",
                   ACTION)
    payloads = [p for p in profile["PayloadContent"] if isinstance(p, dict)]
    mdm_payloads = [p for p in payloads if p.get("PayloadType") == "com.apple.mdm"]
    if len(mdm_payloads) != 1:
        trace.stop(STAGE, "profile-mdm-payload",
                   f"the profile has {len(mdm_payloads)} com.apple.mdm payloads; exactly one is needed", ACTION)
    mdm = mdm_payloads[0]
    _check_mdm_payload(mdm, version, identifier, trace)
    try:
        key, cert = identity_of(payloads, mdm)
    except ProfileProblem as problem:
        trace.stop(STAGE, problem.code, problem.explanation, ACTION)
    trace.add(STAGE, "install the enrollment profile", OK,
              f"{MODES[version]} enrollment for {mdm['AssignedManagedAppleID']}; identity "
              f"{cert.subject.rfc4514_string()} installed; the data-separated volume is created")
    return InstalledProfile(mdm, cert, key, signed_by, str(profile.get("PayloadIdentifier") or ""),
                            str(profile.get("PayloadUUID") or ""),
                            str(profile.get("PayloadDisplayName") or profile.get("PayloadIdentifier") or ""),
                            str(profile.get("PayloadOrganization") or ""),
                            tuple(str(p.get("PayloadType")) for p in payloads))


def _check_mdm_payload(mdm: dict, version: str, identifier: str, trace: Trace) -> None:
    for key in ("IdentityCertificateUUID", "Topic", "ServerURL"):
        if not isinstance(mdm.get(key), str) or not mdm[key]:
            trace.stop(STAGE, "profile-missing-key", f"the com.apple.mdm payload lacks {key}", ACTION)
    if not mdm["Topic"].startswith("com.apple.mgmt."):
        trace.stop(STAGE, "profile-bad-topic", f"Topic {mdm['Topic']!r} must start with com.apple.mgmt. (the APNs "
                   "certificate's topic)", ACTION)
    for key in ("ServerURL", "CheckInURL"):
        if key in mdm and urlsplit(str(mdm[key])).scheme != "https":
            trace.stop(STAGE, "profile-url-not-https", f"{key} {mdm[key]!r} must be an https URL", ACTION)
    mode = mdm.get("EnrollmentMode")
    if mode not in ("BYOD", "ADDE"):
        trace.stop(STAGE, "profile-enrollment-mode", f"EnrollmentMode is {mode!r}; account-driven enrollment needs "
                   "BYOD or ADDE, and the device cancels otherwise", ACTION)
    if mode != MODES[version]:
        trace.stop(STAGE, "profile-enrollment-mode", f"EnrollmentMode {mode} does not match the discovered Version "
                   f"{version} (expects {MODES[version]}); make them agree", ACTION)
    if not isinstance(mdm.get("AssignedManagedAppleID"), str) or not mdm["AssignedManagedAppleID"]:
        trace.stop(STAGE, "profile-missing-maa",
                   "AssignedManagedAppleID is missing; account-driven enrollment needs the "
                   "user's Managed Apple Account in the MDM payload", ACTION)
    if mode == "BYOD" and "AccessRights" in mdm:
        trace.stop(STAGE, "profile-access-rights", "a BYOD (User Enrollment) profile must not carry AccessRights; "
                   "remove the key", ACTION)
    if "ManagedAppleID" in mdm:
        trace.add(STAGE, "check the MDM payload", WARN, "ManagedAppleID is the key of the removed profile-based "
                  "User Enrollment; use AssignedManagedAppleID only", code="profile-legacy-maid")
    if mdm["AssignedManagedAppleID"].lower() != identifier.lower():
        trace.add(STAGE, "check the MDM payload", WARN, f"AssignedManagedAppleID {mdm['AssignedManagedAppleID']} "
                  f"differs from the typed {identifier}: fine with federation if the MDM keeps the mapping",
                  code="profile-maa-differs")
