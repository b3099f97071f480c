"""Rules of the MDM: users and passwords, access tokens, enrollment profiles, check-in (PROTOCOL.md stages 2-4)."""
from __future__ import annotations

import hashlib
import hmac
import plistlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from lab import cms
from lab.store import Store
from mocks.mdm.errors import (BadCheckIn, BadDiscoveryRequest, BadEnrollmentRequest, NotAuthorized,
                              TokenBoundElsewhere, UnknownEnrollment)
from mocks.mdm.identity import IdentityCA

PBKDF2_ROUNDS = 20_000  # lab passwords are printed in the banner; hashing keeps the habit without slowing a fleet
CALLBACK_SCHEME = "apple-remotemanagement-user-login"
FORBIDDEN_BYOD_KEYS = ("UDID", "SerialNumber", "IMEI", "MEID", "UnlockToken")

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    identifier TEXT PRIMARY KEY, full_name TEXT NOT NULL, salt BLOB NOT NULL, password_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS tokens (
    token_hash TEXT PRIMARY KEY, user TEXT NOT NULL REFERENCES users(identifier),
    created REAL NOT NULL, expires REAL NOT NULL, revoked INTEGER NOT NULL DEFAULT 0, enrollment_id TEXT,
    mode TEXT
);
CREATE TABLE IF NOT EXISTS enrollments (
    enrollment_id TEXT PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, topic TEXT NOT NULL,
    status TEXT NOT NULL, push_token BLOB, push_magic TEXT, created REAL NOT NULL, updated REAL NOT NULL
);
CREATE TABLE IF NOT EXISTS profiles (
    profile_uuid TEXT PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, identity_serial TEXT NOT NULL,
    created REAL NOT NULL
)
"""


@dataclass(frozen=True)
class MDMSetup:
    organization: str
    host: str
    base_url: str
    auth_url: str
    server_url: str
    checkin_url: str
    topic: str
    token_ttl: int
    users: tuple  # of lab.scenario.User
    discovery_url: str = ""
    adde_base_url: str = ""
    version: str = "mdm-byod"
    versions: dict = field(default_factory=dict)  # model family or user identifier → Version


@dataclass(frozen=True)
class TokenInfo:
    user: str
    enrollment_id: str | None
    expires: float
    mode: str | None = None


def _hash_token(token: str) -> str:
    return hashlib.sha256(token.encode()).hexdigest()


def _token_hash_of(authorization: str) -> str:
    return _hash_token(authorization.partition(" ")[2].strip())


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)


def parse_enrollment_body(body: bytes) -> dict:
    """The device's first POST: CMS-signed plist (LANGUAGE, PRODUCT, VERSION), or a plain plist.

    The Content-Type header is ignored: iOS 15 labelled the CMS body as a form (PROTOCOL.md 6.7).
    """
    if not body:
        raise BadEnrollmentRequest("the enrollment request has no body; expected a CMS-signed plist")
    content = body
    if cms.looks_like_cms(body):
        try:
            content = cms.parse(body).content
        except cms.CMSError as exc:
            raise BadEnrollmentRequest(f"the signed enrollment request is invalid: {exc}") from exc
    try:
        info = plistlib.loads(content)
    except Exception as exc:
        raise BadEnrollmentRequest("the enrollment request is neither a CMS-signed plist nor a plist") from exc
    if not isinstance(info, dict) or not isinstance(info.get("PRODUCT"), str) \
            or not isinstance(info.get("VERSION"), str):
        raise BadEnrollmentRequest("the enrollment request plist needs PRODUCT and VERSION strings")
    return info


def parse_checkin_body(body: bytes) -> dict:
    try:
        message = plistlib.loads(body)
    except Exception as exc:
        raise BadCheckIn("the check-in body is not a property list") from exc
    if not isinstance(message, dict) or not isinstance(message.get("MessageType"), str):
        raise BadCheckIn("the check-in message needs a MessageType string")
    return message


class MDMState:
    def __init__(self, setup: MDMSetup, directory: Path, profile_signer, *, clock=time.time):
        self.setup = setup
        self.directory = Path(directory)
        self.signer = profile_signer  # lab.pki.Leaf
        self.clock = clock
        self.store = Store(self.directory / "mdm.db", _SCHEMA)
        self.identity_ca = IdentityCA(self.directory, setup.organization)
        self._seed_users()

    def _seed_users(self) -> None:
        with self.store.transaction() as db:
            for user in self.setup.users:
                row = db.execute("SELECT salt, password_hash FROM users WHERE identifier = ?",
                                 (user.identifier,)).fetchone()
                if row and hmac.compare_digest(_hash_password(user.password, row["salt"]), row["password_hash"]):
                    continue
                salt = secrets.token_bytes(16)
                db.execute("INSERT OR REPLACE INTO users VALUES (?,?,?,?)",
                           (user.identifier, user.full_name, salt, _hash_password(user.password, salt)))

    # -- challenge -----------------------------------------------------------------------------------------
    def challenge(self) -> str:
        return f'Bearer method="apple-as-web", url="{self.setup.auth_url}"'

    def not_authorized(self, message: str, code: str = "token-required") -> NotAuthorized:
        return NotAuthorized(message, code=code, headers={"WWW-Authenticate": self.challenge()})

    # -- sign-in and tokens ----------------------------------------------------------------------------------
    def known_user(self, identifier: str) -> bool:
        return self.store.one("SELECT 1 FROM users WHERE identifier = ?", (identifier,)) is not None

    def sign_in(self, identifier: str, password: str) -> str | None:
        """The access token for a correct password, else None."""
        row = self.store.one("SELECT salt, password_hash FROM users WHERE identifier = ?", (identifier,))
        if row is None or not hmac.compare_digest(_hash_password(password, row["salt"]), row["password_hash"]):
            return None
        token = secrets.token_urlsafe(32)
        now = self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO tokens (token_hash, user, created, expires) VALUES (?,?,?,?)",
                       (_hash_token(token), identifier, now, now + self.setup.token_ttl))
        return token

    def callback_url(self, token: str) -> str:
        return f"{CALLBACK_SCHEME}://authentication-results?access-token={token}"

    def check_token(self, authorization: str | None, *, allow_expired: bool = False) -> TokenInfo:
        if not authorization:
            raise self.not_authorized("no Authorization header; sign in to get an access token")
        scheme, _, token = authorization.partition(" ")
        if scheme.lower() != "bearer" or not token.strip():
            raise self.not_authorized("the Authorization header is not 'Bearer <token>'", "malformed-authorization")
        row = self.store.one("SELECT user, expires, revoked, enrollment_id, mode FROM tokens WHERE token_hash = ?",
                             (_hash_token(token.strip()),))
        if row is None:
            raise self.not_authorized("the access token is unknown to this MDM", "invalid-token")
        if row["revoked"]:
            raise self.not_authorized("the access token was revoked", "revoked-token")
        if row["expires"] <= self.clock() and not (allow_expired and row["enrollment_id"]):
            raise self.not_authorized("the access token has expired", "expired-token")
        return TokenInfo(row["user"], row["enrollment_id"], row["expires"], row["mode"])

    def _bind(self, authorization: str, enrollment_id: str) -> None:
        token_hash = _token_hash_of(authorization)
        with self.store.transaction() as db:
            db.execute("UPDATE tokens SET enrollment_id = ? WHERE token_hash = ? AND enrollment_id IS NULL",
                       (enrollment_id, token_hash))

    # -- enrollment profile ----------------------------------------------------------------------------------
    # -- service discovery (the URL registered with ABM) -----------------------------------------------------
    def service_discovery(self, identifier: str | None, model_family: str | None) -> dict:
        """The well-known document this MDM serves at its registered discovery URL (PROTOCOL.md 1.7-1.8)."""
        if not identifier or identifier.count("@") != 1:
            raise BadDiscoveryRequest("user-identifier is missing or malformed; the discovery URL routes by user",
                                      code="malformed-identifier")
        version = self.setup.versions.get(identifier) or self.setup.versions.get(model_family or "") \
            or self.setup.version
        base_url = self.setup.adde_base_url if version == "mdm-adde" else self.setup.base_url
        return {"Servers": [{"Version": version, "BaseURL": base_url}]}

    def enrollment_profile(self, authorization: str, user: str, mode: str = "BYOD") -> bytes:
        """The signed configuration profile for ``user`` (PROTOCOL.md 3.1-3.2)."""
        org = self.setup.organization
        identity_uuid, mdm_uuid, profile_uuid = (str(uuid.uuid4()).upper() for _ in range(3))
        password = secrets.token_urlsafe(12)
        p12, serial = self.identity_ca.issue_pkcs12(f"{org} MDM identity {profile_uuid[:8]}", password)
        base_id = f"test.mdmlab.{self.setup.host}"
        mdm_payload = {
            "PayloadType": "com.apple.mdm", "PayloadVersion": 1, "PayloadUUID": mdm_uuid,
            "PayloadIdentifier": f"{base_id}.mdm", "PayloadDisplayName": f"{org} MDM",
            "IdentityCertificateUUID": identity_uuid, "Topic": self.setup.topic,
            "ServerURL": self.setup.server_url, "CheckInURL": self.setup.checkin_url,
            "CheckOutWhenRemoved": True, "SignMessage": False,
            "EnrollmentMode": mode, "AssignedManagedAppleID": user,
            "ServerCapabilities": [],
        }
        if mode == "ADDE":
            mdm_payload["AccessRights"] = 8191
        profile = {
            "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadUUID": profile_uuid,
            "PayloadIdentifier": f"{base_id}.enrollment", "PayloadDisplayName": f"{org} Enrollment",
            "PayloadOrganization": org,
            "PayloadDescription": f"Enrolls this device in {org}'s MDM with the account {user}.",
            "PayloadContent": [
                {"PayloadType": "com.apple.security.pkcs12", "PayloadVersion": 1, "PayloadUUID": identity_uuid,
                 "PayloadIdentifier": f"{base_id}.identity", "PayloadDisplayName": f"{org} MDM identity",
                 "PayloadContent": p12, "Password": password},
                mdm_payload,
            ],
        }
        with self.store.transaction() as db:
            db.execute("INSERT INTO profiles VALUES (?,?,?,?,?)", (profile_uuid, user, mode, serial, self.clock()))
            db.execute("UPDATE tokens SET mode = ? WHERE token_hash = ?", (mode, _token_hash_of(authorization)))
        return cms.sign(plistlib.dumps(profile), self.signer.cert, self.signer.key)

    # -- check-in --------------------------------------------------------------------------------------------
    def check_in(self, authorization: str | None, body: bytes) -> tuple[str, str]:
        """Apply one check-in message; returns (enrollment id, summary). The token is checked first."""
        try:
            message, bad_body = parse_checkin_body(body), None
        except BadCheckIn as exc:
            message, bad_body = {}, exc
        # The device sends CheckOut once and cannot re-authenticate: accept its enrollment's expired token
        # (PROTOCOL.md 4.6); the binding to the same EnrollmentID/UDID is still checked below.
        token = self.check_token(authorization, allow_expired=message.get("MessageType") == "CheckOut")
        if bad_body is not None:
            raise bad_body
        kind = message["MessageType"]
        handler = {"Authenticate": self._authenticate, "TokenUpdate": self._token_update,
                   "CheckOut": self._check_out}.get(kind)
        if handler is None:
            raise BadCheckIn(f"MessageType {kind!r} is not supported", code="unknown-message-type")
        if message.get("Topic") != self.setup.topic:
            raise BadCheckIn(f"Topic {message.get('Topic')!r} is not this MDM's topic {self.setup.topic!r}",
                             code="wrong-topic")
        enrollment_id = self._enrollment_id(token, message)
        if token.enrollment_id not in (None, enrollment_id):
            raise TokenBoundElsewhere("this access token belongs to another enrollment")
        return enrollment_id, handler(token, enrollment_id, message, authorization)

    @staticmethod
    def _enrollment_id(token: TokenInfo, message: dict) -> str:
        """User Enrollment is known by EnrollmentID and must hide device identifiers; ADDE by UDID."""
        if token.mode == "ADDE":
            udid = message.get("UDID")
            if not isinstance(udid, str) or not udid:
                raise BadCheckIn("a Device Enrollment (ADDE) check-in must carry UDID", code="missing-udid")
            return udid
        enrollment_id = message.get("EnrollmentID")
        if not isinstance(enrollment_id, str) or not enrollment_id:
            raise BadCheckIn("a User Enrollment check-in must carry EnrollmentID", code="missing-enrollment-id")
        present = [k for k in FORBIDDEN_BYOD_KEYS if k in message]
        if present:
            raise BadCheckIn(f"a User Enrollment check-in must not carry {', '.join(present)}",
                             code="device-identifier-in-user-enrollment")
        return enrollment_id

    def _authenticate(self, token: TokenInfo, enrollment_id: str, message: dict, authorization: str) -> str:
        now = self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO enrollments (enrollment_id, user, mode, topic, status, created, updated)"
                       " VALUES (?,?,?,?,?,?,?) ON CONFLICT(enrollment_id) DO UPDATE SET status = excluded.status,"
                       " updated = excluded.updated",
                       (enrollment_id, token.user, token.mode or "BYOD", message["Topic"], "authenticated", now, now))
        self._bind(authorization, enrollment_id)
        return f"Authenticate {enrollment_id} for {token.user}"

    def _token_update(self, token: TokenInfo, enrollment_id: str, message: dict, authorization: str) -> str:
        push_token, push_magic = message.get("Token"), message.get("PushMagic")
        if not isinstance(push_token, bytes) or not isinstance(push_magic, str):
            raise BadCheckIn("TokenUpdate needs Token (data) and PushMagic (string)", code="incomplete-token-update")
        with self.store.transaction() as db:
            updated = db.execute("UPDATE enrollments SET status = 'enrolled', push_token = ?, push_magic = ?,"
                                 " updated = ? WHERE enrollment_id = ? AND user = ?",
                                 (push_token, push_magic, self.clock(), enrollment_id, token.user)).rowcount
        if not updated:
            raise UnknownEnrollment(f"no Authenticate was received for enrollment {enrollment_id}")
        return f"TokenUpdate {enrollment_id}: enrolled"

    def _check_out(self, token: TokenInfo, enrollment_id: str, message: dict, authorization: str) -> str:
        with self.store.transaction() as db:
            db.execute("UPDATE enrollments SET status = 'checked-out', updated = ? WHERE enrollment_id = ?",
                       (self.clock(), enrollment_id))
            db.execute("UPDATE tokens SET revoked = 1 WHERE enrollment_id = ?", (enrollment_id,))
        return f"CheckOut {enrollment_id}"

    # -- command channel ---------------------------------------------------------------------------------------
    def poll(self, authorization: str | None, body: bytes) -> tuple[str, bytes]:
        """A device polling ServerURL. The queue is empty until commands exist; the reply is then empty."""
        token = self.check_token(authorization)
        message = parse_checkin_body(body)
        enrollment_id = self._enrollment_id(token, message)
        if token.enrollment_id not in (None, enrollment_id):
            raise TokenBoundElsewhere("this access token belongs to another enrollment")
        if self.enrollment(enrollment_id) is None:
            raise UnknownEnrollment(f"enrollment {enrollment_id} is unknown")
        return enrollment_id, b""

    # -- views -------------------------------------------------------------------------------------------------
    def enrollment(self, enrollment_id: str) -> dict | None:
        row = self.store.one("SELECT enrollment_id, user, mode, topic, status, push_magic, created, updated"
                             " FROM enrollments WHERE enrollment_id = ?", (enrollment_id,))
        return dict(row) if row else None

    def snapshot(self) -> dict:
        return {
            "users": [dict(r) for r in self.store.query("SELECT identifier, full_name FROM users")],
            "enrollments": [dict(r) for r in self.store.query(
                "SELECT enrollment_id, user, mode, status, created, updated FROM enrollments ORDER BY created")],
            "tokens": [dict(r) for r in self.store.query(
                "SELECT substr(token_hash, 1, 12) AS token_hash_prefix, user, created, expires, revoked,"
                " enrollment_id FROM tokens ORDER BY created")],
        }

    def close(self) -> None:
        self.store.close()
