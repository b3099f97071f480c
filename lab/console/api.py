"""The control API: health, events, enrollments, state, faults, DNS records, reset and the CA downloads.

Documented in ``openapi.py`` (served at /api/openapi.json); a test keeps the two equal.
"""
from __future__ import annotations

import ipaddress
import re

from flask import Blueprint, Response, jsonify, request

from lab.console import ca, timeline
from lab.console.common import MAX_ID, concealed, described, event_filters, events_for, int_arg, json_body
from lab.console.common import lab as _lab
from lab.faults import FaultError
from lab.flaskapp import LabError

bp = Blueprint("api", __name__)


@bp.get("/api/health")
def health():
    lab = _lab()
    return jsonify({"status": "ok", "last_event_id": lab.events.last_id(), "timeline": lab.events.retention(),
                    **described(lab)})


@bp.get("/api/accounts")
def accounts():
    """The scenario's test accounts with their passwords, for the lab's own tools (the fleet signs in with them)."""
    return jsonify({"accounts": [{"identifier": u.identifier, "password": u.password, "full_name": u.full_name}
                                 for u in _lab().scenario.users]})


@bp.get("/api/events")
def events():
    """Events after ``after`` (oldest first); with ``before``, the newest ``limit`` below it (a page back in
    time); with ``last``, the newest N. Every answer is one bounded, indexed query, however large the timeline."""
    lab = _lab()
    after, limit = int_arg("after", 0), int_arg("limit", 500, minimum=1, maximum=5000)
    last, before = int_arg("last", None, maximum=5000), int_arg("before", None)
    if last is not None:  # the newest N (of those after ``after``)
        if last == 0:
            return jsonify([])
        return jsonify(events_for(lab, lab.events.query(after=after, before=before, limit=last, newest=True,
                                                        **event_filters())))
    if before is not None:
        return jsonify(events_for(lab, lab.events.query(after=after, before=before, limit=limit, newest=True,
                                                        **event_filters())))
    return jsonify(events_for(lab, lab.events.query(after=after, limit=limit, **event_filters())))


@bp.get("/api/events/<int:event_id>")
def event(event_id: int):
    found = _lab().events.query(after=event_id - 1, limit=1) if 0 < event_id <= MAX_ID else []
    if not found or found[0]["id"] != event_id:
        raise LabError(f"no event {event_id} in the timeline", code="unknown-event", status=404)
    return jsonify(events_for(_lab(), found)[0])


def enrollment_owners(lab) -> dict[str, str]:
    """EnrollmentID → user, from the MDM's state, so check-ins join the attempt that enrolled."""
    snapshot = lab.mdm.snapshot()
    return {e["enrollment_id"]: e["user"] for e in snapshot.get("enrollments", []) if e.get("user")}


def recent_enrollments(lab, limit: int = 20, window: int = 3000) -> list[dict]:
    found = timeline.enrollments(timeline.newest(lab.events, window), enrollment_owners(lab), limit=limit)
    if concealed(lab):  # the device's diagnosis codes can be a fault's very name: the trainee reads its words
        for attempt in found:
            attempt["diagnosis"] = None
            for item in attempt["steps"]:
                item["code"] = None
    return found


@bp.get("/api/enrollments")
def enrollments():
    return jsonify(recent_enrollments(_lab(), limit=int_arg("limit", 20, minimum=1, maximum=200)))


@bp.get("/api/state")
def state():
    return jsonify(_lab().snapshot())


@bp.get("/api/state/<part>")
def state_part(part: str):
    snapshot = _lab().snapshot()
    if part not in snapshot:
        raise LabError(f"no state named {part!r}; the lab has {', '.join(sorted(snapshot))}",
                       code="unknown-state", status=404)
    return jsonify({part: snapshot[part]})


@bp.post("/api/reset")
def reset():
    lab = _lab()
    try:
        lab.reset()
    except Exception as exc:  # a scenario that cannot be rebuilt must say so, not hang the console
        raise LabError(f"reset failed: {exc}", code="reset-failed", status=500) from None
    return jsonify({"reset": True, "scenario": lab.title, "last_event_id": lab.events.last_id()})


def _fault_error(exc: FaultError) -> LabError:
    status = {"unknown-fault": 404, "exercise-clear-all": 409, "exercise-faults": 409}.get(exc.code, 400)
    return LabError(str(exc), code=exc.code, status=status)


@bp.get("/api/faults")
def faults():
    board = _lab().faults
    return jsonify({"catalogue": board.listing(), "armed": board.armed(),
                    "hosts": {component: sorted(hosts) for component, hosts in sorted(board.hosts.items())},
                    "default_hosts": {spec.component: board.default_hosts.get(spec.component, board.default_host)
                                      for spec in board.catalogue.values()}})


@bp.post("/api/faults")
def set_fault():
    body = json_body()
    unknown = sorted(set(body) - {"name", "host", "times", "seconds"})
    if unknown or not isinstance(body.get("name"), str):
        got = ", ".join(unknown) or "no name"
        raise LabError(f"expected name (string) and optional host, times, seconds; got {got}",
                       code="bad-fault-request")
    if "host" in body and (not isinstance(body["host"], str) or not body["host"].strip(".")):
        raise LabError("host must be a host name (leave it out for the default)", code="bad-fault-host")
    times = body.get("times")
    if isinstance(times, int) and not isinstance(times, bool) and times > MAX_ID:
        raise LabError(f"times must be at most {MAX_ID}", code="bad-times")
    try:
        if concealed(_lab()):
            _lab().faults.refuse_set()
        armed = _lab().faults.set(body["name"], body.get("host"), body.get("times"), body.get("seconds"))
    except FaultError as exc:
        raise _fault_error(exc) from None
    return jsonify({"armed": armed.to_dict()}), 201


@bp.delete("/api/faults")
@bp.delete("/api/faults/<name>")
def clear_faults(name=None):
    """Clear NAME (or every fault); in an exercise only by name, and the answer does not say whether it was armed."""
    board, host = _lab().faults, request.args.get("host")
    try:
        if concealed(_lab()):
            board.clear_guess(name, host)
            return jsonify({"cleared": None, "name": name})
        cleared = board.clear(name, host)
    except FaultError as exc:
        raise _fault_error(exc) from None
    return jsonify({"cleared": cleared})


@bp.get("/api/dns/records")
def dns_records():
    return jsonify(_lab().dns.resolver.listing())


LABEL = r"[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"
NAME = re.compile(rf"({LABEL}\.)*{LABEL}\.?")
TXT_VALUE = re.compile(r"[ -~]{0,255}")  # printable ASCII: what a verification record or SPF string holds
RECORD_TYPES = ("A", "AAAA", "TXT")


@bp.post("/api/dns/records")
@bp.delete("/api/dns/records")
def change_dns_record():
    body = json_body()
    unknown = sorted(set(body) - {"name", "type", "value"})
    name, rtype, value = body.get("name"), body.get("type", "TXT"), body.get("value")
    if unknown or not all(isinstance(v, str) for v in (name, rtype)) \
            or not (value is None or isinstance(value, str)):
        raise LabError("expected name, type and value strings" + (f"; unknown {', '.join(unknown)}" if unknown else ""),
                       code="bad-record")
    if rtype not in RECORD_TYPES:
        raise LabError(f"record type {rtype!r} is not one of {', '.join(RECORD_TYPES)}", code="bad-record")
    if not NAME.fullmatch(name) or len(name.rstrip(".")) > 253:
        raise LabError(f"{name!r} is not a DNS name", code="bad-record")
    zone = _lab().zone
    if zone.apex(name) is None:
        raise LabError(f"{name} is outside the lab's zones ({', '.join(zone.suffixes)})", code="bad-record")
    if request.method == "DELETE":
        return jsonify(_lab().dns.resolver.remove(name, rtype, value))
    if value is None:
        raise LabError("value is required", code="bad-record")
    _check_value(rtype, value)
    try:
        result = _lab().dns.resolver.add(name, rtype, value)
    except ValueError as exc:
        raise LabError(str(exc), code="bad-record") from None
    return jsonify(result), 201 if result["added"] else 200


def _check_value(rtype: str, value: str) -> None:
    """The zone takes any text: an address record must hold an address of its family, a TXT string fit DNS."""
    if rtype in ("A", "AAAA"):
        try:
            address = ipaddress.ip_address(value if "%" not in value else "scoped")
        except ValueError:
            raise LabError(f"{value!r} is not an IP address", code="bad-record") from None
        if address.version != (4 if rtype == "A" else 6):
            raise LabError(f"an {rtype} record holds an IPv{4 if rtype == 'A' else 6} address, not {value}",
                           code="bad-record")
    elif not TXT_VALUE.fullmatch(value):
        raise LabError("a TXT value here is printable ASCII, at most 255 characters", code="bad-record")


@bp.get("/ca.pem")
def ca_pem():
    return Response(_lab().pki.cert_path.read_bytes(), content_type="application/x-pem-file",
                    headers={"Content-Disposition": "attachment; filename=mdmlab-ca.pem"})


@bp.get("/ca.mobileconfig")
def ca_mobileconfig():
    pki = _lab().pki
    return Response(ca.mobileconfig(pki.cert, pki.suffixes), content_type=ca.CONTENT_TYPE,
                    headers={"Content-Disposition": "attachment; filename=mdmlab-ca.mobileconfig"})
