"""Stage 2 with apple-oauth2 (PROTOCOL.md 2.4; dev:implementing-the-oauth2-authentication-account-driven-enrollment-
flow): the authorization request in the web session, the code and state on the callback, the token request, and
the silent refresh of stage 4.

As the iOS client was observed (RE): the authorization URL keeps its own query and adds response_type, client_id,
redirect_uri, scope (only when the challenge has one), state (a new UUID) and then login_hint; no PKCE (the lab
device can send it, ``Client.pkce``, to exercise servers that accept it). A token reply needs token_type Bearer
(any case) and access_token; refresh_token and expires_in are optional; a refresh reply replaces the stored set
wholesale, so one without refresh_token ends silent refresh.
"""
from __future__ import annotations

import base64
import hashlib
import json
import secrets
import time
import uuid
from typing import Any
from urllib.parse import parse_qs, urlencode, urlsplit, urlunsplit

from lab.device.authentication import OAUTH2, STAGE, Callback, Challenge, Credentials, browse, judge_callback_status
from lab.device.errors import exchange
from lab.device.model import Client
from lab.device.trace import OK, WARN, DeviceFailure, Trace


def authorization_url(challenge: Challenge, identifier: str, state: str, code_challenge: str | None = None) -> str:
    params = challenge.params
    parts = urlsplit(params["authorization-url"])
    items = [("response_type", "code"), ("client_id", params["client-id"]), ("redirect_uri", params["redirect-url"])]
    if params.get("scope"):
        items.append(("scope", params["scope"]))
    items.append(("state", state))
    if code_challenge:
        items += [("code_challenge", code_challenge), ("code_challenge_method", "S256")]
    items.append(("login_hint", identifier))
    query = "&".join(filter(None, [parts.query, urlencode(items, safe="@:/")]))
    return urlunsplit(parts._replace(query=query, fragment=""))


def pkce_pair() -> tuple[str, str]:
    verifier = secrets.token_urlsafe(48)
    challenge = base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
    return verifier, challenge


def _check_callback(callback: Callback, challenge: Challenge, state: str, trace: Trace, strict: bool,
                    stage: str) -> str:
    where = urlsplit(callback.location)
    query = parse_qs(where.query)
    args: dict[str, Any] = dict(action=callback.action, request=callback.request, response=callback.response,
                elapsed=callback.elapsed)
    if query.get("error"):
        trace.stop(stage, "oauth2-authorization-error", f"the authorization server refused: {query['error'][0]} "
                   f"{(query.get('error_description') or [''])[0]}".strip(), **args)
    code = next(iter(query.get("code") or ()), None)
    if not code:
        trace.stop(stage, "callback-without-code", "the callback has no code query item; end the authorization with "
                   "308 to <redirect-url>?code=<code>&state=<state>", **args)
    if next(iter(query.get("state") or ()), None) != state:
        trace.stop(stage, "oauth2-state-mismatch", "the callback's state is not the one the device sent; echo the "
                   "authorization request's state unchanged", **args)
    expected = urlsplit(challenge.params["redirect-url"])
    if (where.netloc, where.path) != (expected.netloc, expected.path):
        explanation = (f"the callback {callback.location.split('?')[0]} is not the redirect-url "
                       f"{challenge.params['redirect-url']} (the device checks only the scheme, code and state)")
        if strict:
            trace.stop(stage, "callback-host", explanation, **args)
        trace.add(stage, callback.action, WARN, explanation, code="callback-host", request=callback.request,
                  response=callback.response, elapsed=callback.elapsed)
    judge_callback_status(callback, trace, strict=strict, stage=stage)
    if callback.response.status_code == 308:
        trace.add(stage, callback.action, OK, "authorized; the callback carries a code and the same state",
                  request=callback.request, response=callback.response, elapsed=callback.elapsed)
    return code


def sign_in(client: Client, http, browser, challenge: Challenge, identifier: str, password: str | None,
            trace: Trace, *, stage: str = STAGE) -> Credentials:
    """The authorization code grant: web sign-in, then the token request (PROTOCOL.md 2.4.1-3)."""
    state = str(uuid.uuid4()).upper()
    verifier, code_challenge = pkce_pair() if client.pkce else (None, None)
    url = authorization_url(challenge, identifier, state, code_challenge)
    callback = browse(client, browser, url, identifier, password, trace, stage=stage)
    code = _check_callback(callback, challenge, state, trace, client.strict, stage)
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": challenge.params["redirect-url"],
            "client_id": challenge.params["client-id"], **({"code_verifier": verifier} if verifier else {})}
    reply = token_request(client, http, challenge.params["token-url"], form, trace, stage=stage)
    return _credentials(reply, identifier, challenge.params)


def refresh(client: Client, http, credentials: Credentials, trace: Trace, *, stage: str) -> Credentials | None:
    """Silent refresh (2.4.4); None when it is refused (the user then signs in again)."""
    form = {"grant_type": "refresh_token", "refresh_token": credentials.refresh_token,
            "client_id": credentials.challenge["client-id"]}
    try:
        reply = token_request(client, http, credentials.challenge["token-url"], form, trace, stage=stage,
                              refreshing=True)
    except DeviceFailure:
        return None
    renewed = _credentials(reply, credentials.identifier, credentials.challenge)
    if renewed.refresh_token is None:
        trace.add(stage, "store the refreshed tokens", WARN, "the refresh reply has no refresh_token; the device "
                  "replaces its tokens wholesale, so the next expiry needs a sign-in. Send a refresh_token with "
                  "every refresh reply", code="refresh-token-dropped")
    return renewed


def token_request(client: Client, http, url: str, form: dict, trace: Trace, *, stage: str = STAGE,
                  refreshing: bool = False) -> dict:
    headers = {"Content-Type": "application/x-www-form-urlencoded", "User-Agent": client.user_agent_enroll,
               "Accept": "application/json"}
    response, request, elapsed = exchange(http, "POST", url, trace, stage=stage, headers=headers,
                                          what="the OAuth 2 token endpoint", label=f" ({form['grant_type']})",
                                          data=form, timeout=60)
    action = f"POST {url} ({form['grant_type']}) → {response.status_code}"
    args = dict(action=action, request=request, response=response, elapsed=elapsed)
    if response.status_code != 200:
        detail = _oauth_error(response)
        code = ("refresh-refused" if refreshing else f"token-endpoint-http-{response.status_code}")
        explanation = (f"the token endpoint refused the refresh ({response.status_code}{detail}); the user must "
                       "sign in again" if refreshing else
                       f"the token endpoint answered {response.status_code}{detail}; the device stops the enrollment")
        if refreshing:
            trace.add(stage, action, WARN, explanation, code=code, request=request, response=response,
                      elapsed=elapsed)
            raise DeviceFailure(stage, code, explanation)
        trace.stop(stage, code, explanation, **args)
    try:
        reply = json.loads(response.content)
    except ValueError:
        reply = None
    if not isinstance(reply, dict) or not isinstance(reply.get("access_token"), str) or not reply["access_token"]:
        trace.stop(stage, "token-response-malformed", "the token reply is not a JSON object with access_token", **args)
    if str(reply.get("token_type", "")).lower() != "bearer":
        trace.stop(stage, "token-type-not-bearer", f"token_type is {reply.get('token_type')!r}; it must be Bearer",
                   **args)
    lifetime = reply.get("expires_in")
    trace.add(stage, action, OK, ("refreshed: " if refreshing else "") + "access token"
              + (f" for {lifetime} s" if isinstance(lifetime, int) else "")
              + (" and a refresh token" if reply.get("refresh_token") else ", no refresh token"),
              request=request, response=response, elapsed=elapsed)
    return reply


def _credentials(reply: dict, identifier: str, challenge: dict) -> Credentials:
    lifetime = reply.get("expires_in")
    return Credentials(OAUTH2, identifier, reply["access_token"], dict(challenge),
                       reply.get("refresh_token") if isinstance(reply.get("refresh_token"), str) else None,
                       time.time() + lifetime if isinstance(lifetime, (int, float)) else None)


def _oauth_error(response) -> str:
    try:
        body = response.json()
    except ValueError:
        return ""
    if not isinstance(body, dict):
        return ""
    return f": {body.get('error')}" + (f" ({body['error_description']})" if body.get("error_description") else "")
