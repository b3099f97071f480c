"""The ABM mock's three Flask apps, one per host: device-facing fallback, Device Assignment API, admin site.

The admin site is an admin surface like the console: behind the lab's admin gate (the admin token beyond loopback,
changes only from its own pages with their CSRF token, never framed).
"""
from collections.abc import Callable

from flask import Flask, Response, render_template

from lab import flaskapp
from lab.admin_gate import AdminGate
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


ADMIN_CSP = ("default-src 'none'; style-src 'unsafe-inline'; form-action 'self'; frame-ancestors 'none'; "
             "base-uri 'none'")  # the pages carry their own style and no script


def _admin_policy(response):
    if response.mimetype == "text/html":
        response.headers["Content-Security-Policy"] = ADMIN_CSP
        # no-referrer would make the browser send "Origin: null" with the page's own forms, which the gate refuses
        response.headers["Referrer-Policy"] = "same-origin"
    return response


def create_apps(state: ABMState, admin_token: Callable[[], str | None] = lambda: None) -> dict[str, Flask]:
    """``admin_token()`` is the lab's admin token now (None on loopback: anyone on the machine may)."""
    apps = {"fallback": _app(state, "fallback", fallback), "api": _app(state, "api", api),
            "admin": _app(state, "admin", admin)}
    apps["api"].register_error_handler(APIError, _plain_error)
    apps["admin"].register_error_handler(LabError, _error_page)
    AdminGate(admin_token, title="Apple Business Manager (lab)").install(apps["admin"])
    apps["admin"].after_request(_admin_policy)  # runs before the gate's, which keeps what is set
    return apps
