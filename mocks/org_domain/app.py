"""The org domain's Flask app."""
from lab import flaskapp
from mocks.org_domain.routes import bp
from mocks.org_domain.state import OrgDomainState


def create_app(state: OrgDomainState):
    app = flaskapp.create_app(__name__, "org-domain")
    app.config["STATE"] = state
    app.register_blueprint(bp)
    return app
