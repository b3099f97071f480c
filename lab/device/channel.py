"""The MDM channel of an enrolled device (stage 4, PROTOCOL.md 3.4, 4): check-ins on CheckInURL and the command
poll on ServerURL, both with the bearer token; a 401 with the challenge renews the token and retries."""
from __future__ import annotations

import plistlib
import secrets
import uuid

from lab.device import messages, signin
from lab.device.authentication import read_challenge
from lab.device.errors import exchange
from lab.device.trace import OK, WARN, DeviceFailure, Step, Trace, describe_request

CHECKIN_TYPE, SERVER_TYPE = "application/x-apple-aspen-mdm-checkin", "application/x-apple-aspen-mdm"
MAX_RENEWALS = 2  # per request: refresh (or sign-in), then one more sign-in; then the device stops asking
MAX_COMMANDS = 200  # per sync


def identity_keys(device, *, user_channel: bool = False) -> dict:
    """Every identifier the device could give; each message keeps those Apple's schema allows in it (``fit``):
    User Enrollment hides the device (EnrollmentID) except where Apple requires UDID (a Mac's CheckOut), Device
    Enrollment names it (UDID) (PROTOCOL.md 3.4). Never send a message built from these without ``fit``."""
    enrollment = device.enrollment
    keys = {"Topic": enrollment.topic, "UDID": device.udid, "SerialNumber": device.serial}
    if enrollment.mode != "ADDE":
        keys["EnrollmentID"] = enrollment.enrollment_id
        if user_channel and enrollment.enrollment_user_id:
            keys["EnrollmentUserID"] = enrollment.enrollment_user_id
    return keys


def first_check_ins(device, trace: Trace) -> None:
    """Authenticate, then TokenUpdate (and the user channel's on a Mac in User Enrollment)."""
    client = device.client
    check_in(device, {"MessageType": "Authenticate", **identity_keys(device), "BuildVersion": client.build,
                      "OSVersion": client.os_version, "ProductName": client.product, "DeviceName": device.name,
                      "Model": client.product, "ModelName": client.model_family}, trace)
    check_in(device, {"MessageType": "TokenUpdate", **identity_keys(device), "Token": secrets.token_bytes(32),
                      "PushMagic": str(uuid.uuid4()).upper()}, trace)
    if client.os_name == "macOS" and device.enrollment.mode == "BYOD":
        # macOS User Enrollment: the user channel's TokenUpdate adds EnrollmentUserID (PROTOCOL.md 3.4) and
        # names the person logged in
        device.enrollment.enrollment_user_id = uuid.uuid4().hex.upper()
        check_in(device, {"MessageType": "TokenUpdate", **identity_keys(device, user_channel=True),
                          "UserLongName": device.owner_name, "UserShortName": device.owner_name.lower(),
                          "NotOnConsole": False, "Token": secrets.token_bytes(32),
                          "PushMagic": str(uuid.uuid4()).upper()}, trace, channel="user")


def fit(device, kind: str, name: str | None, facts: dict, channel: str = "device") -> dict:
    return messages.fit(kind, name, facts, device.client, device.enrollment.mode, channel)


def get_token(device, service: str, trace: Trace) -> str | None:
    """GetToken (check-in, iOS 17, macOS 14): a token of ``service`` from the MDM, or None when it gives none
    (the device goes on without; whoever asked for the token judges). On a Mac it comes on the user channel."""
    enrollment = device.enrollment
    message = {"MessageType": "GetToken", "TokenServiceType": service,
               **identity_keys(device, user_channel=device.os_name == "macOS")}
    if device.os_name == "macOS":
        message.update({"UserID": str(uuid.uuid5(uuid.NAMESPACE_URL, f"{device.udid}/user")),
                        "UserLongName": device.owner_name,
                        "UserShortName": device.owner_name.lower()})
    message = fit(device, "checkin", "GetToken", message, "user" if device.os_name == "macOS" else "device")
    response, action, request, elapsed = mdm_put(device, enrollment.checkin_url, message, CHECKIN_TYPE, "check-in",
                                                 f"GetToken {service}", trace)
    token = None
    if response.status_code == 200:
        try:
            answer = plistlib.loads(response.content)
            data = answer.get("TokenData") if isinstance(answer, dict) else None
            token = data.decode() if isinstance(data, bytes) else None
        except (plistlib.InvalidFileException, ValueError, UnicodeDecodeError):
            token = None
    if token:
        trace.add("check-in", action, OK, f"the MDM gave a {service} token", request=request, response=response,
                  elapsed=elapsed)
    else:
        trace.add("check-in", action, WARN, f"the MDM gave no {service} token ({response.status_code}"
                  f"{reason_of(response)}; a 200 needs a plist with TokenData); the device goes on without one",
                  code="no-token", request=request, response=response, elapsed=elapsed)
    return token


def mdm_put(device, url: str, message: dict, content_type: str, stage: str, label: str, trace: Trace, *,
            renew: bool = True):
    """PUT to CheckInURL or ServerURL with the bearer token; on 401 renew the token and retry (PROTOCOL.md 4)."""
    renewals = 0
    while True:
        headers = {"Content-Type": content_type, "User-Agent": device.client.user_agent_mdm,
                   "Authorization": f"Bearer {device.enrollment.access_token}"}
        response, request, elapsed = exchange(device.session, "PUT", url, trace, stage=stage, headers=headers,
                                              what="the MDM", label=f" {label}", data=plistlib.dumps(message),
                                              timeout=60)
        action = f"PUT {url} {label} → {response.status_code}"
        if response.status_code != 401 or not renew:
            return response, action, request, elapsed
        reason = reason_of(response)
        if renewals == MAX_RENEWALS:
            trace.stop(stage, "reauth-loop", f"the MDM refused {label} with 401{reason} again after {renewals} token "
                       "renewals; the device stops asking the person (a re-authentication loop: check how the MDM "
                       "validates the tokens it issues)", action, request=request, response=response, elapsed=elapsed)
        trace.add(stage, action, WARN, f"the MDM wants a new access token (401{reason})", code="token-renewal",
                  request=request, response=response, elapsed=elapsed)
        challenge = read_challenge(response, trace, strict=device.client.strict, stage=signin.ONGOING)
        signin.renew(device, challenge, trace, refresh_first=renewals == 0)
        renewals += 1


def check_in(device, facts: dict, trace: Trace, *, channel: str = "device") -> None:
    kind = facts["MessageType"]
    message = fit(device, "checkin", kind, facts, channel)
    response, action, request, elapsed = mdm_put(device, device.enrollment.checkin_url, message, CHECKIN_TYPE,
                                                 "check-in", kind, trace)
    if response.status_code != 200:
        code = "checkin-unauthorized" if response.status_code == 401 else f"checkin-http-{response.status_code}"
        trace.stop("check-in", code, f"the MDM refused {kind} ({response.status_code}{reason_of(response)}); the "
                   "profile is installed but the MDM does not know the device", action, request=request,
                   response=response, elapsed=elapsed)
    trace.add("check-in", action, OK, f"{kind} accepted", request=request, response=response, elapsed=elapsed)


def sync(device, password: str | None) -> Trace:
    trace = Trace()
    if password is not None:
        device.password = password
    try:
        if device.enrollment is None:
            raise DeviceFailure("commands", "not-enrolled", "this device is not enrolled; enroll it first")
        _sync(device, trace)
    except DeviceFailure as failure:
        trace.fail(failure)
    return trace


def failed_commands(trace: Trace) -> list[Step]:
    """The steps of a sync whose command failed (NotNow is not a failure: it runs again at a later sync)."""
    return [s for s in trace.steps if s.stage == "commands" and s.code and s.code.startswith("command-")
            and s.code != "command-notnow"]


def _sync(device, trace: Trace) -> None:
    report, done = fit(device, "response", None, {"Status": "Idle", **identity_keys(device)}), 0
    for _ in range(MAX_COMMANDS):
        label = "Idle" if report["Status"] == "Idle" else f"{report['Status']} {report['CommandUUID'][:8]}"
        response, action, request, elapsed = mdm_put(device, device.enrollment.server_url, report, SERVER_TYPE,
                                                     "commands", label, trace)
        exchanged = dict(request=request, response=response, elapsed=elapsed)
        if response.status_code == 403 and _unrecognized(response):
            trace.add("commands", action, WARN, "the MDM no longer recognizes this enrollment "
                      "(ErrorUnrecognizedDevice): the device removes it", code="unrecognized-device", **exchanged)
            device.remove_enrollment(trace, by="the MDM (ErrorUnrecognizedDevice)", check_out=False)
            trace.succeed("the MDM forgot this enrollment; the device removed it", outcome="unenrolled")
            return
        if response.status_code != 200:
            trace.stop("commands", f"poll-http-{response.status_code}", f"the MDM answered the poll with "
                       f"{response.status_code}{reason_of(response)}; the device keeps its result and tries again "
                       "at the next push", action, **exchanged)
        if not response.content:
            trace.add("commands", action, OK, "queue empty" if report["Status"] == "Idle" else
                      "result delivered; nothing more to do", **exchanged)
            break
        trace.add("commands", action, OK, "result delivered; the MDM sends a command" if report["Status"] != "Idle"
                  else "the MDM sends a command", **exchanged)
        try:
            envelope = plistlib.loads(response.content)
            command_uuid = envelope["CommandUUID"]
        except Exception:
            trace.stop("commands", "command-unreadable", "the MDM's reply is not a command plist with a "
                       "CommandUUID; the device cannot answer it")
        outcome = device.run_command(envelope)
        request_type = (envelope.get("Command") or {}).get("RequestType", "?")
        verdict = OK if outcome.status == "Acknowledged" else WARN
        trace.add("commands", f"{request_type} → {outcome.status}", verdict, outcome.explanation,
                  code=None if verdict == OK else f"command-{outcome.status.lower()}")
        done += 1
        name = messages.report_name(request_type, device.client, device.enrollment.mode)
        report = fit(device, "response", name, {"CommandUUID": command_uuid, "Status": outcome.status,
                                                **identity_keys(device), **outcome.response})
        if outcome.after:
            _report_then(device, report, outcome, command_uuid, trace)
            return
    failed = failed_commands(trace)
    if failed:
        trace.succeed(f"{len(failed)} of {done} command(s) failed: "
                      + "; ".join(f"{s.action} ({s.explanation})" for s in failed), outcome="commands-failed")
    else:
        trace.succeed(f"synced: {done} command(s) run", outcome="synced")


def _report_then(device, report: dict, outcome, command_uuid: str, trace: Trace) -> None:
    """Deliver the last result, then erase or unenroll as the command asked."""
    response, action, request, elapsed = mdm_put(device, device.enrollment.server_url, report, SERVER_TYPE,
                                                 "commands", f"{outcome.status} {command_uuid[:8]}", trace)
    trace.add("commands", action, OK if response.status_code == 200 else WARN,
              "result delivered" if response.status_code == 200 else
              f"the result was not accepted ({response.status_code}); the device goes ahead anyway",
              request=request, response=response, elapsed=elapsed)
    if outcome.after == "erase":
        device.erase(trace)
        trace.succeed("the MDM erased the device", outcome="erased")
    else:
        device.remove_enrollment(trace, by="the MDM (RemoveProfile)")
        trace.succeed("the MDM removed the enrollment profile; the device unenrolled", outcome="unenrolled")


def check_out(device, url: str, message: dict, token: str | None, trace: Trace) -> None:
    """One best-effort CheckOut, never retried, never re-authenticated (dev:check-out, PROTOCOL.md 4.6)."""
    headers = {"Content-Type": CHECKIN_TYPE, "User-Agent": device.client.user_agent_mdm,
               **({"Authorization": f"Bearer {token}"} if token else {})}
    try:
        response = device.session.put(url, data=plistlib.dumps(message),
                                      headers=headers, timeout=30)
    except Exception as exc:
        trace.add("unenrollment", f"PUT {url} CheckOut", WARN, f"CheckOut not delivered ({exc.__class__.__name__});"
                  " the device does not resend it", code="checkout-not-delivered")
        return
    ok = response.status_code == 200
    trace.add("unenrollment", f"PUT {url} CheckOut → {response.status_code}", OK if ok else WARN,
              "the MDM knows the device left" if ok else f"the MDM refused CheckOut{reason_of(response)}; the "
              "device does not resend it", code=None if ok else "checkout-refused",
              request=describe_request("PUT", url, headers), response=response)


def reason_of(response) -> str:
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
