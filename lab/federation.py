"""The assertion the organization's identity provider hands back to a relying party after a federated sign-in:
the MDM's web sign-in (mocks/mdm) and Apple's Managed Apple Account sign-in (mocks/apple_id) both rely on it.

A compact, JWT-like token: base64url(JSON claims) "." base64url(HMAC-SHA256). The IdP and its relying parties share
only the federation secret (it stands for the IdP's signing key that OIDC relying parties fetch); none reads
another's state. Claims: ``iss`` (the IdP's origin), ``aud`` (the relying party's client id at the IdP), ``sub``
(the user), ``nonce`` (the relying party's sign-in request id, echoed as ``state``), ``exp`` and ``jti`` (single
use: each relying party remembers the ones it took).
"""
from __future__ import annotations

import base64
import hashlib
import hmac
import json
import secrets

ASSERTION_TTL = 120


class FederationError(ValueError):
    """An assertion a relying party must not trust; the message says why."""


def _b64(data: bytes) -> str:
    return base64.urlsafe_b64encode(data).rstrip(b"=").decode()


def _unb64(text: str) -> bytes:
    return base64.urlsafe_b64decode(text + "=" * (-len(text) % 4))


def sign(secret: bytes, *, issuer: str, audience: str, subject: str, nonce: str, now: float) -> str:
    claims = {"iss": issuer, "aud": audience, "sub": subject, "nonce": nonce, "exp": int(now + ASSERTION_TTL),
              "jti": secrets.token_hex(12)}
    body = _b64(json.dumps(claims, separators=(",", ":")).encode())
    return body + "." + _b64(hmac.new(secret, body.encode(), hashlib.sha256).digest())


def verify(secret: bytes, assertion: str, *, issuer: str, audience: str, nonce: str, now: float) -> dict:
    """The claims of a valid assertion; raises FederationError with the reason otherwise."""
    body, _, signature = assertion.partition(".")
    try:
        good = hmac.compare_digest(_unb64(signature), hmac.new(secret, body.encode(), hashlib.sha256).digest())
        claims = json.loads(_unb64(body)) if good else None
    except (ValueError, TypeError):
        raise FederationError("the assertion is not base64url JSON with a signature") from None
    if not good or not isinstance(claims, dict):
        raise FederationError("the assertion's signature does not verify with the federation secret")
    for key, want in (("iss", issuer), ("aud", audience), ("nonce", nonce)):
        if claims.get(key) != want:
            raise FederationError(f"the assertion's {key} is {claims.get(key)!r}, expected {want!r}")
    if not isinstance(claims.get("exp"), int) or claims["exp"] <= now:
        raise FederationError("the assertion has expired")
    if not isinstance(claims.get("sub"), str) or not isinstance(claims.get("jti"), str):
        raise FederationError("the assertion lacks sub or jti")
    return claims
