"""Enrollment SSO on the device (PROTOCOL.md 2.6; dev:implementing-the-enrollment-sso-flow): the 401 of the
enrollment request carries X-Apple-MDM-ESSO; the device fetches the EnrollmentSSODocument, asks the person,
creates the data-separated volume, installs the SSO app as a managed app with its configuration profile, and then
runs the challenged method. In the lab the SSO app is a device-side token provider: it keeps the web session of
the sign-in in its container, so renewing the token later needs no password (single sign-on).
"""
from __future__ import annotations

import base64
import binascii
import json
import plistlib

from lab import cms
from lab.device.contents import Contents
from lab.device.errors import exchange
from lab.device.model import Client
from lab.device.separation import APP_STORE, Profile
from lab.device.trace import OK, Trace

STAGE = "authentication"
HEADER, DEVELOPER_HEADER = "X-Apple-MDM-ESSO", "X-Apple-MDM-ESSO-Developer"
MINIMUM = {"iPhone": (16, 0), "iPad": (16, 0), "Vision": (2, 0)}  # no macOS
DECLARATIONS_MINIMUM = {"iPhone": (18, 4), "iPad": (18, 4), "Vision": (2, 4)}
CERTIFICATE_TYPES = ("com.apple.security.root", "com.apple.security.pkcs1", "com.apple.security.pem",
                     "com.apple.security.pkcs12")
TIMEOUT = 90
ACTION = "Enrollment SSO"


def follow(client: Client, http, contents: Contents, response, enrollment_id: str, trace: Trace) -> str | None:
    """Handle X-Apple-MDM-ESSO on the enrollment 401; the installed SSO app's bundle id, or None."""
    url = response.headers.get(HEADER)
    if not url:
        return None
    minimum = MINIMUM.get(client.model_family)
    if minimum is None or client.version < minimum:
        trace.add(STAGE, "Enrollment SSO", OK, f"{HEADER} ignored: {client.os_name} {client.os_version} has no "
                  "Enrollment SSO (iOS/iPadOS 16, visionOS 2 and later; never macOS)")
        return None
    headers = {"User-Agent": client.user_agent_enroll, "Accept": "application/json"}
    reply, request, elapsed = exchange(http, "GET", url, trace, stage=STAGE, headers=headers,
                                       what="the Enrollment SSO document", timeout=TIMEOUT)
    action = f"GET {url} → {reply.status_code}"
    media_type = reply.headers.get("Content-Type", "").split(";")[0].strip().lower()
    if reply.status_code != 200:
        trace.stop(STAGE, f"esso-http-{reply.status_code}",
                   f"the Enrollment SSO document answered {reply.status_code}; "
                   "it must answer 200 with the JSON document", action, request=request, response=reply)
    if media_type != "application/json":
        trace.stop(STAGE, "esso-content-type",
                   f"the Enrollment SSO document came as {media_type or 'no type'}; serve it " "as application/json",
                   action, request=request, response=reply)
    try:
        document = json.loads(reply.content)
    except ValueError:
        document = None
    if not isinstance(document, dict):
        trace.stop(STAGE, "esso-malformed", "the Enrollment SSO document is not a JSON object", action, request=request,
                   response=reply)
    trace.add(STAGE, action, OK, "Enrollment SSO document fetched", request=request, response=reply,
              elapsed=elapsed)
    store_id = document.get("iTunesStoreID")
    if not isinstance(store_id, int) or isinstance(store_id, bool):
        trace.stop(STAGE, "esso-missing-store-id", "iTunesStoreID (an integer) is required in the document", ACTION)
    profile = _profile(document, client, store_id, trace)
    if store_id not in APP_STORE:
        trace.stop(STAGE, "esso-app-unknown", f"iTunesStoreID {store_id} is no app in the App Store", ACTION)
    bundle, name = APP_STORE[store_id]
    existing = contents.apps.get(bundle)
    if existing is not None and not existing.managed:
        trace.stop(STAGE, "esso-app-preinstalled", f"Sign In Failed: the Enrollment SSO application ({name}) has been "
                   "installed on the device. It was installed by the person and cannot become managed: delete it, "
                   "then enroll again", ACTION)
    trace.add(STAGE, f"allow {name} for sign-in", OK, f"the person allows downloading {name}; the data-separated "
              "volume is created and the app installed there as a managed app")
    contents.create_volume(enrollment_id)
    contents.install_managed_app(bundle, name, store_id, source="esso")
    contents.install_profile(profile)
    return bundle


def _profile(document: dict, client: Client, store_id: int, trace: Trace) -> Profile:
    """ConfigurationProfile (or Declarations on a DDM-capable device) as Apple's rules allow them."""
    declarations = document.get("Declarations")
    ddm = client.version >= DECLARATIONS_MINIMUM.get(client.model_family, (99, 0))
    if declarations is not None and ddm:
        return _declarations(declarations, store_id, trace)
    encoded = document.get("ConfigurationProfile")
    if not isinstance(encoded, str):
        trace.stop(STAGE, "esso-no-configuration", "the document has neither ConfigurationProfile nor (for this OS) "
                   "Declarations; one is required", ACTION)
    try:
        body = base64.b64decode(encoded, validate=True)
        if cms.looks_like_cms(body):
            body = cms.parse(body).content
        profile = plistlib.loads(body)
    except (binascii.Error, ValueError, cms.CMSError, plistlib.InvalidFileException):
        trace.stop(STAGE, "esso-profile-invalid", "ConfigurationProfile is not a base64 (signed) profile", ACTION)
    payloads = profile.get("PayloadContent") if isinstance(profile, dict) else None
    types = [_named(p.get("PayloadType")) for p in payloads if isinstance(p, dict)] \
        if isinstance(payloads, list) else []
    if "com.apple.extensiblesso" not in types:
        trace.stop(STAGE, "esso-profile-invalid",
                   "the Enrollment SSO profile needs at least one com.apple.extensiblesso " "payload", ACTION)
    others = sorted({t for t in types if t != "com.apple.extensiblesso" and t not in CERTIFICATE_TYPES})
    if others:
        trace.stop(STAGE, "esso-profile-invalid", f"the Enrollment SSO profile may hold only extensible SSO and "
                   f"certificate payloads, not {', '.join(others)}", ACTION)
    return Profile(str(profile.get("PayloadIdentifier", "esso")), str(profile.get("PayloadUUID", "")),
                   str(profile.get("PayloadDisplayName", "Enrollment SSO")), "esso", tuple(types),
                   str(profile.get("PayloadOrganization", "")))


def _named(kind) -> str:
    """A payload's or declaration's type as the message names it (one without a string type included)."""
    return kind if isinstance(kind, str) else f"(no type: {kind!r})"


def _declarations(declarations, store_id: int, trace: Trace) -> Profile:
    """The DDM variant: one activation, one managed app with AppStoreID = iTunesStoreID, legacy profile(s)."""
    try:
        parsed = [json.loads(base64.b64decode(d, validate=True)) for d in declarations]
    except (TypeError, binascii.Error, ValueError):
        trace.stop(STAGE, "esso-declarations-invalid", "Declarations must be base64-encoded JSON declarations", ACTION)
    kinds = [_named(d.get("Type")) for d in parsed if isinstance(d, dict)]
    apps = [d for d in parsed if isinstance(d, dict) and d.get("Type") == "com.apple.configuration.app.managed"]
    if kinds.count("com.apple.activation.simple") != 1 or len(apps) != 1 \
            or "com.apple.configuration.legacy" not in kinds:
        trace.stop(STAGE, "esso-declarations-invalid", "Declarations need one com.apple.activation.simple, one "
                   "com.apple.configuration.app.managed and at least one com.apple.configuration.legacy", ACTION)
    if (apps[0].get("Payload") or {}).get("AppStoreID") not in (store_id, str(store_id)):
        trace.stop(STAGE, "esso-declarations-invalid",
                   "the managed app declaration's AppStoreID must equal iTunesStoreID", ACTION)
    return Profile("esso.declarations", "", "Enrollment SSO (declarations)", "esso", tuple(kinds))
