"""Turning network failures into diagnoses an IT trainee can act on."""
from __future__ import annotations

import socket
import ssl
import time

import requests

from lab.device.trace import FAIL, DeviceFailure, Trace, describe_request
from lab.net import DNSFailure

# OpenSSL verify codes
_TLS_CODES = {
    10: ("tls-expired", "the certificate of {host} has expired; renew it"),
    9: ("tls-not-yet-valid", "the certificate of {host} is not valid yet (check the server's and the device's "
                             "clocks, or the certificate's start date)"),
    62: ("tls-wrong-name", "the certificate of {host} does not name {host}; issue one whose subjectAltName "
                           "includes it"),
    18: ("tls-untrusted", "{host} presents a self-signed certificate the device does not trust; use a "
                          "certificate from a CA the device trusts"),
    19: ("tls-untrusted", "{host} presents a certificate chain ending in a root the device does not trust; use a "
                          "certificate from a CA the device trusts (for the lab: install and fully trust the lab CA)"),
    20: ("tls-untrusted", "{host} presents a certificate from a CA the device does not trust; use a certificate "
                          "from a trusted CA (for the lab: install and fully trust the lab CA)"),
    21: ("tls-untrusted", "{host} sends an incomplete chain; include the intermediate certificates"),
}


def _causes(exc: BaseException):
    seen: set[int] = set()
    stack: list = [exc]
    while stack:
        item = stack.pop()
        if item is None or id(item) in seen or not isinstance(item, BaseException):
            continue
        seen.add(id(item))
        yield item
        stack.extend([item.__cause__, item.__context__, getattr(item, "reason", None),
                      *[a for a in item.args if isinstance(a, BaseException)]])


def transport_failure(stage: str, url: str, exc: BaseException, what: str) -> DeviceFailure:
    host = requests.utils.urlparse(url).hostname or url
    causes = list(_causes(exc))
    for cause in causes:
        if isinstance(cause, DNSFailure):
            hints = {"nxdomain": f"the name {host} does not exist in DNS; create the record (or fix the typo)",
                     "servfail": f"the DNS server failed to resolve {host} (SERVFAIL); check the zone and its "
                                 "name servers",
                     "timeout": f"DNS did not answer for {host}; check the device's DNS server and the network",
                     "nodata": f"{host} exists in DNS but has no address record; add an A or AAAA record",
                     "refused": f"the DNS server refused to resolve {host}; point the device at a DNS server "
                                "that serves this zone"}
            return DeviceFailure(stage, f"dns-{cause.code}", f"cannot reach {what}: " +
                                 hints.get(cause.code, cause.message))
    for cause in causes:
        if isinstance(cause, ssl.SSLCertVerificationError):
            code, text = _TLS_CODES.get(cause.verify_code, ("tls-untrusted", "the certificate of {host} is not "
                                                            "trusted ({detail})"))
            return DeviceFailure(stage, code, f"cannot reach {what}: " +
                                 text.format(host=host, detail=cause.verify_message))
    for cause in causes:
        if isinstance(cause, ssl.SSLError):
            return DeviceFailure(stage, "tls-handshake", f"the TLS handshake with {host} failed ({cause.reason}); "
                                                         "check the server's TLS configuration")
    if isinstance(exc, requests.Timeout) or any(isinstance(c, socket.timeout) for c in causes):
        return DeviceFailure(stage, "timeout", f"{what} at {host} did not answer in time; the device gives up "
                                               "(check the server's load and anything slow in front of it)")
    for cause in causes:
        text = str(cause).lower()
        if isinstance(cause, ConnectionResetError) or any(w in text for w in ("reset", "aborted",
                                                                              "without response")):
            return DeviceFailure(stage, "connection-reset", f"{host} closed the connection without answering; "
                                                            "check the web server and any proxy or firewall")
        if isinstance(cause, ConnectionRefusedError) or "refused" in text:
            parsed = requests.utils.urlparse(url)
            where = f"{host}:{parsed.port}" if parsed.port else host
            return DeviceFailure(stage, "connection-refused", f"nothing listens on {parsed.scheme or 'https'} at "
                                                              f"{where}; start the web server or fix the address")
    return DeviceFailure(stage, "network-error", f"cannot reach {what} at {host}: {exc.__class__.__name__}: {exc}")


def exchange(session, method: str, url: str, trace: Trace, *, stage: str, what: str, headers: dict,
             label: str = "", **kwargs):
    """One HTTP exchange of the device, redirects not followed: (response, request as traced, seconds).

    A transport failure is traced as a failed step and raised as its diagnosis (DNS, TLS, timeout, reset...).
    """
    started = time.perf_counter()
    request = describe_request(method, url, headers)
    try:
        response = session.request(method, url, headers=headers, allow_redirects=False, **kwargs)
    except Exception as exc:
        failure = transport_failure(stage, url, exc, what)
        trace.add(stage, f"{method} {url}{label}", FAIL, failure.explanation, code=failure.code, request=request,
                  elapsed=time.perf_counter() - started)
        raise failure from None
    return response, request, time.perf_counter() - started
