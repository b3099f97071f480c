"""The MDM's faults: how MDM servers get stage 2 and ongoing authentication wrong (PROTOCOL.md 2, 4 and 6.10-6.13).

One record per fault (lab.faults): ``at`` names the place of the flow it breaks, and its hook says what it does to
what that place hands over:

- ``challenge``: ``(params, separator) → header value`` (None: no WWW-Authenticate at all);
- ``callback``: ``(status, location) → (status, location)`` of the sign-in's last redirect;
- ``cookie``: ``(MDM host, IdP host or None) → Domain`` of the cookies the sign-in sets (normally host-only);
- ``token-endpoint``, ``refresh``, ``ongoing``: raise the error the MDM answers instead (``refresh`` may also
  return the refresh-token lifetime to use, None for none);
- ``esso``: ``() → (status, content type, body)`` of the Enrollment SSO document;
- ``profile``: ``(mdm payload, mode) → None``, changing the payload in place.

The organization's IdP (idp.py, component ``idp``) has its own: ``assertion``: ``(audience, registered client ids) →
audience`` of the assertion it signs; ``return``: ``query → query`` of its redirect back to the relying party.

The MDM's parts take a fault only at their place (``Taps.take``), so a fault armed for the token endpoint is never
consumed by a check-in; every word about a fault comes from the board (``Taps``), so an exercise never names it.
Deterministic: count-based (``times``) or until cleared.
"""
from __future__ import annotations

from urllib.parse import parse_qsl, urlencode

from lab.faults import FaultRegistry
from lab.flaskapp import LabError
from lab.protocol import CALLBACK_SCHEME
from mocks.mdm.errors import OAuthError, ServiceUnavailable

COMPONENT = "mdm"
IDP_COMPONENT = "idp"
fault = FaultRegistry(COMPONENT)
idp_fault = FaultRegistry(IDP_COMPONENT)


def _quoted(params: dict, separator: str) -> str:
    return "Bearer " + separator.join(f'{k}="{v}"' for k, v in params.items())


@fault("challenge-missing", at="challenge",
       description="every 401 (enrollment, check-in, command poll) comes without WWW-Authenticate: a bare 401",
       symptom="enrollment stops at once after the first request, or a device that must renew its token does not "
               "know how: the framework's auth layer drops the header")
def _challenge_missing(params: dict, separator: str) -> None:
    return None


@fault("challenge-malformed", at="challenge",
       description="the Bearer challenge has an unterminated quote and no separator",
       symptom="enrollment stops right after the first request: a hand-built header string")
def _challenge_malformed(params: dict, separator: str) -> str:
    first, second = list(params.items())[:2]
    return f'Bearer {first[0]}="{first[1]} {second[0]}={second[1]}'


@fault("challenge-missing-parameter", at="challenge",
       description="the challenge leaves out its last required parameter (url for apple-as-web, token-url for "
                   "apple-oauth2)",
       symptom="enrollment stops after the first request: a parameter was renamed or forgotten in the server's "
               "configuration")
def _challenge_missing_parameter(params: dict, separator: str) -> str:
    return _quoted({k: v for k, v in params.items() if k != ("url" if "url" in params else "token-url")}, separator)


@fault("challenge-unknown-method", at="challenge",
       description="the challenge says method=\"oauth2\" instead of apple-oauth2 or apple-as-web",
       symptom="enrollment stops after the first request: the method name is not Apple's")
def _challenge_unknown_method(params: dict, separator: str) -> str:
    return _quoted({**params, "method": "oauth2"}, separator)


@fault("callback-302", at="callback",
       description="the sign-in ends with 302 Found instead of 308 Permanent Redirect",
       symptom="works on devices that were seen to tolerate it, fails on strict clients: a framework's redirect() "
               "default")
def _callback_302(status: int, location: str) -> tuple[int, str]:
    return 302, location


@fault("callback-wrong-host", at="callback",
       description="the sign-in ends at apple-remotemanagement-user-login://authentication-result (simple) or "
                   "://oauth2/redirection (OAuth 2): the wrong host",
       symptom="a typo in the callback URL: Apple documents authentication-results and a path-only redirect-url")
def _callback_wrong_host(status: int, location: str) -> tuple[int, str]:
    if "://authentication-results?" in location:
        return status, location.replace("://authentication-results?", "://authentication-result?")
    return status, location.replace(f"{CALLBACK_SCHEME}:/", f"{CALLBACK_SCHEME}://", 1)


@fault("callback-drops-state", at="callback",
       description="the OAuth 2 sign-in's last redirect carries the code but not the state the device sent",
       symptom="the sign-in page closes after the password and enrollment fails at once: the server builds the "
               "redirect from its own parameters (or a proxy strips the query) and loses state")
def _callback_drops_state(status: int, location: str) -> tuple[int, str]:
    base, _, query = location.partition("?")
    kept = [(k, v) for k, v in parse_qsl(query, keep_blank_values=True) if k != "state"]
    return status, base + ("?" + urlencode(kept) if kept else "")


@fault("session-cookie-other-host", at="cookie",
       description="the MDM sets its sign-in cookies (the one that ties a federated sign-in to the browser, and the "
                   "web session) with Domain=<the IdP's host>, a host that is not the MDM's",
       symptom="after the password at the IdP the sign-in goes back and forth between the IdP and the MDM until the "
               "web view gives up ('too many redirects'): a cookie domain configured for another host, e.g. after "
               "the MDM moved to a new name")
def _session_cookie_other_host(mdm_host: str, idp_host: str | None) -> str:
    return idp_host or "sso." + mdm_host.split(".", 1)[-1]


@idp_fault("idp-drops-state", at="return",
           description="the IdP's redirect back to the relying party (the MDM, or Apple) carries the assertion but "
                       "not state",
           symptom="after the password at the IdP the sign-in ends on an error page ('state missing', 'correlation "
                   "failed'): a customised IdP sign-in page or a proxy drops the query parameter")
def _idp_drops_state(query: dict) -> dict:
    return {k: v for k, v in query.items() if k != "state"}


@idp_fault("idp-assertion-wrong-audience", at="assertion",
           description="the IdP issues its assertions for another of its applications than the one that asked "
                       "(aud = the other relying party's client id)",
           symptom="after the IdP password the sign-in fails ('Verification Failed' at Apple, an error page at the "
                   "MDM): two applications at the IdP share one configuration, e.g. a copied app registration")
def _idp_assertion_wrong_audience(audience: str, clients: tuple[str, ...]) -> str:
    return next((c for c in clients if c != audience), f"{audience}-other")


@fault("token-endpoint-down", at="token-endpoint",
       description="the OAuth 2 token endpoint answers 503",
       symptom="sign-in succeeds in the web view, then enrollment fails; later, silent refresh fails and the user "
               "is asked to sign in again")
def _token_endpoint_down() -> None:
    raise ServiceUnavailable("the token service is unavailable", headers={"Retry-After": "120"})


@fault("refresh-rejected", at="refresh",
       description="the token endpoint refuses every refresh_token grant with 400 invalid_grant",
       symptom="users are prompted to sign in whenever their access token expires, though refresh tokens were "
               "issued")
def _refresh_rejected(refresh_ttl: int | None) -> None:
    raise OAuthError("the refresh token was refused", code="invalid_grant")


@fault("refresh-drops-refresh-token", at="refresh",
       description="a refresh reply carries a new access token but no refresh_token",
       symptom="the next expiry prompts for sign-in: the device replaces its stored tokens wholesale and loses the "
               "refresh token")
def _refresh_drops_refresh_token(refresh_ttl: int | None) -> None:
    return None


@fault("token-expired-early", at="ongoing",
       description="the access token presented at the next check-in or command poll is expired at once (as if the "
                   "token lifetime were shorter than the device expects)",
       symptom="a token expiring mid-session: 60 s tokens, a clock-skewed server")
def _token_expired_early(signin, info) -> None:
    signin.tokens.expire(grant_id=info.grant_id)
    raise signin.not_authorized("the access token has expired", "expired-token")


@fault("token-revoked", at="ongoing",
       description="the MDM revokes the grant of the access token presented at the next check-in or poll (access "
                   "and refresh tokens)",
       symptom="an admin reset the user's sessions or disabled the account: the device must sign in again")
def _token_revoked(signin, info) -> None:
    signin.tokens.revoke(grant_id=info.grant_id)
    raise signin.not_authorized("the access token was revoked", "revoked-token")


@fault("reauth-loop", at="ongoing",
       description="every check-in and command poll answers 401 with the challenge, whatever the token",
       symptom="repeated sign-in prompts that never end: the MDM validates tokens with the wrong key after a "
               "deployment")
def _reauth_loop(signin, info) -> None:
    raise signin.not_authorized("the access token did not validate", "invalid-token")


@fault("profile-access-rights", at="profile",
       description="the User Enrollment (BYOD) profile carries AccessRights",
       symptom="the device cancels the enrollment after sign-in: a Device Enrollment template reused for BYOD")
def _profile_access_rights(payload: dict, mode: str) -> None:
    payload["AccessRights"] = 8191


@fault("profile-missing-maa", at="profile",
       description="the enrollment profile's MDM payload has no AssignedManagedAppleID",
       symptom="the device cancels the enrollment after sign-in: the account mapping is missing in the MDM")
def _profile_missing_maa(payload: dict, mode: str) -> None:
    del payload["AssignedManagedAppleID"]


@fault("profile-mode-mismatch", at="profile",
       description="the profile says EnrollmentMode ADDE where the device was sent to User Enrollment (and BYOD "
                   "where it was sent to Device Enrollment)",
       symptom="the device cancels the enrollment: discovery's Version and the profile's EnrollmentMode disagree")
def _profile_mode_mismatch(payload: dict, mode: str) -> None:
    payload["EnrollmentMode"] = "BYOD" if mode == "ADDE" else "ADDE"


@fault("esso-document-html", at="esso",
       description="the Enrollment SSO document (X-Apple-MDM-ESSO) is served as text/html",
       symptom="Enrollment SSO fails before sign-in: the document URL points at a web page, not the JSON")
def _esso_document_html() -> tuple[int, str, bytes]:
    return 200, "text/html; charset=utf-8", b"<!doctype html><html><body><h1>Single sign-on</h1></body></html>"


FAULTS = [*fault.specs, *idp_fault.specs]


class Taps:
    """The MDM's view of the lab's fault board: the armed fault of one place, applied, and worded by the board."""

    def __init__(self, board, host: str):
        self.board, self.host = board, host  # lab.faults.FaultBoard, or None (unit tests)

    def take(self, place: str):
        """The armed MDM fault that applies at ``place`` (one use consumed), or None."""
        return None if self.board is None else self.board.take(COMPONENT, self.host, at=place)

    def apply(self, armed, *args):
        """What ``armed`` does at its place; an error it raises is worded by the board."""
        try:
            return armed.apply(*args)
        except LabError as exc:
            exc.message = self.board.say(exc.message, armed)
            exc.args = (exc.message,)
            if "error_description" in exc.fields:  # OAuth errors carry the message twice (RFC 6749 5.2)
                exc.fields["error_description"] = exc.message
            raise

    def say(self, message: str, armed) -> str:
        """``message``, naming the fault that shaped the answer unless the board conceals it."""
        return message if armed is None or self.board is None else self.board.say(message, armed)
