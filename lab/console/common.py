"""What the console's modules share: the lab of this app, query-parameter and JSON-body parsing."""
from __future__ import annotations

import json
import re

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


def events_for(lab, events: list[dict]) -> list[dict]:
    """Timeline events as the console shows them: in an exercise, a device's events carry no diagnosis code."""
    if not concealed(lab):
        return events
    return [{**e, "detail": {**e["detail"], **{k: None for k in ("code", "diagnosis") if k in e["detail"]}}}
            if e.get("component") == "device" and isinstance(e.get("detail"), dict) else e for e in events]


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


MAX_JSON_DEPTH = 32  # the control API's bodies are two or three levels deep
_SURROGATE = re.compile(r"[\ud800-\udfff]")  # a lone one cannot be stored or answered as UTF-8
def _nesting(text: str) -> int:
    """How deep the brackets of a JSON text go (strings skipped), without recursing."""
    depth = deepest = 0
    in_string = escaped = False
    for char in text:
        if in_string:
            if escaped:
                escaped = False
            elif char == "\\":
                escaped = True
            elif char == '"':
                in_string = False
        elif char == '"':
            in_string = True
        elif char in "[{":
            depth += 1
            deepest = max(deepest, depth)
        elif char in "]}":
            depth -= 1
    return deepest


def _bad_value(value, where: str = "body") -> str | None:
    if isinstance(value, dict):
        return next((bad for k, v in value.items() for bad in (_bad_value(k, f"{where} key"),
                                                                 _bad_value(v, f"{where}.{k}")) if bad), None)
    if isinstance(value, list):
        return next((bad for i, v in enumerate(value) if (bad := _bad_value(v, f"{where}[{i}]"))), None)
    if isinstance(value, str) and _SURROGATE.search(value):
        return f"{where} holds a lone surrogate, which is no character"
    return None


def _refuse_constant(name: str):
    raise ValueError(f"{name} is not a JSON number")


def json_body() -> dict:
    """The request's JSON object; anything else (deep nesting, NaN or Infinity, lone surrogates) is a 400."""
    if not request.is_json:
        raise LabError("the request body must be a JSON object (Content-Type: application/json)", code="bad-json")
    try:
        text = request.get_data(as_text=False).decode("utf-8")
        if _nesting(text) > MAX_JSON_DEPTH:
            raise LabError(f"the JSON body nests deeper than {MAX_JSON_DEPTH} levels", code="bad-json")
        body = json.loads(text, parse_constant=_refuse_constant)
    except (ValueError, RecursionError) as exc:  # UnicodeDecodeError and JSONDecodeError are ValueErrors
        raise LabError(f"the request body is not valid JSON: {exc}", code="bad-json") from None
    if not isinstance(body, dict):
        raise LabError("the request body must be a JSON object (Content-Type: application/json)", code="bad-json")
    bad = _bad_value(body)
    if bad:
        raise LabError(f"{bad}; the lab refuses it", code="bad-json-value")
    return body


EVENT_FILTERS = ("host", "device", "component", "kind", "stage", "enrollment", "user", "message_type", "outcome")


def event_filters() -> dict:
    """The timeline's equality filters from the query string (one per column of EVENT_FILTERS)."""
    return {key: request.args[key] for key in EVENT_FILTERS if request.args.get(key) is not None}
