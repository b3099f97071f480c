"""The live timeline as server-sent events: GET /api/events/stream.

Each event is one SSE message whose ``id`` is the event's id and whose ``data`` is the event as JSON (the same
object as /api/events returns). A client resumes with ``Last-Event-ID`` (browsers send it when they reconnect) or
``?after=N``; without either the stream starts from now. Every stream reads the timeline's shared live feed
(``EventLog.follow``: one read of each event however many streams are open, each event's JSON made once). A stream
holds a thread of the listener's own (capped there, never one of its workers); it ends within DEPARTURE_CHECK
seconds of its client leaving (the listener tells it), sends a comment after HEARTBEAT quiet seconds, and ends
after LIFETIME seconds (or when the lab stops), which an EventSource answers by reconnecting where it left off.
"""
from __future__ import annotations

import sqlite3
import threading
import time

from flask import Blueprint, Response, current_app, request

from lab.console.common import event_filters, int_arg
from lab.console.common import lab as _lab
from lab.flaskapp import LabError
from lab.server import DEPARTED_KEY

bp = Blueprint("sse", __name__)

HEARTBEAT = 15.0  # seconds between keep-alive comments
LIFETIME = 300.0  # seconds before the server ends a stream; the client reconnects
RETRY_MS = 2000  # how long an EventSource waits before it reconnects
PACE = 0.1  # seconds at least between a stream's writes: a busy lab wakes each stream ten times a second at most
DEPARTURE_CHECK = 1.0  # seconds at most before a stream notices that its client left


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
    departed = request.environ.get(DEPARTED_KEY) or threading.Event()

    def generate():
        cursor = after
        deadline = time.monotonic() + lifetime
        quiet_since = time.monotonic()
        yield f"retry: {RETRY_MS}\n: mdmlab events after {cursor}\n\n"
        try:
            with log.following():
                while not departed.is_set():
                    now = time.monotonic()
                    if now >= deadline:
                        yield ": the stream ends here; reconnect with Last-Event-ID\n\n"
                        return
                    if now - quiet_since >= heartbeat:
                        yield ": keep-alive\n\n"
                        quiet_since = now
                    batch = log.follow(cursor, min(DEPARTURE_CHECK, heartbeat, deadline - now))
                    if batch is None:
                        return
                    out, stopped = [], False
                    for event, data in batch:
                        cursor = event["id"]
                        if _matches(event, filters):
                            out.append(f"id: {cursor}\ndata: {data}\n\n")
                        if _lab_stopped(event):
                            stopped = True
                            break
                    if out:  # one write for the batch: a TLS record and a wake-up, not one per event
                        yield "".join(out)
                        quiet_since = time.monotonic()
                    if stopped:
                        return
                    departed.wait(PACE)  # what comes meanwhile goes in the next write
        except sqlite3.ProgrammingError:  # the lab stopped and closed its timeline
            return

    return Response(generate(), content_type="text/event-stream; charset=utf-8",
                    headers={"Cache-Control": "no-store", "X-Accel-Buffering": "no"})
