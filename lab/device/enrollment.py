"""Enrolling the device (stages 1-3 of PROTOCOL.md): the identifier, discovery (org domain, then ABM/ASM), the
first enrollment request and its challenge, the sign-in, the profile, and the first check-ins. A failure after the
first exchange cancels the enrollment and leaves nothing behind.
"""
from __future__ import annotations

import plistlib
import time
import uuid

from cryptography.hazmat.primitives import serialization

from lab import cms
from lab.device import channel, discovery, esso, managed_account, messages, profile, renewal, signin
from lab.device.authentication import Credentials, read_challenge
from lab.device.errors import exchange
from lab.device.model import ABM_FALLBACK_MINIMUM, ADUE_MINIMUM, ENROLL_TYPE, FORM_TYPE, VERSIONS, Enrollment
from lab.device.separation import Profile
from lab.device.trace import OK, WARN, DeviceFailure, Trace


def enroll(device, identifier: str, password: str | None) -> Trace:
    trace = Trace()
    device.password = password
    try:
        if device.enrollment is not None:
            raise DeviceFailure("identifier", "already-enrolled", f"this device is enrolled as "
                                f"{device.enrollment.identifier}; sign out of the work account first")
        _enroll(device, identifier, password, trace)
    except DeviceFailure as failure:
        trace.fail(failure)
    return trace


def _enroll(device, identifier: str, password: str | None, trace: Trace) -> None:
    client = device.client
    _offered(device, trace)
    _, domain = discovery.split_identifier(identifier)
    trace.add("identifier", f"sign in to work or school account as {identifier}", OK,
              f"domain {domain}: the device asks it for the enrollment service")
    service = _discover(device, domain, identifier, trace)
    enrollment_id = device.udid if service.version == "mdm-adde" else uuid.uuid4().hex.upper()
    info = messages.machine_info(client, device.udid, device.serial, profile.MODES[service.version])
    body = cms.sign(plistlib.dumps(info), device.builtin_identity, device.key)
    response = _post_enroll(device, service.base_url, body, None, trace, sent=", ".join(info))
    if response.status_code != 401:
        _unexpected_enroll_status(response, trace, first=True, labelled=client.enroll_content_type)
    try:
        esso.follow(client, device.session, device.contents, response, enrollment_id, trace)
        challenge = read_challenge(response, trace, strict=client.strict)
        credentials = signin.sign_in(device, challenge, identifier, password, trace, "authentication")
        response = _post_enroll(device, service.base_url, body, credentials.access_token, trace)
        if response.status_code != 200 or not response.content:
            _unexpected_enroll_status(response, trace, first=False)
        installed = profile.install(response, service.version, identifier, device.trusted_roots, trace)
        _install_enrollment(device, installed, enrollment_id, identifier, credentials, trace)
        channel.first_check_ins(device, trace)
    except DeviceFailure:
        _cancel(device, trace)
        raise
    try:
        sign_in_managed_account(device, installed, trace)
    except DeviceFailure:
        # Enrolled and checked in, the device removes the enrollment it just made (field report, 2026).
        device.remove_enrollment(trace, by="the refused Managed Apple Account sign-in")
        raise
    mode = device.enrollment.mode
    device.history.append({"at": time.time(), "event": f"enrolled ({mode}) as {identifier}"})
    trace.succeed(f"enrolled with {VERSIONS[service.version]} as {identifier}; "
                  f"{'UDID' if mode == 'ADDE' else 'EnrollmentID'} {device.enrollment.enrollment_id}")


LOOK = "look for Sign in to work or school account (Settings > General > VPN & Device Management)"


def _offered(device, trace: Trace) -> None:
    """Settings shows "Sign in to work or school account" only on an OS that has it and a device no MDM manages;
    otherwise the person has nothing to tap and nothing is sent."""
    client = device.client
    if not client.has_entry_point:
        minimum = ADUE_MINIMUM[client.model_family]
        trace.stop("identifier", "no-entry-point", f"{client.os_name} {client.os_version} has no \"Sign in "
                   f"to work or school account\" in Settings: account-driven enrollment came in "
                   f"{client.os_name} {minimum[0]}.{minimum[1]}. Nothing was sent; update the device", LOOK)
    if device.managed_by:
        trace.stop("identifier", "already-managed", f"this device is already managed by {device.managed_by} "
                   "(Settings > General > VPN & Device Management), so Settings does not offer \"Sign in to "
                   "work or school account\". Nothing was sent; remove the other management first", LOOK)


def _install_enrollment(device, installed, enrollment_id: str, identifier: str, credentials: Credentials,
                        trace: Trace) -> None:
    mdm, mode = installed.mdm, installed.mdm["EnrollmentMode"]
    enrollment_id = device.udid if mode == "ADDE" else enrollment_id
    contents = device.contents
    contents.create_volume(enrollment_id)
    device.enrollment = Enrollment(
        enrollment_id=enrollment_id, identifier=identifier, mode=mode, server_url=mdm["ServerURL"],
        checkin_url=installed.checkin_url, topic=mdm["Topic"],
        identity_subject=installed.identity_cert.subject.rfc4514_string(),
        profile_identifier=installed.identifier, organization=installed.organization,
        check_out_when_removed=bool(mdm.get("CheckOutWhenRemoved", False)), mdm_payload=renewal.kept(mdm))
    key_pem = installed.identity_key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                                   serialization.NoEncryption())
    contents.keychain_put("mdm-identity", key_pem + installed.identity_cert.public_bytes(serialization.Encoding.PEM))
    signin.set_credentials(device, credentials)
    contents.install_profile(Profile(installed.identifier, installed.uuid, installed.display_name, "enrollment",
                                     installed.payload_types, installed.organization))


def sign_in_managed_account(device, installed, trace: Trace) -> None:
    """The last step of Apple's flow: the person signs in at Apple with the Managed Apple Account of the profile,
    with a com.apple.maid token from the MDM when it offers one; the work account's data then arrives, kept apart
    as this OS version allows."""
    client, maa = device.client, installed.mdm["AssignedManagedAppleID"]
    token = None
    if "com.apple.mdm.token" in (installed.mdm.get("ServerCapabilities") or []):
        token = channel.get_token(device, managed_account.MAID_SERVICE, trace)
    origin = managed_account.identity_origin(client.apple_host)
    enrollment_type = "user" if device.enrollment.mode == "BYOD" else "device"
    managed_account.sign_in(device.self_built, trace, origin, maa, device.password, managed_account.SignInDevice(
        client.os_name, client.os_version, enrollment_type, device.supervised, device.virtual_machine), token,
        timeout=60)
    device.contents.add_work_account(installed.organization or "the organization", maa)
    vault = device.contents.vault
    shared = [c for c in ("calendar", "reminders") if c not in vault.keys]
    trace.add("enrollment", f"the work account {maa} is ready", OK,
              f"the work account's data is kept apart under {len(vault.keys)} keys of this enrollment "
              f"({', '.join(sorted(vault.keys))})" + (
                  f"; {device.os_name} {device.os_version} does not separate {', '.join(shared)} yet" if shared
                  else ""))


def _cancel(device, trace: Trace) -> None:
    """A failed enrollment leaves nothing behind: volume, managed apps and profiles go (Apple: cancel)."""
    if device.contents.vault is None and not any(p.managed for p in device.contents.profiles.values()):
        device.enrollment = None
        return
    device.contents.remove_enrollment(None)
    device.enrollment = None
    trace.add(trace.steps[-1].stage if trace.steps else "enrollment", "cancel the enrollment", OK,
              "the data-separated volume, its keys and anything installed for the enrollment are removed")


def _discover(device, domain: str, identifier: str, trace: Trace) -> discovery.Service:
    """The org domain first; on 18.2/15.2/2.2 and later, ABM/ASM when the org domain fails (PROTOCOL.md 1.6)."""
    client = device.client
    try:
        service = discovery.discover(client, device.self_built, domain, identifier, trace)
        trace.path = "direct"
        return service
    except DeviceFailure as direct:
        category = discovery.failure_category(direct.code)
        if not client.has_abm_fallback:
            raise DeviceFailure(direct.stage, direct.code, direct.explanation +
                                f" ({client.os_name} {client.os_version} has no ABM/ASM fallback; it came in "
                                f"{client.os_name} {'.'.join(map(str, ABM_FALLBACK_MINIMUM[client.model_family]))})"
                                ) from None
        if category not in device.fallback_on:
            raise
        trace.add("discovery", "ask Apple Business/School Manager instead", WARN,
                  f"the org domain failed ({direct.code}); {client.os_name} {client.os_version} falls back to "
                  "ABM/ASM, which redirects to the MDM registered for this account and device type",
                  code="abm-fallback")
        try:
            service = discovery.discover(client, device.self_built, domain, identifier, trace, via_abm=True)
        except DeviceFailure as via_abm:
            raise DeviceFailure("discovery", via_abm.code, f"{via_abm.explanation}. Before that, the org "
                                f"domain failed: {direct.explanation}") from None
        trace.path = "abm"
        return service


def _post_enroll(device, url: str, body: bytes, token: str | None, trace: Trace, sent: str = ""):
    headers = {"Content-Type": device.client.enroll_content_type, "User-Agent": device.client.user_agent_enroll}
    if token:
        headers["Authorization"] = f"Bearer {token}"
    stage = "enrollment" if token else "authentication"
    response, request, elapsed = exchange(device.session, "POST", url, trace, stage=stage, headers=headers,
                                          what="the MDM enrollment endpoint", data=body, timeout=60)
    trace.add(stage, f"POST {url} → {response.status_code}", OK,
              "enrollment request sent with the access token" if token else
              f"first enrollment request (signed MachineInfo: {sent})",
              request=request, response=response, elapsed=elapsed)
    return response


def _unexpected_enroll_status(response, trace: Trace, *, first: bool, labelled: str = ENROLL_TYPE) -> None:
    status = response.status_code
    stage = "authentication" if first else "enrollment"
    if first and status in (400, 415) and labelled == FORM_TYPE:
        trace.stop(stage, f"enroll-http-{status}", f"the MDM enrollment endpoint answered {status} to the signed "
                   f"request, which this device labels {FORM_TYPE} (as iOS 15 does): a server that parses by "
                   "Content-Type reads an empty form. Read the body as CMS whatever its label")
    if first and status == 200:
        trace.stop(stage, "enroll-no-challenge", "the MDM answered the first enrollment request with 200; "
                   "account-driven enrollment needs 401 with WWW-Authenticate: Bearer so the user can sign in")
    if not first and status == 401:
        trace.stop(stage, "token-rejected", "the MDM refused the access token it just issued (401); check how it "
                   "stores and looks up tokens, and their lifetime")
    if not first and status == 200:
        trace.stop(stage, "profile-empty", "the MDM answered 200 with an empty body; send the profile")
    reason = channel.reason_of(response)
    if reason:  # the MDM said why (e.g. which MachineInfo key breaks which of Apple's rules): pass it on
        trace.stop(stage, f"enroll-http-{status}", f"the MDM enrollment endpoint refused the request with "
                   f"{status}{reason}")
    trace.stop(stage, f"enroll-http-{status}", f"the MDM enrollment endpoint answered {status}; it expects a POST of "
               "the signed device information and answers 401 (first) or 200 with the profile (with a token)")
