"""HTTP handlers of the MDM: parse, ask the state, render."""
import json

from flask import Blueprint, Response, current_app, render_template, request

from lab.events import mask
from lab.flaskapp import label
from mocks.mdm.signin import SESSION_COOKIE, SIGN_IN_COOKIE, SIGN_IN_COOKIE_TTL, WebAnswer

ENROLL_PATH = "/enroll"
ADDE_ENROLL_PATH = "/enroll/adde"
DISCOVERY_PATH = "/mdm/service-discovery"
AUTH_PATH = "/auth/web"
AUTHORIZE_PATH = "/oauth2/authorize"
TOKEN_PATH = "/oauth2/token"
FEDERATED_CALLBACK_PATH = "/auth/federated/callback"
ESSO_PATH = "/esso/document"
CHECKIN_PATH = "/mdm/checkin"
SERVER_PATH = "/mdm/server"

PROFILE_TYPE = "application/x-apple-aspen-config"
bp = Blueprint("mdm", __name__, template_folder="templates")


def _state():
    return current_app.config["STATE"]


@bp.post(ENROLL_PATH, defaults={"mode": "BYOD"})
@bp.post(ADDE_ENROLL_PATH, defaults={"mode": "ADDE"})
def enroll(mode):
    label(stage="authentication")
    token, info, profile = _state().enroll(request.headers.get("Authorization"), request.get_data(),
                                           request.content_type, mode)
    label(stage="enrollment", device=token.user, user=token.user,
          summary=f"{mode} profile for {token.user} ({info['PRODUCT']})")
    return Response(profile, content_type=PROFILE_TYPE)


@bp.get(DISCOVERY_PATH)
def service_discovery():
    identifier = request.args.get("user-identifier")
    label(stage="discovery", device=identifier, user=identifier)
    document = _state().service_discovery(identifier, request.args.get("model-family"))
    label(summary=f"service discovery: {document['Servers'][0]['Version']} → {document['Servers'][0]['BaseURL']}")
    return Response(json.dumps(document), content_type="application/json")


def _render(answer: WebAnswer, device: str | None = None) -> Response:
    """A sign-in step as HTTP: the page (200, or 401 after a wrong password), a 302 hop, or the callback."""
    who = device or answer.identifier or None
    label(stage="authentication", device=who, user=who, summary=answer.summary)
    if answer.location is not None:
        response = Response(b"", status=answer.status, headers={"Location": answer.location})
    else:
        html = render_template("signin.html", organization=_state().setup.organization,
                               identifier=answer.identifier, error=answer.error, action=answer.action,
                               request_id=answer.request_id)
        response = Response(html, status=answer.status, content_type="text/html; charset=utf-8")
    domain = answer.cookie_domain
    if answer.session:
        response.set_cookie(SESSION_COOKIE, answer.session, secure=True, httponly=True, samesite="Lax",
                            max_age=8 * 3600, domain=domain)
    if answer.binding:
        response.set_cookie(SIGN_IN_COOKIE, answer.binding, secure=True, httponly=True, samesite="Lax",
                            max_age=SIGN_IN_COOKIE_TTL, domain=domain)
    if answer.retry_after:
        response.headers["Retry-After"] = str(answer.retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response


@bp.get(AUTH_PATH)
def sign_in_page():
    return _render(_state().signin.simple_page(request.args.get("user-identifier", ""),
                                               request.cookies.get(SESSION_COOKIE)))


@bp.post(AUTH_PATH)
def sign_in():
    identifier = request.form.get("user-identifier", "").strip()
    label(stage="authentication", device=identifier or None)
    return _render(_state().signin.simple_submit(identifier, request.form.get("password", "")))


@bp.get(AUTHORIZE_PATH)
def authorize():
    label(stage="authentication", device=request.args.get("login_hint") or None)
    return _render(_state().signin.authorize_page(request.args, request.cookies.get(SESSION_COOKIE)))


@bp.post(AUTHORIZE_PATH)
def authorize_submit():
    identifier = request.form.get("user-identifier", "").strip()
    label(stage="authentication", device=identifier or None)
    return _render(_state().signin.authorize_submit(request.form.get("request"), identifier,
                                             request.form.get("password", "")))


@bp.get(FEDERATED_CALLBACK_PATH)
def federated_callback():
    label(stage="authentication")
    return _render(_state().signin.federated_return(request.args.get("code"), request.args.get("state"),
                                                    request.cookies.get(SIGN_IN_COOKIE)))


@bp.post(TOKEN_PATH)
def token():
    label(stage="authentication", summary=f"token request ({request.form.get('grant_type')})")
    reply, summary = _state().signin.token_endpoint(request.form)
    label(summary=f"{summary}; access token {mask(reply['access_token'])}, expires_in {reply['expires_in']}")
    return Response(json.dumps(reply), content_type="application/json",
                    headers={"Cache-Control": "no-store", "Pragma": "no-cache"})


@bp.get(ESSO_PATH)
def esso_document():
    label(stage="authentication", summary="Enrollment SSO document")
    status, content_type, body = _state().profiles.esso_document()
    return Response(body, status=status, content_type=content_type)


@bp.put(CHECKIN_PATH)
def check_in():
    label(stage="check-in")
    done = _state().channel.check_in(request.headers.get("Authorization"), request.get_data(), label)
    label(summary=done.summary, outcome="enrolled" if done.kind == "TokenUpdate" else None)
    return Response(done.reply, status=200, content_type="application/xml; charset=UTF-8" if done.reply else None)


@bp.put(SERVER_PATH)
def command_poll():
    label(stage="commands")
    done = _state().channel.poll(request.headers.get("Authorization"), request.get_data(), label)
    label(summary=done.summary)
    return Response(done.reply, status=200, content_type="application/xml; charset=UTF-8" if done.reply else None)
