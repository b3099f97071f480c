"""The control API's OpenAPI document, served at /api/openapi.json.

Built for the running lab, so its enumerations are the lab's own: the faults of its catalogue and the hosts each
may target, the names of its DNS zones, the parts of its state. A test checks that every route of the API is here
and schemathesis checks the live console against it.
"""
from __future__ import annotations

from flask import Blueprint, jsonify

from lab.console.common import EVENT_FILTERS, MAX_ID, concealed, described
from lab.console.common import lab as _lab

bp = Blueprint("openapi", __name__)

LABEL = "[A-Za-z0-9_]([A-Za-z0-9_-]{0,61}[A-Za-z0-9_])?"


def _ref(name: str) -> dict:
    return {"$ref": f"#/components/schemas/{name}"}


def _json(schema: dict, description: str) -> dict:
    return {"description": description, "content": {"application/json": {"schema": schema}}}


def _error(description: str) -> dict:
    return _json(_ref("Error"), description)


def _anycase(name: str) -> str:
    """A pattern matching ``name`` in any letter case (ECMA patterns have no flags), dots literal."""
    return "".join(f"[{c.lower()}{c.upper()}]" if c.isalpha() else "\\." if c == "." else c for c in name)


def _one_of_names(names) -> str:
    return "^(" + "|".join(_anycase(n) for n in sorted(names)) + ")\\.?$"


def _nullable(schema: dict) -> dict:
    return {**schema, "nullable": True}


def _int(minimum: int = 0, maximum: int = MAX_ID) -> dict:
    return {"type": "integer", "minimum": minimum, "maximum": maximum}


def _query(name: str, schema: dict, description: str) -> dict:
    return {"name": name, "in": "query", "required": False, "schema": schema, "description": description}


FILTERS = [_query(key, {"type": "string"}, f"only events whose {key} is exactly this") for key in EVENT_FILTERS]
UNAUTHORIZED = _error("the lab listens beyond loopback and the admin token is missing or wrong")
FOREIGN = _error("a browser page of another origin asked to change the lab")


def _fault_requests(board) -> list[dict]:
    """One shape per fault layer, and per whether its faults take a delay: their names and the hosts they may
    target (``seconds`` only where it applies: the board refuses it elsewhere)."""
    groups: dict[tuple[str, bool], list[str]] = {}
    for spec in board.catalogue.values():
        groups.setdefault((spec.component, spec.takes_seconds), []).append(spec.name)
    shapes = []
    for (component, delays), names in sorted(groups.items()):
        hosts = board.hosts.get(component, set())
        if not hosts:
            continue  # nothing this layer may break in this lab (e.g. no ABM in the scenario)
        host = {"type": "string", "description": f"a host of the {component} layer [default: "
                f"{board.default_hosts.get(component, board.default_host)}]"}
        if "*" not in hosts:
            host["pattern"] = _one_of_names(hosts)
        properties = {
            "name": {"type": "string", "enum": sorted(names)},
            "host": host,
            "times": {"type": "integer", "minimum": 1, "maximum": MAX_ID, "nullable": True,
                      "description": "only the next N requests [default, or null: until cleared]"},
        }
        if delays:
            properties["seconds"] = {"type": "number", "minimum": 0, "maximum": 120, "nullable": True,
                                     "description": "the delay of a slow fault [default, or null: the fault's own]"}
        shapes.append({"type": "object", "title": f"{component} fault" + (" with a delay" if delays else ""),
                       "additionalProperties": False, "required": ["name"], "properties": properties})
    return shapes


def _record_requests(suffixes: list[str]) -> tuple[dict, dict]:
    name = {"type": "string", "maxLength": 254,
            "pattern": f"^({LABEL}\\.)*(" + "|".join(_anycase(s) for s in sorted(suffixes)) + ")\\.?$",
            "description": "a name in one of the lab's zones (" + ", ".join(sorted(suffixes)) + ")"}
    add = {"oneOf": [
        {"type": "object", "additionalProperties": False, "required": ["name", "type", "value"],
         "properties": {"name": name, "type": {"type": "string", "enum": ["A"]},
                        "value": {"type": "string", "format": "ipv4"}}},
        {"type": "object", "additionalProperties": False, "required": ["name", "type", "value"],
         "properties": {"name": name, "type": {"type": "string", "enum": ["AAAA"]},
                        "value": {"type": "string", "format": "ipv6", "pattern": "^[0-9A-Fa-f:.]+$"}}},
        {"type": "object", "additionalProperties": False, "required": ["name", "value"],
         "properties": {"name": name, "type": {"type": "string", "enum": ["TXT"], "default": "TXT"},
                        "value": {"type": "string", "pattern": "^[ -~]{0,255}$"}}},
    ]}
    remove = {"type": "object", "additionalProperties": False, "required": ["name"],
              "properties": {"name": name, "type": {"type": "string", "enum": ["A", "AAAA", "TXT"], "default": "TXT"},
                             "value": {"type": "string", "nullable": True,
                                       "description": "only this value [default, or null: every value]"}}}
    return add, remove


def _mdm_paths() -> dict:
    enrollment_id = {"name": "enrollment_id", "in": "path", "required": True,
                     "schema": {"type": "string", "pattern": "^[A-Za-z0-9-]{1,64}$"},
                     "description": "EnrollmentID (User Enrollment) or UDID (Device Enrollment)"}
    unknown = _error("no such enrollment")
    refused = _error("the enrollment checked out, or the request is not a valid command")
    who = {"type": "object", "additionalProperties": False, "properties": {
        "enrollment_id": _nullable({"type": "string"}), "user": _nullable({"type": "string"})},
        "description": "whose tokens: one enrollment, one user, or (empty) everyone"}
    count = lambda key: {"type": "object", "required": [key], "properties": {key: {"type": "integer"}}}  # noqa: E731
    seconds = {"type": "object", "required": ["seconds"], "properties": {"seconds": {"type": "integer"}}}
    enrollment = {"type": "object", "required": ["enrollment_id", "user", "mode", "status"]}
    command = {"type": "object", "required": ["command_uuid", "request_type", "status"]}
    queued = {"type": "object", "required": ["command_uuid"], "properties": {"command_uuid": {"type": "string"}}}
    changes = {"401": UNAUTHORIZED, "403": FOREIGN}
    step = {"type": "object", "required": ["stage"], "properties": {
        "stage": {"type": "string"}, "action": _nullable({"type": "string"}),
        "verdict": _nullable({"type": "string"}), "code": _nullable({"type": "string"}),
        "explanation": _nullable({"type": "string"})}}
    return {
        "/api/mdm/enrollments": {"get": {
            "summary": "The MDM's enrollments", "operationId": "mdmEnrollments",
            "responses": {"200": _json({"type": "array", "items": enrollment}, "enrollments"),
                          "401": UNAUTHORIZED}}},
        "/api/mdm/tokens/revoke": {"post": {
            "summary": "Revoke grants (access and refresh tokens): the device must sign in again",
            "operationId": "mdmRevoke",
            "requestBody": {"required": True, "content": {"application/json": {"schema": who}}},
            "responses": {"200": _json(count("revoked"), "how many grants"), "400": _error("a bad filter"),
                          **changes}}},
        "/api/mdm/tokens/expire": {"post": {
            "summary": "Expire access tokens now: OAuth 2 devices refresh, simple ones sign in again",
            "operationId": "mdmExpire",
            "requestBody": {"required": True, "content": {"application/json": {"schema": who}}},
            "responses": {"200": _json(count("expired"), "how many tokens"), "400": _error("a bad filter"),
                          **changes}}},
        "/api/mdm/token-lifetime": {
            "get": {"summary": "The lifetime of new access tokens", "operationId": "mdmTokenLifetime",
                    "responses": {"200": _json(seconds, "seconds"), "401": UNAUTHORIZED}},
            "put": {"summary": "Set the lifetime of new access tokens", "operationId": "mdmSetTokenLifetime",
                    "requestBody": {"required": True, "content": {"application/json": {"schema": {
                        "type": "object", "required": ["seconds"],
                        "properties": {"seconds": {"type": "integer", "minimum": 1, "maximum": 366 * 86400}}}}}},
                    "responses": {"200": _json(seconds, "seconds"), "400": _error("a bad body"),
                                  "409": _error("not a whole number of seconds from 1 to a year"), **changes}}},
        "/api/mdm/enrollments/{enrollment_id}/commands": {
            "get": {"summary": "The commands of one enrollment, with their status and results",
                    "operationId": "mdmCommands", "parameters": [enrollment_id],
                    "responses": {"200": _json({"type": "array", "items": command}, "commands"),
                                  "404": unknown, "401": UNAUTHORIZED}},
            "post": {"summary": "Queue a command (the device runs it on its next poll: 'mdmlab device sync')",
                     "operationId": "mdmQueueCommand", "parameters": [enrollment_id],
                     "requestBody": {"required": True, "content": {"application/json": {"schema": {
                         "type": "object", "required": ["request_type"], "additionalProperties": False,
                         "properties": {"request_type": {"type": "string"}, "params": {"type": "object"}}}}}},
                     "responses": {"201": _json(queued, "queued"), "400": _error("a bad body"), "404": unknown,
                                   "409": refused, **changes}}},
        "/api/mdm/enrollments/{enrollment_id}/unenroll": {"post": {
            "summary": "Unenroll from the MDM side: RemoveProfile of the enrollment profile",
            "operationId": "mdmUnenroll", "parameters": [enrollment_id],
            "responses": {"201": _json(queued, "queued"), "404": unknown, "409": refused, **changes}}},
        "/api/mdm/enrollments/{enrollment_id}/push": {"post": {
            "summary": "What an APNs push would carry (the lab has no APNs)", "operationId": "mdmPush",
            "parameters": [enrollment_id],
            "responses": {"200": _json({"type": "object"}, "the push"), "404": unknown, "409": refused,
                          **changes}}},
        "/api/device-traces": {"post": {
            "summary": "Record a device's own trace of an enrollment in the timeline (what `mdmlab enroll` saw)",
            "operationId": "recordDeviceTrace",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["identifier", "outcome", "steps"], "properties": {
                    "identifier": {"type": "string"}, "outcome": {"type": "string", "enum": ["enrolled", "failed"]},
                    "diagnosis": _nullable({"type": "string"}), "path": _nullable({"type": "string"}),
                    "explanation": _nullable({"type": "string"}),
                    "steps": {"type": "array", "maxItems": 200, "items": step}}}}}},
            "responses": {"201": _json(count("recorded"), "recorded"), "400": _error("not a trace"), **changes}}},
    }


def document(lab) -> dict:
    board = lab.faults
    add_record, remove_record = _record_requests(lab.zone.suffixes)
    snapshot_parts = sorted(lab.snapshot())
    event = {"type": "object", "required": ["id", "ts", "component", "kind", "detail"], "properties": {
        "id": {"type": "integer"}, "ts": {"type": "number", "description": "seconds since the epoch"},
        "component": {"type": "string"}, "kind": {"type": "string"},
        "host": _nullable({"type": "string"}), "method": _nullable({"type": "string"}),
        "path": _nullable({"type": "string"}), "status": _nullable({"type": "integer"}),
        "stage": _nullable({"type": "string"}), "device": _nullable({"type": "string"}),
        "summary": _nullable({"type": "string"}),
        "enrollment": _nullable({"type": "string", "description": "the EnrollmentID the exchange belongs to"}),
        "user": _nullable({"type": "string", "description": "the account the exchange belongs to"}),
        "message_type": _nullable({"type": "string", "description": "check-in MessageType or command RequestType"}),
        "outcome": _nullable({"type": "string", "description": "a machine-readable fact: enrolled, lab-stopped, "
                              "refused, ..."}),
        "detail": {"type": "object", "description": "redacted request and response headers and bodies, or the "
                   "step's verdict and explanation"}}}
    step = {"type": "object", "required": ["event", "lane", "label", "tone"], "properties": {
        "event": {"type": "integer"}, "ts": {"type": "number"}, "lane": {"type": "string"},
        "kind": {"type": "string"}, "stage": _nullable({"type": "string"}), "label": _nullable({"type": "string"}),
        "result": _nullable({"type": "string"}), "summary": _nullable({"type": "string"}),
        "tone": {"type": "string", "enum": ["good", "bad", "warn", "challenge", "redirect"]},
        "verdict": _nullable({"type": "string", "description": "the device's verdict: ok, warn or fail"}),
        "explanation": _nullable({"type": "string"}), "code": _nullable({"type": "string"}),
        "device_event": {"type": "integer", "description": "the device's own step, folded into this exchange"}}}
    enrollment = {"type": "object", "required": ["identifier", "status", "path", "steps"], "properties": {
        "identifier": {"type": "string"}, "enrollment_ids": {"type": "array", "items": {"type": "string"}},
        "device": _nullable({"type": "string"}),
        "status": {"type": "string", "enum": ["enrolled", "failed", "in-progress", "incomplete"]},
        "path": {"type": "string", "enum": ["direct", "abm"]}, "diagnosis": _nullable({"type": "string"}),
        "explanation": _nullable({"type": "string"}), "started": {"type": "number"},
        "elapsed_ms": {"type": "number"}, "first_event": {"type": "integer"}, "last_event": {"type": "integer"},
        "lanes": {"type": "array", "items": {"type": "string"}}, "steps": {"type": "array", "items": _ref("Step")}}}
    armed = {"type": "object", "required": ["name", "component", "host", "remaining", "used"], "properties": {
        "name": {"type": "string"}, "component": {"type": "string"}, "host": {"type": "string"},
        "remaining": _nullable({"type": "integer"}), "used": {"type": "integer"},
        "seconds": _nullable({"type": "number"})}}
    spec = {"type": "object", "required": ["name", "component", "description", "symptom"], "properties": {
        "name": {"type": "string"}, "component": {"type": "string"}, "description": {"type": "string"},
        "symptom": {"type": "string"}, "takes_seconds": {"type": "boolean"}}}
    record = {"type": "object", "required": ["name", "type", "value"], "properties": {
        "name": {"type": "string"}, "type": {"type": "string", "description": "A, AAAA, TXT; * for a whole answer"},
        "value": {"type": "string"},
        "overridden": {"type": "boolean", "description": "an armed DNS fault makes the name answer this"},
        "fault": _nullable({"type": "string", "description": "the fault's name (null in an exercise)"})}}
    added = {"type": "object", "required": ["name", "type", "value", "added", "served"], "properties": {
        "name": {"type": "string"}, "type": {"type": "string"}, "value": {"type": "string"},
        "added": {"type": "boolean", "description": "false: the record was already there"},
        "served": {"type": "boolean", "description": "false: stored, but an override answers instead"},
        "note": {"type": "string", "description": "why the change did not take effect, or had nothing to do"}}}
    removed = {"type": "object", "required": ["removed", "records"], "properties": {
        "removed": {"type": "integer"}, "records": {"type": "array", "items": record},
        "note": {"type": "string"}}}
    error = {"type": "object", "required": ["error", "message"], "properties": {
        "error": {"type": "string", "description": "a stable machine-readable code"},
        "message": {"type": "string", "description": "one line saying what went wrong"}}}

    paths = {
        "/api/health": {"get": {
            "summary": "The lab is up: scenario, ports, hosts, CA path, newest event id",
            "operationId": "health",
            "responses": {"200": _json({"type": "object", "required": ["status", "scenario", "https_port",
                                                                       "last_event_id"],
                                        "properties": {"status": {"type": "string", "enum": ["ok"]},
                                                       "scenario": {"type": "string"},
                                                       "https_port": {"type": "integer"},
                                                       "last_event_id": {"type": "integer"},
                                                       "timeline": {"type": "object", "description": "the retention "
                                                                    "bound (retain) and how many events it dropped "
                                                                    "so far, through which id"}}}, "the lab"),
                          "401": UNAUTHORIZED}}},
        "/api/openapi.json": {"get": {
            "summary": "This document", "operationId": "openapi",
            "responses": {"200": _json({"type": "object"}, "OpenAPI 3.0 document"), "401": UNAUTHORIZED}}},
        "/api/events": {"get": {
            "summary": "The event timeline: every HTTP exchange, DNS answer, fault change and device step",
            "description": "Events with an id above `after`, oldest first, at most `limit`; or with `last`, the "
                           "newest N of them. Secrets in headers and bodies are redacted.",
            "operationId": "listEvents",
            "parameters": [_query("after", _int(), "only events with a greater id [default: 0]"),
                           _query("limit", _int(1, 5000), "at most this many [default: 500]"),
                           _query("last", _int(0, 5000), "the newest N events (then `limit` does not apply)"),
                           _query("before", _int(), "only events with a smaller id, the newest `limit` of them: "
                                  "page back with the oldest id of the last page"),
                           *FILTERS],
            "responses": {"200": _json({"type": "array", "items": _ref("Event")}, "events, oldest first"),
                          "400": _error("a parameter is not a number in range"), "401": UNAUTHORIZED}}},
        "/api/events/{event_id}": {"get": {
            "summary": "One event with its redacted request and response", "operationId": "getEvent",
            "parameters": [{"name": "event_id", "in": "path", "required": True, "schema": _int(1)}],
            "responses": {"200": _json(_ref("Event"), "the event"), "404": _error("no such event"),
                          "401": UNAUTHORIZED}}},
        "/api/events/stream": {"get": {
            "summary": "The timeline live, as server-sent events",
            "description": "Each message has the event's id as `id` and the event (as in /api/events) as JSON "
                           "`data`. Resume with the `Last-Event-ID` header (an EventSource sends it when it "
                           "reconnects) or `after`; without either the stream starts from now. A comment every "
                           "15 s keeps the connection alive; the server ends the stream after 5 minutes or when "
                           "the lab stops, and asks clients to reconnect after 2 s.",
            "operationId": "streamEvents",
            "parameters": [_query("after", _int(), "start after this event id [default: the newest]"),
                           {"name": "Last-Event-ID", "in": "header", "required": False,
                            "schema": {"type": "string", "pattern": "^[0-9]{1,16}$"}}, *FILTERS],
            "responses": {"200": {"description": "an event stream",
                                  "content": {"text/event-stream": {"schema": {"type": "string"}}}},
                          "400": _error("a bad `after` or `Last-Event-ID`"), "401": UNAUTHORIZED}}},
        "/api/exercise/attempts": {"post": {
            "summary": "Grade a training exercise's attempt from the timeline since event `after`; recorded as an "
                       "event for the instructor",
            "operationId": "exerciseAttempt",
            "requestBody": {"required": True, "content": {"application/json": {"schema": {
                "type": "object", "required": ["after"], "additionalProperties": False,
                "properties": {"after": _int(), "os_version": {"type": "string"}}}}}},
            "responses": {"201": _json({"type": "object", "required": ["exercise", "repaired", "verdict", "event"],
                                        "properties": {"exercise": {"type": "integer"},
                                                       "repaired": {"type": "boolean"},
                                                       "verdict": {"type": "string"},
                                                       "event": {"type": "integer"}}}, "the grade"),
                          "400": _error("not an attempt"), "409": _error("this lab runs no exercise"),
                          "401": UNAUTHORIZED, "403": FOREIGN}}},
        "/api/accounts": {"get": {
            "summary": "The scenario's test accounts with their passwords, for the lab's own tools (the fleet)",
            "operationId": "listAccounts",
            "responses": {"200": _json({"type": "object", "required": ["accounts"], "properties": {"accounts": {
                "type": "array", "items": {"type": "object", "required": ["identifier", "password"], "properties": {
                    "identifier": {"type": "string"}, "password": {"type": "string"},
                    "full_name": {"type": "string"}}}}}}, "the accounts"), "401": UNAUTHORIZED}}},
        "/api/enrollments": {"get": {
            "summary": "Recent enrollment attempts, each as a sequence across device, DNS, org domain, ABM, MDM",
            "description": "Grouped from the timeline, newest first. `status` is what the device reported, or, "
                           "without a report, what the servers saw (TokenUpdate accepted: enrolled).",
            "operationId": "listEnrollments",
            "parameters": [_query("limit", _int(1, 200), "at most this many [default: 20]")],
            "responses": {"200": _json({"type": "array", "items": _ref("Enrollment")}, "attempts, newest first"),
                          "400": _error("a bad limit"), "401": UNAUTHORIZED}}},
        "/api/state": {"get": {
            "summary": "A snapshot of every mock's state and the armed faults", "operationId": "getState",
            "responses": {"200": _json({"type": "object", "required": ["org_domain", "mdm", "abm", "faults"],
                                        "properties": {"org_domain": {"type": "object"},
                                                       "mdm": {"type": "object"},
                                                       "abm": _nullable({"type": "object"}),
                                                       "faults": {"type": "array", "items": _ref("ArmedFault")}}},
                                       "the state of each part"), "401": UNAUTHORIZED}}},
        "/api/state/{part}": {"get": {
            "summary": "The snapshot of one part", "operationId": "getStatePart",
            "parameters": [{"name": "part", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": snapshot_parts}}],
            "responses": {"200": _json({"type": "object"}, "{part: snapshot}"), "404": _error("no such part"),
                          "401": UNAUTHORIZED}}},
        "/api/reset": {"post": {
            "summary": "Back to the scenario: every mock rebuilt, its faults re-armed; the CA and timeline stay",
            "operationId": "reset",
            "responses": {"200": _json({"type": "object", "required": ["reset", "scenario"],
                                        "properties": {"reset": {"type": "boolean"},
                                                       "scenario": {"type": "string"},
                                                       "last_event_id": {"type": "integer"}}}, "done"),
                          "401": UNAUTHORIZED, "403": FOREIGN,
                          "500": _error("the scenario could not be rebuilt (the message says why)")}}},
        "/api/faults": {
            "get": {"summary": "The fault catalogue, the armed faults, and the hosts each layer may target",
                    "operationId": "listFaults",
                    "responses": {"200": _json({"type": "object", "required": ["catalogue", "armed"], "properties": {
                        "catalogue": {"type": "array", "items": _ref("FaultSpec")},
                        "armed": {"type": "array", "items": _ref("ArmedFault")},
                        "hosts": {"type": "object", "additionalProperties": {"type": "array",
                                                                             "items": {"type": "string"}}},
                        "default_hosts": {"type": "object", "additionalProperties": {"type": "string"}}}},
                        "faults"), "401": UNAUTHORIZED}},
            "post": {"summary": "Arm a fault", "operationId": "setFault",
                     "requestBody": {"required": True, "content": {"application/json": {
                         "schema": {"oneOf": _fault_requests(board)}}}},
                     "responses": {"201": _json({"type": "object", "required": ["armed"],
                                                 "properties": {"armed": _ref("ArmedFault")}}, "armed"),
                                   "400": _error("a bad request, or a host this fault does not apply to"),
                                   "404": _error("no fault of that name"), "401": UNAUTHORIZED, "403": FOREIGN,
                                   "409": _error("an exercise: its faults are the instructor's (exercise-faults)")}},
            "delete": {"summary": "Clear every armed fault (on one host with `host`)", "operationId": "clearFaults",
                       "parameters": [_query("host", {"type": "string"}, "only on this host")],
                       "responses": {"200": _json(_ref("Cleared"), "how many were cleared"),
                                     "401": UNAUTHORIZED, "403": FOREIGN,
                                     "409": _error("an exercise clears one fault by name, never all "
                                                   "(exercise-clear-all)")}}},
        "/api/faults/{name}": {"delete": {
            "summary": "Clear one fault (on one host with `host`)", "operationId": "clearFault",
            "parameters": [{"name": "name", "in": "path", "required": True,
                            "schema": {"type": "string", "enum": sorted(board.catalogue)}},
                           _query("host", {"type": "string"}, "only on this host")],
            "responses": {"200": _json(_ref("Cleared"), "how many were cleared (null in an exercise, which does not "
                                                        "say whether the fault was armed)"),
                          "404": _error("no fault of that name"), "401": UNAUTHORIZED, "403": FOREIGN}}},
        "/api/dns/records": {
            "get": {"summary": "The records of the lab's zones", "operationId": "listRecords",
                    "responses": {"200": _json({"type": "array", "items": _ref("Record")}, "records"),
                                  "401": UNAUTHORIZED}},
            "post": {"summary": "Add a record (e.g. the TXT record that verifies a domain in ABM)",
                     "operationId": "addRecord",
                     "requestBody": {"required": True, "content": {"application/json": {"schema": add_record}}},
                     "responses": {"201": _json(added, "added"),
                                   "200": _json(added, "already there: nothing changed"),
                                   "400": _error("a bad name, type or value"), "401": UNAUTHORIZED,
                                   "403": FOREIGN}},
            "delete": {"summary": "Remove a record (every value of the type without `value`)",
                       "operationId": "removeRecord",
                       "requestBody": {"required": True,
                                       "content": {"application/json": {"schema": remove_record}}},
                       "responses": {"200": _json(removed, "removed"),
                                     "400": _error("a bad name or type"), "401": UNAUTHORIZED, "403": FOREIGN}}},
        **_mdm_paths(),
        "/ca.pem": {"get": {
            "summary": "The lab CA certificate (PEM); public, no token needed", "operationId": "caPem",
            "security": [],
            "responses": {"200": {"description": "the CA", "content": {
                "application/x-pem-file": {"schema": {"type": "string"}}}}}}},
        "/ca.mobileconfig": {"get": {
            "summary": "The lab CA as a configuration profile for iPhone, iPad and Mac; public, no token needed",
            "description": "One com.apple.security.root payload. After installing it, turn on full trust in "
                           "Settings > General > About > Certificate Trust Settings.",
            "operationId": "caMobileconfig", "security": [],
            "responses": {"200": {"description": "the profile (XML property list, unsigned)", "content": {
                "application/x-apple-aspen-config": {"schema": {"type": "string"}}}}}}},
    }
    return {
        "openapi": "3.0.3",
        "info": {"title": "mdmlab control API", "version": "1",
                 "description": f"The console of a running lab ({'' if concealed(lab) else 'scenario '}"
                                f"{described(lab)['scenario']}): faults, the event timeline, state snapshots, "
                                "reset and the CA. On loopback no token is needed; beyond it, send the admin token "
                                "printed by `mdmlab up` as `Authorization: Bearer <token>`. Requests that change the "
                                "lab are refused when a browser sends them from another origin."},
        "servers": [{"url": lab.urls["console"].rstrip("/")},
                    {"url": f"https://localhost:{lab.https_port}"}],
        "security": [{}, {"adminToken": []}],
        "paths": paths,
        "components": {
            "securitySchemes": {"adminToken": {"type": "http", "scheme": "bearer",
                                               "description": "printed by `mdmlab up` when it listens beyond "
                                                              "loopback"}},
            "schemas": {"Event": event, "Step": step, "Enrollment": enrollment, "ArmedFault": armed,
                        "FaultSpec": spec, "Record": record, "Error": error,
                        "Cleared": {"type": "object", "required": ["cleared"],
                                    "properties": {"cleared": _nullable({"type": "integer"}),
                                                   "name": {"type": "string"}}}},
        },
    }


@bp.get("/api/openapi.json")
def openapi():
    return jsonify(document(_lab()))
