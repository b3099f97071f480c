"""OAuth 1.0a (RFC 5849) with HMAC-SHA1, as Apple's Device Assignment API uses it for ``GET /session``.

Both sides live here: ``authorization_header`` signs a request the way an MDM does, ``verify`` checks one the way
the ABM mock does. Parameters come from the URL's query and the ``Authorization`` header; form bodies are not
signed by anything in the lab, but ``base_string`` accepts extra pairs so the RFC's own examples can be checked.
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import re
import secrets
import time
from dataclasses import dataclass
from typing import Callable, Iterable
from urllib.parse import parse_qsl, quote, unquote, urlsplit

REALM = "ADM"
SIGNATURE_METHOD = "HMAC-SHA1"
MAX_SKEW = 300  # seconds a timestamp may be off the server's clock (PROTOCOL.md 1.8; lab choice)
REQUIRED = ("oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_signature", "oauth_timestamp",
            "oauth_nonce")
_PARAM = re.compile(r'\s*([A-Za-z0-9_\-.~%]+)\s*=\s*"([^"]*)"\s*(?:,|$)')


class OAuthError(ValueError):
    """A request that does not authenticate; ``reason`` is a short code, the message says why in plain words."""

    def __init__(self, reason: str, message: str):
        super().__init__(reason)
        self.reason = reason
        self.message = message


@dataclass(frozen=True)
class Verified:
    consumer_key: str
    token: str
    nonce: str
    timestamp: int


def encode(value: str) -> str:
    """RFC 5849 3.6: UTF-8, then percent-encode everything but ALPHA, DIGIT, '-', '.', '_', '~'."""
    return quote(str(value).encode("utf-8"), safe="-._~")


def normalized_url(url: str) -> str:
    """RFC 5849 3.4.1.2: lower-case scheme and host, default port dropped, no query or fragment."""
    parts = urlsplit(url)
    scheme, host = parts.scheme.lower(), (parts.hostname or "").lower()
    if ":" in host:
        host = f"[{host}]"
    port = parts.port
    if port and (scheme, port) not in (("http", 80), ("https", 443)):
        host = f"{host}:{port}"
    return f"{scheme}://{host}{parts.path or '/'}"


def base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1: METHOD&url&params, the URL's own query items joined to ``params``, all sorted."""
    pairs = [*parse_qsl(urlsplit(url).query, keep_blank_values=True), *params]
    encoded = sorted((encode(k), encode(v)) for k, v in pairs)
    normalized = "&".join(f"{k}={v}" for k, v in encoded)
    return "&".join((method.upper(), encode(normalized_url(url)), encode(normalized)))


def signature(base: str, consumer_secret: str, token_secret: str) -> str:
    key = f"{encode(consumer_secret)}&{encode(token_secret)}".encode()
    return base64.b64encode(hmac.new(key, base.encode(), hashlib.sha1).digest()).decode()


def authorization_header(method: str, url: str, consumer_key: str, consumer_secret: str, token: str,
                         token_secret: str, *, nonce: str | None = None, timestamp: int | None = None) -> str:
    """The ``Authorization: OAuth realm="ADM", ...`` value for one request."""
    params = {
        "oauth_consumer_key": consumer_key,
        "oauth_token": token,
        "oauth_signature_method": SIGNATURE_METHOD,
        "oauth_timestamp": str(int(time.time()) if timestamp is None else timestamp),
        "oauth_nonce": nonce or secrets.token_hex(16),
        "oauth_version": "1.0",
    }
    params["oauth_signature"] = signature(base_string(method, url, params.items()), consumer_secret, token_secret)
    return "OAuth " + ", ".join([f'realm="{REALM}"', *(f'{k}="{encode(v)}"' for k, v in params.items())])


def parse_header(header: str | None) -> dict[str, str]:
    """The parameters of an ``OAuth`` Authorization header, percent-decoded; realm included."""
    if not header:
        raise OAuthError("missing-authorization", "the request has no Authorization header")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "oauth":
        raise OAuthError("not-oauth", f"the Authorization scheme is {scheme!r}, expected OAuth")
    params: dict[str, str] = {}
    position, rest = 0, rest.strip()
    while position < len(rest):
        match = _PARAM.match(rest, position)
        if match is None:
            raise OAuthError("malformed-authorization", 'the OAuth header is not a list of name="value" pairs')
        name, value = unquote(match.group(1)), unquote(match.group(2))
        if name in params:
            raise OAuthError("duplicate-parameter", f"the OAuth header repeats {name}")
        params[name] = value
        position = match.end()
    return params


def verify(header: str | None, method: str, url: str,
           secrets_lookup: Callable[[str, str], tuple[str, str] | None], *, now: float,
           seen_nonce: Callable[[str, str, str, int], bool], realm: str | None = REALM) -> Verified:
    """Check a signed request; raises OAuthError (a ValueError) with the reason.

    ``secrets_lookup(consumer_key, token)`` gives (consumer_secret, token_secret) or None for unknown
    credentials. ``seen_nonce(consumer_key, token, nonce, timestamp)`` records the nonce and says whether it was
    already used; it is asked only once the signature holds, so a forged request cannot burn a nonce.
    """
    params = parse_header(header)
    if realm is not None and params.get("realm") != realm:
        raise OAuthError("wrong-realm", f'the OAuth realm must be "{realm}", got {params.get("realm")!r}')
    missing = [name for name in REQUIRED if not params.get(name)]
    if missing:
        raise OAuthError("missing-parameter", f"the OAuth header lacks {', '.join(missing)}")
    if params["oauth_signature_method"] != SIGNATURE_METHOD:
        raise OAuthError("unsupported-signature-method",
                         f"oauth_signature_method must be {SIGNATURE_METHOD}, got {params['oauth_signature_method']!r}")
    if params.get("oauth_version", "1.0") != "1.0":
        raise OAuthError("unsupported-version", f"oauth_version must be 1.0, got {params['oauth_version']!r}")
    if not params["oauth_timestamp"].isdigit():
        raise OAuthError("malformed-timestamp", "oauth_timestamp must be whole seconds since the epoch")
    timestamp = int(params["oauth_timestamp"])
    if abs(now - timestamp) > MAX_SKEW:
        raise OAuthError("stale-timestamp", f"oauth_timestamp is {int(timestamp - now):+d} s off the server's "
                                            f"clock; at most {MAX_SKEW} s is accepted")
    consumer_key, token = params["oauth_consumer_key"], params["oauth_token"]
    found = secrets_lookup(consumer_key, token)
    if found is None:
        raise OAuthError("unknown-token", "the consumer key and access token are not a known server token")
    signed = [(k, v) for k, v in params.items() if k not in ("realm", "oauth_signature")]
    expected = signature(base_string(method, url, signed), *found)
    if not hmac.compare_digest(expected.encode(), params["oauth_signature"].encode()):
        raise OAuthError("bad-signature", "oauth_signature does not match the request and the token's secrets")
    if seen_nonce(consumer_key, token, params["oauth_nonce"], timestamp):
        raise OAuthError("reused-nonce", "this oauth_nonce was already used; every request needs a new one")
    return Verified(consumer_key, token, params["oauth_nonce"], timestamp)
