"""The console's Flask app (console.<zone>, also localhost)."""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from lab import flaskapp
from lab.flaskapp import LabError

bp = Blueprint("console", __name__, template_folder="templates")


def _lab():
    return current_app.config["LAB"]


def _int_arg(name: str, default: int) -> int:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isdigit():
        raise LabError(f"query parameter {name} must be a non-negative integer", code="bad-parameter")
    return int(raw)


@bp.get("/")
def index():
    lab = _lab()
    return render_template("index.html", lab=lab.describe(), events=lab.events.query(
        after=max(0, lab.events.last_id() - 50), limit=50))


@bp.get("/api/health")
def health():
    return jsonify({"status": "ok", **_lab().describe()})


@bp.get("/api/events")
def events():
    lab = _lab()
    return jsonify(lab.events.query(after=_int_arg("after", 0), limit=_int_arg("limit", 500),
                                    host=request.args.get("host"), device=request.args.get("device"),
                                    component=request.args.get("component"), kind=request.args.get("kind")))


@bp.get("/api/state")
def state():
    return jsonify(_lab().snapshot())


@bp.get("/ca.pem")
def ca_pem():
    return Response(_lab().pki.cert_path.read_bytes(), content_type="application/x-pem-file",
                    headers={"Content-Disposition": "attachment; filename=mdmlab-ca.pem"})


@bp.before_request
def require_admin_token():
    """Beyond loopback, the control plane answers only to the admin token printed at start-up."""
    token = _lab().admin_token
    if token is None:
        return None
    presented = request.headers.get("Authorization", "").removeprefix("Bearer ").strip() \
        or request.args.get("token", "")
    if not hmac.compare_digest(presented.encode(), token.encode()):
        raise LabError("the console needs the admin token printed by 'mdmlab up' (Authorization: Bearer ...)",
                       code="admin-token-required", status=401)
    return None


def create_app(lab):
    app = flaskapp.create_app(__name__, "console")
    app.config["LAB"] = lab
    app.register_blueprint(bp)
    return app
