"""The MDM's Flask app, and the organization's identity provider (idp.<domain>) for federated sign-in."""
from flask import jsonify

from lab import flaskapp
from mocks.mdm.errors import AppleError
from mocks.mdm.routes import (
    ADDE_ENROLL_PATH,
    AUTH_PATH,
    AUTHORIZE_PATH,
    CHECKIN_PATH,
    DISCOVERY_PATH,
    ENROLL_PATH,
    ESSO_PATH,
    FEDERATED_CALLBACK_PATH,
    SERVER_PATH,
    TOKEN_PATH,
    bp,
)
from mocks.mdm.state import MDMState


def urls(origin: str) -> dict[str, str]:
    """The MDM's public URLs under ``origin`` (scheme, host and, when not 443, port)."""
    return {"base_url": origin + ENROLL_PATH, "adde_base_url": origin + ADDE_ENROLL_PATH,
            "auth_url": origin + AUTH_PATH, "checkin_url": origin + CHECKIN_PATH, "server_url": origin + SERVER_PATH,
            "discovery_url": origin + DISCOVERY_PATH, "authorize_url": origin + AUTHORIZE_PATH,
            "token_url": origin + TOKEN_PATH, "federated_callback_url": origin + FEDERATED_CALLBACK_PATH,
            "esso_url": origin + ESSO_PATH}


def create_app(state: MDMState):
    app = flaskapp.create_app(__name__, "mdm")
    app.config["STATE"] = state
    app.register_blueprint(bp)

    @app.errorhandler(AppleError)
    def _apple_error(exc: AppleError):
        """Apple's error body, e.g. {"code": "com.apple.unrecognized.device", "description": ...}."""
        flaskapp.label(summary=f"403 {exc.code}: {exc.message}")
        body = {"code": exc.code, "description": exc.message}
        if exc.user_message:
            body["message"] = exc.user_message
        response = jsonify(body)
        response.status_code = exc.status
        return response

    return app
