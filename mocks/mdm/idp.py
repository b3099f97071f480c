"""The organization's identity provider at idp.<domain>, for federated sign-in (as with Entra ID or Google
Workspace): the MDM's sign-in page sends the user here, and the IdP sends them back with a signed assertion.

A Flask app of its own with its own state: it shares with the MDM only the federation secret and the network.
Users are the scenario's (the IdP is where their passwords really live when sign-in is federated).
"""
from __future__ import annotations

import hashlib
import hmac
import secrets
import threading
import time
from dataclasses import dataclass
from urllib.parse import urlencode

from flask import Blueprint, Response, current_app, render_template, request

from lab import flaskapp
from lab.flaskapp import LabError, label
from mocks.mdm import federation

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


class IdPState:
    def __init__(self, organization: str, origin: str, users, secret: bytes, relying_parties: set[str], *,
                 clock=time.time):
        self.organization, self.origin, self.secret, self.clock = organization, origin, secret, clock
        self.relying_parties = set(relying_parties)  # the redirect URIs registered for the MDM
        self._users = {}
        for user in users:
            salt = secrets.token_bytes(16)
            self._users[user.identifier] = (salt, hashlib.pbkdf2_hmac("sha256", user.password.encode(), salt, 20_000))
        self._sessions: dict[str, tuple[str, float]] = {}  # hash → (user, expiry)
        self._lock = threading.Lock()

    def _check_client(self, params) -> dict:
        if params.get("client_id") != federation.MDM_CLIENT_ID:
            raise BadIdPRequest(f"unknown client_id {params.get('client_id')!r}", code="unknown-client")
        if params.get("redirect_uri") not in self.relying_parties:
            raise BadIdPRequest(f"redirect_uri {params.get('redirect_uri')!r} is not registered at the IdP",
                                code="redirect-uri-mismatch")
        if not params.get("state"):
            raise BadIdPRequest("state is required", code="missing-state")
        return {k: params.get(k) for k in ("client_id", "redirect_uri", "state")}

    def _back(self, params: dict, user: str, session: str | None, how: str) -> IdPAnswer:
        assertion = federation.sign(self.secret, issuer=self.origin, audience=params["client_id"], subject=user,
                                    nonce=params["state"], now=self.clock())
        location = params["redirect_uri"] + "?" + urlencode({"code": assertion, "state": params["state"]})
        return IdPAnswer(302, location, identifier=user, session=session,
                         summary=f"{how} {user}; 302 back to the MDM with a signed assertion")

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

    def submit(self, form) -> IdPAnswer:
        checked = self._check_client(form)
        identifier, password = form.get("username", "").strip(), form.get("password", "")
        known = self._users.get(identifier)
        if known is None or not hmac.compare_digest(
                hashlib.pbkdf2_hmac("sha256", password.encode(), known[0], 20_000), known[1]):
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
