"""What the MDM hands the device to install (PROTOCOL.md 2.6, 3.1-3.2): the signed enrollment profile, the
Enrollment SSO document, and the small sample profiles of InstallProfile."""
from __future__ import annotations

import base64
import json
import plistlib
import secrets
import uuid

from lab import cms
from mocks.mdm.checkin import parse_plist
from mocks.mdm.errors import BadEnrollmentRequest

ESSO_APP_ID = 1_660_000_001  # the lab's Enrollment SSO app in "the App Store" (iTunesStoreID)
SAMPLE_PROFILES = ("wifi", "mail", "calendar")


def parse_enrollment_body(body: bytes) -> dict:
    """The device's first POST: CMS-signed plist (LANGUAGE, PRODUCT, VERSION), or a plain plist.

    The Content-Type header is ignored: iOS 15 labelled the CMS body as a form (PROTOCOL.md 6.7). Verified anew
    each time (well under a millisecond): a cache would keep the bodies of requests nobody authenticated.
    """
    if not body:
        raise BadEnrollmentRequest("the enrollment request has no body; expected a CMS-signed plist")
    content = body
    if cms.looks_like_cms(body):
        try:
            content = cms.parse(body).content
        except cms.CMSError as exc:
            raise BadEnrollmentRequest(f"the signed enrollment request is invalid: {exc}") from exc
    info = parse_plist(content, BadEnrollmentRequest, "the enrollment request (a CMS-signed plist or a plist)")
    if not isinstance(info.get("PRODUCT"), str) or not isinstance(info.get("VERSION"), str):
        raise BadEnrollmentRequest("the enrollment request plist needs PRODUCT and VERSION strings")
    return info


class Profiles:
    def __init__(self, setup, store, identity_ca, signer, taps, clock):
        self.setup, self.store, self.identity_ca, self.signer = setup, store, identity_ca, signer
        self.taps, self.clock = taps, clock
        self.base_id = f"test.mdmlab.{setup.host}"
        self.enrollment_profile_id = f"{self.base_id}.enrollment"

    def sign(self, profile: dict) -> bytes:
        return cms.sign(plistlib.dumps(profile), self.signer.cert, self.signer.key)

    def enrollment_profile(self, user: str, mode: str = "BYOD") -> bytes:
        """The signed configuration profile for ``user`` (PROTOCOL.md 3.1-3.2)."""
        org = self.setup.organization
        identity_uuid, mdm_uuid, profile_uuid = (str(uuid.uuid4()).upper() for _ in range(3))
        password = secrets.token_urlsafe(12)
        p12, serial = self.identity_ca.issue_pkcs12(f"{org} MDM identity {profile_uuid[:8]}", password)
        mdm_payload = {
            "PayloadType": "com.apple.mdm", "PayloadVersion": 1, "PayloadUUID": mdm_uuid,
            "PayloadIdentifier": f"{self.base_id}.mdm", "PayloadDisplayName": f"{org} MDM",
            "IdentityCertificateUUID": identity_uuid, "Topic": self.setup.topic,
            "ServerURL": self.setup.server_url, "CheckInURL": self.setup.checkin_url,
            "CheckOutWhenRemoved": True, "SignMessage": False,
            "EnrollmentMode": mode, "AssignedManagedAppleID": user,
        }
        if self.setup.maid_tokens:
            mdm_payload["ServerCapabilities"] = ["com.apple.mdm.token"]  # GetToken (com.apple.maid)
        if mode == "ADDE":
            mdm_payload["AccessRights"] = 8191
        armed = self.taps.take("profile")
        if armed is not None:
            self.taps.apply(armed, mdm_payload, mode)
        profile = {
            "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadUUID": profile_uuid,
            "PayloadIdentifier": self.enrollment_profile_id, "PayloadDisplayName": f"{org} Enrollment",
            "PayloadOrganization": org,
            "PayloadDescription": f"Enrolls this device in {org}'s MDM with the account {user}.",
            "PayloadContent": [
                {"PayloadType": "com.apple.security.pkcs12", "PayloadVersion": 1, "PayloadUUID": identity_uuid,
                 "PayloadIdentifier": f"{self.base_id}.identity", "PayloadDisplayName": f"{org} MDM identity",
                 "PayloadContent": p12, "Password": password},
                mdm_payload,
            ],
        }
        with self.store.transaction() as db:
            db.execute("INSERT INTO profiles VALUES (?,?,?,?,?)", (profile_uuid, user, mode, serial, self.clock()))
        return self.sign(profile)

    def esso_document(self) -> tuple[int, str, bytes]:
        """The EnrollmentSSODocument: the SSO app's iTunesStoreID and a profile configuring its extension."""
        armed = self.taps.take("esso")
        if armed is not None:
            return self.taps.apply(armed)
        s = self.setup
        sso = {"PayloadType": "com.apple.extensiblesso", "PayloadVersion": 1,
               "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadIdentifier": f"{self.base_id}.esso.extension",
               "ExtensionIdentifier": "test.mdmlab.enrollment-sso.extension", "TeamIdentifier": "MDMLAB0001",
               "Type": "Redirect", "URLs": [f"https://{s.host}/", *([s.idp_origin + "/"] if s.idp_origin else [])]}
        profile = {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadUUID": str(uuid.uuid4()).upper(),
                   "PayloadIdentifier": f"{self.base_id}.esso",
                   "PayloadDisplayName": f"{s.organization} single sign-on", "PayloadOrganization": s.organization,
                   "PayloadContent": [sso]}
        document = {"iTunesStoreID": s.esso_app_id, "AssociatedDomains": [f"authsrv:{s.host}"],
                    "ConfigurationProfile": base64.b64encode(self.sign(profile)).decode()}
        return 200, "application/json", json.dumps(document).encode()

    def sample(self, kind: str, user: str) -> bytes:
        """A signed sample profile for InstallProfile (ValueError for an unknown kind)."""
        return self.sign(sample_profile(kind, self.setup.organization, self.base_id, user))


def sample_profile(kind: str, organization: str, base_id: str, user: str) -> dict:
    """A small configuration profile for InstallProfile, one per content the device keeps apart."""
    profile_uuid = str(uuid.uuid4()).upper()
    payloads: dict[str, dict] = {
        "wifi": {"PayloadType": "com.apple.wifi.managed", "SSID_STR": f"{organization} Staff",
                 "EncryptionType": "WPA2", "AutoJoin": True},
        "mail": {"PayloadType": "com.apple.mail.managed", "EmailAccountType": "EmailTypeIMAP",
                 "EmailAddress": user, "IncomingMailServerHostName": "imap.example.invalid",
                 "OutgoingMailServerHostName": "smtp.example.invalid", "IncomingMailServerUsername": user,
                 "IncomingMailServerAuthentication": "EmailAuthPassword",
                 "OutgoingMailServerAuthentication": "EmailAuthPassword"},  # required (Apple's schema)
        "calendar": {"PayloadType": "com.apple.caldav.account", "CalDAVHostName": "caldav.example.invalid",
                     "CalDAVUsername": user, "CalDAVUseSSL": True},
    }
    if kind not in payloads:
        raise ValueError(f"sample profile {kind!r} is not one of {', '.join(SAMPLE_PROFILES)}")
    payload = {**payloads[kind], "PayloadVersion": 1, "PayloadUUID": str(uuid.uuid4()).upper(),
               "PayloadIdentifier": f"{base_id}.{kind}.payload", "PayloadDisplayName": f"{organization} {kind}"}
    return {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadUUID": profile_uuid,
            "PayloadIdentifier": f"{base_id}.{kind}", "PayloadDisplayName": f"{organization} {kind.title()}",
            "PayloadOrganization": organization, "PayloadContent": [payload]}
