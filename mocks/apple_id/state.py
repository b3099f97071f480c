"""Rules of Apple's identity service for Managed Apple Accounts (lab; Apple's service is private).

After the enrollment profile installs, the person signs in with the Managed Apple Account the profile names
(``AssignedManagedAppleID``); the enrollment is complete only then (PROTOCOL.md 3.3). What Apple checks, from its
documentation and field reports:

- the account exists in ABM/ASM: an unknown identifier, a mail alias of an account, or a wrong password all get
  Apple's deliberately vague "Your Apple Account or password was incorrect.";
- a Mac virtual machine below macOS 15 cannot sign in at all ("Verification Failed", "An unknown error
  occurred."); Apple supports Apple Accounts in macOS 15 guests;
- the organization's "Allow Managed Apple Account on" setting (ABM/ASM Access Management): ``any`` (nothing is
  checked), ``managed`` (the device's MDM must hand over a ``com.apple.maid`` token, a JWT signed with the key of an
  MDM server of the account's organization: a missing, empty, foreign or badly signed token is refused) or
  ``supervised`` (only supervised devices, whatever the token; account-driven User Enrollment never is).
  Refusals show the platform's "Verification Failed" dialog, except account-driven User Enrollment, which shows
  "Sign-in Failed" with AKAuthenticationError -7013 (field report, 2026);
- a federated account (ABM/ASM federated authentication with Entra ID or Google Workspace) never gives Apple its
  password: Apple answers the device with the organization's IdP, where Apple is a relying party of its own (its
  client id, its redirect URI here). The device's web view signs in there; the IdP sends it back to Apple's callback
  with a signed assertion, which Apple verifies (issuer, audience = Apple's client, state/nonce, expiry, single use,
  the subject is the account) before it hands the web view a one-time result code; the device then completes the
  sign-in with that code in place of a password. Apple does not hold the federated accounts' passwords;
- wrong passwords are throttled as on every password form of the lab (lab.throttle).

The accounts, their organizations, the setting and the MDM servers' keys are ABM's: the service reads them through
the ``Directory`` the launcher hands it, as Apple's services share one back end.
"""
from __future__ import annotations

import secrets
import threading
import time
from dataclasses import dataclass, field
from typing import Protocol
from urllib.parse import urlencode, urlsplit

import jwt
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec, rsa

from lab import federation, throttle
from lab.protocol import MAA_ALLOWED_ON as ALLOW_ON
from lab.protocol import MAA_FEDERATED_SCHEME
from lab.protocol import MAA_SIGN_IN_PATH as SIGN_IN_PATH
from lab.protocol import MAID_TOKEN_SERVICE as MAID_SERVICE
from mocks.apple_id.errors import BadSignInRequest
from mocks.apple_id.faults import COMPONENT

__all__ = ["UsersDirectory", "ALLOW_ON", "SIGN_IN_PATH", "MAID_SERVICE", "AccountRecord", "AppleIDSetup",
           "AppleIDState", "Directory", "ServerRecord", "maid_claims", "CLIENT_ID", "FEDERATED_CALLBACK_PATH"]

TOKEN_LIFETIME = 600  # seconds an MDM's maid token is taken after its iat (lab choice; Apple: "limited")
CLIENT_ID = "apple-managed-apple-accounts"  # (lab) Apple's client id at an organization's IdP
FEDERATED_CALLBACK_PATH = "/v1/managed-account/federated/callback"  # (lab) Apple's redirect URI at the IdP
FEDERATION_TTL = 600  # seconds a federated sign-in may take at the IdP
RESULT_TTL = 120  # seconds the device has to redeem the web view's result code
PENDING_LIMIT = 10_000  # unfinished federated sign-ins remembered at once

INCORRECT = ("Sign-in Failed", "Your Apple Account or password was incorrect.")
VM_REFUSED = ("Verification Failed", "An unknown error occurred.")
ADUE_REFUSED = ("Sign-in Failed", "The operation couldn't be completed. (AKAuthenticationError error -7013.)")
THROTTLED = ("Sign-in Failed", "Too many attempts. Try again later.")  # lab wording
DEVICE_REFUSED = {
    "macOS": ("Verification Failed", "You can't sign into this device using this Apple ID. Contact your "
                                     "organization's administrator for assistance."),
    "other": ("Verification Failed", "You cannot sign into this device using this Apple ID. Contact your "
                                     "organization's administrator for assistance."),
}


@dataclass(frozen=True)
class AccountRecord:
    identifier: str
    organization: str
    federated: bool = False


@dataclass(frozen=True)
class ServerRecord:
    server_uuid: str
    name: str
    organization: str
    public_key_pem: str | None  # what the admin uploaded when creating the MDM server in ABM/ASM


class Directory(Protocol):
    """What the identity service asks ABM/ASM; records come as dicts with AccountRecord's and ServerRecord's
    fields (the mocks share no code)."""

    def account_record(self, identifier: str) -> dict | None: ...

    def alias_owner(self, identifier: str) -> str | None: ...

    def maa_allowed_on(self, organization: str) -> str: ...

    def server_record(self, server_uuid: str) -> dict | None: ...


class UsersDirectory:
    """Apple's directory when the lab does not emulate ABM/ASM (a real organization's scenario, where its real
    ABM/ASM holds the accounts): the scenario's users are the organization's Managed Apple Accounts, sign-in is
    allowed on any device, and no MDM server is known."""

    def __init__(self, organization: str, accounts):
        self.organization, self.accounts = organization, {a.lower() for a in accounts}

    def account_record(self, identifier: str) -> dict | None:
        if identifier.strip().lower() not in self.accounts:
            return None
        return {"identifier": identifier.strip().lower(), "organization": self.organization, "federated": False}

    def alias_owner(self, identifier: str) -> None:
        return None

    def maa_allowed_on(self, organization: str) -> str:
        return "any"

    def server_record(self, server_uuid: str) -> None:
        return None


@dataclass(frozen=True)
class AppleIDSetup:
    passwords: dict[str, str] = field(default_factory=dict)  # account → password (non-federated accounts)
    origin: str = ""  # this service's own origin (its redirect URI at the IdP is built on it)
    idp_origin: str = ""  # the organization's IdP, when ABM/ASM federates its accounts
    federation_secret: bytes = b""  # verifies the IdP's assertions (lab.federation)


@dataclass(frozen=True)
class Device:
    platform: str
    os_version: tuple[int, ...]
    enrollment: str  # "user" (account-driven User Enrollment) or "device"
    supervised: bool = False
    virtual_machine: bool = False


@dataclass(frozen=True)
class Answer:
    status: int
    body: dict
    summary: str  # for the timeline: names the reason, never a secret
    location: str | None = None  # a redirect (the federated sign-in's web view)
    retry_after: int | None = None  # 429: seconds until the next try


def maid_claims(server_uuid: str, now: float, jti: str) -> dict:
    """The claims of a com.apple.maid token, as Apple's GetToken documentation lists them."""
    return {"iss": server_uuid, "iat": int(now), "jti": jti, "service_type": MAID_SERVICE}


def _version(text: str) -> tuple[int, ...]:
    parts = str(text).split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() and len(p) <= 3 for p in parts):
        raise BadSignInRequest(f"device.os_version must look like 18.2, got {text!r}")
    return tuple(int(p) for p in parts)


def parse_request(body: object) -> tuple[str, str, Device, str | None, str | None]:
    """(account, password, device, maid token, federated result code) from the JSON a device posts, or
    BadSignInRequest saying why."""
    if not isinstance(body, dict):
        raise BadSignInRequest("the sign-in request must be a JSON object")
    account, password, device = body.get("account"), body.get("password", ""), body.get("device")
    if not isinstance(account, str) or not 3 <= len(account) <= 320 or "@" not in account:
        raise BadSignInRequest("account must be the Managed Apple Account, like name@example.com")
    if not isinstance(password, str) or len(password) > 1024:
        raise BadSignInRequest("password must be a string")
    if not isinstance(device, dict):
        raise BadSignInRequest("device must be an object with platform, os_version and enrollment")
    platform, enrollment = device.get("platform"), device.get("enrollment")
    if platform not in ("iOS", "iPadOS", "macOS", "visionOS"):
        raise BadSignInRequest(f"device.platform must be iOS, iPadOS, macOS or visionOS, got {platform!r}")
    if enrollment not in ("user", "device"):
        raise BadSignInRequest(f"device.enrollment must be user or device, got {enrollment!r}")
    flags = {name: device.get(name, False) for name in ("supervised", "virtual_machine")}
    if not all(isinstance(value, bool) for value in flags.values()):
        raise BadSignInRequest("device.supervised and device.virtual_machine must be true or false")
    token = body.get("maid_token")
    if token is not None and (not isinstance(token, str) or len(token) > 8192):
        raise BadSignInRequest("maid_token must be the MDM's token as a string")
    code = body.get("federated_code")
    if code is not None and (not isinstance(code, str) or len(code) > 256):
        raise BadSignInRequest("federated_code must be the code Apple's federated sign-in page handed the device")
    return (account, password, Device(platform, _version(device.get("os_version", "")), enrollment, **flags), token,
            code)


class AppleIDState:
    def __init__(self, setup: AppleIDSetup, directory: Directory, *, faults=None, clock=time.time):
        self.setup, self.directory, self.faults, self.clock = setup, directory, faults, clock
        self._used_jti: dict[str, float] = {}
        self._lock = threading.Lock()
        self.throttle = throttle.Throttle(clock)
        self._pending: dict[str, tuple[str, float]] = {}  # federated sign-in's state → (account, expiry)
        self._results: dict[str, tuple[str, float]] = {}  # web view's result code → (account, expiry)
        self._assertions: dict[str, float] = {}  # jti of each IdP assertion taken → its expiry

    def sign_in(self, host: str, body: object) -> Answer:
        account, password, device, token, code = parse_request(body)
        armed = self.faults.take(COMPONENT, host, at="sign-in") if self.faults is not None else None
        if armed is not None:
            status, answer = armed.apply()
            return Answer(status, answer, self.faults.label(armed))
        found = self.directory.account_record(account)
        record = AccountRecord(**found) if found else None
        if record is None:
            owner = self.directory.alias_owner(account)
            why = (f"{account} is a mail alias of the Managed Apple Account {owner}, not an account: the profile's "
                   f"AssignedManagedAppleID must be {owner}") if owner else \
                  f"{account} is not a Managed Apple Account in ABM/ASM"
            return self._refuse(401, "alias-not-account" if owner else "account-not-found", INCORRECT, why)
        if record.federated:
            if not code:
                return self._to_idp(record)
            if not self._redeem(code, record.identifier):
                return self._refuse(401, "federated-code-invalid", VM_REFUSED, "the federated sign-in's result code "
                                    "is unknown, used, expired or another account's: sign in again")
        else:
            attempt = self.throttle.attempt(record.identifier,
                                            lambda: self.setup.passwords.get(record.identifier) == password)
            if attempt.wait:
                throttled = self._refuse(429, "throttled", THROTTLED, self.throttle.summary(record.identifier,
                                                                                            attempt.wait))
                return Answer(429, throttled.body, throttled.summary, retry_after=attempt.wait)
            if not attempt.ok:
                return self._refuse(401, "wrong-password", INCORRECT, f"wrong password for {record.identifier}")
        if device.platform == "macOS" and device.virtual_machine and device.os_version < (15,):
            return self._refuse(403, "virtual-machine", VM_REFUSED,
                                "a Mac virtual machine below macOS 15 cannot sign in with an Apple Account")
        allowed_on = self.directory.maa_allowed_on(record.organization)
        refused = self._check_allowed_on(allowed_on, record, device, token)
        if refused:
            code, why = refused
            dialog = ADUE_REFUSED if device.enrollment == "user" else \
                DEVICE_REFUSED["macOS" if device.platform == "macOS" else "other"]
            return self._refuse(403, code, dialog, why)
        return Answer(200, {"account": record.identifier, "organization": record.organization,
                            "federated": record.federated},
                      f"signed in {record.identifier} ({record.organization}; allowed on: {allowed_on})")

    # -- federated authentication ---------------------------------------------------------------------------------
    @property
    def callback_url(self) -> str:
        return self.setup.origin + FEDERATED_CALLBACK_PATH

    def _prune(self, table: dict) -> None:
        now = self.clock()
        for key in [k for k, (_, expiry) in table.items() if expiry <= now]:
            del table[key]

    def _to_idp(self, record: AccountRecord) -> Answer:
        idp = urlsplit(self.setup.idp_origin).hostname
        if not idp:
            return self._refuse(503, "federation-unavailable", VM_REFUSED, f"ABM/ASM federates {record.identifier} "
                                "with an identity provider, but none is connected")
        state = secrets.token_urlsafe(18)
        with self._lock:
            self._prune(self._pending)
            while len(self._pending) >= PENDING_LIMIT:  # bounded: the oldest unfinished sign-in goes first
                del self._pending[next(iter(self._pending))]
            self._pending[state] = (record.identifier, self.clock() + FEDERATION_TTL)
        url = self.setup.idp_origin + "/authorize?" + urlencode({
            "client_id": CLIENT_ID, "response_type": "code", "redirect_uri": self.callback_url, "state": state,
            "login_hint": record.identifier})
        return Answer(200, {"federated": {"url": url, "idp": idp}},
                      f"{record.identifier} is federated: the device signs in at the organization's IdP {idp}")

    def federated_return(self, assertion: str | None, state: str | None) -> Answer:
        """The IdP sends the web view back with a signed assertion (``code``) and Apple's ``state``."""
        if not state:
            return self._refuse(400, "federated-state-missing", VM_REFUSED, "the IdP sent the sign-in back without "
                                "state, so Apple cannot tell which sign-in the assertion completes")
        with self._lock:
            self._prune(self._pending)
            pending = self._pending.pop(state, None)
        if pending is None:
            return self._refuse(400, "federated-request-expired", VM_REFUSED, "Apple has no federated sign-in with "
                                "this state: it expired, was completed already, or state was changed on the way")
        account = pending[0]
        try:
            claims = federation.verify(self.setup.federation_secret, assertion or "", issuer=self.setup.idp_origin,
                                       audience=CLIENT_ID, nonce=state, now=self.clock())
        except federation.FederationError as exc:
            return self._refuse(401, "federated-assertion-invalid", VM_REFUSED,
                                f"Apple does not accept the IdP's assertion for {account}: {exc}")
        with self._lock:
            now = self.clock()
            self._assertions = {j: e for j, e in self._assertions.items() if e > now}
            replayed = claims["jti"] in self._assertions
            self._assertions[claims["jti"]] = float(claims["exp"])
        if replayed:
            return self._refuse(401, "federated-assertion-replayed", VM_REFUSED, "this IdP assertion was used before")
        if claims["sub"].lower() != account:
            return self._refuse(403, "federated-other-user", VM_REFUSED, f"the IdP signed in {claims['sub']}, but the "
                                f"sign-in is for the Managed Apple Account {account}")
        code = secrets.token_urlsafe(24)
        with self._lock:
            self._prune(self._results)
            self._results[code] = (account, self.clock() + RESULT_TTL)
        return Answer(302, {}, f"the IdP signed in {account}; 302 to the device with a result code",
                      location=f"{MAA_FEDERATED_SCHEME}://federated-result?" + urlencode({"code": code}))

    def _redeem(self, code: str, account: str) -> bool:
        with self._lock:
            self._prune(self._results)
            found = self._results.pop(code, None)
        return found is not None and found[0] == account

    def _check_allowed_on(self, allowed_on: str, record: AccountRecord, device: Device,
                          token: str | None) -> tuple[str, str] | None:
        if allowed_on == "any":
            return None  # the token, if any, is fetched and ignored
        if allowed_on == "supervised" and not device.supervised:
            return ("not-supervised", f"{record.organization} allows its Managed Apple Accounts on supervised "
                                      "devices only, and this device is not supervised")
        if not token:
            return ("no-maid-token", f"{record.organization} allows its Managed Apple Accounts on managed devices "
                                     "only, and the device's MDM gave no com.apple.maid token (GetToken)")
        return self._check_token(token, record)

    def _check_token(self, token: str, record: AccountRecord) -> tuple[str, str] | None:
        try:
            issuer = jwt.decode(token, options={"verify_signature": False}).get("iss")
        except jwt.InvalidTokenError:
            return "maid-token-malformed", "the MDM's com.apple.maid token is not a JWT"
        found = self.directory.server_record(str(issuer)) if issuer else None
        server = ServerRecord(**found) if found else None
        if server is None:
            return ("maid-token-unknown-server", f"the com.apple.maid token's iss {issuer!r} is no MDM server's "
                                                 "server_uuid in ABM/ASM")
        if server.organization != record.organization:
            return ("maid-token-other-organization",
                    f"the token comes from the MDM server {server.name} of {server.organization}, but "
                    f"{record.identifier} belongs to {record.organization}")
        if not server.public_key_pem:
            return ("maid-token-no-key", f"ABM/ASM holds no public key for the MDM server {server.name}")
        try:
            key = serialization.load_pem_public_key(server.public_key_pem.encode())
        except ValueError:
            return "maid-token-no-key", f"the public key ABM/ASM holds for {server.name} is not a PEM public key"
        if not isinstance(key, (rsa.RSAPublicKey, ec.EllipticCurvePublicKey)):
            return "maid-token-no-key", f"the public key ABM/ASM holds for {server.name} is neither RSA nor EC"
        # Apple verifies with the key the admin uploaded: RS256 for an RSA key (as vendors' servers sign), ES256
        # for a P-256 one; a token whose header names another algorithm does not verify.
        algorithm = "RS256" if isinstance(key, rsa.RSAPublicKey) else "ES256"
        try:
            claims = jwt.decode(token, key, algorithms=[algorithm],
                                options={"require": ["iss", "iat", "jti"], "verify_iat": False})
        except jwt.InvalidTokenError as exc:
            return ("maid-token-bad-signature", f"the com.apple.maid token does not verify with the key of "
                                                f"{server.name}: {exc}")
        if claims.get("service_type") != MAID_SERVICE:
            return "maid-token-wrong-service", f"service_type must be {MAID_SERVICE}"
        age = self.clock() - float(claims["iat"])
        if not -60 <= age <= TOKEN_LIFETIME:
            return "maid-token-stale", f"the token's iat is {int(age)} s old; Apple takes it for a limited time"
        with self._lock:
            now = self.clock()
            self._used_jti = {j: t for j, t in self._used_jti.items() if now - t <= TOKEN_LIFETIME}
            if claims["jti"] in self._used_jti:
                return "maid-token-replayed", "this token's jti was already used; the MDM must mint one per request"
            self._used_jti[str(claims["jti"])] = now
        return None

    @staticmethod
    def _refuse(status: int, code: str, dialog: tuple[str, str], why: str) -> Answer:
        title, message = dialog
        return Answer(status, {"error": code, "alert": {"title": title, "message": message}, "reason": why},
                      f"refused {code}: {why}")
