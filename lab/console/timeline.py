"""Enrollments out of the event timeline: which exchanges belong to which device's attempt, and how it ended.

The servers label what they know: an event's ``user`` and ``enrollment`` fields say whose exchange it was (an
EnrollmentID labelled once with its user belongs to that user from then on), and a scenario's device adds its own
steps. For events without these fields (older timelines, a server that does not set them) the ``device`` key is
used: an EnrollmentID belongs to its user by the MDM's state, or else to the attempt in progress when it first
shows up (so a reset MDM does not split the story). DNS
answers and the first, anonymous 401 carry no identity; they go to the attempt in progress, or, if none is, to
the next attempt that starts within a moment.
A new attempt starts when a device asks for discovery again after having gone further (or after a pause); its
own steps never start one, since a device records its trace after the exchanges. With several devices enrolling
at once the anonymous exchanges may land in the wrong attempt: the labelled ones never do.
"""
from __future__ import annotations

import re
import time
from dataclasses import dataclass, field
from urllib.parse import unquote, urlsplit

from lab.protocol import STAGES, WELL_KNOWN_PATH

DEVICE_STAGES = tuple(stage for stage in STAGES if stage not in ("ongoing-authentication", "unenrollment"))
SERVER_STAGES = ("abm-api", "abm-admin")  # the MDM talking to ABM, an admin in ABM's site: not a device's
LANES = ("device", "dns", "org-domain", "abm", "idp", "mdm", "apple-id")
LANE_TITLES = {"device": "Device", "dns": "DNS", "org-domain": "Org domain", "abm": "ABM / ASM", "idp": "IdP",
               "mdm": "MDM", "apple-id": "Apple Account"}
PAUSE = 30.0  # seconds without a word from a device: its next discovery is a new attempt
LOOKBACK = 3.0  # anonymous DNS answers this long before an attempt starts belong to it
SETTLE = 5.0  # an attempt without a reported outcome, idle this long, is judged from what the servers saw
DNS_RCODES = {0: "NOERROR", 1: "FORMERR", 2: "SERVFAIL", 3: "NXDOMAIN", 4: "NOTIMP", 5: "REFUSED"}


@dataclass
class Attempt:
    identifier: str
    events: list[dict] = field(default_factory=list)
    keys: set[str] = field(default_factory=set)
    outcome: str | None = None  # what the device reported
    diagnosis: str | None = None
    explanation: str | None = None
    device: str | None = None

    @property
    def started(self) -> float:
        return self.events[0]["ts"]

    @property
    def last(self) -> float:
        return self.events[-1]["ts"]

    def past_discovery(self) -> bool:
        return any(e["stage"] in DEVICE_STAGES[2:] for e in self.events if e["kind"] != "device")

    def asked(self, event: dict) -> bool:
        return any(e["kind"] == "http" and e["stage"] == "discovery" and (e["host"], e["path"]) ==
                   (event["host"], event["path"]) for e in self.events)

    def enrolled_on_server(self) -> bool:
        return any(e["kind"] == "http" and e["component"] == "mdm" and e["status"] == 200
                   and e.get("outcome") == "enrolled" for e in self.events)


def is_error(event: dict) -> bool:
    if event["kind"] == "dns":
        return event["status"] != 0
    if event["kind"] == "http":
        return event["status"] is not None and event["status"] >= 400 and event["status"] != 401
    if event["kind"] in ("device", "device-outcome"):
        return (event["detail"] or {}).get("verdict") == "fail" or \
            (event["kind"] == "device-outcome" and (event["detail"] or {}).get("outcome") != "enrolled")
    return False


def lane_of(event: dict) -> str:
    return "device" if event["kind"] in ("device", "device-outcome") else event["component"]


def belongs(event: dict) -> bool:
    """Whether an event is part of a device's story at all."""
    if event["kind"] in ("dns", "device", "device-outcome"):
        return True
    return event["kind"] == "http" and event["component"] not in ("console", "lab") \
        and event["stage"] not in SERVER_STAGES


def group(events: list[dict], owners: dict[str, str] | None = None) -> list[Attempt]:
    """Enrollment attempts, oldest first. ``owners`` maps an EnrollmentID to its user (from the MDM's state)."""
    owners = owners or {}
    attempts: list[Attempt] = []
    latest: dict[str, Attempt] = {}  # identity → its latest attempt
    pending: list[dict] = []  # anonymous events waiting for an attempt
    aliases: dict[str, str] = {}  # EnrollmentIDs learned from the timeline itself
    by_enrollment: dict[str, Attempt] = {}  # the attempt that enrolled each EnrollmentID
    current: Attempt | None = None

    def start(identity: str, event: dict) -> Attempt:
        nonlocal current
        attempt = Attempt(identifier=identity)
        attempt.events = [p for p in pending if event["ts"] - p["ts"] <= LOOKBACK]
        pending.clear()
        attempts.append(attempt)
        current = attempt
        return attempt

    for event in events:
        if event["kind"] == "lab":  # lab up, reset, stopped: nothing spans it
            latest.clear()
            pending.clear()
            by_enrollment.clear()
            current = None
            continue
        if not belongs(event):
            continue
        user, enrollment = event.get("user"), event.get("enrollment")
        if user and enrollment:  # the event says whose EnrollmentID this is: no guessing for it from here on
            aliases[enrollment] = user
        key = event["device"] or user or enrollment
        if not key:
            if current is not None and current.outcome is None and not current.enrolled_on_server() \
                    and event["ts"] - current.last <= PAUSE:
                current.events.append(event)
            elif event["kind"] == "dns":
                pending.append(event)
            continue
        identity = user or aliases.get(key) or owners.get(key) or key
        # an unlabelled EnrollmentID (a server that does not set ``user``) joins the attempt in progress
        if identity == key and not user and "@" not in key and key not in latest and event["kind"] == "http" \
                and current is not None and current.outcome is None and current.past_discovery() \
                and event["ts"] - current.last <= PAUSE:
            identity = aliases[key] = current.identifier  # the EnrollmentID the attempt in progress was given
        owner = by_enrollment.get(enrollment or key)
        if owner is not None and event["kind"] == "http" and event["stage"] not in ("identifier", "discovery") \
                and event.get("message_type") != "Authenticate":  # Authenticate begins an enrollment
            # a later exchange of an enrollment (a poll, a command, a renewal) stays with the attempt that made it,
            # whatever the same user's devices began since; the user's latest attempt does not move
            owner.events.append(event)
            current = owner
            continue
        attempt = latest.get(identity)
        if event["kind"] in ("device", "device-outcome"):
            if attempt is None or (attempt.outcome is not None and event["stage"] == "identifier"):
                attempt = start(identity, event)
        elif event["stage"] in ("identifier", "discovery") and (
                attempt is None or attempt.outcome is not None or attempt.past_discovery() or attempt.asked(event)
                or event["ts"] - attempt.last > PAUSE):
            attempt = start(identity, event)
        elif attempt is None:
            attempt = start(identity, event)
        latest[identity] = attempt
        attempt.keys.update(k for k in (key, enrollment) if k)
        if enrollment and event["kind"] == "http" and (event.get("message_type") == "Authenticate"
                                                       or enrollment not in by_enrollment):
            by_enrollment[enrollment] = attempt
        attempt.events.append(event)
        if event["kind"] == "http" or attempt.outcome is None:
            current = attempt
        detail = event["detail"] or {}
        if event["kind"] == "device-outcome":
            attempt.outcome = event.get("outcome") or detail.get("outcome")
            attempt.diagnosis = detail.get("diagnosis")
            attempt.explanation = event["summary"]
        if event["kind"] in ("device", "device-outcome") and detail.get("device"):
            attempt.device = detail["device"]
    for attempt in attempts:
        attempt.events.sort(key=lambda e: e["id"])
    return attempts


def _model_family(attempt: Attempt) -> str | None:
    for e in attempt.events:
        query = (e["detail"] or {}).get("query") or ""
        for pair in query.split("&"):
            name, _, value = pair.partition("=")
            if name == "model-family" and value:
                return value
    return None


def status(attempt: Attempt, now: float) -> str:
    """enrolled, failed, in-progress or incomplete."""
    if attempt.outcome == "enrolled" or (attempt.outcome is None and attempt.enrolled_on_server()):
        return "enrolled"
    if attempt.outcome is not None:
        return "failed"
    if now - attempt.last < SETTLE:
        return "in-progress"
    return "failed" if any(is_error(e) for e in attempt.events) else "incomplete"


def step(event: dict) -> dict:
    """One row of the sequence: who talks to whom, what was asked and answered."""
    lane = lane_of(event)
    detail = event["detail"] or {}
    if event["kind"] == "dns":
        rcode = DNS_RCODES.get(event["status"], "no answer" if event["status"] is None else str(event["status"]))
        label, result = f"{event['method']} {event['host']}", rcode
    elif event["kind"] == "http":
        query = detail.get("query")
        label = f"{event['method']} {event['host']}{event['path']}" + (f"?{query}" if query else "") + \
            (f" {event['message_type']}" if event.get("message_type") else "")
        result = str(event["status"])
    else:
        label, result = event["summary"], detail.get("verdict") or detail.get("outcome") or ""
    if is_error(event):
        tone = "bad"
    elif event["kind"] == "http" and event["status"] == 401:
        tone = "challenge"
    elif event["kind"] == "http" and 300 <= (event["status"] or 0) < 400:
        tone = "redirect"
    elif detail.get("verdict") == "warn":
        tone = "warn"
    else:
        tone = "good"
    return {"event": event["id"], "ts": event["ts"], "lane": lane, "kind": event["kind"], "stage": event["stage"],
            "label": label, "result": result, "summary": event["summary"], "tone": tone,
            "verdict": detail.get("verdict") if lane == "device" else None,
            "explanation": detail.get("explanation") if lane == "device" else None}


ACTION = re.compile(r"^(GET|POST|PUT|DELETE|PATCH|HEAD) (https?://\S+)(?:.*? → (\d{3})\b.*)?$")


def _request_of(event: dict) -> tuple | None:
    """(method, host, path, status or None) of a device step that made a request, from its action text."""
    action = (event["summary"] or "").split(": ", 1)[-1]
    match = ACTION.match(action)
    if match is None:
        return None
    url = urlsplit(match.group(2))
    return (match.group(1), (url.hostname or "").lower(), unquote(url.path) or "/",
            int(match.group(3)) if match.group(3) else None)


def _merge(server: dict, device: dict) -> dict:
    detail = device["detail"] or {}
    merged = {**server, "verdict": detail.get("verdict"), "code": detail.get("code"),
              "explanation": detail.get("explanation"), "device_event": device["id"]}
    if detail.get("verdict") == "fail":
        merged["tone"] = "bad"
    elif detail.get("verdict") == "warn" and merged["tone"] == "good":
        merged["tone"] = "warn"
    return merged


def sequence(events: list[dict]) -> list[dict]:
    """The attempt's steps in the order they happened to the device.

    The device records its trace after the exchanges, so its steps are woven back in: a step that made a request
    joins the server's record of that exchange (its verdict colours the arrow: a 200 the device refused is red),
    the others (parse the challenge, verify the profile) follow the exchange before them.
    """
    server = [e for e in events if e["kind"] not in ("device", "device-outcome")]
    steps = [step(e) for e in server]
    after: dict[int, list[dict]] = {}
    position = -1
    for event in (e for e in events if e["kind"] in ("device", "device-outcome")):
        wanted = _request_of(event) if event["kind"] == "device" else None
        found = None
        if wanted is not None:
            method, host, path, status = wanted
            found = next((i for i in range(position + 1, len(server)) if server[i]["kind"] == "http"
                          and (server[i]["method"], server[i]["host"], unquote(server[i]["path"] or "")) ==
                          (method, host, path) and status in (None, server[i]["status"])), None)
        if found is not None:
            steps[found] = _merge(steps[found], event)
            position = found
        else:
            if event["kind"] == "device" and wanted is None and position >= 0 and \
                    (event["detail"] or {}).get("verdict") == "fail" and steps[position]["kind"] == "http":
                # the device refused what this exchange answered (a profile, a challenge): the answer was bad,
                # whatever the server's status said
                steps[position] = {**_merge(steps[position], event), "refused": True,
                                   "result": f"{steps[position]['result']} · refused"}
            after.setdefault(position, []).append(step(event))
    ordered = after.get(-1, [])
    for i, item in enumerate(steps):
        ordered.append(item)
        ordered.extend(after.get(i, []))
    return ordered


def enrollments(events: list[dict], owners: dict[str, str] | None = None, *, now: float | None = None,
                limit: int = 20) -> list[dict]:
    """The newest ``limit`` attempts, newest first, ready to render or to serve as JSON."""
    now = time.time() if now is None else now
    out = []
    for attempt in reversed(group(events, owners)[-limit:]):
        steps = sequence(attempt.events)
        lanes = [lane for lane in LANES if lane in {"device", *(s["lane"] for s in steps)}]
        lanes += sorted({s["lane"] for s in steps} - set(lanes))
        out.append({
            "identifier": attempt.identifier,
            "enrollment_ids": sorted(attempt.keys - {attempt.identifier}),
            "device": attempt.device or _model_family(attempt),
            "status": status(attempt, now),
            "path": "abm" if any(e["kind"] == "http" and e["component"] == "abm" and e["path"] == WELL_KNOWN_PATH
                                 for e in attempt.events) else "direct",
            "diagnosis": attempt.diagnosis,
            "explanation": attempt.explanation,
            "started": attempt.started,
            "elapsed_ms": round((attempt.last - attempt.started) * 1000, 1),
            "first_event": attempt.events[0]["id"],
            "last_event": attempt.events[-1]["id"],
            "lanes": lanes,
            "steps": steps,
        })
    return out


def newest(log, count: int, **filters) -> list[dict]:
    """The ``count`` newest events matching ``filters``, oldest first (one bounded, indexed query)."""
    return log.query(limit=count, newest=True, **filters) if count > 0 else []
