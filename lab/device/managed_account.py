"""Stage 3, last step: the person signs in with the Managed Apple Account the profile names, at Apple.

Apple's flow ends here: enrollment is complete only once this sign-in succeeds (PROTOCOL.md 3.3). The device asks
Apple's identity service (lab: ``gsa.<Apple's zone>``), handing it a ``com.apple.maid`` token from its MDM when the
MDM advertises ``com.apple.mdm.token`` (GetToken check-in). A refusal shows Apple's alert, which rarely says why:
the trace adds the cause and the fix. Field report (2026): an account-driven User Enrollment checks in before this
step, and a refused sign-in makes the device remove the enrollment it just made.
"""
from __future__ import annotations

import json
from dataclasses import dataclass
from typing import NoReturn

from lab.device.trace import OK, Trace, describe_request
from lab.protocol import MAA_SIGN_IN_PATH
from lab.protocol import MAID_TOKEN_SERVICE as MAID_SERVICE  # noqa: F401 (enrollment.py asks for it here)

STAGE = "enrollment"
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
    url = origin + MAA_SIGN_IN_PATH
    body = {"account": account, "password": password or "", "maid_token": maid_token,
            "device": {"platform": device.platform, "os_version": device.os_version,
                       "enrollment": device.enrollment, "supervised": device.supervised,
                       "virtual_machine": device.virtual_machine}}
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
    if response.status_code == 200 and isinstance(answer, dict) and answer.get("account"):
        trace.add(STAGE, action, OK, f"Apple signed in the Managed Apple Account {answer['account']} of "
                  f"{answer.get('organization')}",
                  request=request, response=response)
        return answer
    if not isinstance(answer, dict) or not isinstance(answer.get("alert"), dict):
        _stop(trace, action, "maa-bad-answer", f"Apple's identity service answered {response.status_code} "
              "without an alert the device can show", request, response)
    error = str(answer.get("error") or "refused")
    alert = answer["alert"]
    reason = str(answer.get("reason") or "")
    cause = CAUSES.get(error) or (TOKEN_CAUSE if error.startswith("maid-token-") else "{reason}")
    _stop(trace, action, f"maa-{error}",
          f"the device shows '{alert.get('title')}: {alert.get('message')}'. Cause: "
          + cause.format(account=account, reason=reason), request, response)


def _stop(trace: Trace, action: str, code: str, explanation: str, request=None, response=None) -> NoReturn:
    trace.stop(STAGE, code, explanation, action, request=request, response=response)
