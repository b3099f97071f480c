"""What every mock's Flask app shares: typed errors rendered as JSON, clear 404/405, timeline labels."""
from __future__ import annotations

from flask import Flask, jsonify, request
from werkzeug.exceptions import HTTPException

from lab.dispatch import DETAIL_KEY, DEVICE_KEY, FIELD_KEYS, STAGE_KEY, SUMMARY_KEY


class LabError(Exception):
    """An error a handler raises; rendered as ``{"error": code, "message": ...}`` with its status."""

    status = 400
    code = "bad-request"

    def __init__(self, message: str, *, code: str | None = None, status: int | None = None,
                 headers: dict | None = None, **fields):
        super().__init__(message)
        self.message = message
        self.code = code or self.code
        self.status = status or self.status
        self.headers = headers or {}
        self.fields = fields


def label(stage: str | None = None, device: str | None = None, summary: str | None = None, *,
          enrollment: str | None = None, user: str | None = None, message_type: str | None = None,
          outcome: str | None = None, detail: dict | None = None) -> None:
    """Name the stage, device and a one-line summary of this exchange in the event timeline, and the facts the
    console judges by: the EnrollmentID and account it belongs to, its MessageType/RequestType, its outcome."""
    for key, value in ((STAGE_KEY, stage), (DEVICE_KEY, device), (SUMMARY_KEY, summary),
                       (FIELD_KEYS["enrollment"], enrollment), (FIELD_KEYS["user"], user),
                       (FIELD_KEYS["message_type"], message_type), (FIELD_KEYS["outcome"], outcome)):
        if value is not None:
            request.environ[key] = value
    if detail:
        request.environ.setdefault(DETAIL_KEY, {}).update(detail)


def create_app(import_name: str, component: str) -> Flask:
    app = Flask(import_name)
    app.config["MDMLAB_COMPONENT"] = component

    @app.after_request
    def _never_framed(response):
        # no page of the lab (a sign-in form, an admin site) may be framed by another site's page (clickjacking)
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", "frame-ancestors 'none'")
            response.headers.setdefault("X-Frame-Options", "DENY")
        return response

    @app.errorhandler(LabError)
    def _lab_error(exc: LabError):
        label(summary=f"{exc.status} {exc.code}: {exc.message}")
        response = jsonify({"error": exc.code, "message": exc.message, **exc.fields})
        response.status_code = exc.status
        response.headers.update(exc.headers)
        return response

    @app.errorhandler(HTTPException)
    def _http_error(exc: HTTPException):
        code = (exc.name or "error").lower().replace(" ", "-")
        message = exc.description or exc.name
        if exc.code == 404:
            message = f"{component} has nothing at {request.path}"
        elif exc.code == 405:
            message = f"{request.method} is not allowed on {request.path}"
        response = jsonify({"error": code, "message": message})
        response.status_code = exc.code or 500
        valid_methods = getattr(exc, "valid_methods", None)  # a MethodNotAllowed's
        if exc.code == 405 and valid_methods:
            response.headers["Allow"] = ", ".join(valid_methods)
        return response

    @app.errorhandler(Exception)
    def _unexpected(exc: Exception):
        app.logger.exception("unhandled error in %s", component)
        response = jsonify({"error": "internal-error", "message": f"{component} failed: {exc.__class__.__name__}"})
        response.status_code = 500
        return response

    return app
