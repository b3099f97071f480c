"""`mdmlab probe`: the device's discovery against any domain, the lab's or a real one, check by check.

It walks stage 1 exactly as the simulated device does (same code), then sends the first request of stage 2 and
judges the challenge. By default it uses the system's resolver and trust store, like a phone on that network.
"""
from __future__ import annotations

import plistlib
import socket
import ssl
from pathlib import Path

from cryptography.hazmat.primitives.asymmetric import ec

from lab import cms
from lab.device import authentication, discovery, messages
from lab.device.errors import transport_failure
from lab.device.model import Client
from lab.device.profile import MODES
from lab.device.trace import FAIL, OK, WARN, DeviceFailure, Trace
from lab.net import DNSFailure, LabResolver, lab_session
from lab.pki import self_signed

APPLE_HOST = "axm-adm-enroll.apple.com"
# The probe's own device identifiers: what it sends where Apple's MachineInfo asks for them (Device Enrollment).
PROBE_UDID, PROBE_SERIAL = "00000000-0000-4000-8000-0000000A11CE", "PROBE0000001"
REQUIRED = {"apple-as-web": ("url",),
            "apple-oauth2": ("authorization-url", "token-url", "redirect-url", "client-id")}


class SystemResolver:
    """getaddrinfo, as the phone's own stub resolver would ask the network's DNS."""

    def __init__(self, resolv_conf: str = "/etc/resolv.conf"):
        self.resolv_conf = resolv_conf

    def describe(self) -> str:
        """Which resolver the system asks: the nameservers of resolv.conf."""
        try:
            lines = Path(self.resolv_conf).read_text().splitlines()
        except OSError:
            return f"the system resolver ({self.resolv_conf} unreadable)"
        servers = [p[1] for p in (line.split() for line in lines) if len(p) >= 2 and p[0] == "nameserver"]
        return (f"the system resolver (nameserver {', '.join(servers)} from {self.resolv_conf})" if servers
                else f"the system resolver (no nameserver in {self.resolv_conf})")

    def resolve(self, host: str) -> str:
        try:
            infos = socket.getaddrinfo(host, 443, type=socket.SOCK_STREAM)
        except socket.gaierror as exc:
            code = "nxdomain" if exc.errno in (socket.EAI_NONAME, getattr(socket, "EAI_NODATA", -5)) else "timeout"
            raise DNSFailure(host, code, f"cannot resolve {host}: {exc.strerror}") from None
        infos.sort(key=lambda info: info[0] != socket.AF_INET)
        return str(infos[0][4][0])


def system_resolver_note(resolver: SystemResolver, failure: DNSFailure) -> str:
    """Who was asked and what its failure likely means: a probe on a machine that is offline or behind a
    filtering resolver must not blame the organization's record."""
    meaning = ("no answer came: this machine is likely offline, or its resolver unreachable"
               if failure.code != "nxdomain"
               else "it says the name does not exist: either the record is missing, or this resolver cannot see "
                    "it (offline, or a filtering or split-horizon resolver; try --dns with another server)")
    return f"asked {resolver.describe()}: {meaning}"


def _probe_signer():
    key = ec.generate_private_key(ec.SECP256R1())
    return self_signed("mdmlab probe", key, days=1), key


def system_trust() -> str | bool:
    paths = ssl.get_default_verify_paths()
    for candidate in (paths.cafile, paths.openssl_cafile):
        if candidate and Path(candidate).exists():
            return candidate
    return True  # requests' bundled store


def probe(identifier: str, *, dns: tuple[str, int] | None = None, ca: str | None = None, port: int = 443,
          model_family: str = "iPhone") -> Trace:
    trace = Trace()
    resolver = LabResolver(*dns) if dns else SystemResolver()
    trust = ca or system_trust()
    self_built = lab_session(resolver, trust, {443: port} if port != 443 else None)
    session = lab_session(resolver, trust)
    client = Client(model_family, apple_host=APPLE_HOST, discovery_timeout=30.0)
    try:
        _, domain = discovery.split_identifier(identifier)
        trace.add("identifier", f"identifier {identifier}", OK, f"domain {domain}")
        try:
            address = resolver.resolve(domain)
            trace.add("discovery", f"resolve {domain}", OK, f"{domain} → {address}")
        except DNSFailure as exc:
            failure = transport_failure("discovery", f"https://{domain}/", exc, "the organization's domain")
            if isinstance(resolver, SystemResolver):
                failure = DeviceFailure(failure.stage, failure.code,
                                        f"{exc.message}; {system_resolver_note(resolver, exc)}")
            trace.add("discovery", f"resolve {domain}", FAIL, failure.explanation, code=failure.code)
            raise failure from None
        service = discovery.discover(client, self_built, domain, identifier, trace)
        for check in ("TLS certificate verified for every host on the way", "status 200",
                      "Content-Type application/json", "valid JSON with a non-empty Servers array",
                      f"Version {service.version}", f"BaseURL {service.base_url} is https"):
            trace.add("discovery", check, OK, "passed")
        _first_enrollment_request(client, session, service, trace)
        trace.succeed(f"discovery works and {service.base_url} challenges the device correctly")
    except DeviceFailure as failure:
        trace.fail(failure)
    finally:
        self_built.close()
        session.close()
    return trace


def _first_enrollment_request(client: Client, session, service, trace: Trace) -> None:
    cert, key = _probe_signer()
    info = messages.machine_info(client, PROBE_UDID, PROBE_SERIAL, MODES[service.version])
    body = cms.sign(plistlib.dumps(info), cert, key)
    url = service.base_url
    try:
        response = session.post(url, data=body, timeout=30, allow_redirects=False,
                                headers={"Content-Type": "application/pkcs7-signature",
                                         "User-Agent": client.user_agent_enroll})
    except Exception as exc:
        failure = transport_failure("authentication", url, exc, "the MDM enrollment endpoint")
        trace.add("authentication", f"POST {url}", FAIL, failure.explanation, code=failure.code)
        raise failure from None
    action = f"POST {url} → {response.status_code}"
    if response.status_code != 401:
        explanation = (f"the first enrollment request must get 401 with WWW-Authenticate: Bearer; it got "
                       f"{response.status_code}")
        trace.add("authentication", action, FAIL, explanation, code=f"enroll-http-{response.status_code}",
                  response=response)
        raise DeviceFailure("authentication", f"enroll-http-{response.status_code}", explanation)
    trace.add("authentication", action, OK, "401 as expected", response=response)
    try:
        challenge = authentication.parse_challenge(response.headers.get("WWW-Authenticate"))
    except ValueError as exc:
        trace.add("authentication", "parse WWW-Authenticate", FAIL, str(exc), code="challenge-malformed")
        raise DeviceFailure("authentication", "challenge-malformed", str(exc)) from None
    if challenge.separator_warning:
        trace.add("authentication", "parse WWW-Authenticate", WARN, challenge.separator_warning,
                  code="challenge-separator")
    required = REQUIRED.get(challenge.method)
    if required is None:
        explanation = f"unknown challenge method {challenge.method!r}; use apple-as-web or apple-oauth2"
        trace.add("authentication", "challenge method", FAIL, explanation, code="challenge-method-unknown")
        raise DeviceFailure("authentication", "challenge-method-unknown", explanation)
    missing = [p for p in required if not challenge.params.get(p)]
    if missing:
        explanation = f"the {challenge.method} challenge lacks {', '.join(missing)}"
        trace.add("authentication", "challenge parameters", FAIL, explanation, code="challenge-missing-parameter")
        raise DeviceFailure("authentication", "challenge-missing-parameter", explanation)
    trace.add("authentication", f"challenge method {challenge.method}", OK,
              ", ".join(f"{k}={v}" for k, v in challenge.params.items() if k != "method"))
