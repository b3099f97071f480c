"""The org domain's faults: what organizations' web servers really do wrong (PROTOCOL.md section 6).

Each fault turns the well-known request into a broken answer. ``build`` receives the correct answer's parts, so
a fault changes only what it is about.
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from lab.faults import FaultSpec

COMPONENT = "org-domain"
DISCOVERY_PATH = "/discovery"  # a second path serving the answer, as a rewrite or a CMS plugin would
LOOP_PATHS = ("/loop/a", "/loop/b")
DECOMMISSIONED_HOST = "mdm-old"  # two-servers lists this host (under the lab zone) first; it does not resolve


def _spec(name: str, description: str, symptom: str, takes_seconds: bool = False) -> FaultSpec:
    return FaultSpec(name, COMPONENT, description, symptom, takes_seconds)


FAULTS = [
    _spec("well-known-404", "404 HTML page: the file is not on the site",
          "'Unable to connect' / discovery fails: the CMS-hosted site cannot serve /.well-known"),
    _spec("well-known-403", "403 HTML page from a web application firewall",
          "discovery fails: a WAF or bot protection blocks the device's request"),
    _spec("well-known-500", "500 Internal Server Error", "discovery fails: the site's back end is broken"),
    _spec("well-known-503", "503 Service Unavailable with Retry-After",
          "discovery fails while the site is in maintenance or overloaded"),
    _spec("well-known-refused", "403 ErrorWellKnownFailed JSON with a message for the user",
          "the device shows the organization's message: enrollment is refused on purpose"),
    _spec("html-error-page", "200 with an HTML login/error page instead of JSON",
          "discovery fails although the URL 'works in a browser': a SSO portal or CMS answers for every path"),
    _spec("json-as-html", "the right JSON, served as text/html",
          "discovery fails although the JSON is correct: the web server's MIME type for the file is wrong"),
    _spec("json-as-text", "the right JSON, served as text/plain",
          "discovery fails although the JSON is correct: an extension-less file served as text/plain"),
    _spec("malformed-json", "a JSON document with a trailing comma", "discovery fails: a hand-edited file"),
    _spec("missing-servers", "valid JSON without the Servers key (lower-case 'servers')",
          "discovery fails: key names are case-sensitive"),
    _spec("empty-servers", 'valid JSON with "Servers": []', "discovery fails: the MDM entry was removed"),
    _spec("two-servers", "two Servers entries, the first a decommissioned MDM that no longer resolves",
          "enrollment fails after an MDM migration: the device takes the first entry"),
    _spec("misspelled-version", "the entry says 'Verison' instead of 'Version'",
          "discovery fails: a typo in the key name"),
    _spec("wrong-mode", "Version mdm-byod and mdm-adde swapped",
          "the profile is refused: its EnrollmentMode does not match the discovered Version"),
    _spec("base-url-http", "BaseURL uses http://", "discovery fails: the MDM URL is not https"),
    _spec("redirect-loop", "302 to a page that redirects back", "discovery fails: two redirect rules fight"),
    _spec("redirect-to-http", "301 to the same path over http://",
          "discovery fails: a redirect to plain http (e.g. a load balancer's default rule)"),
    _spec("redirect-drops-query", "301 to another path without user-identifier and model-family",
          "the target cannot route by user: a static redirect loses the query (the device does not re-add it)"),
    _spec("trailing-dot-path", "only /.well-known/com.apple.remotemanagement. (with a trailing dot) exists",
          "404 at the real path: the file was named after a documentation typo"),
    _spec("slow-response", "answers after 'seconds' (default 5), later than the device waits",
          "a long spinner, then failure: an overloaded site or a slow proxy", takes_seconds=True),
    _spec("connection-reset", "resets the TCP connection instead of answering",
          "'cannot connect' at once: a firewall or proxy kills the connection"),
]

DEFAULT_SLOW_SECONDS = 5.0


@dataclass(frozen=True)
class Broken:
    """What the route does instead of the normal answer."""
    status: int = 200
    content_type: str = "application/json"
    body: bytes = b""
    location: str | None = None
    delay: float = 0.0
    reset: bool = False
    extra_headers: tuple = ()


def _html(status: int, title: str) -> Broken:
    page = f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Broken(status, "text/html; charset=utf-8", page.encode())


def build(name: str, *, document: dict, origin: str, path: str, query: str, seconds: float | None,
          zone: str) -> Broken:
    """The broken answer of fault ``name`` for a request to ``origin + path`` (``query`` without '?')."""
    q = f"?{query}" if query else ""
    if name in ("well-known-404", "trailing-dot-path"):
        return _html(404, "404 Not Found")
    if name == "well-known-403":
        return _html(403, "403 Forbidden: request blocked by security policy")
    if name == "well-known-500":
        return _html(500, "500 Internal Server Error")
    if name == "well-known-503":
        return Broken(**{**_html(503, "503 Service Unavailable").__dict__, "extra_headers": (("Retry-After", "120"),)})
    if name == "well-known-refused":
        body = {"code": "com.apple.well-known.failed", "description": "enrollment disabled for this account",
                "message": "Personal devices cannot enroll at BetterBag. Ask IT for a company device."}
        return Broken(403, "application/json", json.dumps(body).encode())
    if name == "html-error-page":
        page = ("<!doctype html><html><head><title>Sign in</title></head><body><h1>Sign in to continue</h1>"
                "<form action='/login' method='post'><input name='username'><input type='password' "
                "name='password'></form></body></html>")
        return Broken(200, "text/html; charset=utf-8", page.encode())
    text = json.dumps(document)
    if name == "json-as-html":
        return Broken(200, "text/html; charset=utf-8", text.encode())
    if name == "json-as-text":
        return Broken(200, "text/plain; charset=utf-8", text.encode())
    if name == "malformed-json":
        return Broken(200, "application/json", text[:-2].encode() + b",]}")
    if name == "missing-servers":
        return Broken(200, "application/json", json.dumps({"servers": document["Servers"]}).encode())
    if name == "empty-servers":
        return Broken(200, "application/json", b'{"Servers": []}')
    servers = [dict(s) for s in document["Servers"]]
    if name == "two-servers":
        old = {"Version": servers[0]["Version"], "BaseURL": f"https://{DECOMMISSIONED_HOST}.{zone}/enroll"}
        return Broken(200, "application/json", json.dumps({"Servers": [old, *servers]}).encode())
    if name == "misspelled-version":
        servers[0]["Verison"] = servers[0].pop("Version")
        return Broken(200, "application/json", json.dumps({"Servers": servers}).encode())
    if name == "wrong-mode":
        servers[0]["Version"] = {"mdm-byod": "mdm-adde"}.get(servers[0]["Version"], "mdm-byod")
        return Broken(200, "application/json", json.dumps({"Servers": servers}).encode())
    if name == "base-url-http":
        servers[0]["BaseURL"] = "http://" + servers[0]["BaseURL"].split("://", 1)[1]
        return Broken(200, "application/json", json.dumps({"Servers": servers}).encode())
    if name == "redirect-loop":
        target = LOOP_PATHS[1] if path == LOOP_PATHS[0] else LOOP_PATHS[0]
        return Broken(302, "text/html", b"", location=origin + target + q)
    if name == "redirect-to-http":
        return Broken(301, "text/html", b"", location="http://" + origin.split("://", 1)[1] + path + q)
    if name == "redirect-drops-query":
        return Broken(301, "text/html", b"", location=origin + DISCOVERY_PATH)
    if name == "slow-response":
        return Broken(200, "application/json", text.encode(), delay=DEFAULT_SLOW_SECONDS if seconds is None
                      else seconds)
    if name == "connection-reset":
        return Broken(reset=True)
    raise KeyError(name)
