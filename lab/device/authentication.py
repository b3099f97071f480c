"""Stage 2: the enrollment request, the Bearer challenge and the web sign-in (PROTOCOL.md 2.1-2.5)."""
from __future__ import annotations

import re
import time
from dataclasses import dataclass
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

from lab.device.errors import transport_failure
from lab.device.trace import FAIL, OK, WARN, DeviceFailure, Trace, describe_request

STAGE = "authentication"
CALLBACK_SCHEME = "apple-remotemanagement-user-login"
MAX_WEB_HOPS = 20

# name=value where value is a token or a quoted string; separators between parameters are checked apart.
_PARAM = re.compile(r'([A-Za-z0-9_-]+)=("(?:[^"\\]|\\.)*"|[^\s,;"]+)')


@dataclass(frozen=True)
class Challenge:
    method: str
    params: dict[str, str]
    separator_warning: str | None = None


def parse_challenge(header: str | None, *, strict: bool = False) -> Challenge:
    """Parse ``WWW-Authenticate: Bearer method="...", ...``; raises ValueError with the reason."""
    if not header:
        raise ValueError("the 401 has no WWW-Authenticate header")
    scheme, _, rest = header.strip().partition(" ")
    if scheme != "Bearer":
        raise ValueError(f"the challenge scheme is {scheme!r}; it must be exactly 'Bearer'")
    params, position, separators = {}, 0, set()
    rest = rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if not match:
            raise ValueError(f"cannot parse the challenge parameters at {rest[position:position + 30]!r}")
        name, value = match.group(1), match.group(2)
        if value.startswith('"'):
            value = re.sub(r"\\(.)", r"\1", value[1:-1])
        params[name] = value
        position = match.end()
        sep = re.match(r"\s*[,;]?\s*", rest[position:]).group(0)
        if position < len(rest):
            separators.add(sep.strip() or " ")
        position += len(sep)
    warning = None
    if separators - {","}:
        odd = ", ".join(repr(s) for s in sorted(separators - {","}))
        if ";" in separators:
            raise ValueError("challenge parameters are separated by ';'; use ', ' as Apple's documentation does")
        warning = (f"challenge parameters separated by {odd} instead of ', ': iOS 18.2.1 was seen accepting a "
                   "bare space, but Apple documents ', '")
        if strict:
            raise ValueError(warning)
    if "method" not in params:
        raise ValueError("the challenge has no method parameter")
    return Challenge(params["method"], params, warning)


class _FormParser(HTMLParser):
    def __init__(self):
        super().__init__()
        self.forms: list[dict] = []
        self.alerts: list[str] = []
        self._in_alert = False

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "form":
            self.forms.append({"action": attrs.get("action") or "", "method": (attrs.get("method") or "get").lower(),
                               "inputs": []})
        elif tag == "input" and self.forms:
            self.forms[-1]["inputs"].append(attrs)
        if attrs.get("role") == "alert":
            self._in_alert = True

    def handle_endtag(self, tag):
        self._in_alert = False

    def handle_data(self, data):
        if self._in_alert and data.strip():
            self.alerts.append(data.strip())


def sign_in_url(url: str, identifier: str) -> str:
    """The device replaces any query of ``url`` with user-identifier (PROTOCOL.md 2.3)."""
    parts = urlsplit(url)
    return urlunsplit(parts._replace(query=urlencode({"user-identifier": identifier}), fragment=""))


def web_sign_in(device, browser, challenge: Challenge, identifier: str, password: str | None,
                trace: Trace) -> str:
    """Act as ASWebAuthenticationSession: load the page, fill the form, stop at the callback scheme."""
    start = challenge.params.get("url")
    if not start:
        _fail(trace, "challenge-missing-url", "the apple-as-web challenge has no url parameter; add "
                                              'url="https://<mdm>/<sign-in path>"')
    if urlsplit(start).scheme not in ("http", "https"):
        _fail(trace, "challenge-bad-url", f"the challenge url {start!r} is not an http(s) URL")
    if urlsplit(start).scheme == "http":
        trace.add(STAGE, "check sign-in URL", WARN, "the sign-in url is http; use https so the password is "
                                                    "not sent in clear", code="auth-url-http")
    if urlsplit(start).query:
        trace.add(STAGE, "check sign-in URL", WARN,
                  f"the sign-in url carries a query ({urlsplit(start).query}); the device replaces it with "
                  "user-identifier, so keep server state in the path", code="auth-url-query")
    url, method, data = sign_in_url(start, identifier), "GET", None
    submitted = False
    for _ in range(MAX_WEB_HOPS):
        headers = {"User-Agent": device.user_agent_web}
        started = time.perf_counter()
        try:
            response = browser.request(method, url, data=data, headers=headers, allow_redirects=False, timeout=30)
        except Exception as exc:
            failure = transport_failure(STAGE, url, exc, "the sign-in page")
            trace.add(STAGE, f"{method} {url}", FAIL, failure.explanation, code=failure.code,
                      request=describe_request(method, url, headers))
            raise failure from None
        elapsed = time.perf_counter() - started
        request = describe_request(method, url, headers)
        action = f"{method} {url} → {response.status_code}"
        location = response.headers.get("Location", "")
        if response.is_redirect or 300 <= response.status_code < 400 and location:
            if urlsplit(location).scheme == CALLBACK_SCHEME:
                return _callback(location, response, trace, action, request, elapsed, device.strict)
            trace.add(STAGE, action, OK, f"sign-in redirects to {urljoin(url, location)}", request=request,
                      response=response, elapsed=elapsed)
            url, method, data = urljoin(url, location), "GET", None
            continue
        if response.status_code >= 400:
            parser = _FormParser()
            parser.feed(response.text)
            shown = " ".join(parser.alerts) or f"HTTP {response.status_code}"
            code = "sign-in-refused" if submitted else f"sign-in-page-http-{response.status_code}"
            explanation = (f"the MDM refused the sign-in: {shown} (check the account name and password)"
                           if submitted else f"the sign-in page answered {response.status_code}: {shown}")
            _fail(trace, code, explanation, action, request, response, elapsed)
        if submitted:
            _fail(trace, "sign-in-no-callback", "after the form was submitted the MDM answered "
                  f"{response.status_code} without redirecting to {CALLBACK_SCHEME}://; end a successful sign-in "
                  "with 308 and the access token", action, request, response, elapsed)
        form = _password_form(response.text)
        if form is None:
            _fail(trace, "sign-in-no-form", "the sign-in page has no form with a password field; the user has "
                  "nothing to fill in", action, request, response, elapsed)
        if password is None:
            _fail(trace, "password-needed", "the sign-in page asks for a password and none was given "
                  "(pass --password)", action, request, response, elapsed)
        trace.add(STAGE, action, OK, "sign-in page shown; the user types the password", request=request,
                  response=response, elapsed=elapsed)
        fields = {}
        for field in form["inputs"]:
            name = field.get("name")
            if not name:
                continue
            kind = (field.get("type") or "text").lower()
            fields[name] = password if kind == "password" else field.get("value") or (
                identifier if "user" in name or kind == "email" else "")
        url, method, data = urljoin(url, form["action"] or url), form["method"].upper(), fields
        submitted = True
    _fail(trace, "sign-in-too-many-redirects", f"more than {MAX_WEB_HOPS} redirects during sign-in")


def _password_form(html: str) -> dict | None:
    parser = _FormParser()
    parser.feed(html)
    return next((f for f in parser.forms if any((i.get("type") or "").lower() == "password" for i in f["inputs"])),
                None)


def _callback(location, response, trace, action, request, elapsed, strict=False) -> str:
    query = parse_qs(urlsplit(location).query)
    token = (query.get("access-token") or [None])[0]
    if not token:
        _fail(trace, "callback-without-token", f"the callback {location.split('?')[0]} has no access-token query "
              "item; end the sign-in with ...://authentication-results?access-token=<token>",
              action, request, response, elapsed)
    if urlsplit(location).netloc != "authentication-results":
        trace.add(STAGE, action, WARN, "the callback host is not authentication-results; the device only checks "
                  "the scheme and access-token, but Apple documents that host", code="callback-host",
                  request=request, response=response, elapsed=elapsed)
    if response.status_code != 308 and strict:
        _fail(trace, "callback-not-308", f"the sign-in ended with {response.status_code}; strict mode accepts only "
              "308 Permanent Redirect", action, request, response, elapsed)
    if response.status_code != 308:
        trace.add(STAGE, action, WARN, f"the sign-in ended with {response.status_code} instead of 308 Permanent "
                  "Redirect; a device was seen accepting 308, other codes are only inferred",
                  code="callback-not-308", request=request, response=response, elapsed=elapsed)
    else:
        trace.add(STAGE, action, OK, "signed in; the MDM handed the device an access token", request=request,
                  response=response, elapsed=elapsed)
    return token


def _fail(trace, code, explanation, action="sign in", request=None, response=None, elapsed=None):
    trace.add(STAGE, action, FAIL, explanation, code=code, request=request, response=response, elapsed=elapsed)
    raise DeviceFailure(STAGE, code, explanation)
