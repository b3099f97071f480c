"""HTTP handlers of the org domain: parse, ask the state, render."""
from flask import Blueprint, Response, current_app, request

from lab.dispatch import host_of
from lab.flaskapp import label
from mocks.org_domain.state import WELL_KNOWN_PATH

bp = Blueprint("org_domain", __name__)


@bp.get(WELL_KNOWN_PATH)
def well_known():
    identifier = request.args.get("user-identifier")
    label(stage="discovery", device=identifier)
    answer = current_app.config["STATE"].well_known(host_of(request.environ), identifier,
                                                   request.args.get("model-family"))
    label(summary=f"well-known {answer.status}: {answer.summary}")
    return Response(answer.body, status=answer.status, content_type=answer.content_type)
