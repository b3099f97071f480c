"""The org domain's faults: what organizations' web servers really do wrong (PROTOCOL.md section 6).

Each fault is a record (``lab.faults.FaultSpec``) whose hook turns the correct well-known answer into the broken
one: it receives the correct answer's parts (``WellKnownAnswer``) and returns what the route does instead
(``Broken``), so a fault changes only what it is about. All apply at the well-known path (``at="well-known"``).
"""
from __future__ import annotations

import json
from dataclasses import dataclass

from lab.faults import FaultRegistry

COMPONENT = "org-domain"
AT = "well-known"
DISCOVERY_PATH = "/discovery"  # a second path serving the answer, as a rewrite or a CMS plugin would
LOOP_PATHS = ("/loop/a", "/loop/b")
DECOMMISSIONED_HOST = "mdm-old"  # two-servers lists this host (under the lab zone) first; it does not resolve
DEFAULT_SLOW_SECONDS = 5.0


@dataclass(frozen=True)
class WellKnownAnswer:
    """The correct answer's parts, for a request to ``origin + path`` (``query`` without '?')."""
    document: dict
    origin: str
    path: str
    query: str
    seconds: float | None  # the armed fault's seconds
    zone: str


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


_registry = FaultRegistry(COMPONENT)


def fault(name: str, description: str, symptom: str, takes_seconds: bool = False):
    return _registry(name, at=AT, description=description, symptom=symptom, takes_seconds=takes_seconds)


def _html(status: int, title: str, headers: tuple = ()) -> Broken:
    page = f"<!doctype html><html><head><title>{title}</title></head><body><h1>{title}</h1></body></html>"
    return Broken(status, "text/html; charset=utf-8", page.encode(), extra_headers=headers)


def _json(document) -> Broken:
    return Broken(200, "application/json", json.dumps(document).encode())


def _servers(answer: WellKnownAnswer) -> list[dict]:
    return [dict(s) for s in answer.document["Servers"]]


@fault("well-known-404", "404 HTML page: the file is not on the site",
       "'Unable to connect' / discovery fails: the CMS-hosted site cannot serve /.well-known")
def _not_found(answer: WellKnownAnswer) -> Broken:
    return _html(404, "404 Not Found")


@fault("well-known-403", "403 HTML page from a web application firewall",
       "discovery fails: a WAF or bot protection blocks the device's request")
def _forbidden(answer: WellKnownAnswer) -> Broken:
    return _html(403, "403 Forbidden: request blocked by security policy")


@fault("well-known-500", "500 Internal Server Error", "discovery fails: the site's back end is broken")
def _server_error(answer: WellKnownAnswer) -> Broken:
    return _html(500, "500 Internal Server Error")


@fault("well-known-503", "503 Service Unavailable with Retry-After",
       "discovery fails while the site is in maintenance or overloaded")
def _unavailable(answer: WellKnownAnswer) -> Broken:
    return _html(503, "503 Service Unavailable", (("Retry-After", "120"),))


@fault("well-known-refused", "403 ErrorWellKnownFailed JSON with a message for the user",
       "the device shows the organization's message: enrollment is refused on purpose")
def _refused(answer: WellKnownAnswer) -> Broken:
    body = {"code": "com.apple.well-known.failed", "description": "enrollment disabled for this account",
            "message": "Personal devices cannot enroll at BetterBag. Ask IT for a company device."}
    return Broken(403, "application/json", json.dumps(body).encode())


@fault("html-error-page", "200 with an HTML login/error page instead of JSON",
       "discovery fails although the URL 'works in a browser': a SSO portal or CMS answers for every path")
def _login_page(answer: WellKnownAnswer) -> Broken:
    page = ("<!doctype html><html><head><title>Sign in</title></head><body><h1>Sign in to continue</h1>"
            "<form action='/login' method='post'><input name='username'><input type='password' "
            "name='password'></form></body></html>")
    return Broken(200, "text/html; charset=utf-8", page.encode())


@fault("json-as-html", "the right JSON, served as text/html",
       "discovery fails although the JSON is correct: the web server's MIME type for the file is wrong")
def _as_html(answer: WellKnownAnswer) -> Broken:
    return Broken(200, "text/html; charset=utf-8", json.dumps(answer.document).encode())


@fault("json-as-text", "the right JSON, served as text/plain",
       "discovery fails although the JSON is correct: an extension-less file served as text/plain")
def _as_text(answer: WellKnownAnswer) -> Broken:
    return Broken(200, "text/plain; charset=utf-8", json.dumps(answer.document).encode())


@fault("malformed-json", "a JSON document with a trailing comma", "discovery fails: a hand-edited file")
def _malformed(answer: WellKnownAnswer) -> Broken:
    return Broken(200, "application/json", json.dumps(answer.document)[:-2].encode() + b",]}")


@fault("missing-servers", "valid JSON without the Servers key (lower-case 'servers')",
       "discovery fails: key names are case-sensitive")
def _lower_case_key(answer: WellKnownAnswer) -> Broken:
    return _json({"servers": answer.document["Servers"]})


@fault("empty-servers", 'valid JSON with "Servers": []', "discovery fails: the MDM entry was removed")
def _no_servers(answer: WellKnownAnswer) -> Broken:
    return Broken(200, "application/json", b'{"Servers": []}')


@fault("two-servers", "two Servers entries, the first a decommissioned MDM that no longer resolves",
       "enrollment fails after an MDM migration: the device takes the first entry")
def _old_server_first(answer: WellKnownAnswer) -> Broken:
    servers = _servers(answer)
    old = {"Version": servers[0]["Version"], "BaseURL": f"https://{DECOMMISSIONED_HOST}.{answer.zone}/enroll"}
    return _json({"Servers": [old, *servers]})


@fault("misspelled-version", "the entry says 'Verison' instead of 'Version'",
       "discovery fails: a typo in the key name")
def _misspelled(answer: WellKnownAnswer) -> Broken:
    servers = _servers(answer)
    servers[0]["Verison"] = servers[0].pop("Version")
    return _json({"Servers": servers})


@fault("wrong-mode", "Version mdm-byod and mdm-adde swapped",
       "the profile is refused: its EnrollmentMode does not match the discovered Version")
def _swapped_mode(answer: WellKnownAnswer) -> Broken:
    servers = _servers(answer)
    servers[0]["Version"] = {"mdm-byod": "mdm-adde"}.get(servers[0]["Version"], "mdm-byod")
    return _json({"Servers": servers})


@fault("base-url-http", "BaseURL uses http://", "discovery fails: the MDM URL is not https")
def _plain_http_url(answer: WellKnownAnswer) -> Broken:
    servers = _servers(answer)
    servers[0]["BaseURL"] = "http://" + servers[0]["BaseURL"].split("://", 1)[1]
    return _json({"Servers": servers})


def _query(answer: WellKnownAnswer) -> str:
    return f"?{answer.query}" if answer.query else ""


@fault("redirect-loop", "302 to a page that redirects back", "discovery fails: two redirect rules fight")
def _loop(answer: WellKnownAnswer) -> Broken:
    target = LOOP_PATHS[1] if answer.path == LOOP_PATHS[0] else LOOP_PATHS[0]
    return Broken(302, "text/html", b"", location=answer.origin + target + _query(answer))


@fault("redirect-to-http", "301 to the same path over http://",
       "discovery fails: a redirect to plain http (e.g. a load balancer's default rule)")
def _to_http(answer: WellKnownAnswer) -> Broken:
    return Broken(301, "text/html", b"",
                  location="http://" + answer.origin.split("://", 1)[1] + answer.path + _query(answer))


@fault("redirect-drops-query", "301 to another path without user-identifier and model-family",
       "the target cannot route by user: a static redirect loses the query (the device does not re-add it)")
def _drops_query(answer: WellKnownAnswer) -> Broken:
    return Broken(301, "text/html", b"", location=answer.origin + DISCOVERY_PATH)


@fault("trailing-dot-path", "only /.well-known/com.apple.remotemanagement. (with a trailing dot) exists",
       "404 at the real path: the file was named after a documentation typo")
def _trailing_dot(answer: WellKnownAnswer) -> Broken:
    return _html(404, "404 Not Found")


@fault("slow-response", "answers after 'seconds' (default 5), later than the device waits",
       "a long spinner, then failure: an overloaded site or a slow proxy", takes_seconds=True)
def _slow(answer: WellKnownAnswer) -> Broken:
    return Broken(200, "application/json", json.dumps(answer.document).encode(),
                  delay=DEFAULT_SLOW_SECONDS if answer.seconds is None else answer.seconds)


@fault("connection-reset", "resets the TCP connection instead of answering",
       "'cannot connect' at once: a firewall or proxy kills the connection")
def _reset(answer: WellKnownAnswer) -> Broken:
    return Broken(reset=True)


FAULTS = _registry.specs
