"""Grading a training exercise: the lab judges an attempt from its own timeline and records it for the instructor."""
from __future__ import annotations

from flask import Blueprint, jsonify

from lab import exercises
from lab.console.common import MAX_ID, json_body
from lab.console.common import lab as _lab
from lab.flaskapp import LabError

bp = Blueprint("exercise_api", __name__)


@bp.post("/api/exercise/attempts")
def attempt():
    body = json_body()
    after, os_version = body.get("after"), body.get("os_version")
    if set(body) - {"after", "os_version"} or not isinstance(after, int) or isinstance(after, bool) \
            or not 0 <= after <= MAX_ID or not (os_version is None or isinstance(os_version, str)):
        raise LabError(f"expected {{\"after\": event id}}, the newest event before the attempt (0 to {MAX_ID}), "
                       "and optional os_version (string)", code="bad-attempt")
    try:
        return jsonify(exercises.attempt(_lab(), after, os_version)), 201
    except exercises.ExerciseError as exc:
        raise LabError(str(exc), code="no-exercise", status=409) from None
