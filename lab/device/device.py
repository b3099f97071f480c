"""The simulated device: a model, an OS version, and the four stages walked strictly (PROTOCOL.md).

It knows only what a real device knows: the identifier typed by the user, the DNS server, the CA it trusts.
It never imports a mock and never reads their state.
"""
from __future__ import annotations

import datetime as dt
import plistlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import hashes
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from lab import cms
from lab.device import authentication, discovery, profile
from lab.device.errors import transport_failure
from lab.device.trace import FAIL, OK, WARN, DeviceFailure, Trace, describe_request
from lab.device.transport import LabResolver, lab_session

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


def parse_version(text: str) -> tuple[int, int]:
    parts = text.split(".")
    if not 1 <= len(parts) <= 3 or not all(p.isdigit() for p in parts):
        raise ValueError(f"OS version {text!r} is not of the form X.Y")
    major, minor = int(parts[0]), int(parts[1]) if len(parts) > 1 else 0
    return major, minor


@dataclass(frozen=True)
class Network:
    """What the device is configured with: its DNS server, the CA it trusts, the lab's HTTPS port."""
    dns_server: str
    dns_port: int
    ca_cert: str
    https_port: int = 443
    apple_host: str = "axm-adm-enroll.lab.test"  # where "Apple" answers the ABM/ASM discovery fallback


@dataclass
class Enrollment:
    enrollment_id: str
    identifier: str
    mode: str
    server_url: str
    checkin_url: str
    topic: str
    access_token: str
    identity_subject: str


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
        self.self_built = lab_session(self.resolver, self.network.ca_cert, {443: self.network.https_port})
        self.session = lab_session(self.resolver, self.network.ca_cert)
        self.trusted_roots = [x509.load_pem_x509_certificate(Path(self.network.ca_cert).read_bytes())]
        self._key = ec.generate_private_key(ec.SECP256R1())
        self._identity = self._self_identity()

    # -- facts about the model -------------------------------------------------------------------------------
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
        name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, f"{self.product} {self.serial} (mdmlab device)")])
        now = dt.datetime.now(dt.timezone.utc)
        return (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(self._key.public_key())
                .serial_number(x509.random_serial_number()).not_valid_before(now - dt.timedelta(hours=1))
                .not_valid_after(now + dt.timedelta(days=30)).sign(self._key, hashes.SHA256()))

    # -- the flow --------------------------------------------------------------------------------------------
    def enroll(self, identifier: str, password: str | None = None) -> Trace:
        """Walk stages 1 to 3 and the first check-ins; the trace says what happened and why."""
        trace = Trace()
        try:
            self._enroll(identifier, password, trace)
        except DeviceFailure as failure:
            trace.fail(failure)
        return trace

    def _enroll(self, identifier: str, password: str | None, trace: Trace) -> None:
        _, domain = discovery.split_identifier(identifier)
        trace.add("identifier", f"sign in to work or school account as {identifier}", OK,
                  f"domain {domain}: the device asks it for the enrollment service")
        service = self._discover(domain, identifier, trace)
        body = cms.sign(plistlib.dumps({"LANGUAGE": self.language, "PRODUCT": self.product,
                                        "VERSION": self.build}), self._identity, self._key)
        response = self._post_enroll(service.base_url, body, None, trace)
        if response.status_code != 401:
            self._unexpected_enroll_status(response, trace, first=True)
        try:
            challenge = authentication.parse_challenge(response.headers.get("WWW-Authenticate"), strict=self.strict)
        except ValueError as exc:
            self._fail(trace, "authentication", "challenge-malformed",
                       f"the 401 challenge is unusable: {exc}. Send WWW-Authenticate: Bearer "
                       'method="apple-as-web", url="https://..."')
        if challenge.separator_warning:
            trace.add("authentication", "parse the challenge", "warn", challenge.separator_warning,
                      code="challenge-separator")
        if challenge.method != "apple-as-web":
            known = challenge.method == "apple-oauth2"
            self._fail(trace, "authentication", "challenge-method-unsupported" if known else "challenge-method-unknown",
                       f"the challenge method {challenge.method!r} is "
                       + ("not implemented by the simulated device yet; use apple-as-web" if known else
                          "unknown; use apple-as-web or apple-oauth2"))
        trace.add("authentication", "parse the challenge", OK,
                  f"simple authentication: sign in on {challenge.params.get('url')}")
        browser = lab_session(self.resolver, self.network.ca_cert)
        token = authentication.web_sign_in(self, browser, challenge, identifier, password, trace)
        browser.close()
        response = self._post_enroll(service.base_url, body, token, trace)
        if response.status_code != 200 or not response.content:
            self._unexpected_enroll_status(response, trace, first=False)
        installed = profile.install(response, service.version, identifier, self.trusted_roots, trace)
        adde = installed.mdm["EnrollmentMode"] == "ADDE"
        self.enrollment = Enrollment(
            enrollment_id=self.udid if adde else uuid.uuid4().hex.upper(), identifier=identifier,
            mode=installed.mdm["EnrollmentMode"], server_url=installed.mdm["ServerURL"],
            checkin_url=installed.checkin_url, topic=installed.mdm["Topic"], access_token=token,
            identity_subject=installed.identity_cert.subject.rfc4514_string())
        self._check_in({"MessageType": "Authenticate", **self._identity_keys(), "BuildVersion": self.build,
                        "OSVersion": self.os_version, "ProductName": self.product}, trace)
        self._check_in({"MessageType": "TokenUpdate", **self._identity_keys(), "Token": secrets.token_bytes(32),
                        "PushMagic": str(uuid.uuid4()).upper()}, trace)
        trace.succeed(f"enrolled with {discovery.VERSIONS[service.version]} as {identifier}; "
                      f"EnrollmentID {self.enrollment.enrollment_id}")

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
        started = time.perf_counter()
        try:
            response = self.session.post(url, data=body, headers=headers, allow_redirects=False, timeout=60)
        except Exception as exc:
            failure = transport_failure(stage, url, exc, "the MDM enrollment endpoint")
            trace.add(stage, f"POST {url}", FAIL, failure.explanation, code=failure.code,
                      request=describe_request("POST", url, headers))
            raise failure from None
        trace.add(stage, f"POST {url} → {response.status_code}", OK,
                  "enrollment request sent with the access token" if token else
                  "first enrollment request (signed LANGUAGE, PRODUCT, VERSION)",
                  request=describe_request("POST", url, headers), response=response,
                  elapsed=time.perf_counter() - started)
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

    def _identity_keys(self) -> dict:
        """User Enrollment hides the device (EnrollmentID only); Device Enrollment names it (PROTOCOL.md 3.4)."""
        enrollment = self.enrollment
        if enrollment.mode == "ADDE":
            return {"Topic": enrollment.topic, "UDID": self.udid, "SerialNumber": self.serial}
        return {"Topic": enrollment.topic, "EnrollmentID": enrollment.enrollment_id}

    def _check_in(self, message: dict, trace: Trace) -> None:
        enrollment = self.enrollment
        headers = {"Content-Type": "application/x-apple-aspen-mdm-checkin", "User-Agent": self.user_agent_mdm,
                   "Authorization": f"Bearer {enrollment.access_token}"}
        url, kind = enrollment.checkin_url, message["MessageType"]
        started = time.perf_counter()
        try:
            response = self.session.put(url, data=plistlib.dumps(message), headers=headers, timeout=60)
        except Exception as exc:
            failure = transport_failure("check-in", url, exc, "the MDM check-in endpoint")
            trace.add("check-in", f"PUT {url} {kind}", FAIL, failure.explanation, code=failure.code)
            raise failure from None
        action = f"PUT {url} {kind} → {response.status_code}"
        request = describe_request("PUT", url, headers)
        elapsed = time.perf_counter() - started
        if response.status_code != 200:
            code = "checkin-unauthorized" if response.status_code == 401 else f"checkin-http-{response.status_code}"
            detail = _reason(response)
            trace.add("check-in", action, FAIL, f"the MDM refused {kind} ({response.status_code}{detail}); the "
                      "profile is installed but the MDM does not know the device", code=code, request=request,
                      response=response, elapsed=elapsed)
            raise DeviceFailure("check-in", code, f"{kind} was refused with {response.status_code}{detail}")
        trace.add("check-in", action, OK, f"{kind} accepted", request=request, response=response, elapsed=elapsed)

    @staticmethod
    def _fail(trace: Trace, stage: str, code: str, explanation: str):
        trace.add(stage, "stop", FAIL, explanation, code=code)
        raise DeviceFailure(stage, code, explanation)

    def close(self) -> None:
        self.self_built.close()
        self.session.close()


def _reason(response) -> str:
    try:
        body = response.json()
        return f": {body.get('error')}: {body.get('message')}" if isinstance(body, dict) else ""
    except ValueError:
        return ""
