"""HTTP handlers of the MDM: parse, ask the state, render."""
import json

from flask import Blueprint, Response, current_app, redirect, render_template, request

from lab.flaskapp import label
from mocks.mdm.errors import BadSignIn
from mocks.mdm.state import parse_enrollment_body

ENROLL_PATH = "/enroll"
ADDE_ENROLL_PATH = "/enroll/adde"
DISCOVERY_PATH = "/mdm/service-discovery"
AUTH_PATH = "/auth/web"
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
    info = parse_enrollment_body(request.get_data())
    authorization = request.headers.get("Authorization")
    token = _state().check_token(authorization)
    label(stage="enrollment", device=token.user, summary=f"{mode} profile for {token.user} ({info['PRODUCT']})")
    return Response(_state().enrollment_profile(authorization, token.user, mode), content_type=PROFILE_TYPE)


@bp.get(DISCOVERY_PATH)
def service_discovery():
    identifier = request.args.get("user-identifier")
    label(stage="discovery", device=identifier)
    document = _state().service_discovery(identifier, request.args.get("model-family"))
    label(summary=f"service discovery: {document['Servers'][0]['Version']} → {document['Servers'][0]['BaseURL']}")
    return Response(json.dumps(document), content_type="application/json")


def _sign_in_page(identifier: str, error: str | None = None, status: int = 200):
    html = render_template("signin.html", organization=_state().setup.organization, identifier=identifier,
                           error=error, action=AUTH_PATH)
    return Response(html, status=status, content_type="text/html; charset=utf-8")


@bp.get(AUTH_PATH)
def sign_in_page():
    identifier = request.args.get("user-identifier", "")
    label(stage="authentication", device=identifier or None, summary=f"sign-in page for {identifier or '?'}")
    return _sign_in_page(identifier)


@bp.post(AUTH_PATH)
def sign_in():
    identifier = request.form.get("user-identifier", "").strip()
    password = request.form.get("password", "")
    label(stage="authentication", device=identifier or None)
    if not identifier or not password:
        raise BadSignIn("both user-identifier and password are required", code="missing-credentials")
    token = _state().sign_in(identifier, password)
    if token is None:
        label(summary=f"sign-in refused for {identifier}")
        return _sign_in_page(identifier, "The account or password is not correct.", 401)
    label(summary=f"signed in {identifier}; 308 to the device with an access token")
    return redirect(_state().callback_url(token), code=308)


@bp.put(CHECKIN_PATH)
def check_in():
    label(stage="check-in")
    enrollment_id, summary = _state().check_in(request.headers.get("Authorization"), request.get_data())
    label(device=enrollment_id, summary=summary)
    return Response(b"", status=200)


@bp.put(SERVER_PATH)
def command_poll():
    label(stage="commands")
    enrollment_id, reply = _state().poll(request.headers.get("Authorization"), request.get_data())
    label(device=enrollment_id, summary=f"poll from {enrollment_id}: {'command' if reply else 'queue empty'}")
    return Response(reply, status=200, content_type="application/xml" if reply else None)
