"""The console's Flask app (console.<zone>, also localhost): the control API and the dashboard.

The parts live in their own modules: ``api`` (health, events, enrollments, state, faults, DNS, reset, CA),
``sse`` (the live event stream), ``openapi`` (the API's document), ``dashboard`` (the page and its fragments),
``auth`` (the admin gate: token beyond loopback, origins, CSRF), ``mdm`` (MDM controls and device traces).
``bp`` below carries the shared templates.
"""
from __future__ import annotations

from flask import Blueprint

from lab import flaskapp
from lab.console import api, auth, dashboard, devices, exercise, mdm, openapi, sse

bp = Blueprint("console", __name__, template_folder="templates")


def create_app(lab):
    app = flaskapp.create_app(__name__, "console")
    app.config["LAB"] = lab
    lab.views["devices"] = lambda: devices.listing(lab)
    auth.gate(lab).install(app)
    for blueprint in (api.bp, sse.bp, openapi.bp, mdm.bp, exercise.bp, dashboard.bp, bp):
        app.register_blueprint(blueprint)
    return app
