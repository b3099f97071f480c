"""HTTP handlers of the three ABM hosts: parse, ask the state, render.

``fallback``: what a device asks when its org domain fails (PROTOCOL.md 1.7). ``api``: the Device Assignment API
subset an MDM uses to register its discovery URL (1.8). ``admin``: the web page an IT admin uses.
"""
from flask import Blueprint, Response, current_app, jsonify, redirect, render_template, request, url_for

from lab.admin_gate import CSRF_FIELD
from lab.flaskapp import label
from lab.protocol import MODEL_FAMILIES, WELL_KNOWN_PATH
from mocks.abm.errors import BadAdminInput

FALLBACK_PATH = WELL_KNOWN_PATH  # Apple's fallback answers the same request as the org domain
PROFILE_PATH = "/account-driven-enrollment/profile"
SESSION_HEADER = "X-ADM-Auth-Session"
API_STAGE, ADMIN_STAGE = "abm-api", "abm-admin"

fallback = Blueprint("abm_fallback", __name__)
api = Blueprint("abm_api", __name__)
admin = Blueprint("abm_admin", __name__, template_folder="templates")


def _state():
    return current_app.config["STATE"]


# -- device-facing fallback ----------------------------------------------------------------------------------
@fallback.get(FALLBACK_PATH)
def well_known():
    identifier, family = request.args.get("user-identifier"), request.args.get("model-family")
    label(stage="discovery", device=identifier)
    location = _state().fallback(identifier, family)
    label(summary=f"ABM fallback: 302 to the {family} default MDM server, {location}")
    return redirect(location, code=302)


# -- Device Assignment API -----------------------------------------------------------------------------------
def _server() -> str:
    label(stage=API_STAGE)
    return _state().session_server(request.headers.get(SESSION_HEADER))


@api.get("/session")
def session():
    label(stage=API_STAGE)
    token, server = _state().open_session(request.headers.get("Authorization"), request.method, request.url)
    label(summary=f"new session for server {server}")
    return jsonify({"auth_session_token": token})


@api.get("/account")
def account():
    server = _server()
    label(summary=f"account details for server {server}")
    return jsonify(_state().account(server))


@api.post(PROFILE_PATH)
def assign_profile():
    server = _server()
    url = _state().set_discovery_url(server, request.get_data())
    label(summary=f"{server} registered its service discovery URL {url}")
    return jsonify({})


@api.get(PROFILE_PATH)
def fetch_profile():
    server = _server()
    document = _state().discovery_url(server)
    label(summary=f"{server}'s service discovery URL is {document['mdm_service_discovery_url']}")
    return jsonify(document)


@api.delete(PROFILE_PATH)
def remove_profile():
    server = _server()
    _state().remove_discovery_url(server)
    label(summary=f"{server} removed its service discovery URL")
    return jsonify({})


# -- admin web page ------------------------------------------------------------------------------------------
NOTICES = {
    "domain-verified": "{item} is verified.",
    "domain-not-verified": "{item} could not be verified: the TXT record was not found in DNS. Add it and try again.",
    "account-added": "{item} was added.",
    "account-removed": "{item} was removed.",
    "assignments-saved": "Default Device Assignment saved.",
}


def _field(name: str) -> str:
    value = request.form.get(name, "").strip()
    if not value:
        raise BadAdminInput(f"the form field {name!r} is required", code="missing-field")
    return value


def _back(notice: str, item: str = ""):
    label(stage=ADMIN_STAGE, summary=NOTICES[notice].format(item=item))
    return redirect(url_for("abm_admin.index", notice=notice, item=item or None), code=303)


@admin.get("/")
def index():
    notice = NOTICES.get(request.args.get("notice", ""))
    failed = request.args.get("notice") == "domain-not-verified"
    html = render_template("admin.html", state=_state().snapshot(), families=MODEL_FAMILIES, failed=failed,
                           notice=notice and notice.format(item=request.args.get("item", "")))
    return Response(html, content_type="text/html; charset=utf-8")


@admin.post("/domains/verify")
def verify_domain():
    domain = _field("domain")
    return _back("domain-verified" if _state().verify_domain(domain) else "domain-not-verified", domain.lower())


@admin.post("/accounts/add")
def add_account():
    return _back("account-added", _state().add_account(_field("identifier")))


@admin.post("/accounts/remove")
def remove_account():
    return _back("account-removed", _state().remove_account(_field("identifier")))


@admin.post("/assignments")
def save_assignments():
    choices = {family: server or None for family, server in request.form.items() if family != CSRF_FIELD}
    _state().set_default_assignments(choices)
    return _back("assignments-saved")
