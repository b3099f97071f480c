"""The console's Flask app (console.<zone>, also localhost)."""
from __future__ import annotations

import hmac

from flask import Blueprint, Response, current_app, jsonify, render_template, request

from lab import flaskapp
from lab.faults import FaultError
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


def _json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise LabError("the request body must be a JSON object", code="bad-json")
    return body


def _fault_error(exc: FaultError) -> LabError:
    return LabError(str(exc), code=exc.code, status=404 if exc.code == "unknown-fault" else 400)


@bp.get("/api/faults")
def faults():
    board = _lab().faults
    return jsonify({"catalogue": board.listing(), "armed": board.armed()})


@bp.post("/api/faults")
def set_fault():
    body = _json_body()
    unknown = sorted(set(body) - {"name", "host", "times", "seconds"})
    if unknown or not isinstance(body.get("name"), str):
        raise LabError(f"expected name (string) and optional host, times, seconds; got {', '.join(unknown) or 'no name'}",
                       code="bad-fault-request")
    if body.get("host") is not None and not isinstance(body["host"], str):
        raise LabError("host must be a string", code="bad-fault-host")
    try:
        armed = _lab().faults.set(body["name"], body.get("host"), body.get("times"), body.get("seconds"))
    except FaultError as exc:
        raise _fault_error(exc) from None
    return jsonify({"armed": armed.to_dict()}), 201


@bp.delete("/api/faults")
@bp.delete("/api/faults/<name>")
def clear_faults(name=None):
    try:
        cleared = _lab().faults.clear(name, request.args.get("host"))
    except FaultError as exc:
        raise _fault_error(exc) from None
    return jsonify({"cleared": cleared})


@bp.get("/api/dns/records")
def dns_records():
    return jsonify(_lab().zone.listing())


@bp.post("/api/dns/records")
@bp.delete("/api/dns/records")
def change_dns_record():
    body = _json_body()
    name, rtype, value = body.get("name"), body.get("type", "TXT"), body.get("value")
    if not all(isinstance(v, str) for v in (name, rtype)) or not (value is None or isinstance(value, str)):
        raise LabError("expected name, type and value strings", code="bad-record")
    zone = _lab().zone
    if request.method == "DELETE":
        return jsonify({"removed": zone.remove(name, rtype, value)})
    if value is None:
        raise LabError("value is required", code="bad-record")
    try:
        zone.add(name, rtype, value)
    except ValueError as exc:
        raise LabError(str(exc), code="bad-record") from None
    return jsonify({"name": name.lower().rstrip("."), "type": rtype, "value": value}), 201


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
