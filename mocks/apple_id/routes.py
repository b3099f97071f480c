"""HTTP handlers of Apple's identity service: parse, ask the state, render."""
from flask import Blueprint, current_app, jsonify, request

from lab.dispatch import host_of
from lab.flaskapp import label
from mocks.apple_id.errors import BadSignInRequest
from mocks.apple_id.state import FEDERATED_CALLBACK_PATH, SIGN_IN_PATH, Answer

bp = Blueprint("apple_id", __name__)


@bp.post(SIGN_IN_PATH)
def sign_in():
    body = request.get_json(silent=True)
    account = body.get("account") if isinstance(body, dict) and isinstance(body.get("account"), str) else None
    account = account[:320] if account else None
    label(stage="enrollment", device=account, user=account)
    if body is None:
        raise BadSignInRequest("the sign-in request must be JSON (Content-Type: application/json)")
    return _render(current_app.config["STATE"].sign_in(host_of(request.environ), body))


@bp.get(FEDERATED_CALLBACK_PATH)
def federated_callback():
    label(stage="enrollment")
    return _render(current_app.config["STATE"].federated_return(request.args.get("code"), request.args.get("state")))


def _render(answer: Answer):
    label(summary=f"{answer.status}: {answer.summary}")
    if answer.location:
        response = current_app.response_class(b"", status=answer.status, headers={"Location": answer.location})
    else:
        response = jsonify(answer.body)
        response.status_code = answer.status
    if answer.retry_after:
        response.headers["Retry-After"] = str(answer.retry_after)
    response.headers["Cache-Control"] = "no-store"
    return response
