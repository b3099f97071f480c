"""The organization's identity provider at idp.<domain>, for federated sign-in (as with Entra ID or Google
Workspace): a relying party's sign-in sends the user here, and the IdP sends them back with a signed assertion.

Its relying parties are the applications registered at it, each a client id with the redirect URIs allowed for it:
the MDM's web sign-in, and Apple when ABM/ASM federates the organization's Managed Apple Accounts with this IdP.
A Flask app of its own with its own state: it shares with them only the federation secret and the network.
Users are the scenario's (the IdP is where their passwords really live when sign-in is federated); wrong passwords
are throttled as on every password form of the lab (lab.throttle).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode, urlsplit

from flask import Blueprint, Response, current_app, render_template, request

from lab import federation, flaskapp, throttle
from lab.flaskapp import LabError, label
from mocks.mdm.faults import IDP_COMPONENT

SESSION_COOKIE = "idp_session"
SESSION_TTL = 8 * 3600
WRONG_PASSWORD = "Your account or password is incorrect."


class BadIdPRequest(LabError):
    status = 400
    code = "bad-idp-request"


@dataclass(frozen=True)
class IdPAnswer:
    status: int
    location: str | None = None
    identifier: str = ""
    error: str | None = None
    session: str | None = None
    params: dict | None = None
    summary: str = ""
    retry_after: int | None = None  # 429: seconds until the next try


class IdPState:
    def __init__(self, organization: str, origin: str, users, secret: bytes, relying_parties: dict[str, set[str]],
                 *, faults=None, clock=time.time):
        self.organization, self.origin, self.secret, self.clock = organization, origin, secret, clock
        self.faults, self.host = faults, urlsplit(origin).hostname or ""
        # client id → the redirect URIs registered for it (the MDM's; Apple's when ABM/ASM federates with us)
        self.relying_parties = {client: set(uris) for client, uris in relying_parties.items()}
        self.throttle = throttle.Throttle(clock)
        self._users = {}
        for user in users:
            salt = secrets.token_bytes(16)
            self._users[user.identifier] = (salt, hashlib.pbkdf2_hmac("sha256", user.password.encode(), salt, 20_000))
        self._sessions: dict[str, tuple[str, float]] = {}  # hash → (user, expiry)
        self._lock = threading.Lock()

    def _check_client(self, params) -> dict:
        client = params.get("client_id")
        if client not in self.relying_parties:
            raise BadIdPRequest(f"unknown client_id {client!r}: no application with this id is registered at the "
                                "IdP", code="unknown-client")
        if params.get("redirect_uri") not in self.relying_parties[client]:
            raise BadIdPRequest(f"redirect_uri {params.get('redirect_uri')!r} is not registered at the IdP for the "
                                f"application {client}", code="redirect-uri-mismatch")
        if not params.get("state"):
            raise BadIdPRequest("state is required", code="missing-state")
        return {k: params.get(k) for k in ("client_id", "redirect_uri", "state")}

    def _take(self, place: str):
        return None if self.faults is None else self.faults.take(IDP_COMPONENT, self.host, at=place)

    def _back(self, params: dict, user: str, session: str | None, how: str) -> IdPAnswer:
        audience, armed = params["client_id"], self._take("assertion")
        if armed is not None:
            audience = armed.apply(audience, tuple(self.relying_parties))
        assertion = federation.sign(self.secret, issuer=self.origin, audience=audience, subject=user,
                                    nonce=params["state"], now=self.clock())
        back, dropped = {"code": assertion, "state": params["state"]}, self._take("return")
        if dropped is not None:
            back = dropped.apply(back)
        location = params["redirect_uri"] + "?" + urlencode(back)
        summary = f"{how} {user}; 302 back to {urlsplit(params['redirect_uri']).hostname} with a signed assertion"
        for fault in (armed, dropped):
            summary = summary if fault is None else self.faults.say(summary, fault)
        return IdPAnswer(302, location, identifier=user, session=session, summary=summary)

    def _session_user(self, session: str | None) -> str | None:
        if not session:
            return None
        with self._lock:
            hit = self._sessions.get(hashlib.sha256(session.encode()).hexdigest())
        return hit[0] if hit and hit[1] > self.clock() else None

    def page(self, params, session: str | None) -> IdPAnswer:
        checked = self._check_client(params)
        hint = params.get("login_hint", "")
        user = self._session_user(session)
        if user and hint in ("", user):
            return self._back(checked, user, None, "single sign-on (IdP session) for")
        return IdPAnswer(200, identifier=hint, params=checked, summary=f"IdP sign-in page for {hint or '?'}")

    def _verify(self, identifier: str, password: str) -> bool:
        known = self._users.get(identifier)
        return known is not None and hmac.compare_digest(
            hashlib.pbkdf2_hmac("sha256", password.encode(), known[0], 20_000), known[1])

    def submit(self, form) -> IdPAnswer:
        checked = self._check_client(form)
        identifier, password = form.get("username", "").strip(), form.get("password", "")
        attempt = self.throttle.attempt(identifier, lambda: self._verify(identifier, password))
        if attempt.wait:
            return IdPAnswer(429, identifier=identifier, params=checked, error=throttle.too_many(attempt.wait),
                             retry_after=attempt.wait, summary=self.throttle.summary(identifier, attempt.wait))
        if not attempt.ok:
            return IdPAnswer(401, identifier=identifier, params=checked, error=WRONG_PASSWORD,
                             summary=f"IdP sign-in refused for {identifier or '?'}")
        session = secrets.token_urlsafe(24)
        with self._lock:
            self._sessions[hashlib.sha256(session.encode()).hexdigest()] = (identifier, self.clock() + SESSION_TTL)
        return self._back(checked, identifier, session, "IdP signed in")


bp = Blueprint("idp", __name__, template_folder="templates")


def _render(answer: IdPAnswer) -> Response:
    state: IdPState = current_app.config["STATE"]
    label(stage="authentication", device=answer.identifier or None, summary=answer.summary)
    if answer.location:
        response = Response(b"", status=answer.status, headers={"Location": answer.location})
    else:
        html = render_template("idp_signin.html", organization=state.organization, host=request.host.split(":")[0],
                               identifier=answer.identifier, error=answer.error, **(answer.params or {}))
        response = Response(html, status=answer.status, content_type="text/html; charset=utf-8")
    if answer.session:
        response.set_cookie(SESSION_COOKIE, answer.session, secure=True, httponly=True, samesite="Lax",
                            max_age=SESSION_TTL)
    if answer.retry_after:
        response.headers["Retry-After"] = str(answer.retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get("/authorize")
def authorize():
    return _render(current_app.config["STATE"].page(request.args, request.cookies.get(SESSION_COOKIE)))


@bp.post("/authorize")
def authorize_submit():
    return _render(current_app.config["STATE"].submit(request.form))


def create_idp_app(state: IdPState):
    app = flaskapp.create_app(__name__, "idp")
    app.config["STATE"] = state
    app.register_blueprint(bp)
    return app
