"""The MDM's faults: how MDM servers get stage 2 and ongoing authentication wrong (PROTOCOL.md 2, 4 and 6.10-6.13).

Each fault is armed on the MDM host and applies at one place of the flow, named in ``APPLIES_AT``; the MDM's parts
ask for the faults of a place with ``Taps.take(place)``, so a fault armed for the token endpoint is never consumed
by a check-in. Deterministic: count-based (``times``) or until cleared.
"""
from __future__ import annotations

from lab.faults import FaultSpec

COMPONENT = "mdm"


def _spec(name: str, description: str, symptom: str) -> FaultSpec:
    return FaultSpec(name, COMPONENT, description, symptom)


FAULTS = [
    _spec("challenge-missing", "every 401 (enrollment, check-in, command poll) comes without WWW-Authenticate: a "
          "bare 401", "enrollment stops at once after the first request, or a device that must renew its token "
          "does not know how: the framework's auth layer drops the header"),
    _spec("challenge-malformed", "the Bearer challenge has an unterminated quote and no separator",
          "enrollment stops right after the first request: a hand-built header string"),
    _spec("challenge-missing-parameter", "the challenge leaves out its last required parameter (url for "
          "apple-as-web, token-url for apple-oauth2)", "enrollment stops after the first request: a parameter "
          "was renamed or forgotten in the server's configuration"),
    _spec("challenge-unknown-method", "the challenge says method=\"oauth2\" instead of apple-oauth2 or "
          "apple-as-web", "enrollment stops after the first request: the method name is not Apple's"),
    _spec("callback-302", "the sign-in ends with 302 Found instead of 308 Permanent Redirect",
          "works on devices that were seen to tolerate it, fails on strict clients: a framework's redirect() "
          "default"),
    _spec("callback-wrong-host", "the sign-in ends at apple-remotemanagement-user-login://authentication-result "
          "(simple) or ://oauth2/redirection (OAuth 2): the wrong host",
          "a typo in the callback URL: Apple documents authentication-results and a path-only redirect-url"),
    _spec("token-endpoint-down", "the OAuth 2 token endpoint answers 503",
          "sign-in succeeds in the web view, then enrollment fails; later, silent refresh fails and the user is "
          "asked to sign in again"),
    _spec("refresh-rejected", "the token endpoint refuses every refresh_token grant with 400 invalid_grant",
          "users are prompted to sign in whenever their access token expires, though refresh tokens were issued"),
    _spec("refresh-drops-refresh-token", "a refresh reply carries a new access token but no refresh_token",
          "the next expiry prompts for sign-in: the device replaces its stored tokens wholesale and loses the "
          "refresh token"),
    _spec("token-expired-early", "the access token presented at the next check-in or command poll is expired "
          "at once (as if the token lifetime were shorter than the device expects)",
          "a token expiring mid-session: 60 s tokens, a clock-skewed server"),
    _spec("token-revoked", "the MDM revokes the grant of the access token presented at the next check-in or poll "
          "(access and refresh tokens)", "an admin reset the user's sessions or disabled the account: the device "
          "must sign in again"),
    _spec("reauth-loop", "every check-in and command poll answers 401 with the challenge, whatever the token",
          "repeated sign-in prompts that never end: the MDM validates tokens with the wrong key after a "
          "deployment"),
    _spec("profile-access-rights", "the User Enrollment (BYOD) profile carries AccessRights",
          "the device cancels the enrollment after sign-in: a Device Enrollment template reused for BYOD"),
    _spec("profile-missing-maa", "the enrollment profile's MDM payload has no AssignedManagedAppleID",
          "the device cancels the enrollment after sign-in: the account mapping is missing in the MDM"),
    _spec("profile-mode-mismatch", "the profile says EnrollmentMode ADDE where the device was sent to User "
          "Enrollment (and BYOD where it was sent to Device Enrollment)",
          "the device cancels the enrollment: discovery's Version and the profile's EnrollmentMode disagree"),
    _spec("esso-document-html", "the Enrollment SSO document (X-Apple-MDM-ESSO) is served as text/html",
          "Enrollment SSO fails before sign-in: the document URL points at a web page, not the JSON"),
]

# Where in the flow each fault applies (Taps.take takes only the faults of the place asked for).
APPLIES_AT = {
    "challenge": ("challenge-missing", "challenge-malformed", "challenge-missing-parameter",
                  "challenge-unknown-method"),
    "callback": ("callback-302", "callback-wrong-host"),
    "token-endpoint": ("token-endpoint-down",),
    "refresh": ("refresh-rejected", "refresh-drops-refresh-token"),
    "ongoing": ("token-expired-early", "token-revoked", "reauth-loop"),
    "esso": ("esso-document-html",),
    "profile": ("profile-access-rights", "profile-missing-maa", "profile-mode-mismatch"),
}

assert sorted(n for names in APPLIES_AT.values() for n in names) == sorted(f.name for f in FAULTS)


class Taps:
    """The MDM's view of the lab's fault board: the armed fault of one place, and how to mention it."""

    def __init__(self, board, host: str):
        self.board, self.host = board, host  # lab.faults.FaultBoard, or None (unit tests)

    @property
    def concealed(self) -> bool:
        return bool(self.board is not None and self.board.concealed)

    def take(self, place: str) -> str | None:
        """The name of an armed MDM fault that applies at ``place`` (one use consumed), or None."""
        if self.board is None:
            return None
        armed = self.board.take(COMPONENT, self.host, APPLIES_AT[place])
        return armed.spec.name if armed else None

    def note(self, name: str | None) -> str:
        """`` (fault <name>)`` for a summary, unless no fault applied or the board conceals faults."""
        return f" (fault {name})" if name and not self.concealed else ""
