"""The dashboard: one server-rendered page, and the same sections as fragments that its script swaps in live.

Every section is rendered here, from the same data the API serves; the page's JavaScript only listens to the
event stream, fetches the fragments that changed, and calls the API for toggles and reset.
"""
from __future__ import annotations

import datetime as dt
import re
from urllib.parse import parse_qsl

from flask import Blueprint, abort, render_template, request
from markupsafe import Markup, escape

from lab import config
from lab.console import timeline
from lab.console.api import recent_enrollments
from lab.console.common import concealed, described
from lab.console.common import lab as _lab

bp = Blueprint("dashboard", __name__)

SECTIONS = ("timeline", "faults", "abm", "mdm", "devices", "dns", "events")
EVENT_ROWS = 100


def clock(ts) -> str:
    if not isinstance(ts, (int, float)):
        return "" if ts is None else str(ts)
    return dt.datetime.fromtimestamp(ts).strftime("%H:%M:%S.%f")[:-3]


def when(ts) -> str:
    """A moment as local, readable time: from epoch seconds or an ISO 8601 string (ABM's are UTC, ``…Z``)."""
    if isinstance(ts, str):
        try:
            moment = dt.datetime.fromisoformat(ts)
        except ValueError:
            return ts
        if moment.tzinfo is not None:
            moment = moment.astimezone()
        return moment.strftime("%Y-%m-%d %H:%M:%S")
    if not isinstance(ts, (int, float)) or isinstance(ts, bool):
        return "" if ts is None else str(ts)
    return dt.datetime.fromtimestamp(ts).strftime("%Y-%m-%d %H:%M:%S")


def _faults(lab) -> dict:
    board = lab.faults
    armed: dict[str, list[dict]] = {}
    for a in board.armed():
        armed.setdefault(a["name"], []).append(a)
    groups: dict[str, list[dict]] = {}
    for spec in board.listing():
        groups.setdefault(spec["component"], []).append(spec)
    return {"groups": groups, "armed": armed,
            "hosts": {c: sorted(h) for c, h in board.hosts.items()},
            "default_hosts": {c: board.default_hosts.get(c, board.default_host) for c in groups}}


def _mdm_view(mdm: dict | None) -> dict | None:
    """The MDM's state as the panel shows it: refresh tokens are an OAuth 2 matter, apple-as-web has none."""
    if mdm is None:
        return None
    auth = mdm.get("auth")
    if isinstance(auth, dict) and auth.get("method") != "apple-oauth2" and "refresh_tokens" in auth:
        auth = {k: v for k, v in auth.items() if k != "refresh_tokens"}
        auth["refresh_tokens"] = f"none: {auth.get('method')} signs in again when its token expires"
        mdm = {**mdm, "auth": auth}
    return mdm


def context(lab, names=SECTIONS) -> dict:
    """What the sections named need, computed once."""
    ctx: dict = {"lab": described(lab), "lane_titles": timeline.LANE_TITLES, "last_event_id": lab.events.last_id(),
                 "state_dir_flag": config.state_dir_flag(lab.state_dir)}
    if {"abm", "mdm", "devices"} & set(names):
        snapshot = lab.snapshot()
        ctx.update(abm=snapshot.get("abm"), mdm=_mdm_view(snapshot.get("mdm")), devices=snapshot.get("devices"),
                   others={k: v for k, v in snapshot.items()
                           if k not in ("abm", "mdm", "devices", "org_domain", "faults")},
                   org_domain=snapshot.get("org_domain"))
    if "timeline" in names:
        ctx["enrollments"] = recent_enrollments(lab)
    if "faults" in names:
        ctx["faults"] = _faults(lab)
    if "dns" in names:
        ctx["records"] = lab.dns.resolver.listing()
    if "events" in names:
        ctx["events"] = list(reversed(timeline.newest(lab.events, EVENT_ROWS)))
    return ctx


@bp.get("/")
def index():
    return render_template("index.html", sections=SECTIONS, **context(_lab()))


@bp.get("/fragments/<name>")
def fragment(name: str):
    if name not in SECTIONS:
        abort(404)
    return render_template(f"sections/{name}.html", **context(_lab(), (name,)))


def _event(event_id: int) -> dict | None:
    found = _lab().events.query(after=event_id - 1, limit=1) if 0 < event_id < 2**53 else []
    return found[0] if found and found[0]["id"] == event_id else None


@bp.get("/fragments/event/<int:event_id>")
def event_detail(event_id: int):
    """One step: the server's record of the exchange and, with ``device``, the device's verdict on it."""
    found = _event(event_id)
    if found is None:
        abort(404)
    device_id = request.args.get("device", "")
    device = _event(int(device_id)) if device_id.isascii() and device_id.isdigit() and len(device_id) < 16 else None
    return render_template("event_detail.html", e=found, device=device if device and device["kind"] == "device"
                           else None, conceal=concealed(_lab()))


TIME_KEYS = frozenset({"ts", "created", "updated", "expires", "last_seen", "started", "checked", "issued",
                       "acknowledged", "queued", "completed"})


@bp.app_template_filter("is_time_key")
def _is_time_key(key) -> bool:
    key = str(key)
    return key in TIME_KEYS or key.endswith(("_at", "_ts", "_time", "timestamp", "expiry", "expires", "_seen",
                                            "_checked", "_updated"))


@bp.app_template_filter("columns")
def _columns(rows) -> list:
    """The keys of a list of mappings, in first-seen order."""
    cols: list = []
    for row in rows:
        for key in row:
            if key not in cols:
                cols.append(key)
    return cols


@bp.app_template_filter("readable")
def _readable(body, headers) -> str:
    """A form body as the user typed it (its redacted values stay redacted), anything else as stored."""
    content_type = next((v for k, v in (headers or {}).items() if k.lower() == "content-type"), "")
    if body and content_type.split(";")[0].strip().lower() == "application/x-www-form-urlencoded":
        return "&".join(f"{k}={v}" for k, v in parse_qsl(body, keep_blank_values=True))
    return body


CAMEL_KEY = re.compile(r"\b[A-Z][a-z0-9]+(?:[A-Z][A-Za-z0-9]*)+\b")  # AssignedManagedAppleID, AccessRights


@bp.app_template_filter("refused_keys")
def _refused_keys(body, device) -> Markup:
    """A plist body with the keys the device's refusal names marked; keys it names that are absent, said so."""
    body = str(body or "")
    detail = (device or {}).get("detail") or {}
    if detail.get("verdict") != "fail":
        return escape(body)
    named = detail.get("keys") or CAMEL_KEY.findall(str(detail.get("explanation") or ""))
    html = str(escape(body))
    missing = []
    for key in dict.fromkeys(named):
        tag = str(escape(f"<key>{key}</key>"))
        if tag in html:
            html = html.replace(tag, f'<mark class="refused-key" title="the device refused this">{tag}</mark>')
        elif "&lt;plist" in html:
            missing.append(key)
    if missing:
        html = f'<span class="missing-key">missing, the device wanted it: {escape(", ".join(missing))}</span>\n' \
            + html
    return Markup(html)


@bp.app_template_filter("status_text")
def _status_text(event) -> str:
    """An HTTP status as a number, a DNS answer by its rcode's name (NOERROR, NXDOMAIN), none as nothing."""
    status = event.get("status")
    if event.get("kind") == "dns":
        return timeline.DNS_RCODES.get(status, "no answer" if status is None else str(status))
    return "" if status is None else str(status)


@bp.app_template_filter("clock")
def _clock_filter(ts):
    return clock(ts)


@bp.app_template_filter("when")
def _when_filter(ts):
    return when(ts)
