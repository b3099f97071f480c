"""The ABM mock's three Flask apps, one per host: device-facing fallback, Device Assignment API, admin site."""
from flask import Flask, Response, render_template

from lab import flaskapp
from lab.flaskapp import LabError, label
from mocks.abm.errors import APIError
from mocks.abm.routes import admin, api, fallback
from mocks.abm.state import ABMState


def _app(state: ABMState, role: str, blueprint) -> Flask:
    app = flaskapp.create_app(__name__, f"abm-{role}")
    app.config["STATE"] = state
    app.register_blueprint(blueprint)
    return app


def _plain_error(exc: APIError):
    """Apple's API answers errors with the bare code as the body (PROTOCOL.md 1.8, lab choice)."""
    label(summary=f"{exc.status} {exc.code}: {exc.message}")
    return Response(exc.code, status=exc.status, content_type="text/plain; charset=utf-8")


def _error_page(exc: LabError):
    """The admin is a person with a browser: a page saying what was wrong, with the reason code."""
    label(summary=f"{exc.status} {exc.code}: {exc.message}")
    html = render_template("error.html", status=exc.status, reason=exc.code, message=exc.message)
    return Response(html, status=exc.status, content_type="text/html; charset=utf-8")


def create_apps(state: ABMState) -> dict[str, Flask]:
    apps = {"fallback": _app(state, "fallback", fallback), "api": _app(state, "api", api),
            "admin": _app(state, "admin", admin)}
    apps["api"].register_error_handler(APIError, _plain_error)
    apps["admin"].register_error_handler(LabError, _error_page)
    return apps
