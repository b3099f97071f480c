"""The console's Flask app (console.<zone>, also localhost): the control API and the dashboard.

The parts live in their own modules: ``api`` (health, events, enrollments, state, faults, DNS, reset, CA),
``sse`` (the live event stream), ``openapi`` (the API's document), ``dashboard`` (the page and its fragments),
``auth`` (the admin token beyond loopback), ``mdm`` (MDM controls and device traces). ``bp`` below carries
the shared templates.
"""
from __future__ import annotations

from flask import Blueprint

from lab import flaskapp
from lab.console import api, auth, dashboard, devices, mdm, openapi, sse
from lab.console.common import lab as _lab

bp = Blueprint("console", __name__, template_folder="templates")

CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")


def _security_headers(response):
    response.headers.setdefault("X-Content-Type-Options", "nosniff")
    response.headers.setdefault("Referrer-Policy", "no-referrer")
    if response.mimetype == "text/html":
        response.headers.setdefault("Content-Security-Policy", CSP)
        response.headers.setdefault("Cache-Control", "no-store")
    return response


def create_app(lab):
    app = flaskapp.create_app(__name__, "console")
    app.config["LAB"] = lab
    lab.views["devices"] = lambda: devices.listing(lab)
    app.before_request(lambda: auth.require_admin_token(_lab().admin_token))
    app.after_request(_security_headers)
    for blueprint in (api.bp, sse.bp, openapi.bp, mdm.bp, dashboard.bp, bp):
        app.register_blueprint(blueprint)
    return app
