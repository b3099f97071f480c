"""Who may use the control plane.

On loopback anyone on the machine may (the lab is theirs). Beyond loopback every request needs the admin token
printed by ``mdmlab up``: as ``Authorization: Bearer <token>``, or once as ``?token=<token>`` in a browser, which
then keeps it in a Secure, HttpOnly, SameSite=Strict cookie (an EventSource cannot send headers). The CA
downloads stay public: a phone must fetch the CA before it can trust anything, and a CA certificate is no secret;
so do the page's static files.

Requests that change state must not come from another site's page: a browser sends ``Origin`` with them, and a
foreign origin is refused (on loopback there is no token to stop a cross-site form post otherwise).
"""
from __future__ import annotations

import hmac
from urllib.parse import urlsplit

from flask import redirect, render_template, request

from lab.dispatch import host_of
from lab.flaskapp import LabError

COOKIE = "mdmlab_admin"
PUBLIC_PATHS = frozenset({"/ca.pem", "/ca.mobileconfig"})
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})


def _presented() -> tuple[str, str]:
    """The token the request carries, and where it came from."""
    header = request.headers.get("Authorization", "")
    if header.lower().startswith("bearer "):
        return header[7:].strip(), "header"
    if request.args.get("token"):
        return request.args["token"], "query"
    return request.cookies.get(COOKIE, ""), "cookie"


def check_origin() -> None:
    origin = request.headers.get("Origin")
    if request.method in SAFE_METHODS or not origin:
        return
    if origin == "null" or host_of({"HTTP_HOST": urlsplit(origin).netloc}) != host_of(request.environ):
        raise LabError(f"the control API refuses {request.method} from another site's page ({origin})",
                       code="cross-origin", status=403)


def require_admin_token(token: str | None):
    """A before_request hook: None lets the request through, anything else answers it."""
    check_origin()
    if token is None or request.path in PUBLIC_PATHS or request.path.startswith("/static/"):
        return None
    presented, where = _presented()
    if presented and hmac.compare_digest(presented.encode(), token.encode()):
        if where == "query" and request.method == "GET" and not request.path.startswith("/api/"):
            # a browser page: keep the token in a cookie and drop it from the address bar and history
            response = redirect(request.path, code=303)
            response.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="Strict")
            return response
        return None
    if request.method == "GET" and not request.path.startswith("/api/") and request.accept_mimetypes.accept_html:
        return render_template("token.html", wrong=bool(presented)), 401
    raise LabError("the console needs the admin token printed by 'mdmlab up' (Authorization: Bearer ...)",
                   code="admin-token-required", status=401, headers={"WWW-Authenticate": 'Bearer realm="mdmlab"'})
