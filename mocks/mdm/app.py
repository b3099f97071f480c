"""The MDM's Flask app."""
from lab import flaskapp
from mocks.mdm.routes import ADDE_ENROLL_PATH, AUTH_PATH, CHECKIN_PATH, DISCOVERY_PATH, ENROLL_PATH, SERVER_PATH, bp
from mocks.mdm.state import MDMState


def urls(origin: str) -> dict[str, str]:
    """The MDM's public URLs under ``origin`` (scheme, host and, when not 443, port)."""
    return {"base_url": origin + ENROLL_PATH, "adde_base_url": origin + ADDE_ENROLL_PATH,
            "auth_url": origin + AUTH_PATH, "checkin_url": origin + CHECKIN_PATH, "server_url": origin + SERVER_PATH,
            "discovery_url": origin + DISCOVERY_PATH}


def create_app(state: MDMState):
    app = flaskapp.create_app(__name__, "mdm")
    app.config["STATE"] = state
    app.register_blueprint(bp)
    return app
