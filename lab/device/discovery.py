"""Stage 1: service discovery (PROTOCOL.md 1.1-1.6), as strict as a real device."""
from __future__ import annotations

import json
import plistlib
from dataclasses import dataclass
from functools import partial
from urllib.parse import quote, urljoin, urlsplit

from lab.device.errors import exchange
from lab.device.model import VERSIONS, Client
from lab.device.trace import OK, WARN, DeviceFailure, Trace
from lab.protocol import WELL_KNOWN_PATH

MAX_HOPS = 10
STAGE = "discovery"


@dataclass(frozen=True)
class Service:
    version: str
    base_url: str
    well_known_url: str


def split_identifier(identifier: str) -> tuple[str, str]:
    """Split at the @; the device refuses locally (nothing sent) what it cannot use (PROTOCOL.md 1.1)."""
    if identifier.count("@") != 1:
        raise DeviceFailure("identifier", "identifier-malformed",
                            f"'{identifier}' must contain exactly one @ (name@domain): the device refuses it "
                            "before sending anything; retype the Managed Apple Account")
    local, domain = identifier.split("@")
    labels = domain.split(".")
    if not local or len(labels) < 2 or not all(labels) or any(len(x) > 63 for x in labels) \
            or not all(c.isalnum() or c in "-." for c in domain):
        raise DeviceFailure("identifier", "identifier-malformed",
                            f"'{identifier}' has no usable domain after the @ (a fully qualified name like "
                            "example.com is needed); retype the Managed Apple Account")
    return local, domain.lower()


def well_known_url(domain: str, identifier: str, model_family: str) -> str:
    return (f"https://{domain}{WELL_KNOWN_PATH}?user-identifier={quote(identifier, safe='@')}"
            f"&model-family={quote(model_family)}")


ABM_REASONS = {
    "org-not-supported": "the organization is not enabled for account-driven enrollment in ABM/ASM, so ABM has no "
                         "MDM to send {identifier} to: turn it on for the organization (the MDM's registration "
                         "answers ORG_NOT_SUPPORTED until then)",
    "domain-not-verified": "Apple Business/School Manager has not verified the domain {domain}: in ABM/ASM "
                           "(Preferences > Managed Apple Accounts > Domains) verify it by adding the TXT record "
                           "ABM shows to the domain's DNS",
    "unknown-managed-account": "{identifier} is not a Managed Apple Account of the organization in ABM/ASM: create "
                               "the account there, or federate the domain with the identity provider",
    "no-default-assignment": "no MDM server is the Default Device Assignment for {family} devices in ABM/ASM: set "
                             "one (Preferences > MDM Server Assignment > Default Device Assignment)",
    "no-service-discovery-url": "the MDM server assigned to {family} devices has not registered its "
                                "service-discovery URL with ABM/ASM: turn on account-driven enrollment in the MDM "
                                "(it calls the Device Assignment API)",
}

# Which failures of the org domain make a device with the fallback ask ABM/ASM (PROTOCOL.md 1.6).
FALLBACK_CATEGORIES = {"http": ("well-known-http-", "well-known-refused"),
                       "transport": ("dns-", "tls-", "timeout", "connection-", "network-error"),
                       "content": ("well-known-", "base-url-", "redirect-", "version-unsupported")}


def failure_category(code: str) -> str | None:
    for category, prefixes in FALLBACK_CATEGORIES.items():
        if code.startswith(prefixes):
            return category
    return None


def abm_url(apple_host: str, identifier: str, model_family: str) -> str:
    return (f"https://{apple_host}{WELL_KNOWN_PATH}?user-identifier={quote(identifier, safe='@')}"
            f"&model-family={quote(model_family)}")


def discover(client: Client, http, domain: str, identifier: str, trace: Trace, *, via_abm: bool = False) -> Service:
    """Fetch the well-known resource, following redirects without re-attaching the query."""
    if via_abm:
        url = abm_url(client.apple_host, identifier, client.model_family_param)
    else:
        url = well_known_url(domain, identifier, client.model_family_param)
    context = {"domain": domain, "identifier": identifier, "family": client.model_family_param,
               "via_abm": via_abm}
    visited: list[str] = []
    for _hop in range(MAX_HOPS + 1):
        headers = {"User-Agent": client.user_agent_discovery, "Accept": "application/json"}
        response, request, elapsed = exchange(http, "GET", url, trace, stage=STAGE, headers=headers,
                                              what="the organization's well-known resource",
                                              timeout=client.discovery_timeout)
        visited.append(url)
        if response.is_redirect or response.status_code in (301, 302, 303, 307, 308):
            url = _next_hop(url, response, visited, trace, request, elapsed)
            continue
        return _judge(url, response, trace, request, elapsed, client, context)
    trace.stop(STAGE, "redirect-limit", f"more than {MAX_HOPS} redirects from the org domain; the device gives up. "
               "Point the domain straight at the final well-known URL (one redirect at most)", "follow redirects")


def _next_hop(url, response, visited, trace, request, elapsed) -> str:
    location = response.headers.get("Location")
    exchanged = dict(action=f"GET {url} → {response.status_code}", request=request, response=response,
                     elapsed=elapsed)
    if not location:
        trace.stop(STAGE, "redirect-without-location", f"{response.status_code} redirect without a Location header "
                   f"at {url}; fix the redirect rule on the org web server", **exchanged)
    target = urljoin(url, location)
    if urlsplit(target).scheme != "https":
        trace.stop(STAGE, "redirect-to-http", f"the org domain redirects to {target}, which is not https; the device "
                   "only follows https redirects. Make the redirect target https", **exchanged)
    if target in visited:
        trace.stop(STAGE, "redirect-loop", f"redirect loop: {target} was already visited. Check the redirect rules "
                   "of the org web server (and any CDN in front of it)", **exchanged)
    note = ("redirect followed; the device does not carry the query over, so the target only sees the "
            "parameters the redirect itself put in Location")
    verdict = OK
    if "user-identifier=" not in urlsplit(target).query:
        verdict, note = WARN, (f"the redirect to {target} dropped user-identifier and model-family (the device "
                               "does not re-attach them); a target that routes by user will fail. Copy the "
                               "query into the Location header")
    trace.add(STAGE, f"GET {url} → {response.status_code} {target}", verdict, note,
              code="redirect-dropped-query" if verdict == WARN else None, request=request, response=response,
              elapsed=elapsed)
    return target


def _judge(url, response, trace, request, elapsed, client: Client, context) -> Service:
    action = f"GET {url} → {response.status_code}"

    fail = partial(trace.stop, STAGE, action=action, request=request, response=response, elapsed=elapsed)

    status = response.status_code
    media_type = response.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if context["via_abm"] and urlsplit(url).hostname == client.apple_host and status == 404:
        reason = _abm_reason(response)
        template = ABM_REASONS.get(reason) if reason else None
        if template:
            fail(f"abm-{reason}", template.format(**context))
        fail("abm-http-404", "Apple Business/School Manager found no MDM for this account and device")
    if context["via_abm"] and status == 405:
        fail("abm-wrong-discovery-url", "the service discovery URL the MDM registered with ABM/ASM does not answer "
                                        "GET (405): it is not a discovery endpoint, likely the enroll URL; register "
                                        "the URL that answers the well-known JSON")
    if status == 400 and any(s.code == "redirect-dropped-query" for s in trace.steps):
        fail("redirect-dropped-query", "the redirect dropped user-identifier and model-family, and the target "
                                       "answered 400 because it routes by user; copy the query into the "
                                       "redirect's Location (the device never re-attaches it)")
    if status == 403:
        message = _well_known_failed(response, media_type)
        if message is not None:
            fail("well-known-refused", f"the organization refused enrollment (ErrorWellKnownFailed): {message}")
    if status != 200:
        fail(f"well-known-http-{status}",
             f"the org web server answered {status} for the well-known resource; it must answer 200 with the "
             f"JSON document at https://<domain>{WELL_KNOWN_PATH} (check the path, the site's access rules "
             "and the server's health)")
    if media_type != "application/json":
        fail("well-known-content-type",
             f"the well-known resource answered {media_type or 'no Content-Type'}; set Content-Type to "
             "application/json on the org web server (a 200 HTML page counts as a failure)")
    if not response.content:
        fail("well-known-empty", "the well-known resource answered 200 with an empty body; serve the JSON document")
    try:
        document = json.loads(response.content)
    except ValueError:
        fail("well-known-malformed-json", "the well-known resource is not valid JSON; check the file for syntax "
                                          "errors (trailing commas, quotes)")
    if not isinstance(document, dict) or "Servers" not in document:
        fail("well-known-missing-servers", "the JSON has no Servers key (names are case-sensitive); serve "
                                           '{"Servers":[{"Version":"mdm-byod","BaseURL":"https://..."}]}')
    servers = document["Servers"]
    if not isinstance(servers, list) or not servers:
        fail("well-known-empty-servers", "Servers is empty or not an array; put one entry with Version and BaseURL")
    first = servers[0]
    if not isinstance(first, dict) or not isinstance(first.get("Version"), str) \
            or not isinstance(first.get("BaseURL"), str):
        keys = sorted(first) if isinstance(first, dict) else []
        fail("well-known-missing-keys", f"the first Servers entry needs the string keys Version and BaseURL "
                                        f"(case-sensitive); it has {', '.join(keys) or 'none'}")
    version, base_url = first["Version"], first["BaseURL"]
    if version not in VERSIONS:
        fail("well-known-unsupported-version", f"Version {version!r} is not one the device knows; use mdm-byod "
                                               "(User Enrollment) or mdm-adde (Device Enrollment), spelled exactly")
    if urlsplit(base_url).scheme != "https" or not urlsplit(base_url).hostname:
        fail("base-url-not-https", f"BaseURL {base_url!r} is not an https URL; the MDM enrollment endpoint must "
                                   "be served over https")
    unsupported = client.unsupported_version_reason(version)
    if unsupported:
        fail("version-unsupported-on-device", unsupported)
    if len(servers) > 1:
        trace.add(STAGE, action, WARN, f"{len(servers)} Servers entries; the device uses the first one",
                  code="well-known-several-servers", request=request, response=response, elapsed=elapsed)
    else:
        trace.add(STAGE, action, OK, f"{VERSIONS[version]} at {base_url}", request=request, response=response,
                  elapsed=elapsed)
    return Service(version, base_url, url)


def _abm_reason(response) -> str | None:
    try:
        body = json.loads(response.content)
    except ValueError:
        return None
    return body.get("reason") if isinstance(body, dict) else None


def _well_known_failed(response, media_type: str) -> str | None:
    """The message of a 403 ErrorWellKnownFailed body, or None when the 403 is not one."""
    try:
        if media_type == "application/json":
            body = json.loads(response.content)
        elif media_type in ("application/xml", "text/xml", "application/x-plist"):
            body = plistlib.loads(response.content)
        else:
            return None
    except Exception:
        return None
    if isinstance(body, dict) and body.get("code") == "com.apple.well-known.failed":
        return str(body.get("message") or body.get("description") or "no message given")
    return None
