"""The console's Flask app (console.<zone>, also localhost): the control API and the dashboard.

The parts live in their own modules: ``api`` (health, events, enrollments, state, faults, DNS, reset, CA),
``sse`` (the live event stream), ``openapi`` (the API's document), ``dashboard`` (the page and its fragments),
``auth`` (the admin token beyond loopback). ``bp`` below is for routes that other parts of the lab add.
"""
from __future__ import annotations

from flask import Blueprint, jsonify, request

from lab import flaskapp
from lab.console import api, auth, dashboard, openapi, sse
from lab.console.common import json_body
from lab.console.common import lab as _lab
from lab.flaskapp import LabError

bp = Blueprint("console", __name__, template_folder="templates")

_json_body = json_body  # the name the routes below use


# -- MDM controls, as an MDM admin console has them: revoke, token lifetime, commands, unenroll, push ----------------
def _mdm_filter(body: dict) -> dict:
    unknown = sorted(set(body) - {"enrollment_id", "user"})
    if unknown or not all(isinstance(body.get(k), (str, type(None))) for k in ("enrollment_id", "user")):
        raise LabError("expected optional enrollment_id and user strings", code="bad-mdm-request")
    return {k: body.get(k) for k in ("enrollment_id", "user")}


@bp.get("/api/mdm/enrollments")
def mdm_enrollments():
    return jsonify(_lab().mdm.enrollments())


@bp.post("/api/mdm/tokens/revoke")
def mdm_revoke():
    body = _json_body()
    revoked = _lab().mdm.revoke_tokens(**_mdm_filter(body))
    flaskapp.label(summary=f"MDM: revoked {revoked} grant(s) of {body or 'everyone'}")
    return jsonify({"revoked": revoked})


@bp.post("/api/mdm/tokens/expire")
def mdm_expire():
    body = _json_body()
    expired = _lab().mdm.expire_tokens(**_mdm_filter(body))
    flaskapp.label(summary=f"MDM: expired {expired} access token(s) of {body or 'everyone'}")
    return jsonify({"expired": expired})


@bp.get("/api/mdm/token-lifetime")
@bp.put("/api/mdm/token-lifetime")
def mdm_token_lifetime():
    mdm = _lab().mdm
    if request.method == "PUT":
        mdm.set_token_ttl(_json_body().get("seconds"))
        flaskapp.label(summary=f"MDM: new access tokens live {mdm.token_ttl} s")
    return jsonify({"seconds": mdm.token_ttl})


@bp.get("/api/mdm/enrollments/<enrollment_id>/commands")
def mdm_commands(enrollment_id):
    return jsonify(_lab().mdm.commands.listing(enrollment_id))


@bp.post("/api/mdm/enrollments/<enrollment_id>/commands")
def mdm_queue(enrollment_id):
    body = _json_body()
    params = body.get("params", {})
    if not isinstance(body.get("request_type"), str) or not isinstance(params, dict) \
            or set(body) - {"request_type", "params"}:
        raise LabError("expected request_type (string) and optional params (object)", code="bad-command-request")
    command_uuid = _lab().mdm.queue_command(enrollment_id, body["request_type"], params)
    flaskapp.label(device=enrollment_id, summary=f"MDM: queued {body['request_type']} {command_uuid}")
    return jsonify({"command_uuid": command_uuid}), 201


@bp.post("/api/mdm/enrollments/<enrollment_id>/unenroll")
def mdm_unenroll(enrollment_id):
    command_uuid = _lab().mdm.unenroll(enrollment_id)
    flaskapp.label(device=enrollment_id, summary="MDM: queued RemoveProfile of the enrollment profile")
    return jsonify({"command_uuid": command_uuid}), 201


@bp.post("/api/mdm/enrollments/<enrollment_id>/push")
def mdm_push(enrollment_id):
    push = _lab().mdm.push(enrollment_id)
    flaskapp.label(device=enrollment_id, summary=f"MDM: push to {push['topic']} (the lab has no APNs: "
                                                 "'mdmlab device sync' makes the device poll)")
    return jsonify(push)


CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def create_app(lab):
    app = flaskapp.create_app(__name__, "console")
    app.config["LAB"] = lab
    app.before_request(lambda: auth.require_admin_token(_lab().admin_token))
    app.after_request(_security_headers)
    for blueprint in (api.bp, sse.bp, openapi.bp, dashboard.bp, bp):
        app.register_blueprint(blueprint)
    return app
