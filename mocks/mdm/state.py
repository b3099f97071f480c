"""Rules of the MDM (PROTOCOL.md stages 2-4): users, the Bearer challenge, simple and OAuth 2 sign-in (optionally
federated to the organization's IdP), tokens, Enrollment SSO, the enrollment profile, check-in, the command queue
on ServerURL, and the console's controls (revoke, expire, token lifetime, queue, push).

Handlers in routes.py parse the request, call one method here and render what it returns.
"""
from __future__ import annotations

import base64
import functools
import hashlib
import hmac
import json
import plistlib
import secrets
import time
import uuid
from dataclasses import dataclass, field
from pathlib import Path
from urllib.parse import urlencode, urlsplit

from lab import cms
from lab.protocol import CALLBACK_SCHEME
from lab.store import Store
from mocks.mdm import federation
from mocks.mdm.commands import SCHEMA as COMMANDS_SCHEMA
from mocks.mdm.commands import REPORT_STATUSES, CommandQueue, sample_profile
from mocks.mdm.errors import (BadAuthorizationRequest, BadCheckIn, BadDiscoveryRequest, BadEnrollmentRequest,
                              BadReport, BadSignIn, CommandRefused, NotAuthorized, OAuthError, ServiceUnavailable,
                              TokenBoundElsewhere, UnknownEnrollment, UnrecognizedDevice)
from mocks.mdm.faults import APPLIES_AT, COMPONENT
from mocks.mdm.identity import IdentityCA
from mocks.mdm.tokens import SCHEMA as TOKENS_SCHEMA
from mocks.mdm.tokens import TokenInfo, Tokens, bearer_of

# Lab passwords are printed in the banner: salted hashing keeps them out of the database in clear, and a low
# round count keeps a sign-in at 0.2 ms so fleets measure the protocol, not PBKDF2 (20,000 rounds cost 4.5 ms).
PBKDF2_ROUNDS = 1_000
REDIRECT_URL = f"{CALLBACK_SCHEME}:/oauth2/redirection"  # Apple's example redirect-url: the scheme and a path
DEFAULT_CLIENT_ID = "8C1D4B2E-6D0F-4E55-9E1A-MDMLAB000001"
ESSO_APP_ID = 1_660_000_001  # the lab's Enrollment SSO app in "the App Store" (iTunesStoreID)
FORBIDDEN_BYOD_KEYS = ("UDID", "SerialNumber", "IMEI", "MEID", "UnlockToken")
AUTH_METHODS = {"simple": "apple-as-web", "oauth2": "apple-oauth2"}
SESSION_COOKIE = "mdm_session"
WRONG_PASSWORD = "The account or password is not correct."
SCHEMA_VERSION = 2

_SCHEMA = """
CREATE TABLE IF NOT EXISTS users (
    identifier TEXT PRIMARY KEY, full_name TEXT NOT NULL, salt BLOB NOT NULL, password_hash BLOB NOT NULL
);
CREATE TABLE IF NOT EXISTS enrollments (
    enrollment_id TEXT PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, topic TEXT NOT NULL,
    status TEXT NOT NULL, push_token BLOB, push_magic TEXT, created REAL NOT NULL, updated REAL NOT NULL,
    enrollment_user_id TEXT, last_seen REAL
);
CREATE TABLE IF NOT EXISTS profiles (
    profile_uuid TEXT PRIMARY KEY, user TEXT NOT NULL, mode TEXT NOT NULL, identity_serial TEXT NOT NULL,
    created REAL NOT NULL
)
""" + ";" + TOKENS_SCHEMA + ";" + COMMANDS_SCHEMA


@dataclass(frozen=True)
class MDMSetup:
    organization: str
    host: str
    base_url: str
    auth_url: str
    server_url: str
    checkin_url: str
    topic: str
    token_ttl: int
    users: tuple  # of lab.scenario.User
    discovery_url: str = ""
    adde_base_url: str = ""
    version: str = "mdm-byod"
    versions: dict = field(default_factory=dict)  # model family or user identifier → Version
    auth: str = "simple"  # "simple" (apple-as-web) or "oauth2" (apple-oauth2): which method the challenge names
    authorize_url: str = ""
    token_url: str = ""
    federated_callback_url: str = ""
    esso_url: str = ""
    client_id: str = DEFAULT_CLIENT_ID
    scope: str | None = "mdm"  # None: the challenge leaves scope out (the RE'd client then sends none)
    redirect_url: str = REDIRECT_URL
    refresh_tokens: bool = True  # OAuth 2: issue refresh tokens
    refresh_ttl: int = 30 * 86400
    code_ttl: int = 60  # authorization codes are single-use and short-lived
    idp_origin: str = ""  # set: sign-in is federated to the organization's IdP at this origin
    federation_secret: bytes = b""
    esso: bool = False  # the 401 of the enrollment request carries X-Apple-MDM-ESSO
    esso_app_id: int = ESSO_APP_ID


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


def _hash_password(password: str, salt: bytes) -> bytes:
    return hashlib.pbkdf2_hmac("sha256", password.encode(), salt, PBKDF2_ROUNDS)


@functools.lru_cache(maxsize=256)
def _signed_content(body: bytes) -> bytes:
    """The verified content of a signed body. The device posts the same bytes twice (the 401, then with its
    token) and the check depends on the bytes alone, so the second post costs no new verification."""
    return cms.parse(body).content


def parse_enrollment_body(body: bytes) -> dict:
    """The device's first POST: CMS-signed plist (LANGUAGE, PRODUCT, VERSION), or a plain plist.

    The Content-Type header is ignored: iOS 15 labelled the CMS body as a form (PROTOCOL.md 6.7).
    """
    if not body:
        raise BadEnrollmentRequest("the enrollment request has no body; expected a CMS-signed plist")
    content = body
    if cms.looks_like_cms(body):
        try:
            content = _signed_content(body)
        except cms.CMSError as exc:
            raise BadEnrollmentRequest(f"the signed enrollment request is invalid: {exc}") from exc
    try:
        info = plistlib.loads(content)
    except Exception as exc:
        raise BadEnrollmentRequest("the enrollment request is neither a CMS-signed plist nor a plist") from exc
    if not isinstance(info, dict) or not isinstance(info.get("PRODUCT"), str) \
            or not isinstance(info.get("VERSION"), str):
        raise BadEnrollmentRequest("the enrollment request plist needs PRODUCT and VERSION strings")
    return info


def parse_checkin_body(body: bytes) -> dict:
    try:
        message = plistlib.loads(body)
    except Exception as exc:
        raise BadCheckIn("the check-in body is not a property list") from exc
    if not isinstance(message, dict) or not isinstance(message.get("MessageType"), str):
        raise BadCheckIn("the check-in message needs a MessageType string")
    return message


def parse_report(body: bytes) -> dict:
    """A device's PUT to ServerURL: Idle, or the result of the last command (Status, CommandUUID, ...)."""
    try:
        report = plistlib.loads(body)
    except Exception as exc:
        raise BadReport("the command report is not a property list") from exc
    if not isinstance(report, dict) or report.get("Status") not in REPORT_STATUSES:
        raise BadReport(f"the report needs Status, one of {', '.join(REPORT_STATUSES)}", code="bad-status")
    if report["Status"] != "Idle" and not isinstance(report.get("CommandUUID"), str):
        raise BadReport(f"a {report['Status']} report needs the CommandUUID it answers", code="missing-command-uuid")
    return report


def _with_query(url: str, params: dict) -> str:
    return url + ("&" if "?" in url else "?") + urlencode({k: v for k, v in params.items() if v is not None})


class MDMState:
    def __init__(self, setup: MDMSetup, directory: Path, profile_signer, *, clock=time.time, faults=None):
        if setup.auth not in AUTH_METHODS:
            raise ValueError(f"auth must be one of {', '.join(AUTH_METHODS)}, got {setup.auth!r}")
        self.setup = setup
        self.directory = Path(directory)
        self.signer = profile_signer  # lab.pki.Leaf
        self.clock = clock
        self.faults = faults  # lab.faults.FaultBoard, or None (unit tests)
        self.store = Store(self.directory / "mdm.db", _SCHEMA)
        self._migrate()
        self.tokens = Tokens(self.store, clock)
        self.commands = CommandQueue(self.store, clock)
        self.identity_ca = IdentityCA(self.directory, setup.organization)
        self.token_ttl = setup.token_ttl  # the console can change it at run time
        self.base_id = f"test.mdmlab.{setup.host}"
        self.enrollment_profile_id = f"{self.base_id}.enrollment"
        self._seed_users()

    def _migrate(self) -> None:
        """State dirs from before OAuth 2 kept one ``tokens`` table: move its rows into grants."""
        with self.store.transaction() as db:
            if db.execute("PRAGMA user_version").fetchone()[0] >= SCHEMA_VERSION:
                return
            columns = {r[1] for r in db.execute("PRAGMA table_info(enrollments)")}
            for column in ("enrollment_user_id TEXT", "last_seen REAL"):
                if column.split()[0] not in columns:
                    db.execute(f"ALTER TABLE enrollments ADD COLUMN {column}")
            if db.execute("SELECT 1 FROM sqlite_master WHERE name = 'tokens'").fetchone():
                db.execute("INSERT OR IGNORE INTO grants SELECT 'legacy-' || substr(token_hash, 1, 16), user,"
                           " 'simple', created, revoked, enrollment_id, mode FROM tokens")
                db.execute("INSERT OR IGNORE INTO access_tokens SELECT token_hash, 'legacy-' ||"
                           " substr(token_hash, 1, 16), created, expires FROM tokens")
                db.execute("DROP TABLE tokens")
            db.execute(f"PRAGMA user_version = {SCHEMA_VERSION}")

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

    @property
    def _concealed(self) -> bool:
        return bool(self.faults is not None and self.faults.concealed)

    def _fault(self, place: str) -> str | None:
        """The name of an armed MDM fault that applies at ``place`` (one use consumed), or None."""
        if self.faults is None:
            return None
        armed = self.faults.take(COMPONENT, self.setup.host, APPLIES_AT[place])
        return armed.spec.name if armed else None

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
        """The WWW-Authenticate value, as Apple writes it (``, `` between quoted parameters); None: no header."""
        params = self.challenge_params()
        fault = self._fault("challenge")
        if fault == "challenge-missing":
            return None
        if fault == "challenge-unknown-method":
            params["method"] = "oauth2"
        if fault == "challenge-missing-parameter":
            del params["url" if "url" in params else "token-url"]
        if fault == "challenge-malformed":
            first, second = list(params.items())[:2]
            return f'Bearer {first[0]}="{first[1]} {second[0]}={second[1]}'
        return "Bearer " + ", ".join(f'{k}="{v}"' for k, v in params.items())

    def not_authorized(self, message: str, code: str = "token-required", *, esso: bool = False) -> NotAuthorized:
        headers = {}
        challenge = self.challenge()
        if challenge is not None:
            headers["WWW-Authenticate"] = challenge
        if esso and self.setup.esso:
            headers["X-Apple-MDM-ESSO"] = self.setup.esso_url
        return NotAuthorized(message, code=code, headers=headers)

    # -- users and passwords -----------------------------------------------------------------------------------
    def known_user(self, identifier: str) -> bool:
        return self.store.one("SELECT 1 FROM users WHERE identifier = ?", (identifier,)) is not None

    def verify_password(self, identifier: str, password: str) -> bool:
        row = self.store.one("SELECT salt, password_hash FROM users WHERE identifier = ?", (identifier,))
        return row is not None and hmac.compare_digest(_hash_password(password, row["salt"]), row["password_hash"])

    def sign_in(self, identifier: str, password: str) -> str | None:
        """A simple-method access token for a correct password, else None."""
        if not self.verify_password(identifier, password):
            return None
        return self.tokens.issue(identifier, "simple", self.token_ttl, None).access_token

    def callback_url(self, token: str) -> str:
        return f"{CALLBACK_SCHEME}://authentication-results?access-token={token}"

    # -- web sign-in: simple (2.3), OAuth 2 authorization endpoint (2.4), federation ------------------------------
    def _simple_callback(self, user: str, session: str | None, how: str) -> WebAnswer:
        token = self.tokens.issue(user, "simple", self.token_ttl, None).access_token
        location, status = self.callback_url(token), 308
        fault = self._fault("callback")
        if fault == "callback-302":
            status = 302
        elif fault == "callback-wrong-host":
            location = location.replace("://authentication-results?", "://authentication-result?")
        return WebAnswer(status, location, session=session,
                         summary=f"{how} {user}; {status} to the device with an access token"
                                 + (f" (fault {fault})" if fault and not self._concealed else ""))

    def _oauth_callback(self, request, user: str, session: str | None, how: str) -> WebAnswer:
        code = self.tokens.new_code(request.request_id, user, self.setup.code_ttl)
        location, status = _with_query(request.redirect_uri, {"code": code, "state": request.state}), 308
        fault = self._fault("callback")
        if fault == "callback-302":
            status = 302
        elif fault == "callback-wrong-host":
            location = location.replace(f"{CALLBACK_SCHEME}:/", f"{CALLBACK_SCHEME}://", 1)
        return WebAnswer(status, location, session=session,
                         summary=f"{how} {user}; {status} to redirect-url with an authorization code"
                                 + (f" (fault {fault})" if fault and not self._concealed else ""))

    def _to_idp(self, request_id: str, identifier: str) -> WebAnswer:
        location = _with_query(self.setup.idp_origin + "/authorize", {
            "client_id": federation.MDM_CLIENT_ID, "response_type": "code", "state": request_id,
            "redirect_uri": self.setup.federated_callback_url, "login_hint": identifier or None})
        return WebAnswer(302, location, summary=f"federated sign-in: 302 to the organization's IdP "
                                                f"{urlsplit(self.setup.idp_origin).hostname}")

    def simple_page(self, identifier: str, session: str | None) -> WebAnswer:
        """GET of the simple sign-in URL (``user-identifier`` prefills the form)."""
        user = self.tokens.session_user(session)
        if user and identifier in ("", user):
            return self._simple_callback(user, None, "single sign-on (web session) for")
        if self.setup.idp_origin:
            return self._to_idp(self.tokens.new_request("simple", identifier), identifier)
        return WebAnswer(200, identifier=identifier, action=urlsplit(self.setup.auth_url).path,
                         summary=f"sign-in page for {identifier or '?'}")

    def simple_submit(self, identifier: str, password: str) -> WebAnswer:
        if not identifier or not password:
            raise BadSignIn("both user-identifier and password are required", code="missing-credentials")
        if not self.verify_password(identifier, password):
            return WebAnswer(401, identifier=identifier, action=urlsplit(self.setup.auth_url).path,
                             error=WRONG_PASSWORD, summary=f"sign-in refused for {identifier}")
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
        if method and not challenge or challenge and (method or "plain") not in ("plain", "S256"):
            return refuse("invalid_request", "code_challenge_method must be S256 or plain, with a code_challenge")
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
        if not self.verify_password(identifier, password):
            return WebAnswer(401, identifier=identifier, action=urlsplit(self.setup.authorize_url).path,
                             request_id=request.request_id, error=WRONG_PASSWORD,
                             summary=f"sign-in refused for {identifier}")
        self.tokens.finish_request(request.request_id)
        return self._oauth_callback(request, identifier, self.tokens.new_session(identifier), "signed in")

    def federated_return(self, assertion: str | None, request_id: str | None) -> WebAnswer:
        """The IdP sends the user back with a signed assertion (``code``) and the sign-in request id (``state``)."""
        request = self._pending(request_id)
        try:
            claims = federation.verify(self.setup.federation_secret, assertion or "", issuer=self.setup.idp_origin,
                                       audience=federation.MDM_CLIENT_ID, nonce=request.request_id,
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
        if self._fault("token-endpoint") == "token-endpoint-down":
            raise ServiceUnavailable("the token service is unavailable (fault token-endpoint-down)",
                                     headers={"Retry-After": "120"})
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
            fault = self._fault("refresh")
            if fault == "refresh-rejected":
                raise OAuthError("the refresh token was refused (fault refresh-rejected)", code="invalid_grant")
            reason, issued = self.tokens.refresh(form["refresh_token"], self.token_ttl,
                                                 None if fault == "refresh-drops-refresh-token" else refresh_ttl)
            if issued is None:
                raise OAuthError(f"the refresh token is {reason}" + (
                    "; the grant is revoked because a used refresh token came back" if reason == "reused" else ""),
                    code="invalid_grant")
            summary = "refreshed" + (" without a new refresh token (fault refresh-drops-refresh-token)"
                                     if fault else "")
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
        return self.tokens.issue(row["user"], "oauth2", self.token_ttl, refresh_ttl), row["user"]

    # -- access tokens -----------------------------------------------------------------------------------------
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

    def _ongoing_token(self, authorization: str | None, *, allow_expired: bool = False) -> TokenInfo:
        """Check-in and command polls (PROTOCOL.md 4.1-4.2), where the MDM may invalidate a token at any time."""
        info = self.check_token(authorization, allow_expired=allow_expired)
        fault = None if allow_expired else self._fault("ongoing")
        if fault == "reauth-loop":
            raise self.not_authorized("the access token did not validate (fault reauth-loop)", "invalid-token")
        if fault == "token-expired-early":
            self.tokens.expire(grant_id=info.grant_id)
            raise self.not_authorized("the access token has expired (fault token-expired-early)", "expired-token")
        if fault == "token-revoked":
            self.tokens.revoke(grant_id=info.grant_id)
            raise self.not_authorized("the access token was revoked (fault token-revoked)", "revoked-token")
        return info

    # -- service discovery (the URL registered with ABM) -----------------------------------------------------
    def service_discovery(self, identifier: str | None, model_family: str | None) -> dict:
        """The well-known document this MDM serves at its registered discovery URL (PROTOCOL.md 1.7-1.8)."""
        if not identifier or identifier.count("@") != 1:
            raise BadDiscoveryRequest("user-identifier is missing or malformed; the discovery URL routes by user",
                                      code="malformed-identifier")
        version = self.setup.versions.get(identifier) or self.setup.versions.get(model_family or "") \
            or self.setup.version
        base_url = self.setup.adde_base_url if version == "mdm-adde" else self.setup.base_url
        return {"Servers": [{"Version": version, "BaseURL": base_url}]}

    # -- Enrollment SSO (2.6) ----------------------------------------------------------------------------------
    def esso_document(self) -> tuple[int, str, bytes]:
        """The EnrollmentSSODocument: the SSO app's iTunesStoreID and a profile configuring its extension."""
        if self._fault("esso") == "esso-document-html":
            page = b"<!doctype html><html><body><h1>Single sign-on</h1></body></html>"
            return 200, "text/html; charset=utf-8", page
        s = self.setup
        sso = {"PayloadType": "com.apple.extensiblesso", "PayloadVersion": 1,
               "PayloadUUID": str(uuid.uuid4()).upper(), "PayloadIdentifier": f"{self.base_id}.esso.extension",
               "ExtensionIdentifier": "test.mdmlab.enrollment-sso.extension", "TeamIdentifier": "MDMLAB0001",
               "Type": "Redirect", "URLs": [f"https://{s.host}/", *([s.idp_origin + "/"] if s.idp_origin else [])]}
        profile = {"PayloadType": "Configuration", "PayloadVersion": 1, "PayloadUUID": str(uuid.uuid4()).upper(),
                   "PayloadIdentifier": f"{self.base_id}.esso", "PayloadDisplayName": f"{s.organization} single sign-on",
                   "PayloadOrganization": s.organization, "PayloadContent": [sso]}
        signed = cms.sign(plistlib.dumps(profile), self.signer.cert, self.signer.key)
        document = {"iTunesStoreID": s.esso_app_id, "AssociatedDomains": [f"authsrv:{s.host}"],
                    "ConfigurationProfile": base64.b64encode(signed).decode()}
        return 200, "application/json", json.dumps(document).encode()

    # -- enrollment profile ----------------------------------------------------------------------------------
    def enrollment_profile(self, authorization: str, user: str, mode: str = "BYOD") -> bytes:
        """The signed configuration profile for ``user`` (PROTOCOL.md 3.1-3.2)."""
        org = self.setup.organization
        identity_uuid, mdm_uuid, profile_uuid = (str(uuid.uuid4()).upper() for _ in range(3))
        password = secrets.token_urlsafe(12)
        p12, serial = self.identity_ca.issue_pkcs12(f"{org} MDM identity {profile_uuid[:8]}", password)
        mdm_payload = {
            "PayloadType": "com.apple.mdm", "PayloadVersion": 1, "PayloadUUID": mdm_uuid,
            "PayloadIdentifier": f"{self.base_id}.mdm", "PayloadDisplayName": f"{org} MDM",
            "IdentityCertificateUUID": identity_uuid, "Topic": self.setup.topic,
            "ServerURL": self.setup.server_url, "CheckInURL": self.setup.checkin_url,
            "CheckOutWhenRemoved": True, "SignMessage": False,
            "EnrollmentMode": mode, "AssignedManagedAppleID": user,
            "ServerCapabilities": [],
        }
        if mode == "ADDE":
            mdm_payload["AccessRights"] = 8191
        fault = self._fault("profile")
        if fault == "profile-access-rights":
            mdm_payload["AccessRights"] = 8191
        elif fault == "profile-missing-maa":
            del mdm_payload["AssignedManagedAppleID"]
        elif fault == "profile-mode-mismatch":
            mdm_payload["EnrollmentMode"] = "BYOD" if mode == "ADDE" else "ADDE"
        profile = {
            "PayloadType": "Configuration", "PayloadVersion": 1, "PayloadUUID": profile_uuid,
            "PayloadIdentifier": self.enrollment_profile_id, "PayloadDisplayName": f"{org} Enrollment",
            "PayloadOrganization": org,
            "PayloadDescription": f"Enrolls this device in {org}'s MDM with the account {user}.",
            "PayloadContent": [
                {"PayloadType": "com.apple.security.pkcs12", "PayloadVersion": 1, "PayloadUUID": identity_uuid,
                 "PayloadIdentifier": f"{self.base_id}.identity", "PayloadDisplayName": f"{org} MDM identity",
                 "PayloadContent": p12, "Password": password},
                mdm_payload,
            ],
        }
        with self.store.transaction() as db:
            db.execute("INSERT INTO profiles VALUES (?,?,?,?,?)", (profile_uuid, user, mode, serial, self.clock()))
        self.tokens.set_mode(bearer_of(authorization), mode)
        return cms.sign(plistlib.dumps(profile), self.signer.cert, self.signer.key)

    # -- check-in (3.3, 4) -------------------------------------------------------------------------------------
    def check_in(self, authorization: str | None, body: bytes) -> tuple[str, str]:
        """Apply one check-in message; returns (enrollment id, summary). The token is checked first."""
        try:
            message, bad_body = parse_checkin_body(body), None
        except BadCheckIn as exc:
            message, bad_body = {}, exc
        # The device sends CheckOut once and cannot re-authenticate: accept its enrollment's expired token
        # (PROTOCOL.md 4.6); the binding to the same EnrollmentID/UDID is still checked below.
        token = self._ongoing_token(authorization, allow_expired=message.get("MessageType") == "CheckOut")
        if bad_body is not None:
            raise bad_body
        kind = message["MessageType"]
        handler = {"Authenticate": self._authenticate, "TokenUpdate": self._token_update,
                   "CheckOut": self._check_out}.get(kind)
        if handler is None:
            raise BadCheckIn(f"MessageType {kind!r} is not supported", code="unknown-message-type")
        if message.get("Topic") != self.setup.topic:
            raise BadCheckIn(f"Topic {message.get('Topic')!r} is not this MDM's topic {self.setup.topic!r}",
                             code="wrong-topic")
        enrollment_id, mode = self._enrollment_id(token, message)
        with self.store.transaction():  # the message's effects and the token's binding, all or nothing
            self._check_binding(token, enrollment_id, fresh=kind == "Authenticate")
            summary = handler(token, enrollment_id, message, mode)
            if kind != "CheckOut":
                self.tokens.bind(bearer_of(authorization), enrollment_id, mode)
        return enrollment_id, summary

    def _enrollment_id(self, token: TokenInfo, message: dict) -> tuple[str, str]:
        """User Enrollment is known by EnrollmentID and must hide device identifiers; ADDE by UDID (PROTOCOL.md 3.4).

        A token from a sign-in after enrollment carries no mode yet: the enrollment it is used for tells.
        """
        mode = token.mode
        if mode is None:
            known = self.enrollment(str(message.get("UDID") or message.get("EnrollmentID") or ""))
            mode = known["mode"] if known else "BYOD"
        if mode == "ADDE":
            udid = message.get("UDID")
            if not isinstance(udid, str) or not udid:
                raise BadCheckIn("a Device Enrollment (ADDE) message must carry UDID", code="missing-udid")
            return udid, mode
        enrollment_id = message.get("EnrollmentID")
        if not isinstance(enrollment_id, str) or not enrollment_id:
            raise BadCheckIn("a User Enrollment message must carry EnrollmentID", code="missing-enrollment-id")
        present = [k for k in FORBIDDEN_BYOD_KEYS if k in message]
        if present:
            raise BadCheckIn(f"a User Enrollment message must not carry {', '.join(present)}",
                             code="device-identifier-in-user-enrollment")
        return enrollment_id, mode

    def _check_binding(self, token: TokenInfo, enrollment_id: str, *, fresh: bool = False) -> None:
        """A token works for its own enrollment only, and for the enrollment's user only (PROTOCOL.md 4.4)."""
        if token.enrollment_id not in (None, enrollment_id):
            raise TokenBoundElsewhere("this access token belongs to another enrollment")
        known = self.enrollment(enrollment_id)
        if known and known["user"] != token.user and not (fresh or known["status"] == "checked-out"):
            raise TokenBoundElsewhere(f"this access token belongs to {token.user}, the enrollment to {known['user']}",
                                      code="token-user-mismatch")

    def _authenticate(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> str:
        now = self.clock()
        with self.store.transaction() as db:
            db.execute("INSERT INTO enrollments (enrollment_id, user, mode, topic, status, created, updated, last_seen)"
                       " VALUES (?,?,?,?,?,?,?,?) ON CONFLICT(enrollment_id) DO UPDATE SET status = excluded.status,"
                       " user = excluded.user, mode = excluded.mode, updated = excluded.updated,"
                       " last_seen = excluded.last_seen, push_token = NULL, push_magic = NULL,"
                       " enrollment_user_id = NULL",
                       (enrollment_id, token.user, mode, message["Topic"], "authenticated", now, now, now))
        self.commands.cancel(enrollment_id)  # a new Authenticate starts a new enrollment
        return f"Authenticate {enrollment_id} for {token.user} ({mode})"

    def _token_update(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> str:
        push_token, push_magic = message.get("Token"), message.get("PushMagic")
        if not isinstance(push_token, bytes) or not isinstance(push_magic, str):
            raise BadCheckIn("TokenUpdate needs Token (data) and PushMagic (string)", code="incomplete-token-update")
        user_channel = message.get("EnrollmentUserID") or message.get("UserID")
        if user_channel is not None and not isinstance(user_channel, str):
            raise BadCheckIn("EnrollmentUserID must be a string", code="bad-enrollment-user-id")
        with self.store.transaction() as db:
            updated = db.execute("UPDATE enrollments SET status = 'enrolled', push_token = ?, push_magic = ?,"
                                 " updated = ?, last_seen = ?, enrollment_user_id = coalesce(?, enrollment_user_id)"
                                 " WHERE enrollment_id = ? AND user = ? AND status != 'checked-out'",
                                 (push_token, push_magic, self.clock(), self.clock(), user_channel, enrollment_id,
                                  token.user)).rowcount
        if not updated:
            raise UnknownEnrollment(f"no Authenticate was received for enrollment {enrollment_id}")
        return f"TokenUpdate {enrollment_id}: enrolled" + (f" (user channel {user_channel})" if user_channel else "")

    def _check_out(self, token: TokenInfo, enrollment_id: str, message: dict, mode: str) -> str:
        with self.store.transaction() as db:
            db.execute("UPDATE enrollments SET status = 'checked-out', updated = ? WHERE enrollment_id = ?",
                       (self.clock(), enrollment_id))
        self.tokens.revoke(enrollment_id=enrollment_id)
        cancelled = self.commands.cancel(enrollment_id)
        return f"CheckOut {enrollment_id}" + (f"; {cancelled} pending command(s) cancelled" if cancelled else "")

    # -- command channel (ServerURL) ---------------------------------------------------------------------------
    def poll(self, authorization: str | None, body: bytes) -> tuple[str, bytes, str]:
        """A device's PUT to ServerURL: store its report, answer with the next command or an empty 200."""
        token = self._ongoing_token(authorization)
        report = parse_report(body)
        enrollment_id, mode = self._enrollment_id(token, report)
        with self.store.transaction():  # the report, the binding and the next command, all or nothing
            self._check_binding(token, enrollment_id)
            known = self.enrollment(enrollment_id)
            if known is None or known["status"] == "checked-out":
                raise UnrecognizedDevice(f"enrollment {enrollment_id} is not known to this MDM (any more); the device "
                                         "should remove its enrollment (ErrorUnrecognizedDevice)")
            self.tokens.bind(bearer_of(authorization), enrollment_id, mode)
            with self.store.transaction() as db:
                db.execute("UPDATE enrollments SET last_seen = ? WHERE enrollment_id = ?", (self.clock(), enrollment_id))
            status = report["Status"]
            summary = "Idle"
            if status != "Idle":
                recorded = self.commands.record(enrollment_id, report["CommandUUID"], status, report)
                if recorded is None:
                    raise BadReport(f"CommandUUID {report['CommandUUID']} is no command of this enrollment",
                                    code="unknown-command")
                summary = f"{recorded['request_type']} {status}" + _chain_summary(report)
            if status == "NotNow":
                return enrollment_id, b"", summary + "; nothing more on this connection"
            upcoming = self.commands.next(enrollment_id)
            if upcoming is None:
                return enrollment_id, b"", summary + "; queue empty"
            return enrollment_id, upcoming[2], summary + f"; sends {upcoming[1]}"

    # -- console controls --------------------------------------------------------------------------------------
    def _live_enrollment(self, enrollment_id: str) -> dict:
        known = self.enrollment(enrollment_id)
        if known is None:
            raise UnknownEnrollment(f"no enrollment {enrollment_id}")
        if known["status"] == "checked-out":
            raise CommandRefused(f"enrollment {enrollment_id} checked out", code="enrollment-checked-out")
        return known

    def queue_command(self, enrollment_id: str, request_type: str, params: dict | None = None) -> str:
        """Queue a command; InstallProfile without Payload gets a sample profile (params ``Profile``: wifi, mail,
        calendar), a Payload given as a base64 string is decoded."""
        known = self._live_enrollment(enrollment_id)
        if not isinstance(request_type, str) or not request_type.isalnum():
            raise CommandRefused(f"RequestType {request_type!r} is not a command name", code="bad-request-type")
        command = {"RequestType": request_type, **(params or {})}
        if request_type == "InstallProfile":
            kind = command.pop("Profile", "wifi")
            if isinstance(command.get("Payload"), str):
                try:
                    command["Payload"] = base64.b64decode(command["Payload"], validate=True)
                except ValueError:
                    raise CommandRefused("Payload must be base64 when given as a string",
                                         code="bad-payload") from None
            if "Payload" not in command:
                try:
                    profile = sample_profile(kind, self.setup.organization, self.base_id, known["user"])
                except ValueError as exc:
                    raise CommandRefused(str(exc), code="bad-sample-profile") from None
                command["Payload"] = cms.sign(plistlib.dumps(profile), self.signer.cert, self.signer.key)
        return self.commands.queue(enrollment_id, command)

    def unenroll(self, enrollment_id: str) -> str:
        """Unenrollment by the MDM: RemoveProfile for the enrollment profile (PROTOCOL.md 4.6)."""
        return self.queue_command(enrollment_id, "RemoveProfile", {"Identifier": self.enrollment_profile_id})

    def revoke_tokens(self, *, enrollment_id: str | None = None, user: str | None = None) -> int:
        if user is not None or enrollment_id is None:
            self.tokens.end_sessions(user)
        if enrollment_id is not None:
            known = self.enrollment(enrollment_id)
            if known is not None:
                self.tokens.end_sessions(known["user"])
        return self.tokens.revoke(enrollment_id=enrollment_id, user=user)

    def expire_tokens(self, *, enrollment_id: str | None = None, user: str | None = None) -> int:
        return self.tokens.expire(enrollment_id=enrollment_id, user=user)

    def set_token_ttl(self, seconds: int) -> None:
        if isinstance(seconds, bool) or not isinstance(seconds, int) or not 1 <= seconds <= 366 * 86400:
            raise CommandRefused("the token lifetime must be a whole number of seconds from 1 to a year",
                                 code="bad-token-lifetime")
        self.token_ttl = seconds

    def push(self, enrollment_id: str) -> dict:
        """What an APNs push would carry ({"mdm": PushMagic}); the lab has no APNs, the device polls on 'sync'."""
        known = self._live_enrollment(enrollment_id)
        if not known["push_magic"]:
            raise CommandRefused(f"enrollment {enrollment_id} sent no TokenUpdate yet", code="no-push-token")
        return {"topic": known["topic"], "payload": {"mdm": known["push_magic"]}}

    # -- views -------------------------------------------------------------------------------------------------
    def enrollment(self, enrollment_id: str) -> dict | None:
        row = self.store.one("SELECT enrollment_id, user, mode, topic, status, push_magic, created, updated,"
                             " enrollment_user_id, last_seen FROM enrollments WHERE enrollment_id = ?",
                             (enrollment_id,))
        return dict(row) if row else None

    def enrollments(self) -> list[dict]:
        return [dict(r) for r in self.store.query(
            "SELECT enrollment_id, user, mode, status, enrollment_user_id, created, updated, last_seen"
            " FROM enrollments ORDER BY created")]

    def snapshot(self) -> dict:
        return {
            "auth": {"method": AUTH_METHODS[self.setup.auth], "token_ttl": self.token_ttl,
                     "refresh_tokens": self.setup.refresh_tokens, "federated": bool(self.setup.idp_origin),
                     "esso": self.setup.esso},
            "users": [dict(r) for r in self.store.query("SELECT identifier, full_name FROM users")],
            "enrollments": self.enrollments(),
            "tokens": self.tokens.snapshot(),
            "commands": [{k: v for k, v in c.items() if k != "result"} for c in self.commands.listing()],
        }

    def close(self) -> None:
        self.store.close()


def _chain_summary(report: dict) -> str:
    chain = report.get("ErrorChain")
    if not isinstance(chain, list) or not chain or not isinstance(chain[0], dict):
        return ""
    top = chain[0]
    return f" ({top.get('ErrorDomain')} {top.get('ErrorCode')}: {top.get('USEnglishDescription') or top.get('LocalizedDescription')})"
