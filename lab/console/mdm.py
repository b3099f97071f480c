"""MDM controls, as an MDM admin console has them (revoke, token lifetime, commands, unenroll, push), and the
intake of device traces, so enrollments run from the CLI show the device's own steps in the timeline."""
from __future__ import annotations

import re

from flask import Blueprint, jsonify, request

from lab import config, flaskapp
from lab.console.common import concealed, json_body
from lab.console.common import lab as _lab
from lab.events import device_trace_events
from lab.exercises import for_trainee
from lab.flaskapp import LabError

bp = Blueprint("mdm_api", __name__)
MAX_STEPS = 200


def _mdm_filter(body: dict) -> dict:
    unknown = sorted(set(body) - {"enrollment_id", "user"})
    if unknown or not all(isinstance(body.get(k), (str, type(None))) for k in ("enrollment_id", "user")):
        raise LabError("expected optional enrollment_id and user strings", code="bad-mdm-request")
    return {k: body.get(k) for k in ("enrollment_id", "user")}


_PLIST_UNSAFE = re.compile(r"[\x00-\x08\x0b\x0c\x0e-\x1f\ufffe\uffff]")  # not XML characters


def _plist_safe(value, where: str = "params") -> None:
    """Command parameters become a property list: JSON null has no plist equivalent."""
    if value is None:
        raise LabError(f"{where} holds null, which a property list cannot carry", code="bad-command-request")
    if isinstance(value, dict):
        for key, item in value.items():
            _plist_safe(item, f"{where}.{key}")
    elif isinstance(value, list):
        for i, item in enumerate(value):
            _plist_safe(item, f"{where}[{i}]")
    elif isinstance(value, int) and not isinstance(value, bool) and not -2**63 <= value < 2**64:
        raise LabError(f"{where} is out of a property list integer's range", code="bad-command-request")
    elif isinstance(value, str) and _PLIST_UNSAFE.search(value):
        raise LabError(f"{where} holds a control character, which a property list cannot carry",
                       code="bad-command-request")


@bp.get("/api/mdm/enrollments")
def mdm_enrollments():
    return jsonify(_lab().mdm.enrollments())


@bp.post("/api/mdm/tokens/revoke")
def mdm_revoke():
    body = json_body()
    revoked = _lab().mdm.revoke_tokens(**_mdm_filter(body))
    flaskapp.label(summary=f"MDM: revoked {revoked} grant(s) of {body or 'everyone'}")
    return jsonify({"revoked": revoked})


@bp.post("/api/mdm/tokens/expire")
def mdm_expire():
    body = json_body()
    expired = _lab().mdm.expire_tokens(**_mdm_filter(body))
    flaskapp.label(summary=f"MDM: expired {expired} access token(s) of {body or 'everyone'}")
    return jsonify({"expired": expired})


@bp.get("/api/mdm/token-lifetime")
@bp.put("/api/mdm/token-lifetime")
def mdm_token_lifetime():
    mdm = _lab().mdm
    if request.method == "PUT":
        mdm.set_token_ttl(json_body().get("seconds"))
        flaskapp.label(summary=f"MDM: new access tokens live {mdm.token_ttl} s")
    return jsonify({"seconds": mdm.token_ttl})


def _unslashed(enrollment_id: str) -> str:
    """The EnrollmentID of a route: the listener keeps an encoded slash (%2F) encoded in the path, so an id with
    a slash arrives either way (``a%2Fb`` from a careful client, ``a/b`` through the path converter)."""
    return enrollment_id.replace("%2F", "/").replace("%2f", "/")


def _known(enrollment_id: str) -> str:
    enrollment_id = _unslashed(enrollment_id)
    if _lab().mdm.enrollment(enrollment_id) is None:
        raise LabError(f"the MDM has no enrollment {enrollment_id}", code="unknown-enrollment", status=404)
    return enrollment_id


@bp.get("/api/mdm/enrollments/<path:enrollment_id>/commands")
def mdm_commands(enrollment_id):
    return jsonify(_lab().mdm.commands.listing(_known(enrollment_id)))


@bp.post("/api/mdm/enrollments/<path:enrollment_id>/commands")
def mdm_queue(enrollment_id):
    enrollment_id = _known(enrollment_id)
    body = json_body()
    params = body.get("params", {})
    if not isinstance(body.get("request_type"), str) or not isinstance(params, dict) \
            or set(body) - {"request_type", "params"}:
        raise LabError("expected request_type (string) and optional params (object)", code="bad-command-request")
    _plist_safe(params)
    command_uuid = _lab().mdm.queue_command(enrollment_id, body["request_type"], params)
    flaskapp.label(device=enrollment_id, summary=f"MDM: queued {body['request_type']} {command_uuid}")
    return jsonify({"command_uuid": command_uuid}), 201


@bp.post("/api/mdm/enrollments/<path:enrollment_id>/unenroll")
def mdm_unenroll(enrollment_id):
    enrollment_id = _unslashed(enrollment_id)
    command_uuid = _lab().mdm.unenroll(enrollment_id)
    flaskapp.label(device=enrollment_id, summary="MDM: queued RemoveProfile of the enrollment profile")
    return jsonify({"command_uuid": command_uuid}), 201


@bp.post("/api/mdm/enrollments/<path:enrollment_id>/push")
def mdm_push(enrollment_id):
    enrollment_id = _unslashed(enrollment_id)
    push = _lab().mdm.push(enrollment_id)
    flaskapp.label(device=enrollment_id, summary=f"MDM: push to {push['topic']} (the lab has no APNs: 'mdmlab "
                                                 f"device sync{config.state_dir_flag(_lab().state_dir)}' makes the "
                                                 "device poll)")
    return jsonify(push)


def _optional_strings(mapping: dict, keys) -> list[bool]:
    return [mapping.get(k) is None or isinstance(mapping.get(k), str) for k in keys]


@bp.post("/api/device-traces")
def device_trace():
    """A device's own account of an enrollment (what `mdmlab enroll` saw), recorded as device events."""
    body = json_body()
    steps, identifier = body.get("steps"), body.get("identifier")
    if not isinstance(identifier, str) or not isinstance(steps, list) or len(steps) > MAX_STEPS \
            or body.get("outcome") not in ("enrolled", "failed") \
            or not all(_optional_strings(body, ("diagnosis", "path", "explanation"))) \
            or not all(isinstance(s, dict) and isinstance(s.get("stage"), str)
                       and all(_optional_strings(s, ("action", "verdict", "code", "explanation"))) for s in steps):
        raise LabError(f"expected identifier, outcome (enrolled|failed) and up to {MAX_STEPS} steps with a stage",
                       code="bad-trace")
    if concealed(_lab()):  # the device's codes name its diagnosis, often the very fault to find: keep its words
        body = for_trainee(body)
    recorded = device_trace_events(identifier, body, clip=True)
    for event in recorded:
        _lab().events.record(event)
    return jsonify({"recorded": len(recorded)}), 201
