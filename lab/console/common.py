"""What the console's modules share: the lab of this app, query-parameter and JSON-body parsing."""
from __future__ import annotations

from flask import current_app, request

from lab.flaskapp import LabError


def lab():
    return current_app.config["LAB"]


def concealed(lab) -> bool:
    """An exercise: nothing the trainee sees may name the scenario or the fault they have to find."""
    return bool(getattr(lab, "exercise", None) or getattr(lab, "conceal_faults", False))


def described(lab) -> dict:
    """``lab.describe()`` as the console shows it: in an exercise the scenario's name gives way to a neutral one."""
    description = lab.describe()
    if concealed(lab):
        description["scenario"] = getattr(lab, "title", None) or "exercise"
    return description


MAX_ID = 2**53  # beyond any event id, and within SQLite's integers and JSON's exact ones


def int_arg(name: str, default: int | None, *, minimum: int = 0, maximum: int = MAX_ID) -> int | None:
    raw = request.args.get(name)
    if raw is None:
        return default
    if not raw.isascii() or not raw.isdigit() or len(raw) > 16:
        raise LabError(f"query parameter {name} must be an integer between {minimum} and {maximum}",
                       code="bad-parameter")
    value = int(raw)
    if not minimum <= value <= maximum:
        raise LabError(f"query parameter {name} must be an integer between {minimum} and {maximum}",
                       code="bad-parameter")
    return value


def json_body() -> dict:
    body = request.get_json(silent=True)
    if not isinstance(body, dict):
        raise LabError("the request body must be a JSON object (Content-Type: application/json)", code="bad-json")
    return body


EVENT_FILTERS = ("host", "device", "component", "kind", "stage", "enrollment", "user", "message_type", "outcome")


def event_filters() -> dict:
    """The timeline's equality filters from the query string (one per column of EVENT_FILTERS)."""
    return {key: request.args[key] for key in EVENT_FILTERS if request.args.get(key) is not None}
