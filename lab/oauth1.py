"""OAuth 1.0a (RFC 5849) with HMAC-SHA1, as Apple's Device Assignment API uses it for ``GET /session``.

Both sides live here: ``authorization_header`` signs a request the way an MDM does, ``verify`` checks one the way
the ABM mock does. The RFC's mechanics (percent-encoding, parameter normalisation, the base string, HMAC-SHA1 and
header parsing) come from oauthlib, which requests-oauthlib and most Python OAuth servers build on; this module
keeps only the lab's policy: the realm Apple uses, the parameters it requires, the clock skew, nonce replay and a
machine-readable reason for every refusal. Form bodies are not signed by anything in the lab, but ``base_string``
accepts extra pairs so the RFC's own examples can be checked.
"""
from __future__ import annotations

import secrets
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from urllib.parse import parse_qsl, urlsplit

from oauthlib.oauth1 import SIGNATURE_HMAC_SHA1, SIGNATURE_TYPE_AUTH_HEADER, Client
from oauthlib.oauth1.rfc5849 import signature as rfc5849
from oauthlib.oauth1.rfc5849 import utils as rfc5849_utils

REALM = "ADM"
SIGNATURE_METHOD = SIGNATURE_HMAC_SHA1
MAX_SKEW = 300  # seconds a timestamp may be off the server's clock (PROTOCOL.md 1.8; lab choice)
REQUIRED = ("oauth_consumer_key", "oauth_token", "oauth_signature_method", "oauth_signature", "oauth_timestamp",
            "oauth_nonce")


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
    return rfc5849_utils.escape(str(value))


def normalized_url(url: str) -> str:
    """RFC 5849 3.4.1.2: lower-case scheme and host, default port dropped, no query or fragment."""
    return rfc5849.base_string_uri(url)


def base_string(method: str, url: str, params: Iterable[tuple[str, str]]) -> str:
    """RFC 5849 3.4.1: METHOD&url&params, the URL's own query items joined to ``params``, all sorted."""
    pairs = [*parse_qsl(urlsplit(url).query, keep_blank_values=True), *params]
    return rfc5849.signature_base_string(method.upper(), normalized_url(url), rfc5849.normalize_parameters(pairs))


def signature(base: str, consumer_secret: str, token_secret: str) -> str:
    secrets_holder = Client("", client_secret=consumer_secret, resource_owner_secret=token_secret)
    return rfc5849.sign_hmac_sha1_with_client(base, secrets_holder)


def authorization_header(method: str, url: str, consumer_key: str, consumer_secret: str, token: str,
                         token_secret: str, *, nonce: str | None = None, timestamp: int | None = None) -> str:
    """The ``Authorization: OAuth realm="ADM", ...`` value for one request."""
    client = Client(consumer_key, client_secret=consumer_secret, resource_owner_key=token,
                    resource_owner_secret=token_secret, signature_method=SIGNATURE_METHOD,
                    signature_type=SIGNATURE_TYPE_AUTH_HEADER, realm=REALM,
                    nonce=nonce or secrets.token_hex(16),
                    timestamp=str(int(time.time()) if timestamp is None else timestamp))
    _, headers, _ = client.sign(url, http_method=method.upper())
    return headers["Authorization"]


def parse_header(header: str | None) -> dict[str, str]:
    """The parameters of an ``OAuth`` Authorization header, percent-decoded; realm included."""
    if not header:
        raise OAuthError("missing-authorization", "the request has no Authorization header")
    scheme, _, rest = header.strip().partition(" ")
    if scheme.lower() != "oauth":
        raise OAuthError("not-oauth", f"the Authorization scheme is {scheme!r}, expected OAuth")
    items = rfc5849_utils.parse_http_list(rest)
    params: dict[str, str] = {}
    for item in items:
        name, equals, value = item.partition("=")
        name, value = name.strip(), value.strip()
        if not name or not equals or len(value) < 2 or value[0] != '"' or value[-1] != '"' or '"' in value[1:-1]:
            raise OAuthError("malformed-authorization", 'the OAuth header is not a list of name="value" pairs')
        name, value = rfc5849_utils.unescape(name), rfc5849_utils.unescape(value[1:-1])
        if name in params:
            raise OAuthError("duplicate-parameter", f"the OAuth header repeats {name}")
        params[name] = value
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
    if not rfc5849.safe_string_equals(expected, params["oauth_signature"]):
        raise OAuthError("bad-signature", "oauth_signature does not match the request and the token's secrets")
    if seen_nonce(consumer_key, token, params["oauth_nonce"], timestamp):
        raise OAuthError("reused-nonce", "this oauth_nonce was already used; every request needs a new one")
    return Verified(consumer_key, token, params["oauth_nonce"], timestamp)
