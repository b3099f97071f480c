"""Stage 3, last step: the person signs in with the Managed Apple Account the profile names, at Apple.

Apple's flow ends here: enrollment is complete only once this sign-in succeeds (PROTOCOL.md 3.3). The device asks
Apple's identity service (lab: ``gsa.<Apple's zone>``), handing it a ``com.apple.maid`` token from its MDM when the
MDM advertises ``com.apple.mdm.token`` (GetToken check-in). A refusal shows Apple's alert, which rarely says why:
the trace adds the cause and the fix. Field report (2026): an account-driven User Enrollment checks in before this
step, and a refused sign-in makes the device remove the enrollment it just made.

A federated account (ABM/ASM federated authentication) is not signed in with a password at Apple: Apple answers
with the organization's IdP, and the device opens a web view of its own (its own cookie jar) there, over the lab's
DNS and TLS: the IdP's page, the person's IdP password, the IdP's redirect back to Apple's callback, and Apple's
redirect to the device with a one-time result code, which the device hands Apple in place of the password.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from http.client import HTTPException
from typing import NoReturn
from urllib.parse import parse_qs, urljoin, urlsplit

from lab.device.authentication import MAX_WEB_HOPS, fill, page_message, password_form
from lab.device.cookies import CookieJar
from lab.device.errors import transport_failure
from lab.device.http import DeviceHTTP
from lab.device.trace import OK, WARN, Trace, describe_request
from lab.protocol import MAA_FEDERATED_SCHEME, MAA_SIGN_IN_PATH
from lab.protocol import MAID_TOKEN_SERVICE as MAID_SERVICE  # noqa: F401 (enrollment.py asks for it here)

STAGE = "enrollment"
WEB_USER_AGENT = "Mozilla/5.0 (AuthKit web view; mdmlab)"
IDENTITY_HOST_PREFIX = "gsa"  # Apple's identity service (GrandSlam) beside axm-adm-enroll in Apple's zone

# What each refusal means and what to do about it (the alert itself is Apple's and rarely says).
CAUSES = {
    "account-not-found": "Apple does not know {account}: the profile's AssignedManagedAppleID is not a Managed Apple "
                         "Account in ABM/ASM. Create the account in ABM/ASM (Users), or fix the MDM's mapping from "
                         "the sign-in name to the Managed Apple Account",
    "alias-not-account": "{reason}. Set the MDM to send the account itself in AssignedManagedAppleID (ABM/ASM: "
                         "Users, the user's Managed Apple Account), not the mail address the person typed",
    "wrong-password": "the password is not {account}'s at Apple: a federated account uses its IdP password, any "
                      "other the one set in ABM/ASM; reset it there if the person does not know it",
    "virtual-machine": "Apple refuses Apple Account sign-in in Mac virtual machines before macOS 15: enroll a "
                       "physical Mac, or a macOS 15 or later virtual machine",
    "no-maid-token": "{reason}. Either the MDM advertises com.apple.mdm.token in ServerCapabilities and answers "
                     "GetToken with a com.apple.maid token, or the admin sets ABM/ASM Access Management, 'Allow "
                     "Managed Apple Account on', to Any device",
    "not-supervised": "{reason}. Account-driven User Enrollment is never supervised: set ABM/ASM Access "
                      "Management, 'Allow Managed Apple Account on', to Managed devices or Any device",
    "maid-token-other-organization": "{reason}: the domain's service discovery leads to another organization's "
                                     "MDM. Point the domain at its own organization's MDM, or move the account",
    "service-unavailable": "Apple's identity service did not answer: an outage, or a network that blocks Apple's "
                           "identity hosts; try again later or from another network",
    "throttled": "{reason}. Wait, then sign in with the right password (reset it in ABM/ASM if the person does "
                 "not know it)",
    "federated-state-missing": "{reason}. The IdP (a customised sign-in page, or a proxy in front of it) must send "
                               "state back unchanged to Apple's redirect URI",
    "federated-assertion-invalid": "{reason}. Apple trusts only assertions the IdP issued for Apple's application: "
                                   "check the IdP's application for Apple (its identifier must not be another "
                                   "application's), the IdP's signing key and clocks, then redo the federation in "
                                   "ABM/ASM if needed",
    "federated-other-user": "{reason}: at the IdP, sign in as {account}",
    "federated-request-expired": "{reason}. Start the sign-in again, and finish it within ten minutes",
    "federated-code-invalid": "{reason}",
}
# What the IdP's own refusals mean for Apple's sign-in (the IdP's error page says little).
IDP_CAUSES = {
    "redirect-uri-mismatch": ("maa-federated-redirect-not-registered",
                              "the IdP does not allow Apple's redirect URI for Apple's application ({message}): the "
                              "federation between ABM/ASM and the IdP is incomplete. In ABM/ASM (Settings, Managed "
                              "Apple Accounts) reconnect federated authentication, which registers Apple at the IdP, "
                              "or add Apple's redirect URI to Apple's application at the IdP"),
    "unknown-client": ("maa-federated-apple-unknown-at-idp",
                       "the IdP has no application for Apple ({message}): connect federated authentication in "
                       "ABM/ASM (Settings, Managed Apple Accounts) so that Apple is registered at the IdP"),
}
TOKEN_CAUSE = ("{reason}. The MDM must answer GetToken with an RS256 JWT signed by the key it uploaded to ABM/ASM "
               "with its MDM server, iss = that server's server_uuid (AccountDetail), a fresh jti and "
               "service_type com.apple.maid")


@dataclass(frozen=True)
class SignInDevice:
    """What the device tells Apple about itself."""
    platform: str
    os_version: str
    enrollment: str  # "user" or "device"
    supervised: bool = False
    virtual_machine: bool = False


def identity_origin(apple_host: str, port: int | None = None) -> str:
    """Apple's identity service beside the fallback host: axm-adm-enroll.<zone> → gsa.<zone>. The device builds
    this URL itself, as it does the fallback's, so it is dialled through the device's own port map (443 → lab)."""
    zone = apple_host.split(".", 1)[1] if "." in apple_host else apple_host
    return f"https://{IDENTITY_HOST_PREFIX}.{zone}"


def sign_in(http, trace: Trace, origin: str, account: str, password: str | None, device: SignInDevice,
            maid_token: str | None, *, timeout: float) -> dict:
    """Sign in at Apple; returns Apple's answer, or traces the refusal and raises DeviceFailure."""
    body = {"account": account, "password": password or "", "maid_token": maid_token,
            "device": {"platform": device.platform, "os_version": device.os_version,
                       "enrollment": device.enrollment, "supervised": device.supervised,
                       "virtual_machine": device.virtual_machine}}
    response, answer, request, action = _ask(http, trace, origin, body, timeout)
    if response.status_code == 200 and isinstance(answer, dict) and isinstance(answer.get("federated"), dict):
        trace.add(STAGE, action, OK, f"{account} is a federated Managed Apple Account: Apple sends the person to "
                  f"the organization's identity provider {answer['federated'].get('idp')}", request=request,
                  response=response)
        code = _web_sign_in(http, trace, answer["federated"], account, password, timeout)
        response, answer, request, action = _ask(http, trace, origin, {**body, "password": "",
                                                                      "federated_code": code}, timeout)
    if response.status_code == 200 and isinstance(answer, dict) and answer.get("account"):
        trace.add(STAGE, action, OK, f"Apple signed in the Managed Apple Account {answer['account']} of "
                  f"{answer.get('organization')}",
                  request=request, response=response)
        return answer
    if not isinstance(answer, dict) or not isinstance(answer.get("alert"), dict):
        _stop(trace, action, "maa-bad-answer", f"Apple's identity service answered {response.status_code} "
              "without an alert the device can show", request, response)
    _refused(trace, action, answer, account, request, response)


def _ask(http, trace: Trace, origin: str, body: dict, timeout: float):
    """POST the sign-in to Apple: (response, its JSON or None, the request as traced, the action's words)."""
    url = origin + MAA_SIGN_IN_PATH
    headers = {"Content-Type": "application/json", "Accept": "application/json"}
    request = describe_request("POST", url, headers)
    action = f"POST {url} (Managed Apple Account sign-in)"
    try:
        response = http.post(url, data=json.dumps(body), headers=headers, timeout=timeout)
    except OSError as exc:
        _stop(trace, action, "maa-service-unreachable",
              f"the device could not reach Apple's identity service ({exc.__class__.__name__}); "
              + CAUSES["service-unavailable"], request)
    action = f"POST {url} → {response.status_code} (Managed Apple Account sign-in)"
    try:
        answer = response.json()
    except ValueError:
        answer = None
    return response, answer, request, action


def _refused(trace: Trace, action: str, answer: dict, account: str, request=None, response=None) -> NoReturn:
    error = str(answer.get("error") or "refused")
    alert = answer["alert"]
    reason = str(answer.get("reason") or "")
    cause = CAUSES.get(error) or (TOKEN_CAUSE if error.startswith("maid-token-") else "{reason}")
    _stop(trace, action, f"maa-{error}",
          f"the device shows '{alert.get('title')}: {alert.get('message')}'. Cause: "
          + cause.format(account=account, reason=reason), request, response)


def _web_sign_in(http: DeviceHTTP, trace: Trace, federated: dict, account: str, password: str | None,
                 timeout: float) -> str:
    """The web view of a federated sign-in, from the IdP's page to Apple's result code."""
    url, idp = str(federated.get("url") or ""), federated.get("idp")
    jar = CookieJar()
    web = DeviceHTTP(http.resolver, http.ca_cert, http.port_map, cookies=jar)
    method, data, submitted = "GET", None, False
    with web:
        for _ in range(MAX_WEB_HOPS):
            seen = len(jar.refused)
            action = f"{method} {url}"
            try:
                response = web.request(method, url, data=data, timeout=timeout,
                                       headers={"Accept": "text/html", "User-Agent": WEB_USER_AGENT})
            except (OSError, HTTPException) as exc:
                failure = transport_failure(STAGE, url, exc, "the sign-in page")
                _stop(trace, action, f"maa-federated-{failure.code}", failure.explanation)
            action = f"{method} {url} → {response.status_code} (federated sign-in)"
            for refused in jar.refused[seen:]:
                trace.add(STAGE, action, WARN, f"the web view refused the cookie {refused} (RFC 6265 5.3)",
                          code="cookie-refused", response=response)
            location = response.headers.get("Location", "")
            if 300 <= response.status_code < 400 and location:
                target = urljoin(url, location)
                if urlsplit(target).scheme == MAA_FEDERATED_SCHEME:
                    code = next(iter(parse_qs(urlsplit(target).query).get("code") or ()), "")
                    trace.add(STAGE, action, OK, "Apple took the IdP's assertion and hands the device a result "
                              "code", response=response)
                    return code
                trace.add(STAGE, action, OK, f"the web view goes on to {target}", response=response)
                url, method, data = target, "GET", None
                continue
            if response.status_code >= 400:
                _web_refused(trace, action, response, urlsplit(url).hostname == idp, submitted, account)
            form = password_form(response.text)
            if form is None:
                _stop(trace, action, "maa-federated-no-form", f"the IdP's page at {url} has no password form: the "
                      "person has nothing to sign in with", response=response)
            if password is None:
                _stop(trace, action, "password-needed", "the IdP's sign-in page asks for a password and none was "
                      "given (pass --password)", response=response)
            trace.add(STAGE, action, OK, f"the IdP {idp} shows its sign-in page; the person types the IdP password",
                      response=response)
            url, method, data = urljoin(url, form["action"] or url), form["method"].upper(), fill(form, account,
                                                                                                   password)
            submitted = True
    _stop(trace, "federated sign-in", "maa-federated-too-many-redirects",
          f"more than {MAX_WEB_HOPS} redirects in the web view of the federated sign-in")


def _web_refused(trace: Trace, action: str, response, at_idp: bool, submitted: bool, account: str) -> NoReturn:
    """An error page in the web view: the IdP's (its refusal, explained) or Apple's callback (Apple's alert)."""
    try:
        answer = response.json()
    except ValueError:
        answer = None
    if not at_idp and isinstance(answer, dict) and isinstance(answer.get("alert"), dict):
        _refused(trace, action, answer, account, response=response)
    shown = page_message(response)
    error = answer.get("error") if isinstance(answer, dict) else None
    if at_idp and error in IDP_CAUSES:
        code, cause = IDP_CAUSES[error]
        _stop(trace, action, code, "the web view shows the IdP's error page. Cause: " + cause.format(
            message=answer.get("message", shown)), response=response)
    if at_idp and response.status_code == 429:
        _stop(trace, action, "maa-federated-throttled", f"the IdP shows '{shown}': too many wrong passwords in a "
              f"row; wait {response.headers.get('Retry-After', 'a while')} s, or unlock the account at the IdP",
              response=response)
    if at_idp and submitted and response.status_code == 401:
        _stop(trace, action, "maa-federated-wrong-password", f"the IdP shows '{shown}'. Cause: the IdP refused the "
              f"password: a federated Managed Apple Account signs in with {account}'s password at the IdP (not one "
              "set in ABM/ASM); reset it at the IdP if the person does not know it", response=response)
    _stop(trace, action, f"maa-federated-http-{response.status_code}",
          f"the web view of the federated sign-in shows '{shown}'", response=response)


def _stop(trace: Trace, action: str, code: str, explanation: str, request=None, response=None) -> NoReturn:
    trace.stop(STAGE, code, explanation, action, request=request, response=response)
