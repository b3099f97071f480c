"""The simulated device: a model, an OS version, and the stages of PROTOCOL.md walked strictly.

It knows only what a real device knows: the identifier typed by the user, the DNS server, the CA it trusts, and
its own contents. It never imports a mock and never reads their state. Besides enrolling it keeps the enrollment
going (stage 4): check-ins and command polls carry the bearer token, a 401 with the challenge makes it renew the
token (OAuth 2: silent refresh first, then sign-in; simple: sign-in) and retry; it runs the commands it may run,
unenrolls (by the person or by the MDM), and models data separation (PROTOCOL.md 5).
"""
from __future__ import annotations

import json
import plistlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec

from lab import cms
from lab.pki import self_signed
from lab.device import commands, discovery, esso, oauth2, profile
from lab.device.authentication import OAUTH2, SIMPLE, Credentials, read_challenge, simple_sign_in
from lab.device.contents import Contents
from lab.device.errors import exchange
from lab.device.separation import CALENDAR, DEFAULT_PERSONAL_APPS, MAIL, MANAGED_APPS, Profile, Unreadable
from lab.device.trace import FAIL, OK, WARN, DeviceFailure, Trace, describe_request
from lab.device.cookies import CookieJar
from lab.device.http import DeviceHTTP
from lab.net import LabResolver, Network

FAMILIES = {  # CLI name → (model-family query value, PRODUCT, OS name)
    "iPhone": ("iPhone", "iPhone17,2", "iOS"),
    "iPad": ("iPad", "iPad16,3", "iPadOS"),
    "Mac": ("Mac", "Mac15,12", "macOS"),
    "Vision": ("RealityDevice", "RealityDevice14,1", "visionOS"),
}
ADUE_MINIMUM = {"iPhone": (15, 0), "iPad": (15, 0), "Mac": (14, 0), "Vision": (1, 1)}
ADDE_MINIMUM = {"iPhone": (17, 0), "iPad": (17, 0), "Mac": (14, 0), "Vision": (1, 1)}
ABM_FALLBACK_MINIMUM = {"iPhone": (18, 2), "iPad": (18, 2), "Mac": (15, 2), "Vision": (2, 2)}
DEFAULT_OS = {"iPhone": "26.1", "iPad": "26.1", "Mac": "26.1", "Vision": "26.1"}
CHECKIN_TYPE, SERVER_TYPE = "application/x-apple-aspen-mdm-checkin", "application/x-apple-aspen-mdm"
ONGOING = "ongoing-authentication"
MAX_RENEWALS = 2  # per request: refresh (or sign-in), then one more sign-in; then the device stops asking
MAX_COMMANDS = 200  # per sync
PERSONAL_ACCOUNT = "robin@personal.example"
# Payload types of InstallProfile that bring work data, and where it goes (PROTOCOL.md 5).
PAYLOAD_DATA = {"com.apple.mail.managed": (MAIL, "Inbox of the work mail account"),
                "com.apple.caldav.account": (CALENDAR, "Work calendar: quarterly review")}


def parse_version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"OS version {text!r} is not of the form X.Y")
    major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    return major, minor


@dataclass
class Enrollment:
    enrollment_id: str
    identifier: str
    mode: str
    server_url: str
    checkin_url: str
    topic: str
    identity_subject: str
    profile_identifier: str = ""
    organization: str = ""
    check_out_when_removed: bool = True
    enrollment_user_id: str | None = None
    enrolled_at: float = field(default_factory=time.time)
    credentials: Credentials | None = None  # kept in the managed keychain, never in the plain record

    @property
    def access_token(self) -> str | None:
        return self.credentials.access_token if self.credentials else None

    def to_dict(self) -> dict:
        return {k: v for k, v in vars(self).items() if k != "credentials"}


@dataclass
class Device:
    network: Network
    model_family: str = "iPhone"
    os_version: str = ""
    strict: bool = False
    serial: str = field(default_factory=lambda: "LAB" + secrets.token_hex(4).upper())
    language: str = "en-US"
    discovery_timeout: float = 90.0
    fallback_on: tuple[str, ...] = ("http", "transport", "content")
    udid: str = field(default_factory=lambda: str(uuid.uuid4()).upper())
    enrollment: Enrollment | None = None
    personal_account: str | None = PERSONAL_ACCOUNT
    personal_apps: tuple[str, ...] = DEFAULT_PERSONAL_APPS
    pkce: bool = False  # send PKCE in the OAuth 2 authorization request (the observed iOS client does not)
    owner_name: str = "Robin"
    locked: bool = False
    history: list[dict] = field(default_factory=list)
    contents: Contents | None = None

    user_agent_discovery = "RemoteManagementAgent/1.0"
    user_agent_enroll = "DeviceManagementClient/1.0"
    user_agent_web = "Mozilla/5.0 (ASWebAuthenticationSession; mdmlab)"
    user_agent_mdm = "MDM/1.0"

    def __post_init__(self):
        if self.model_family not in FAMILIES:
            raise ValueError(f"model family {self.model_family!r} is not one of {', '.join(FAMILIES)}")
        self.os_version = self.os_version or DEFAULT_OS[self.model_family]
        self.version_tuple = parse_version(self.os_version)
        self.resolver = LabResolver(self.network.dns_server, self.network.dns_port)
        # Only URLs the device builds itself (the well-known URL) are dialled on the lab's port for 443;
        # URLs the lab hands out must carry the right port themselves, as they would for a real phone.
        self.self_built = DeviceHTTP(self.resolver, self.network.ca_cert, {443: self.network.https_port})
        self.session = DeviceHTTP(self.resolver, self.network.ca_cert)
        self.trusted_roots = [x509.load_pem_x509_certificate(Path(self.network.ca_cert).read_bytes())]
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._identity = self._self_identity()
        self.password: str | None = None  # what the person types; in memory only, never stored
        if self.contents is None:
            self.contents = Contents.new(self.os_name, self.version_tuple, self.personal_account, self.personal_apps)

    # -- facts about the model -------------------------------------------------------------------------------
    @property
    def device_id(self) -> str:
        return self.serial

    @property
    def model_family_param(self) -> str:
        return FAMILIES[self.model_family][0]

    @property
    def product(self) -> str:
        return FAMILIES[self.model_family][1]

    @property
    def os_name(self) -> str:
        return FAMILIES[self.model_family][2]

    @property
    def build(self) -> str:
        major, minor = self.version_tuple
        prefix = {"iOS": 4, "iPadOS": 4, "macOS": 9, "visionOS": 20}[self.os_name]
        number = major + prefix if major < 26 else major - 3
        return f"{number}{chr(ord('A') + minor)}{100 + minor}"

    @property
    def has_abm_fallback(self) -> bool:
        return self.version_tuple >= ABM_FALLBACK_MINIMUM[self.model_family]

    def unsupported_version_reason(self, version: str) -> str | None:
        minimum = (ADUE_MINIMUM if version == "mdm-byod" else ADDE_MINIMUM)[self.model_family]
        if self.version_tuple < minimum:
            what = discovery.VERSIONS[version]
            return (f"{what} needs {self.os_name} {minimum[0]}.{minimum[1]} or later; this device runs "
                    f"{self.os_version}. Update the device or offer another enrollment method")
        return None

    def _self_identity(self) -> x509.Certificate:
        """Stands in for the device's built-in identity that signs the first enrollment request."""
        return self_signed(f"{self.product} {self.serial} (mdmlab device)", self._key)

    @property
    def identity(self):
        """The MDM identity (key, certificate) from the enrollment profile, kept in the managed keychain."""
        pem = self.contents.keychain_get("mdm-identity")
        if pem is None:
            return None
        return (serialization.load_pem_private_key(pem, password=None), x509.load_pem_x509_certificate(pem))

    # -- enrollment (stages 1-3) -------------------------------------------------------------------------------
    def enroll(self, identifier: str, password: str | None = None) -> Trace:
        """Walk stages 1 to 3 and the first check-ins; the trace says what happened and why."""
        trace = Trace()
        self.password = password
        try:
            if self.enrollment is not None:
                raise DeviceFailure("identifier", "already-enrolled", f"this device is enrolled as "
                                    f"{self.enrollment.identifier}; sign out of the work account first")
            self._enroll(identifier, password, trace)
        except DeviceFailure as failure:
            trace.fail(failure)
        return trace

    def _enroll(self, identifier: str, password: str | None, trace: Trace) -> None:
        _, domain = discovery.split_identifier(identifier)
        trace.add("identifier", f"sign in to work or school account as {identifier}", OK,
                  f"domain {domain}: the device asks it for the enrollment service")
        service = self._discover(domain, identifier, trace)
        enrollment_id = self.udid if service.version == "mdm-adde" else uuid.uuid4().hex.upper()
        body = cms.sign(plistlib.dumps({"LANGUAGE": self.language, "PRODUCT": self.product,
                                        "VERSION": self.build}), self._identity, self._key)
        response = self._post_enroll(service.base_url, body, None, trace)
        if response.status_code != 401:
            self._unexpected_enroll_status(response, trace, first=True)
        try:
            esso.follow(self, response, enrollment_id, trace)
            challenge = read_challenge(response, trace, strict=self.strict)
            credentials = self._sign_in(challenge, identifier, password, trace, "authentication")
            response = self._post_enroll(service.base_url, body, credentials.access_token, trace)
            if response.status_code != 200 or not response.content:
                self._unexpected_enroll_status(response, trace, first=False)
            installed = profile.install(response, service.version, identifier, self.trusted_roots, trace)
            self._install_enrollment(installed, enrollment_id, identifier, credentials, trace)
            self._check_in({"MessageType": "Authenticate", **self._identity_keys(), "BuildVersion": self.build,
                            "OSVersion": self.os_version, "ProductName": self.product}, trace)
            self._check_in({"MessageType": "TokenUpdate", **self._identity_keys(), "Token": secrets.token_bytes(32),
                            "PushMagic": str(uuid.uuid4()).upper()}, trace)
            if self.os_name == "macOS" and self.enrollment.mode == "BYOD":
                # macOS User Enrollment: the user channel's TokenUpdate adds EnrollmentUserID (PROTOCOL.md 3.4)
                self.enrollment.enrollment_user_id = uuid.uuid4().hex.upper()
                self._check_in({"MessageType": "TokenUpdate", **self._identity_keys(user_channel=True),
                                "Token": secrets.token_bytes(32), "PushMagic": str(uuid.uuid4()).upper()}, trace)
        except DeviceFailure:
            self._cancel(trace)
            raise
        self.history.append({"at": time.time(), "event": f"enrolled ({self.enrollment.mode}) as {identifier}"})
        trace.succeed(f"enrolled with {discovery.VERSIONS[service.version]} as {identifier}; "
                      f"{'UDID' if self.enrollment.mode == 'ADDE' else 'EnrollmentID'} {self.enrollment.enrollment_id}")

    def _install_enrollment(self, installed, enrollment_id: str, identifier: str, credentials: Credentials,
                            trace: Trace) -> None:
        mdm, mode = installed.mdm, installed.mdm["EnrollmentMode"]
        enrollment_id = self.udid if mode == "ADDE" else enrollment_id
        self.contents.create_volume(enrollment_id)
        self.enrollment = Enrollment(
            enrollment_id=enrollment_id, identifier=identifier, mode=mode, server_url=mdm["ServerURL"],
            checkin_url=installed.checkin_url, topic=mdm["Topic"],
            identity_subject=installed.identity_cert.subject.rfc4514_string(),
            profile_identifier=installed.identifier, organization=installed.organization,
            check_out_when_removed=bool(mdm.get("CheckOutWhenRemoved", False)))
        key_pem = installed.identity_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                       serialization.NoEncryption())
        self.contents.keychain_put("mdm-identity", key_pem + installed.identity_cert.public_bytes(
            serialization.Encoding.PEM))
        self._set_credentials(credentials)
        self.contents.install_profile(Profile(installed.identifier, installed.uuid, installed.display_name,
                                              "enrollment", installed.payload_types, installed.organization))
        maa = mdm["AssignedManagedAppleID"]
        self.contents.add_work_account(installed.organization or "the organization", maa)
        vault = self.contents.vault
        shared = [c for c in ("calendar", "reminders") if c not in vault.keys]
        trace.add("enrollment", f"sign in with the Managed Apple Account {maa}", OK,
                  f"the work account's data is kept apart under {len(vault.keys)} keys of this enrollment "
                  f"({', '.join(sorted(vault.keys))})" + (
                      f"; {self.os_name} {self.os_version} does not separate {', '.join(shared)} yet" if shared
                      else ""))

    def _cancel(self, trace: Trace) -> None:
        """A failed enrollment leaves nothing behind: volume, managed apps and profiles go (Apple: cancel)."""
        if self.contents.vault is None and not any(p.managed for p in self.contents.profiles.values()):
            self.enrollment = None
            return
        self.contents.remove_enrollment(None)
        self.enrollment = None
        trace.add(trace.steps[-1].stage if trace.steps else "enrollment", "cancel the enrollment", OK,
                  "the data-separated volume, its keys and anything installed for the enrollment are removed")

    def _discover(self, domain: str, identifier: str, trace: Trace) -> discovery.Service:
        """The org domain first; on 18.2/15.2/2.2 and later, ABM/ASM when the org domain fails (PROTOCOL.md 1.6)."""
        try:
            service = discovery.discover(self, self.self_built, domain, identifier, trace)
            trace.path = "direct"
            return service
        except DeviceFailure as direct:
            category = discovery.failure_category(direct.code)
            if not self.has_abm_fallback:
                raise DeviceFailure(direct.stage, direct.code, direct.explanation +
                                    f" ({self.os_name} {self.os_version} has no ABM/ASM fallback; it came in "
                                    f"{self.os_name} {'.'.join(map(str, ABM_FALLBACK_MINIMUM[self.model_family]))})"
                                    ) from None
            if category not in self.fallback_on:
                raise
            trace.add("discovery", "ask Apple Business/School Manager instead", WARN,
                      f"the org domain failed ({direct.code}); {self.os_name} {self.os_version} falls back to "
                      "ABM/ASM, which redirects to the MDM registered for this account and device type",
                      code="abm-fallback")
            try:
                service = discovery.discover(self, self.self_built, domain, identifier, trace, via_abm=True)
            except DeviceFailure as via_abm:
                raise DeviceFailure("discovery", via_abm.code, f"{via_abm.explanation}. Before that, the org "
                                    f"domain failed: {direct.explanation}") from None
            trace.path = "abm"
            return service

    def _post_enroll(self, url: str, body: bytes, token: str | None, trace: Trace):
        headers = {"Content-Type": "application/pkcs7-signature", "User-Agent": self.user_agent_enroll}
        if token:
            headers["Authorization"] = f"Bearer {token}"
        stage = "enrollment" if token else "authentication"
        response, request, elapsed = exchange(self.session, "POST", url, trace, stage=stage, headers=headers,
                                              what="the MDM enrollment endpoint", data=body, timeout=60)
        trace.add(stage, f"POST {url} → {response.status_code}", OK,
                  "enrollment request sent with the access token" if token else
                  "first enrollment request (signed LANGUAGE, PRODUCT, VERSION)",
                  request=request, response=response, elapsed=elapsed)
        return response

    def _unexpected_enroll_status(self, response, trace: Trace, *, first: bool) -> None:
        status = response.status_code
        stage = "authentication" if first else "enrollment"
        if first and status == 200:
            self._fail(trace, stage, "enroll-no-challenge",
                       "the MDM answered the first enrollment request with 200; account-driven enrollment needs "
                       "401 with WWW-Authenticate: Bearer so the user can sign in")
        if not first and status == 401:
            self._fail(trace, stage, "token-rejected",
                       "the MDM refused the access token it just issued (401); check how it stores and looks up "
                       "tokens, and their lifetime")
        if not first and status == 200:
            self._fail(trace, stage, "profile-empty", "the MDM answered 200 with an empty body; send the profile")
        self._fail(trace, stage, f"enroll-http-{status}",
                   f"the MDM enrollment endpoint answered {status}; it expects a POST of the signed device "
                   "information and answers 401 (first) or 200 with the profile (with a token)")

    # -- signing in and renewing (stages 2 and 4) ------------------------------------------------------------
    def _sso_app(self) -> str | None:
        return next((a.bundle_id for a in self.contents.managed_apps() if a.source == "esso"), None)

    def _browser(self) -> DeviceHTTP:
        """The web session for a sign-in: ephemeral, or the Enrollment SSO app's own (kept in its container)."""
        browser = DeviceHTTP(self.resolver, self.network.ca_cert, cookies=CookieJar())
        app = self._sso_app()
        if app:
            try:
                for cookie in json.loads(self.contents.vault.open(MANAGED_APPS, f"{app}/web-session")):
                    browser.cookies.set(**cookie)
            except (Unreadable, ValueError, TypeError):  # no session kept, or not one this browser wrote
                pass
        return browser

    def _keep_browser(self, browser: DeviceHTTP) -> None:
        app = self._sso_app()
        if app and self.contents.vault is not None and self.contents.vault.readable:
            jar = [{"name": c.name, "value": c.value, "domain": c.stored_domain, "path": c.path, "secure": c.secure,
                    "expires": c.expires} for c in browser.cookies]
            self.contents.vault.seal(MANAGED_APPS, f"{app}/web-session", json.dumps(jar).encode())

    def _sign_in(self, challenge, identifier: str, password: str | None, trace: Trace, stage: str) -> Credentials:
        browser = self._browser()
        try:
            if challenge.method == SIMPLE:
                credentials = simple_sign_in(self, browser, challenge, identifier, password, trace, stage=stage)
            else:
                credentials = oauth2.sign_in(self, browser, challenge, identifier, password, trace, stage=stage)
            self._keep_browser(browser)
            return credentials
        finally:
            browser.close()

    def _set_credentials(self, credentials: Credentials) -> None:
        self.enrollment.credentials = credentials
        self.contents.keychain_put("credentials", json.dumps(credentials.to_dict()).encode())

    def _renew(self, challenge, trace: Trace, *, refresh_first: bool) -> None:
        """A new access token: OAuth 2 refreshes silently first; otherwise (or refused) the person signs in."""
        current = self.enrollment.credentials
        if refresh_first and challenge.method == OAUTH2 and current.method == OAUTH2 and current.refresh_token:
            renewed = oauth2.refresh(self, current, trace, stage=ONGOING)
            if renewed is not None:
                self._set_credentials(renewed)
                return
        who = "the Enrollment SSO app signs in (single sign-on)" if self._sso_app() else \
            "the device asks the person to sign in again (Settings shows a re-authenticate control)"
        trace.add(ONGOING, "sign in again", OK, who)
        try:
            renewed = self._sign_in(challenge, current.identifier, self.password, trace, ONGOING)
        except DeviceFailure as failure:
            if failure.code == "password-needed":
                raise DeviceFailure(ONGOING, "reauth-needs-user", "the access token must be renewed and only the "
                                    "person can do it: sign in again in Settings (mdmlab device sync --password); "
                                    "the enrollment stays, commands wait") from None
            raise
        self._set_credentials(renewed)

    def _mdm_put(self, url: str, message: dict, content_type: str, stage: str, label: str, trace: Trace, *,
                 renew: bool = True):
        """PUT to CheckInURL or ServerURL with the bearer token; on 401 renew the token and retry (PROTOCOL.md 4)."""
        renewals = 0
        while True:
            headers = {"Content-Type": content_type, "User-Agent": self.user_agent_mdm,
                       "Authorization": f"Bearer {self.enrollment.access_token}"}
            response, request, elapsed = exchange(self.session, "PUT", url, trace, stage=stage, headers=headers,
                                                  what="the MDM", label=f" {label}", data=plistlib.dumps(message),
                                                  timeout=60)
            action = f"PUT {url} {label} → {response.status_code}"
            if response.status_code != 401 or not renew:
                return response, action, request, elapsed
            reason = _reason(response)
            if renewals == MAX_RENEWALS:
                self._fail(trace, stage, "reauth-loop", f"the MDM refused {label} with 401{reason} again after "
                           f"{renewals} token renewals; the device stops asking the person (a re-authentication "
                           "loop: check how the MDM validates the tokens it issues)", action, request, response,
                           elapsed)
            trace.add(stage, action, WARN, f"the MDM wants a new access token (401{reason})", code="token-renewal",
                      request=request, response=response, elapsed=elapsed)
            challenge = read_challenge(response, trace, strict=self.strict, stage=ONGOING)
            self._renew(challenge, trace, refresh_first=renewals == 0)
            renewals += 1

    def _identity_keys(self, *, user_channel: bool = False) -> dict:
        """User Enrollment hides the device (EnrollmentID only); Device Enrollment names it (PROTOCOL.md 3.4)."""
        enrollment = self.enrollment
        if enrollment.mode == "ADDE":
            return {"Topic": enrollment.topic, "UDID": self.udid, "SerialNumber": self.serial}
        keys = {"Topic": enrollment.topic, "EnrollmentID": enrollment.enrollment_id}
        if user_channel and enrollment.enrollment_user_id:
            keys["EnrollmentUserID"] = enrollment.enrollment_user_id
        return keys

    def _check_in(self, message: dict, trace: Trace) -> None:
        kind = message["MessageType"]
        response, action, request, elapsed = self._mdm_put(self.enrollment.checkin_url, message, CHECKIN_TYPE,
                                                           "check-in", kind, trace)
        if response.status_code != 200:
            code = "checkin-unauthorized" if response.status_code == 401 else f"checkin-http-{response.status_code}"
            detail = _reason(response)
            self._fail(trace, "check-in", code, f"the MDM refused {kind} ({response.status_code}{detail}); the "
                       "profile is installed but the MDM does not know the device", action, request, response,
                       elapsed)
        trace.add("check-in", action, OK, f"{kind} accepted", request=request, response=response, elapsed=elapsed)

    # -- commands (stage 4) -----------------------------------------------------------------------------------
    def sync(self, password: str | None = None) -> Trace:
        """Stands in for an APNs push: poll ServerURL, run each command, report, until the queue is empty."""
        trace = Trace()
        if password is not None:
            self.password = password
        try:
            if self.enrollment is None:
                raise DeviceFailure("commands", "not-enrolled", "this device is not enrolled; enroll it first")
            self._sync(trace)
        except DeviceFailure as failure:
            trace.fail(failure)
        return trace

    def _sync(self, trace: Trace) -> None:
        report, done = {"Status": "Idle", **self._identity_keys()}, 0
        for _ in range(MAX_COMMANDS):
            label = "Idle" if report["Status"] == "Idle" else f"{report['Status']} {report['CommandUUID'][:8]}"
            response, action, request, elapsed = self._mdm_put(self.enrollment.server_url, report, SERVER_TYPE,
                                                               "commands", label, trace)
            if response.status_code == 403 and _unrecognized(response):
                trace.add("commands", action, WARN, "the MDM no longer recognizes this enrollment "
                          "(ErrorUnrecognizedDevice): the device removes it", code="unrecognized-device",
                          request=request, response=response, elapsed=elapsed)
                self._remove_enrollment(trace, by="the MDM (ErrorUnrecognizedDevice)", check_out=False)
                trace.succeed("the MDM forgot this enrollment; the device removed it", outcome="unenrolled")
                return
            if response.status_code != 200:
                self._fail(trace, "commands", f"poll-http-{response.status_code}", f"the MDM answered the poll with "
                           f"{response.status_code}{_reason(response)}; the device keeps its result and tries again "
                           "at the next push", action, request, response, elapsed)
            if not response.content:
                trace.add("commands", action, OK, "queue empty" if report["Status"] == "Idle" else
                          "result delivered; nothing more to do", request=request, response=response, elapsed=elapsed)
                break
            trace.add("commands", action, OK, "result delivered; the MDM sends a command" if report["Status"] != "Idle"
                      else "the MDM sends a command", request=request, response=response, elapsed=elapsed)
            try:
                envelope = plistlib.loads(response.content)
                command_uuid = envelope["CommandUUID"]
            except Exception:
                self._fail(trace, "commands", "command-unreadable", "the MDM's reply is not a command plist with a "
                           "CommandUUID; the device cannot answer it")
            outcome = commands.execute(self, envelope)
            request_type = (envelope.get("Command") or {}).get("RequestType", "?")
            verdict = OK if outcome.status == "Acknowledged" else WARN
            trace.add("commands", f"{request_type} → {outcome.status}", verdict, outcome.explanation,
                      code=None if verdict == OK else f"command-{outcome.status.lower()}")
            done += 1
            report = {"CommandUUID": command_uuid, "Status": outcome.status, **self._identity_keys(),
                      **outcome.response}
            if outcome.after:
                response, action, request, elapsed = self._mdm_put(
                    self.enrollment.server_url, report, SERVER_TYPE, "commands", f"{outcome.status} {command_uuid[:8]}",
                    trace)
                trace.add("commands", action, OK if response.status_code == 200 else WARN,
                          "result delivered" if response.status_code == 200 else
                          f"the result was not accepted ({response.status_code}); the device goes ahead anyway",
                          request=request, response=response, elapsed=elapsed)
                if outcome.after == "erase":
                    self.erase(trace)
                    trace.succeed("the MDM erased the device", outcome="erased")
                else:
                    self._remove_enrollment(trace, by="the MDM (RemoveProfile)")
                    trace.succeed("the MDM removed the enrollment profile; the device unenrolled",
                                  outcome="unenrolled")
                return
        trace.succeed(f"synced: {done} command(s) run", outcome="synced")

    def apply_payloads(self, identifier: str, types: tuple[str, ...]) -> str:
        """Work data that a profile's accounts bring (mail, calendar), kept apart as this OS version allows."""
        done = []
        for kind in types:
            if kind in PAYLOAD_DATA:
                content, text = PAYLOAD_DATA[kind]
                where = self.contents.put_work_item(content, f"{identifier}/{content}", text,
                                                    self.enrollment.identifier)
                done.append(f"{content} {'on the data-separated volume' if where == 'sealed' else 'in the shared store (not separated on this OS version)'}")
        return "; ".join(done)

    def remove_payloads(self, identifier: str, types: tuple[str, ...]) -> str:
        removed = []
        for kind in types:
            if kind in PAYLOAD_DATA:
                content = PAYLOAD_DATA[kind][0]
                item_id = f"{identifier}/{content}"
                if self.contents.vault is not None:
                    self.contents.vault.remove(content, item_id)
                self.contents.personal[content] = [i for i in self.contents.personal.get(content, [])
                                                   if i["id"] != item_id]
                removed.append(f"its {content} data removed")
        return "; ".join(removed)

    def unlock(self) -> None:
        self.locked = False

    # -- unenrollment, erase, backup, restore ------------------------------------------------------------------
    def unenroll(self) -> Trace:
        """The person signs out of the work account (Settings > VPN & Device Management)."""
        trace = Trace()
        try:
            if self.enrollment is None:
                raise DeviceFailure("unenrollment", "not-enrolled", "this device is not enrolled")
            self._remove_enrollment(trace, by="the person (signed out of the work account)")
            trace.succeed("signed out of the work account; the enrollment and its data are gone",
                          outcome="unenrolled")
        except DeviceFailure as failure:
            trace.fail(failure)
        return trace

    def _remove_enrollment(self, trace: Trace, *, by: str, check_out: bool = True) -> None:
        enrollment, keys = self.enrollment, self._identity_keys()
        token = enrollment.access_token  # lives in the managed keychain, about to be destroyed
        removed = self.contents.remove_enrollment(enrollment.identifier)
        trace.add("unenrollment", "destroy the enrollment's keys", OK,
                  f"{removed['shredded_items']} item(s) on the data-separated volume can never be read again")
        trace.add("unenrollment", "remove what the enrollment brought", OK,
                  f"managed apps {', '.join(removed['managed_apps']) or 'none'}; profiles "
                  f"{', '.join(removed['profiles']) or 'none'}; {removed['shared_work_items']} work item(s) from the "
                  "shared store")
        self.locked = False
        self.enrollment = None
        if check_out and enrollment.check_out_when_removed:
            self._check_out(enrollment.checkin_url, keys, token, trace)
        self.history.append({"at": time.time(), "event": f"unenrolled by {by}"})

    def _check_out(self, url: str, keys: dict, token: str | None, trace: Trace) -> None:
        """One best-effort CheckOut, never retried, never re-authenticated (dev:check-out, PROTOCOL.md 4.6)."""
        headers = {"Content-Type": CHECKIN_TYPE, "User-Agent": self.user_agent_mdm,
                   **({"Authorization": f"Bearer {token}"} if token else {})}
        try:
            response = self.session.put(url, data=plistlib.dumps({"MessageType": "CheckOut", **keys}),
                                        headers=headers, timeout=30)
        except Exception as exc:
            trace.add("unenrollment", f"PUT {url} CheckOut", WARN, f"CheckOut not delivered ({exc.__class__.__name__});"
                      " the device does not resend it", code="checkout-not-delivered")
            return
        ok = response.status_code == 200
        trace.add("unenrollment", f"PUT {url} CheckOut → {response.status_code}", OK if ok else WARN,
                  "the MDM knows the device left" if ok else f"the MDM refused CheckOut{_reason(response)}; the "
                  "device does not resend it", code=None if ok else "checkout-refused",
                  request=describe_request("PUT", url, headers), response=response)

    def erase(self, trace: Trace | None = None) -> None:
        """Erase All Content and Settings: everything goes; the MDM is not told (no CheckOut)."""
        self.contents.erase()
        self.enrollment, self.locked = None, False
        self.history.append({"at": time.time(), "event": "erased (all content and settings)"})
        if trace is not None:
            trace.add("unenrollment", "erase all content and settings", OK, "the enrollment keys and every "
                      "personal and managed item are gone")

    def backup(self) -> dict:
        snapshot = {"device": self.serial, "model_family": self.model_family, **self.contents.backup()}
        self.history.append({"at": time.time(), "event": "backed up (personal data only)"})
        return snapshot

    def restore(self, backup: dict) -> None:
        """Restore a backup: the device is erased, the person's data comes back, the enrollment does not."""
        was = self.enrollment.identifier if self.enrollment else None
        self.contents.restore(backup)
        self.enrollment, self.locked = None, False
        self.history.append({"at": time.time(), "event": f"restored from the backup of {backup.get('device')}"
                             + (f"; the enrollment of {was} was not restored" if was else "")})

    def accept_invitation(self, account: str) -> tuple[bool, str]:
        """Open a managed app distribution invitation signed in as ``account`` (personal or the MAA)."""
        maa = self.enrollment.identifier if self.enrollment else None
        return self.contents.accept_invitation(account, maa)

    # -- views and persistence ---------------------------------------------------------------------------------
    def describe(self) -> dict:
        enrollment = self.enrollment
        auth = None
        if enrollment and enrollment.credentials:
            c = enrollment.credentials
            auth = {"method": c.method, "expires_at": c.expires_at, "refresh_token": c.refresh_token is not None,
                    "sso_app": self._sso_app()}
        return {"device_id": self.device_id, "model_family": self.model_family, "product": self.product,
                "os": f"{self.os_name} {self.os_version}", "serial": self.serial, "udid": self.udid,
                "personal_account": self.contents.personal_account, "locked": self.locked,
                "enrollment": None if enrollment is None else {**enrollment.to_dict(), "authentication": auth},
                **self.contents.describe(), "history": list(self.history)}

    def close(self) -> None:
        self.self_built.close()
        self.session.close()

    @staticmethod
    def _fail(trace: Trace, stage: str, code: str, explanation: str, action: str = "stop", request=None,
              response=None, elapsed=None):
        trace.add(stage, action, FAIL, explanation, code=code, request=request, response=response, elapsed=elapsed)
        raise DeviceFailure(stage, code, explanation)


def _reason(response) -> str:
    try:
        body = response.json()
        return f": {body.get('error')}: {body.get('message')}" if isinstance(body, dict) else ""
    except ValueError:
        return ""


def _unrecognized(response) -> bool:
    try:
        return response.json().get("code") == "com.apple.unrecognized.device"
    except (ValueError, AttributeError):
        return False
