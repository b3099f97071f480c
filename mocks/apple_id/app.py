"""The identity service's Flask app."""
from lab import flaskapp
from mocks.apple_id.routes import bp
from mocks.apple_id.state import AppleIDState


def create_app(state: AppleIDState):
    app = flaskapp.create_app(__name__, "apple-id")
    app.config["STATE"] = state
    app.register_blueprint(bp)
    return app
