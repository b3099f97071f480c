"""Who the device's user is (PROTOCOL.md stages 2 and 4): the Bearer challenge, passwords, the simple and OAuth 2
web sign-in (optionally federated to the organization's IdP), the OAuth 2 token endpoint, and the access-token
checks of every later request. Each web step turns into a ``WebAnswer`` that routes.py renders."""
from __future__ import annotations

import base64
import hashlib
import hmac
import secrets
from dataclasses import dataclass, replace
from urllib.parse import urlencode, urlsplit

from lab import federation, throttle
from lab.protocol import CALLBACK_SCHEME
from mocks.mdm.errors import BadAuthorizationRequest, BadSignIn, NotAuthorized, OAuthError
from mocks.mdm.tokens import TokenInfo, Tokens, bearer_of

# Lab passwords are printed in the banner: salted hashing keeps them out of the database in clear, and a low
# round count keeps a sign-in at 0.2 ms so fleets measure the protocol, not PBKDF2 (20,000 rounds cost 4.5 ms).
PBKDF2_ROUNDS = 1_000
REDIRECT_URL = f"{CALLBACK_SCHEME}:/oauth2/redirection"  # Apple's example redirect-url: the scheme and a path
DEFAULT_CLIENT_ID = "8C1D4B2E-6D0F-4E55-9E1A-MDMLAB000001"
AUTH_METHODS = {"simple": "apple-as-web", "oauth2": "apple-oauth2"}
SESSION_COOKIE = "mdm_session"
# A federated sign-in is tied to the browser that started it (RFC 6749 10.12, login CSRF): the MDM sets this cookie
# when it sends the user to the IdP and wants it back with the IdP's answer; without it the sign-in starts over.
SIGN_IN_COOKIE = "mdm_signin"
SIGN_IN_COOKIE_TTL = 600
FEDERATION_CLIENT_ID = "mdmlab-mdm"  # the MDM's client id at the organization's IdP
WRONG_PASSWORD = "The account or password is not correct."
# Password guessing (ROBUSTNESS.md F21): lab.throttle, shared with the IdP and Apple's sign-in.
THROTTLE_AFTER = throttle.AFTER
THROTTLE_SECONDS = throttle.SECONDS


@dataclass(frozen=True)
class WebAnswer:
    """What a sign-in page request turns into: a page (200/401), a hop (302), or the callback (308)."""
    status: int
    location: str | None = None
    identifier: str = ""
    action: str = ""
    request_id: str | None = None
    error: str | None = None
    session: str | None = None
    summary: str = ""
    retry_after: int | None = None  # 429: seconds until the next try
    binding: str | None = None  # the federated sign-in's cookie (SIGN_IN_COOKIE) that ties it to this browser
    cookie_domain: str | None = None  # the Domain attribute of the cookies set (None: host-only, as it should be)


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)


def _with_query(url: str, params: dict) -> str:
    return url + ("&" if "?" in url else "?") + urlencode({k: v for k, v in params.items() if v is not None})


class SignIn:
    def __init__(self, setup, store, tokens: Tokens, taps, clock):
        self.setup, self.store, self.tokens, self.taps, self.clock = setup, store, tokens, taps, clock
        self.token_ttl = setup.token_ttl  # the console can change it at run time
        self.throttle = throttle.Throttle(clock)
        self._seed_users()

    # -- users and passwords -----------------------------------------------------------------------------------
    def _seed_users(self) -> None:
        with self.store.transaction() as db:
            for user in self.setup.users:
                row = db.execute("SELECT salt, password_hash FROM users WHERE identifier = ?",
                                 (user.identifier,)).fetchone()
                if row and hmac.compare_digest(_hash_password(user.password, row["salt"]), row["password_hash"]):
                    continue
                salt = secrets.token_bytes(16)
                db.execute("INSERT OR REPLACE INTO users VALUES (?,?,?,?)",
                           (user.identifier, user.full_name, salt, _hash_password(user.password, salt)))

    def known_user(self, identifier: str) -> bool:
        return self.store.one("SELECT 1 FROM users WHERE identifier = ?", (identifier,)) is not None

    def verify_password(self, identifier: str, password: str) -> bool:
        row = self.store.one("SELECT salt, password_hash FROM users WHERE identifier = ?", (identifier,))
        return row is not None and hmac.compare_digest(_hash_password(password, row["salt"]), row["password_hash"])

    # -- challenge (PROTOCOL.md 2.2) ---------------------------------------------------------------------------
    def challenge_params(self) -> dict[str, str]:
        s = self.setup
        if s.auth == "simple":
            return {"method": "apple-as-web", "url": s.auth_url}
        params = {"method": "apple-oauth2", "authorization-url": s.authorize_url, "token-url": s.token_url,
                  "redirect-url": s.redirect_url, "client-id": s.client_id}
        if s.scope:
            params["scope"] = s.scope
        return params

    def challenge(self) -> str | None:
        """The WWW-Authenticate value: quoted parameters, between them ``, `` as Apple writes it (or the space some
        servers write, as set up); None: no header."""
        params, separator = self.challenge_params(), self.setup.challenge_separator
        armed = self.taps.take("challenge")
        if armed is not None:
            return self.taps.apply(armed, params, separator)
        return "Bearer " + separator.join(f'{k}="{v}"' for k, v in params.items())

    def not_authorized(self, message: str, code: str = "token-required", *, esso: bool = False) -> NotAuthorized:
        headers = {}
        challenge = self.challenge()
        if challenge is not None:
            headers["WWW-Authenticate"] = challenge
        if esso and self.setup.esso:
            headers["X-Apple-MDM-ESSO"] = self.setup.esso_url
        return NotAuthorized(message, code=code, headers=headers)

    # -- access tokens (2.5, 4) --------------------------------------------------------------------------------
    def check_token(self, authorization: str | None, *, allow_expired: bool = False, esso: bool = False) -> TokenInfo:
        if not authorization:
            raise self.not_authorized("no Authorization header; sign in to get an access token", esso=esso)
        token = bearer_of(authorization)
        if token is None:
            raise self.not_authorized("the Authorization header is not 'Bearer <token>'", "malformed-authorization",
                                      esso=esso)
        info = self.tokens.lookup(token)
        if info is None:
            raise self.not_authorized("the access token is unknown to this MDM", "invalid-token", esso=esso)
        if info.revoked:
            raise self.not_authorized("the access token was revoked", "revoked-token", esso=esso)
        if info.expired(self.clock()) and not (allow_expired and info.enrollment_id):
            raise self.not_authorized("the access token has expired", "expired-token", esso=esso)
        return info

    def ongoing_token(self, authorization: str | None, *, allow_expired: bool = False) -> TokenInfo:
        """Check-in and command polls (PROTOCOL.md 4.1-4.2), where the MDM may invalidate a token at any time."""
        info = self.check_token(authorization, allow_expired=allow_expired)
        armed = None if allow_expired else self.taps.take("ongoing")
        if armed is not None:
            self.taps.apply(armed, self, info)
        return info

    # -- web sign-in: simple (2.3), OAuth 2 authorization endpoint (2.4), federation ------------------------------
    def _simple_callback(self, user: str, session: str | None, how: str) -> WebAnswer:
        token = self.tokens.issue(user, "simple", self.token_ttl, None).access_token
        status, location, armed = self._callback(f"{CALLBACK_SCHEME}://authentication-results?access-token={token}")
        return self._signed_in(WebAnswer(status, location, session=session, summary=self.taps.say(
            f"{how} {user}; {status} to the device with an access token", armed)))

    def _signed_in(self, answer: WebAnswer) -> WebAnswer:
        """The last redirect of a sign-in, with the web session's cookie where one is set."""
        if not answer.session:
            return answer
        domain, armed = self.cookie_domain()
        if armed is None:
            return answer
        return replace(answer, cookie_domain=domain,
                       summary=self.taps.say(f"{answer.summary}; web session cookie set with Domain={domain}", armed))

    def _callback(self, location: str):
        """The sign-in's last redirect: (status, location, the fault that changed them or None)."""
        armed = self.taps.take("callback")
        if armed is None:
            return self.setup.callback_status, location, None
        return (*self.taps.apply(armed, self.setup.callback_status, location), armed)

    def _oauth_callback(self, request, user: str, session: str | None, how: str) -> WebAnswer:
        code = self.tokens.new_code(request.request_id, user, self.setup.code_ttl)
        status, location, armed = self._callback(_with_query(request.redirect_uri,
                                                             {"code": code, "state": request.state}))
        return self._signed_in(WebAnswer(status, location, session=session, summary=self.taps.say(
            f"{how} {user}; {status} to redirect-url with an authorization code", armed)))

    def _binding(self, request_id: str) -> str:
        return hmac.new(self.setup.federation_secret, b"browser:" + request_id.encode(), hashlib.sha256).hexdigest()

    def cookie_domain(self):
        """The Domain of the cookies this answer sets (None: host-only) and the fault that changed it, or None."""
        armed = self.taps.take("cookie")
        if armed is None:
            return None, None
        idp_host = urlsplit(self.setup.idp_origin).hostname
        return self.taps.apply(armed, self.setup.host, idp_host), armed

    def _to_idp(self, request_id: str, identifier: str, why: str = "") -> WebAnswer:
        location = _with_query(self.setup.idp_origin + "/authorize", {
            "client_id": FEDERATION_CLIENT_ID, "response_type": "code", "state": request_id,
            "redirect_uri": self.setup.federated_callback_url, "login_hint": identifier or None})
        domain, armed = self.cookie_domain()
        summary = (f"{why}federated sign-in: 302 to the organization's IdP {urlsplit(self.setup.idp_origin).hostname}"
                   f", {SIGN_IN_COOKIE} cookie set" + (f" with Domain={domain}" if domain else ""))
        return WebAnswer(302, location, binding=self._binding(request_id), cookie_domain=domain,
                         summary=self.taps.say(summary, armed))

    def simple_page(self, identifier: str, session: str | None) -> WebAnswer:
        """GET of the simple sign-in URL (``user-identifier`` prefills the form)."""
        user = self.tokens.session_user(session)
        if user and identifier in ("", user):
            return self._simple_callback(user, None, "single sign-on (web session) for")
        if self.setup.idp_origin:
            return self._to_idp(self.tokens.new_request("simple", identifier), identifier)
        return WebAnswer(200, identifier=identifier, action=urlsplit(self.setup.auth_url).path,
                         summary=f"sign-in page for {identifier or '?'}")

    def _refusal(self, identifier: str, password: str, page: WebAnswer) -> WebAnswer | None:
        """The sign-in page again (401 wrong password, 429 too many), or None when the password is right."""
        attempt = self.throttle.attempt(identifier, lambda: self.verify_password(identifier, password))
        if attempt.wait:
            return WebAnswer(429, identifier=identifier, action=page.action, request_id=page.request_id,
                             error=throttle.too_many(attempt.wait), retry_after=attempt.wait,
                             summary=self.throttle.summary(identifier, attempt.wait))
        return None if attempt.ok else page

    def simple_submit(self, identifier: str, password: str) -> WebAnswer:
        if not identifier or not password:
            raise BadSignIn("both user-identifier and password are required", code="missing-credentials")
        refused = self._refusal(identifier, password, WebAnswer(
            401, identifier=identifier, action=urlsplit(self.setup.auth_url).path, error=WRONG_PASSWORD,
            summary=f"sign-in refused for {identifier}"))
        if refused is not None:
            return refused
        return self._simple_callback(identifier, self.tokens.new_session(identifier), "signed in")

    def authorize_page(self, args, session: str | None) -> WebAnswer:
        """GET of the OAuth 2 authorization endpoint (RFC 6749 4.1.1, PKCE RFC 7636 when sent)."""
        s = self.setup
        client_id, redirect_uri, state = args.get("client_id"), args.get("redirect_uri"), args.get("state")
        if client_id != s.client_id:
            raise BadAuthorizationRequest(f"unknown client_id {client_id!r}; this MDM's client-id is {s.client_id}",
                                          code="unknown-client")
        if redirect_uri != s.redirect_url:
            raise BadAuthorizationRequest(f"redirect_uri {redirect_uri!r} is not the registered {s.redirect_url}",
                                          code="redirect-uri-mismatch")

        def refuse(error: str, description: str) -> WebAnswer:
            location = _with_query(redirect_uri, {"error": error, "error_description": description, "state": state})
            return WebAnswer(302, location, summary=f"authorization request refused: {error}")

        if args.get("response_type") != "code":
            return refuse("unsupported_response_type", "only response_type=code is supported")
        scope = args.get("scope")
        if scope and not set(scope.split()) <= set((s.scope or "").split()):
            return refuse("invalid_scope", f"scope {scope!r} is not granted to this client")
        challenge, method = args.get("code_challenge"), args.get("code_challenge_method")
        if method and not challenge or challenge and (method or "plain") not in s.pkce_methods:
            allowed = " or ".join(s.pkce_methods)
            return refuse("invalid_request", f"code_challenge_method must be {allowed}, with a code_challenge"
                                             + ("" if "plain" in s.pkce_methods else " (plain is not allowed)"))
        login_hint = args.get("login_hint", "")
        request_id = self.tokens.new_request("oauth2", login_hint, client_id=client_id, redirect_uri=redirect_uri,
                                             scope=scope, state=state, code_challenge=challenge,
                                             code_challenge_method=(method or "plain") if challenge else None)
        user = self.tokens.session_user(session)
        if user and login_hint in ("", user):
            self.tokens.finish_request(request_id)
            return self._oauth_callback(self.tokens.request(request_id), user, None,
                                        "single sign-on (web session) for")
        if s.idp_origin:
            return self._to_idp(request_id, login_hint)
        return WebAnswer(200, identifier=login_hint, action=urlsplit(s.authorize_url).path, request_id=request_id,
                         summary=f"authorization page for {login_hint or '?'}"
                                 + (" (PKCE)" if challenge else ""))

    def _pending(self, request_id: str | None):
        request = self.tokens.request(request_id or "")
        if request is None or request.done is not None or request.expires <= self.clock():
            raise BadSignIn("this sign-in page expired or was already used; start the enrollment again",
                            code="sign-in-request-expired")
        return request

    def authorize_submit(self, request_id: str | None, identifier: str, password: str) -> WebAnswer:
        if not identifier or not password:
            raise BadSignIn("both user-identifier and password are required", code="missing-credentials")
        request = self._pending(request_id)
        refused = self._refusal(identifier, password, WebAnswer(
            401, identifier=identifier, action=urlsplit(self.setup.authorize_url).path,
            request_id=request.request_id, error=WRONG_PASSWORD, summary=f"sign-in refused for {identifier}"))
        if refused is not None:
            return refused
        self.tokens.finish_request(request.request_id)
        return self._oauth_callback(request, identifier, self.tokens.new_session(identifier), "signed in")

    def federated_return(self, assertion: str | None, request_id: str | None, binding: str | None) -> WebAnswer:
        """The IdP sends the user back with a signed assertion (``code``) and the sign-in request id (``state``);
        the browser brings the cookie set when the sign-in left for the IdP (``binding``)."""
        if not request_id:
            raise BadSignIn("the IdP sent the user back without state, so this MDM cannot tell which sign-in the "
                            "assertion completes: the IdP (or a proxy before the MDM) must return state unchanged",
                            code="federated-state-missing")
        request = self._pending(request_id)
        if not hmac.compare_digest(binding or "", self._binding(request.request_id)):
            return self._to_idp(request.request_id, request.login_hint,
                                f"the IdP's answer came without the {SIGN_IN_COOKIE} cookie this browser was given "
                                "when it left for the IdP: starting over; ")
        try:
            claims = federation.verify(self.setup.federation_secret, assertion or "", issuer=self.setup.idp_origin,
                                       audience=FEDERATION_CLIENT_ID, nonce=request.request_id,
                                       now=self.clock())
        except federation.FederationError as exc:
            raise BadSignIn(f"the IdP's assertion is not acceptable: {exc}", code="federated-assertion-invalid",
                            status=401) from None
        if not self.tokens.use_assertion(claims["jti"]):
            raise BadSignIn("this IdP assertion was already used", code="federated-assertion-replayed", status=401)
        user = claims["sub"]
        if not self.known_user(user):
            raise BadSignIn(f"{user} signed in at the IdP but has no account at this MDM", code="unknown-user",
                            status=403)
        if not self.tokens.finish_request(request.request_id):
            raise BadSignIn("this sign-in was already completed", code="sign-in-request-expired")
        session = self.tokens.new_session(user)
        how = "federated sign-in (IdP assertion) for"
        if request.kind == "simple":
            return self._simple_callback(user, session, how)
        return self._oauth_callback(request, user, session, how)

    # -- OAuth 2 token endpoint (2.4.3-4) ----------------------------------------------------------------------
    def token_endpoint(self, form) -> tuple[dict, str]:
        """The token reply for an authorization_code or refresh_token grant, and a summary for the timeline."""
        s = self.setup
        armed = self.taps.take("token-endpoint")
        if armed is not None:
            self.taps.apply(armed)
        if s.auth != "oauth2":
            raise OAuthError("this MDM signs users in with simple authentication", code="unauthorized_client")
        if form.get("client_id") != s.client_id:
            raise OAuthError(f"unknown client_id {form.get('client_id')!r}", code="invalid_client", status=401)
        grant_type = form.get("grant_type")
        refresh_ttl = s.refresh_ttl if s.refresh_tokens else None
        if grant_type == "authorization_code":
            issued, user = self._redeem(form, refresh_ttl)
            summary = f"authorization code for {user} exchanged for tokens"
        elif grant_type == "refresh_token":
            if not form.get("refresh_token"):
                raise OAuthError("refresh_token is required")
            armed = self.taps.take("refresh")
            if armed is not None:
                refresh_ttl = self.taps.apply(armed, refresh_ttl)
            reason, issued = self.tokens.refresh(form["refresh_token"], self.token_ttl, refresh_ttl)
            if issued is None:
                raise OAuthError(f"the refresh token is {reason}" + (
                    "; the grant is revoked because a used refresh token came back" if reason == "reused" else ""),
                    code="invalid_grant")
            summary = self.taps.say("refreshed" + ("" if issued.refresh_token else " without a new refresh token"),
                                    armed)
        else:
            raise OAuthError(f"grant_type {grant_type!r} is not supported", code="unsupported_grant_type")
        reply = {"token_type": "Bearer", "access_token": issued.access_token, "expires_in": issued.expires_in}
        if issued.refresh_token:
            reply["refresh_token"] = issued.refresh_token
        if s.scope:
            reply["scope"] = s.scope
        return reply, summary

    def _redeem(self, form, refresh_ttl):
        for key in ("code", "redirect_uri"):
            if not form.get(key):
                raise OAuthError(f"{key} is required for grant_type=authorization_code")
        reason, row = self.tokens.redeem_code(form["code"])
        if row is None:
            raise OAuthError(f"the authorization code is {reason} (codes are single-use and live "
                             f"{self.setup.code_ttl} s)", code="invalid_grant")
        if row["client_id"] != form["client_id"] or row["redirect_uri"] != form["redirect_uri"]:
            raise OAuthError("client_id or redirect_uri differ from the authorization request", code="invalid_grant")
        verifier = form.get("code_verifier")
        if row["code_challenge"]:
            if not verifier:
                raise OAuthError("code_verifier is required: the authorization request carried a code_challenge",
                                 code="invalid_grant")
            computed = verifier if row["code_challenge_method"] == "plain" else base64.urlsafe_b64encode(
                hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
            if not hmac.compare_digest(computed, row["code_challenge"]):
                raise OAuthError("code_verifier does not match the code_challenge (PKCE)", code="invalid_grant")
        elif verifier:
            raise OAuthError("code_verifier sent, but the authorization request had no code_challenge",
                             code="invalid_grant")
        issued = self.tokens.issue(row["user"], "oauth2", self.token_ttl, refresh_ttl)
        self.tokens.link_code(form["code"], issued.grant_id)
        return issued, row["user"]
