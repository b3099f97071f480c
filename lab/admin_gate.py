"""The gate in front of every admin surface (the console, ABM's admin site): the admin token, origins, CSRF.

Who may come in: on loopback anyone on the machine (the lab is theirs); beyond loopback (a token is set) every
request needs the admin token printed by ``mdmlab up``, as ``Authorization: Bearer <token>``, or once as
``?token=<token>`` in a browser, which then keeps it in a Secure, HttpOnly, SameSite=Strict cookie (an EventSource
cannot send headers). Public paths (the CA downloads, static files) stay open.

What a browser may change: a state-changing request that a browser sent (it carries ``Origin``, ``Referer``,
``Sec-Fetch-Site`` or the admin cookie) must come from exactly this origin (scheme, host and port), and must prove it
was sent by one of the lab's own pages: a CSRF token (``X-MDMLab-CSRF`` header or ``csrf_token`` form field) equal
to the SameSite=Strict ``mdmlab_csrf`` cookie the page was served with (double submit: another site's page can
neither read the cookie nor make the browser send it). A bearer token in a header is proof enough: a foreign page
cannot add one. A client that is no browser (curl, the CLI) sends none of these and needs only the admin token.

The gate runs before the app reads anything of the request: nothing is parsed, cached or kept for a request
that has not passed it.

Use: ``AdminGate(lambda: lab.admin_token).install(app)``; templates call ``csrf_token()`` for forms and pages.
"""
from __future__ import annotations

import hmac
import secrets
from collections.abc import Callable
from urllib.parse import urlsplit

from flask import Flask, g, redirect, render_template, request
from markupsafe import escape

from lab.flaskapp import LabError

COOKIE = "mdmlab_admin"
CSRF_COOKIE = "mdmlab_csrf"
CSRF_HEADER = "X-MDMLab-CSRF"
CSRF_FIELD = "csrf_token"
SAFE_METHODS = frozenset({"GET", "HEAD", "OPTIONS"})
DEFAULT_PORTS = {"https": 443, "http": 80}
CSP = ("default-src 'self'; script-src 'self'; style-src 'self'; img-src 'self' data:; connect-src 'self'; "
       "frame-ancestors 'none'; base-uri 'none'; form-action 'self'")

_LOGIN_PAGE = """<!doctype html>
<html lang="en"><head><meta charset="utf-8"><title>{title} · admin token</title></head>
<body><h1>{title}</h1>
<p>This lab listens beyond loopback, so this page needs the admin token that <code>mdmlab up</code> printed.</p>
{wrong}<form method="get" action="{action}">
<label>Admin token <input name="token" type="password" autocomplete="off" required></label>
<button type="submit">Open</button></form></body></html>
"""


def _origin_of(url: str) -> tuple[str, str, int] | None:
    """(scheme, host, port) of an origin or URL, ports made explicit; None when it is no usable origin."""
    try:
        parts = urlsplit(url)
        port = parts.port
    except ValueError:
        return None
    scheme = parts.scheme.lower()
    if scheme not in DEFAULT_PORTS or not parts.hostname:
        return None
    return scheme, parts.hostname.lower().rstrip("."), port or DEFAULT_PORTS[scheme]


def own_origin(environ) -> tuple[str, str, int] | None:
    """The origin this request was sent to: its scheme and its Host header (host and port)."""
    host = environ.get("HTTP_HOST") or environ.get("SERVER_NAME", "")
    return _origin_of(f"{environ.get('wsgi.url_scheme', 'https')}://{host.strip()}")


def from_browser() -> bool:
    """Whether a browser sent this: it names the page it came from, or carries the admin cookie."""
    return any(name in request.headers for name in ("Origin", "Referer", "Sec-Fetch-Site")) \
        or COOKIE in request.cookies


def check_origin() -> None:
    """Refuse a state-changing request that a page of another origin made a browser send."""
    if request.method in SAFE_METHODS:
        return
    origin = request.headers.get("Origin")
    claimed = origin if origin is not None else request.headers.get("Referer")
    fetch_site = request.headers.get("Sec-Fetch-Site", "").lower()
    mine = own_origin(request.environ)
    if fetch_site in ("cross-site", "same-site") or (
            claimed is not None and (_origin_of(claimed) is None or _origin_of(claimed) != mine)):
        raise LabError(f"{request.method} from another site's page ({claimed or fetch_site}) is refused: "
                       f"changes must come from this origin's own pages", code="cross-origin", status=403)


def csrf_token() -> str:
    """This browser's CSRF token (its cookie's value, or a new one the response will set)."""
    if "mdmlab_csrf" not in g:
        presented = request.cookies.get(CSRF_COOKIE, "")
        g.mdmlab_csrf = presented if len(presented) == 43 and presented.isascii() else secrets.token_urlsafe(32)
    return g.mdmlab_csrf


def _csrf_ok() -> bool:
    cookie = request.cookies.get(CSRF_COOKIE, "")
    sent = request.headers.get(CSRF_HEADER)
    if sent is None and request.mimetype in ("application/x-www-form-urlencoded", "multipart/form-data"):
        sent = request.form.get(CSRF_FIELD)  # only reached by a request already past the admin token
    return bool(cookie) and sent is not None and hmac.compare_digest(cookie.encode(), sent.encode())


class AdminGate:
    """``token()`` is the admin token now (None on loopback); ``login_template`` renders the token form."""

    def __init__(self, token: Callable[[], str | None], *, public_paths=(), public_prefixes=("/static/",),
                 api_prefix: str = "/api/", login_template: str | None = None, title: str = "mdmlab"):
        self.token = token
        self.public_paths = frozenset(public_paths)
        self.public_prefixes = tuple(public_prefixes)
        self.api_prefix = api_prefix
        self.login_template = login_template
        self.title = title

    def install(self, app: Flask) -> Flask:
        app.before_request(self.check)
        app.after_request(self.secure)
        app.context_processor(lambda: {"csrf_token": csrf_token})
        return app

    def _public(self) -> bool:
        return request.path in self.public_paths or request.path.startswith(self.public_prefixes)

    def _presented(self) -> tuple[str, str]:
        header = request.headers.get("Authorization", "")
        if header[:7].lower() == "bearer ":
            return header[7:].strip(), "header"
        if request.args.get("token"):
            return request.args["token"], "query"
        return request.cookies.get(COOKIE, ""), "cookie"

    def check(self):
        """A before_request hook: None lets the request through, anything else answers it."""
        check_origin()
        presented, where = self._presented()
        token = self.token()
        if token is not None and not self._public():
            if not (presented and hmac.compare_digest(presented.encode(), token.encode())):
                return self._refuse(bool(presented))
            if where == "query" and request.method == "GET" and not request.path.startswith(self.api_prefix):
                # a browser page: keep the token in a cookie and drop it from the address bar and history
                response = redirect(request.path, code=303)
                response.set_cookie(COOKIE, token, secure=True, httponly=True, samesite="Strict")
                return response
        if request.method not in SAFE_METHODS and from_browser() and where != "header" and not _csrf_ok():
            raise LabError(f"{request.method} {request.path} from a browser needs the page's CSRF token "
                           f"({CSRF_HEADER} header or {CSRF_FIELD} field); reload the page", code="csrf-token-required",
                           status=403)
        return None

    def _refuse(self, wrong: bool):
        if request.method == "GET" and not request.path.startswith(self.api_prefix) \
                and request.accept_mimetypes.accept_html:
            if self.login_template:
                return render_template(self.login_template, wrong=wrong), 401
            return _LOGIN_PAGE.format(title=escape(self.title), action=escape(request.path),
                                      wrong="<p>That token is not the lab's.</p>" if wrong else ""), 401
        raise LabError("this needs the admin token printed by 'mdmlab up' (Authorization: Bearer ...)",
                       code="admin-token-required", status=401, headers={"WWW-Authenticate": 'Bearer realm="mdmlab"'})

    @staticmethod
    def secure(response):
        """Pages of an admin surface are never framed, cached or sniffed; a page carries the CSRF cookie."""
        response.headers.setdefault("X-Content-Type-Options", "nosniff")
        response.headers.setdefault("Referrer-Policy", "no-referrer")
        response.headers.setdefault("Cache-Control", "no-store")
        if response.mimetype == "text/html":
            response.headers.setdefault("Content-Security-Policy", CSP)
            response.headers.setdefault("X-Frame-Options", "DENY")
        if "mdmlab_csrf" in g and request.cookies.get(CSRF_COOKIE) != g.mdmlab_csrf:
            response.set_cookie(CSRF_COOKIE, g.mdmlab_csrf, secure=True, httponly=False, samesite="Strict")
        return response
