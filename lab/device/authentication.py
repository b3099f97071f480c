"""Stage 2: the Bearer challenge, the web sign-in and the simple method (PROTOCOL.md 2.1-2.5), and the credentials
the device keeps for ongoing authentication (stage 4).

The web sign-in acts as ASWebAuthenticationSession: it loads pages, follows redirects (also to the organization's
identity provider), fills the password form, and stops at the callback scheme. The same browser serves the
simple method (callback with ``access-token``) and OAuth 2 (callback with ``code`` and ``state``, oauth2.py).
"""
from __future__ import annotations

import re
from dataclasses import asdict, dataclass, field
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlencode, urljoin, urlsplit, urlunsplit

from lab.device.cookies import CookieJar
from lab.device.errors import exchange
from lab.device.http import Response
from lab.device.trace import OK, WARN, Trace
from lab.protocol import CALLBACK_SCHEME

STAGE = "authentication"
MAX_WEB_HOPS = 20
ACTION = "sign in"
SIMPLE, OAUTH2 = "apple-as-web", "apple-oauth2"
OAUTH2_REQUIRED = ("authorization-url", "token-url", "redirect-url", "client-id")

# name=value where value is a token or a quoted string; separators between parameters are checked apart.
_PARAM = re.compile(r'([A-Za-z0-9_-]+)=("(?:[^"\\]|\\.)*"|[^\s,;"]+)')


@dataclass(frozen=True)
class Challenge:
    method: str
    params: dict[str, str]
    separator_warning: str | None = None


@dataclass
class Credentials:
    """What the device keeps on the work account for ongoing authentication (PROTOCOL.md 2.4.3-4, 4.3)."""
    method: str
    identifier: str
    access_token: str
    challenge: dict[str, str] = field(default_factory=dict)
    refresh_token: str | None = None
    expires_at: float | None = None
    token_type: str = "Bearer"

    def to_dict(self) -> dict:
        return asdict(self)


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
        found = re.match(r"\s*[,;]?\s*", rest[position:])
        assert found is not None  # the pattern matches the empty string
        sep = found.group(0)
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


def read_challenge(response, trace: Trace, *, strict: bool, stage: str = STAGE) -> Challenge:
    """The challenge of a 401, checked for its method's parameters (PROTOCOL.md 2.2); fails with a diagnosis."""
    header = response.headers.get("WWW-Authenticate")
    if not header:
        trace.stop(stage, "challenge-missing",
                   "the MDM answered 401 without WWW-Authenticate, so the device cannot tell "
                   'how to sign in; send WWW-Authenticate: Bearer method="apple-as-web", url="https://..." (or the '
                   "apple-oauth2 parameters) with every 401", ACTION)
    try:
        challenge = parse_challenge(header, strict=strict)
    except ValueError as exc:
        trace.stop(stage, "challenge-malformed",
                   f"the 401 challenge is unusable: {exc}. Send WWW-Authenticate: Bearer "
                   'method="apple-as-web", url="https://..."', ACTION)
    if challenge.separator_warning:
        trace.add(stage, "parse the challenge", WARN, challenge.separator_warning, code="challenge-separator")
    params = challenge.params
    if challenge.method == SIMPLE:
        if not params.get("url"):
            trace.stop(stage, "challenge-missing-url", "the apple-as-web challenge has no url parameter; add "
                       'url="https://<mdm>/<sign-in path>"', ACTION)
        if urlsplit(params["url"]).scheme not in ("http", "https"):
            trace.stop(stage, "challenge-bad-url", f"the challenge url {params['url']!r} is not an http(s) URL", ACTION)
        trace.add(stage, "parse the challenge", OK, f"simple authentication: sign in on {params['url']}")
        return challenge
    if challenge.method != OAUTH2:
        trace.stop(stage, "challenge-method-unknown", f"the challenge method {challenge.method!r} is unknown; use "
                   "apple-as-web (simple) or apple-oauth2", ACTION)
    missing = [p for p in OAUTH2_REQUIRED if not params.get(p)]
    if missing:
        trace.stop(stage, f"challenge-missing-{missing[0]}", f"the apple-oauth2 challenge lacks {', '.join(missing)}; "
                   "authorization-url, token-url, redirect-url, client-id and scope are all required", ACTION)
    for key in ("authorization-url", "token-url"):
        if urlsplit(params[key]).scheme != "https":
            trace.stop(stage, "challenge-bad-url", f"{key} {params[key]!r} must be an https URL", ACTION)
    if urlsplit(params["redirect-url"]).scheme != CALLBACK_SCHEME:
        trace.stop(stage, "challenge-bad-redirect-url", f"redirect-url {params['redirect-url']!r} must use the scheme "
                   f"{CALLBACK_SCHEME} (e.g. {CALLBACK_SCHEME}:/oauth2/redirection)", ACTION)
    if "scope" not in params:
        explanation = ("the challenge has no scope: Apple's documentation requires it, the iOS client was seen to "
                       "forward it only when present")
        if strict:
            trace.stop(stage, "challenge-missing-scope", explanation, ACTION)
        trace.add(stage, "parse the challenge", WARN, explanation, code="challenge-missing-scope")
    trace.add(stage, "parse the challenge", OK, f"OAuth 2: authorize at {params['authorization-url']}, tokens from "
              f"{params['token-url']}")
    return challenge


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


@dataclass
class Callback:
    """Where the web sign-in ended: the callback Location and the exchange that sent it."""
    location: str
    response: Response
    action: str
    request: dict
    elapsed: float


def browse(client, browser, url: str, identifier: str, password: str | None, trace: Trace, *,
           stage: str = STAGE) -> Callback:
    """Load ``url`` and sign in until a redirect to the callback scheme; fail with a diagnosis otherwise."""
    method, data, submitted = "GET", None, False
    jar = browser.cookies if browser.cookies is not None else CookieJar()
    for _ in range(MAX_WEB_HOPS):
        seen = len(jar.refused)
        response, request, elapsed = exchange(browser, method, url, trace, stage=stage, what="the sign-in page",
                                              headers={"User-Agent": client.user_agent_web}, data=data, timeout=30)
        action = f"{method} {url} → {response.status_code}"
        for refused in jar.refused[seen:]:
            trace.add(stage, action, WARN, f"the browser refused the cookie {refused}: a host may set cookies only "
                      "for itself and its parent domains (RFC 6265 5.3), so it will not be sent back",
                      code="cookie-refused")
        location = response.headers.get("Location", "")
        if response.is_redirect or 300 <= response.status_code < 400 and location:
            if urlsplit(location).scheme == CALLBACK_SCHEME:
                return Callback(location, response, action, request, elapsed)
            target = urljoin(url, location)
            other_host = urlsplit(target).hostname != urlsplit(url).hostname
            trace.add(stage, action, OK, f"sign-in redirects to {target}" +
                      (" (the organization's identity provider)" if other_host and "idp." in target else ""),
                      request=request, response=response, elapsed=elapsed)
            url, method, data = target, "GET", None
            continue
        if response.status_code >= 400:
            shown = page_message(response)
            refused = submitted and response.status_code in (401, 403)
            code = "sign-in-refused" if refused else f"sign-in-page-http-{response.status_code}"
            explanation = (f"the sign-in was refused: {shown} (check the account name and password)" if refused
                           else f"after the password, the sign-in answered {response.status_code}: {shown}"
                           if submitted else f"the sign-in page answered {response.status_code}: {shown}")
            if response.status_code == 429:
                code, explanation = "sign-in-throttled", throttled(response, shown)
            trace.stop(stage, code, explanation, action, request=request, response=response, elapsed=elapsed)
        form = password_form(response.text)
        if submitted and form is None:
            trace.stop(stage, "sign-in-no-callback", "after the form was submitted the server answered "
                       f"{response.status_code} without redirecting to {CALLBACK_SCHEME}:; end a successful sign-in "
                       "with 308 to the callback", action, request=request, response=response, elapsed=elapsed)
        if form is None:
            trace.stop(stage, "sign-in-no-form", "the sign-in page has no form with a password field; the user has "
                       "nothing to fill in", action, request=request, response=response, elapsed=elapsed)
        if password is None:
            trace.stop(stage, "password-needed", "the sign-in page asks for a password and none was given "
                       "(pass --password)", action, request=request, response=response, elapsed=elapsed)
        trace.add(stage, action, OK, "sign-in page shown; the user types the password", request=request,
                  response=response, elapsed=elapsed)
        url, method, data = urljoin(url, form["action"] or url), form["method"].upper(), fill(form, identifier,
                                                                                               password)
        submitted = True
    cookies = (f"; the pages loop because the browser refused {', '.join(sorted(set(jar.refused)))}: set the "
               "sign-in's cookies for the host that reads them (host-only, without Domain, or a Domain that covers "
               "it)") if jar.refused else ""
    trace.stop(stage, "sign-in-too-many-redirects", f"more than {MAX_WEB_HOPS} redirects during sign-in" + cookies,
               ACTION)


def throttled(response: Response, shown: str) -> str:
    """A 429: too many tries for the account; waiting is the fix, whatever the password (the right one included)."""
    wait = response.headers.get("Retry-After", "")
    return (f"the sign-in is throttled (429): {shown}; wait {wait + ' seconds' if wait.isdigit() else 'a while'} "
            "and sign in again (after too many wrong passwords even the right one waits)")


def page_message(response: Response) -> str:
    """What the web view shows of an error page: its alerts, a JSON error's message, or the status."""
    if "json" in response.headers.get("Content-Type", ""):
        try:
            body = response.json()
        except ValueError:
            body = None
        if isinstance(body, dict) and isinstance(body.get("message"), str):
            return f"HTTP {response.status_code} {body.get('error', '')}: {body['message']}"
    parser = _FormParser()
    parser.feed(response.text)
    return " ".join(parser.alerts) or f"HTTP {response.status_code}"


def fill(form: dict, identifier: str, password: str) -> dict:
    """The fields the person submits: the password, the identifier in the user field, hidden values as given."""
    fields = {}
    for item in form["inputs"]:
        name = item.get("name")
        if not name:
            continue
        kind = (item.get("type") or "text").lower()
        fields[name] = password if kind == "password" else item.get("value") or (
            identifier if "user" in name or kind == "email" else "")
    return fields


def password_form(html: str) -> dict | None:
    """The page's form with a password field, or None."""
    parser = _FormParser()
    parser.feed(html)
    return next((f for f in parser.forms if any((i.get("type") or "").lower() == "password" for i in f["inputs"])),
                None)


def judge_callback_status(callback: Callback, trace: Trace, *, strict: bool, stage: str = STAGE) -> None:
    """308 is documented and seen; other 3xx only inferred (PROTOCOL.md 2.3): a warning, or a failure if strict."""
    status = callback.response.status_code
    if status == 308:
        return
    explanation = (f"the sign-in ended with {status} instead of 308 Permanent Redirect; a device was seen "
                   "accepting 308, other codes are only inferred")
    if strict:
        trace.stop(stage, "callback-not-308",
                   f"the sign-in ended with {status}; strict mode accepts only 308 Permanent " "Redirect",
                   callback.action, request=callback.request, response=callback.response, elapsed=callback.elapsed)
    trace.add(stage, callback.action, WARN, explanation, code="callback-not-308", request=callback.request,
              response=callback.response, elapsed=callback.elapsed)


def simple_sign_in(client, browser, challenge: Challenge, identifier: str, password: str | None, trace: Trace, *,
                   stage: str = STAGE) -> Credentials:
    """apple-as-web: open url?user-identifier=..., sign in, take access-token from the callback (2.3)."""
    start = challenge.params["url"]
    if urlsplit(start).scheme == "http":
        trace.add(stage, "check sign-in URL", WARN, "the sign-in url is http; use https so the password is "
                                                   "not sent in clear", code="auth-url-http")
    if urlsplit(start).query:
        trace.add(stage, "check sign-in URL", WARN,
                  f"the sign-in url carries a query ({urlsplit(start).query}); the device replaces it with "
                  "user-identifier, so keep server state in the path", code="auth-url-query")
    callback = browse(client, browser, sign_in_url(start, identifier), identifier, password, trace, stage=stage)
    query = parse_qs(urlsplit(callback.location).query)
    token = next(iter(query.get("access-token") or ()), None)
    if not token:
        trace.stop(stage, "callback-without-token",
                   f"the callback {callback.location.split('?')[0]} has no access-token "
                   "query item; end the sign-in with ...://authentication-results?access-token=<token>",
                   callback.action, request=callback.request, response=callback.response, elapsed=callback.elapsed)
    if urlsplit(callback.location).netloc != "authentication-results":
        explanation = ("the callback host is not authentication-results; the device only checks the scheme and "
                       "access-token, but Apple documents that host")
        if client.strict:
            trace.stop(stage, "callback-host", explanation, callback.action, request=callback.request,
                       response=callback.response, elapsed=callback.elapsed)
        trace.add(stage, callback.action, WARN, explanation, code="callback-host", request=callback.request,
                  response=callback.response, elapsed=callback.elapsed)
    judge_callback_status(callback, trace, strict=client.strict, stage=stage)
    if callback.response.status_code == 308:
        trace.add(stage, callback.action, OK, "signed in; the MDM handed the device an access token",
                  request=callback.request, response=callback.response, elapsed=callback.elapsed)
    return Credentials(SIMPLE, identifier, token, dict(challenge.params))

