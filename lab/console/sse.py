"""The live timeline as server-sent events: GET /api/events/stream.

Each event is one SSE message whose ``id`` is the event's id and whose ``data`` is the event as JSON (the same
object as /api/events returns). A client resumes with ``Last-Event-ID`` (browsers send it when they reconnect) or
``?after=N``; without either the stream starts from now. The stream holds one of the listener's worker threads,
so it is bounded: a comment every HEARTBEAT seconds finds clients that went away, and the stream ends after
LIFETIME seconds (or when the lab stops), which an EventSource answers by reconnecting where it left off.
"""
from __future__ import annotations

import json
import sqlite3
import time

from flask import Blueprint, Response, current_app, request

from lab.console.common import event_filters, int_arg
from lab.console.common import lab as _lab
from lab.flaskapp import LabError

bp = Blueprint("sse", __name__)

HEARTBEAT = 15.0  # seconds between keep-alive comments
LIFETIME = 300.0  # seconds before the server ends a stream; the client reconnects
RETRY_MS = 2000  # how long an EventSource waits before it reconnects
BATCH = 200


def message(event: dict) -> str:
    return f"id: {event['id']}\ndata: {json.dumps(event, separators=(',', ':'))}\n\n"


def _matches(event: dict, filters: dict) -> bool:
    return all(str(event.get(key)) == value for key, value in filters.items())


def _lab_stopped(event: dict) -> bool:
    return event["kind"] == "lab" and event.get("outcome") == "lab-stopped"


def _start_after(log) -> int:
    header = request.headers.get("Last-Event-ID", "").strip()
    if header:
        if not header.isascii() or not header.isdigit():
            raise LabError("Last-Event-ID must be an event id", code="bad-parameter")
        return int(header)
    after = int_arg("after", None)
    return log.last_id() if after is None else after


@bp.get("/api/events/stream")
def stream():
    log = _lab().events
    after = _start_after(log)
    filters = event_filters()
    config = current_app.config
    heartbeat = float(config.get("SSE_HEARTBEAT", HEARTBEAT))
    lifetime = float(config.get("SSE_LIFETIME", LIFETIME))

    def generate():
        cursor = after
        started = time.monotonic()
        deadline = started + lifetime
        yield f"retry: {RETRY_MS}\n: mdmlab events after {cursor}\n\n"
        try:
            while True:
                batch = log.query(after=cursor, limit=BATCH)  # unfiltered: the cursor passes every event
                for event in batch:
                    cursor = event["id"]
                    if _matches(event, filters):
                        yield message(event)
                    if _lab_stopped(event):
                        return
                if len(batch) == BATCH:
                    continue
                now = time.monotonic()
                if now >= deadline:
                    yield ": the stream ends here; reconnect with Last-Event-ID\n\n"
                    return
                if not log.wait(cursor, min(heartbeat, deadline - now)):
                    yield ": keep-alive\n\n"
        except sqlite3.ProgrammingError:  # the lab stopped and closed its timeline
            return

    return Response(generate(), content_type="text/event-stream; charset=utf-8",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
