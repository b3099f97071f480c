"""mocks.mdm with OAuth 2 (PROTOCOL.md 2.4), through Flask's test client: the challenge, the authorization
endpoint, the token endpoint (codes, PKCE, refresh), token lifetime, expiry and revocation, web sessions."""
from __future__ import annotations

import base64
import hashlib
from urllib.parse import urlencode, urlsplit

import pytest

from lab.device.authentication import parse_challenge
from mocks.mdm.errors import CommandRefused
from tests.mdm_support import (
    CLIENT_ID,
    IDENTIFIER,
    ORIGIN,
    OTHER,
    OTHER_PASSWORD,
    PATH,
    REDIRECT,
    TTL,
    URLS,
    Clock,
    authorize,
    authorize_query,
    client_of,
    code_for,
    enroll,
    location_query,
    make_state,
    request_id_of,
    token,
    tokens_for,
)


@pytest.fixture
def state(tmp_path, signer, clock):
    mdm = make_state(tmp_path / "mdm", signer, clock, auth="oauth2")
    yield mdm
    mdm.close()


def error_of(response, status: int, error: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    body = response.get_json()
    assert body["error"] == error, body
    return body


# -- the challenge ---------------------------------------------------------------------------------------------------
def test_oauth2_challenge_names_every_required_parameter(client):
    response = enroll(client, None)
    assert response.status_code == 401
    header = response.headers["WWW-Authenticate"]
    assert header == (f'Bearer method="apple-oauth2", authorization-url="{URLS["authorize_url"]}", '
                      f'token-url="{URLS["token_url"]}", redirect-url="{REDIRECT}", client-id="{CLIENT_ID}", '
                      'scope="mdm"')
    challenge = parse_challenge(header, strict=True)
    assert challenge.method == "apple-oauth2"
    assert set(challenge.params) == {"method", "authorization-url", "token-url", "redirect-url", "client-id", "scope"}
    assert "X-Apple-MDM-ESSO" not in response.headers


def test_challenge_leaves_scope_out_when_the_mdm_has_none(tmp_path, signer, clock):
    mdm = make_state(tmp_path / "m", signer, clock, auth="oauth2", scope=None)
    try:
        assert "scope" not in parse_challenge(mdm.signin.challenge()).params
    finally:
        mdm.close()


# -- the authorization endpoint ---------------------------------------------------------------------------------------
def test_authorization_page_prefills_login_hint_and_keeps_the_request_server_side(client):
    response = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN)
    assert response.status_code == 200 and response.mimetype == "text/html"
    html = response.get_data(as_text=True)
    assert f'value="{IDENTIFIER}"' in html and 'type="password"' in html
    assert len(request_id_of(html)) >= 20
    assert response.headers["Cache-Control"] == "no-store"


def test_successful_sign_in_redirects_308_to_the_redirect_url_with_code_and_the_same_state(client):
    response = authorize(client, state="340B948D-A84A-45A3-AC45-C93195124B00")
    assert response.status_code == 308
    location = response.headers["Location"]
    assert location.startswith(REDIRECT + "?code=")
    query = location_query(response)
    assert set(query) == {"code", "state"} and query["state"] == "340B948D-A84A-45A3-AC45-C93195124B00"
    assert "mdm_session=" in response.headers["Set-Cookie"] and "Secure" in response.headers["Set-Cookie"]


@pytest.mark.parametrize("change, code", [({"client_id": "someone-else"}, "unknown-client"),
                                          ({"redirect_uri": "https://evil.example/cb"}, "redirect-uri-mismatch"),
                                          ({"redirect_uri": None}, "redirect-uri-mismatch")])
def test_unknown_client_or_redirect_uri_is_an_error_page_never_a_redirect(client, change, code):
    query = {k: v for k, v in {**authorize_query(), **change}.items() if v is not None}
    response = client.get(PATH["authorize_url"] + "?" + urlencode(query), base_url=ORIGIN)
    assert response.status_code == 400 and "Location" not in response.headers
    assert response.get_json()["error"] == code


@pytest.mark.parametrize("change, error", [({"response_type": "token"}, "unsupported_response_type"),
                                           ({"scope": "mdm admin"}, "invalid_scope"),
                                           ({"code_challenge_method": "S256"}, "invalid_request"),
                                           ({"code_challenge": "abc", "code_challenge_method": "MD5"},
                                            "invalid_request")])
def test_other_bad_authorization_requests_redirect_with_an_error_and_the_state(client, change, error):
    response = client.get(PATH["authorize_url"] + "?" + urlencode({**authorize_query(), **change}), base_url=ORIGIN)
    assert response.status_code == 302
    assert response.headers["Location"].startswith(REDIRECT + "?")
    query = location_query(response)
    assert query["error"] == error and query["state"] == "STATE-1" and "code" not in query


def test_wrong_password_shows_the_page_again_for_the_same_request(client):
    page = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN)
    request_id = request_id_of(page.get_data(as_text=True))
    response = client.post(PATH["authorize_url"], data={"request": request_id, "user-identifier": IDENTIFIER,
                                                        "password": "wrong"}, base_url=ORIGIN)
    assert response.status_code == 401 and "Location" not in response.headers
    assert "The account or password is not correct." in response.get_data(as_text=True)
    assert request_id_of(response.get_data(as_text=True)) == request_id
    again = client.post(PATH["authorize_url"], data={"request": request_id, "user-identifier": IDENTIFIER,
                                                     "password": "carry-on-2026"}, base_url=ORIGIN)
    assert again.status_code == 308


def test_a_sign_in_request_works_once_and_expires(client, clock):
    page = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN)
    form = {"request": request_id_of(page.get_data(as_text=True)), "user-identifier": IDENTIFIER,
            "password": "carry-on-2026"}
    assert client.post(PATH["authorize_url"], data=form, base_url=ORIGIN).status_code == 308
    client.delete_cookie("mdm_session", domain="mdm.lab.test")
    error_of(client.post(PATH["authorize_url"], data=form, base_url=ORIGIN), 400, "sign-in-request-expired")
    page = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN)
    clock.now += 601
    stale = {**form, "request": request_id_of(page.get_data(as_text=True))}
    error_of(client.post(PATH["authorize_url"], data=stale, base_url=ORIGIN), 400, "sign-in-request-expired")


def test_a_web_session_signs_the_same_user_in_without_a_password(client):
    assert authorize(client).status_code == 308
    response = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query(state="S2")), base_url=ORIGIN)
    assert response.status_code == 308 and location_query(response)["state"] == "S2"
    other = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query(login_hint=OTHER)), base_url=ORIGIN)
    assert other.status_code == 200  # the session is Eliza's, Bob has to sign in himself


# -- the token endpoint ------------------------------------------------------------------------------------------------
def test_code_exchange_gives_bearer_tokens_that_enroll(client):
    response = token(client, grant_type="authorization_code", code=code_for(client), redirect_uri=REDIRECT)
    assert response.status_code == 200 and response.mimetype == "application/json"
    assert response.headers["Cache-Control"] == "no-store"
    body = response.get_json()
    assert body["token_type"] == "Bearer" and body["expires_in"] == TTL and body["scope"] == "mdm"
    assert len(body["access_token"]) >= 32 and len(body["refresh_token"]) >= 32
    assert body["access_token"] != body["refresh_token"]
    assert enroll(client, body["access_token"]).status_code == 200
    assert enroll(client, body["refresh_token"]).status_code == 401  # a refresh token is no access token


def test_codes_are_single_use(client):
    code = code_for(client)
    assert token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).status_code == 200
    body = error_of(token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT), 400,
                    "invalid_grant")
    assert "used" in body["error_description"]


def test_codes_are_short_lived(client, clock):
    code = code_for(client)
    clock.now += 61
    error_of(token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT), 400, "invalid_grant")


@pytest.mark.parametrize("form, status, error", [
    ({"grant_type": "authorization_code", "redirect_uri": "apple-remotemanagement-user-login:/other"}, 400,
     "invalid_grant"),
    ({"grant_type": "authorization_code", "client_id": "nobody"}, 401, "invalid_client"),
    ({"grant_type": "authorization_code", "redirect_uri": None}, 400, "invalid_request"),
    ({"grant_type": "password"}, 400, "unsupported_grant_type"),
    ({"grant_type": "refresh_token"}, 400, "invalid_request"),
])
def test_bad_token_requests(client, form, status, error):
    full = {"code": code_for(client), "redirect_uri": REDIRECT, **form}
    error_of(token(client, **{k: v for k, v in full.items() if v is not None}), status, error)


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


@pytest.mark.parametrize("method, challenge_of", [("S256", _s256), ("plain", lambda v: v)])
def test_pkce_is_accepted_when_sent(tmp_path, signer, method, challenge_of):
    # plain only where the scenario allows it (mdm.pkce_plain); the default refuses it, see below
    mdm = make_state(tmp_path / "pkce", signer, Clock(), auth="oauth2", pkce_methods=("S256", "plain"))
    try:
        client = client_of(mdm)
        verifier = "v" * 50
        code = code_for(client, code_challenge=challenge_of(verifier), code_challenge_method=method)
        assert token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT,
                     code_verifier=verifier).status_code == 200
    finally:
        mdm.close()


@pytest.mark.parametrize("extra", [{"code_challenge": "v" * 50, "code_challenge_method": "plain"},
                                   {"code_challenge": "v" * 50}])  # no method means plain (RFC 7636 4.3)
def test_pkce_plain_is_refused_by_default(client, extra):
    response = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query(**extra)), base_url=ORIGIN)
    assert response.status_code == 302
    assert location_query(response)["error"] == "invalid_request"
    assert "plain is not allowed" in location_query(response)["error_description"]


@pytest.mark.parametrize("verifier", [None, "w" * 50])
def test_pkce_verifier_must_match_when_a_challenge_was_sent(client, verifier):
    code = code_for(client, code_challenge=_s256("v" * 50), code_challenge_method="S256")
    form = {"grant_type": "authorization_code", "code": code, "redirect_uri": REDIRECT,
            **({"code_verifier": verifier} if verifier else {})}
    error_of(token(client, **form), 400, "invalid_grant")


def test_a_verifier_without_a_challenge_is_refused(client):
    error_of(token(client, grant_type="authorization_code", code=code_for(client), redirect_uri=REDIRECT,
                   code_verifier="v" * 50), 400, "invalid_grant")


def test_refresh_rotates_and_a_reused_refresh_token_revokes_the_grant(client):
    first = tokens_for(client)
    refreshed = token(client, grant_type="refresh_token", refresh_token=first["refresh_token"])
    assert refreshed.status_code == 200
    second = refreshed.get_json()
    assert second["access_token"] != first["access_token"] and second["refresh_token"] != first["refresh_token"]
    assert enroll(client, second["access_token"]).status_code == 200
    body = error_of(token(client, grant_type="refresh_token", refresh_token=first["refresh_token"]), 400,
                    "invalid_grant")
    assert "reused" in body["error_description"]
    assert enroll(client, second["access_token"]).get_json()["error"] == "revoked-token"
    error_of(token(client, grant_type="refresh_token", refresh_token=second["refresh_token"]), 400, "invalid_grant")


def test_refresh_tokens_expire(client, clock, state):
    first = tokens_for(client)
    clock.now += state.setup.refresh_ttl + 1
    error_of(token(client, grant_type="refresh_token", refresh_token=first["refresh_token"]), 400, "invalid_grant")


def test_no_refresh_tokens_when_the_mdm_issues_none(tmp_path, signer, clock):
    mdm = make_state(tmp_path / "m", signer, clock, auth="oauth2", refresh_tokens=False)
    try:
        assert "refresh_token" not in tokens_for(client_of(mdm))
    finally:
        mdm.close()


def test_token_endpoint_of_a_simple_mdm_refuses(tmp_path, signer, clock):
    mdm = make_state(tmp_path / "m", signer, clock)
    try:
        error_of(token(client_of(mdm), grant_type="authorization_code", code="x", redirect_uri=REDIRECT), 400,
                 "unauthorized_client")
    finally:
        mdm.close()


# -- lifetime, expiry, revocation (the console's controls) ------------------------------------------------------------
def test_token_lifetime_is_a_runtime_setting(client, state, clock):
    state.set_token_ttl(60)
    body = tokens_for(client)
    assert body["expires_in"] == 60
    clock.now += 60
    assert enroll(client, body["access_token"]).get_json()["error"] == "expired-token"
    for bad in (0, -5, True, "60", 400 * 86400):
        with pytest.raises(CommandRefused):
            state.set_token_ttl(bad)
    assert state.token_ttl == 60


def test_expiring_tokens_keeps_refresh_working(client, state):
    body = tokens_for(client)
    assert state.expire_tokens(user=IDENTIFIER) == 1
    assert enroll(client, body["access_token"]).get_json()["error"] == "expired-token"
    assert token(client, grant_type="refresh_token", refresh_token=body["refresh_token"]).status_code == 200


def test_revoking_a_user_revokes_access_and_refresh_and_ends_web_sessions(client, state):
    eliza = tokens_for(client)
    client.delete_cookie("mdm_session", domain="mdm.lab.test")
    bob = tokens_for(client, identifier=OTHER, password=OTHER_PASSWORD, login_hint=OTHER)
    assert state.revoke_tokens(user=IDENTIFIER) == 1
    assert enroll(client, eliza["access_token"]).get_json()["error"] == "revoked-token"
    error_of(token(client, grant_type="refresh_token", refresh_token=eliza["refresh_token"]), 400, "invalid_grant")
    assert enroll(client, bob["access_token"]).status_code == 200
    page = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query(login_hint=IDENTIFIER)),
                      base_url=ORIGIN)
    assert page.status_code == 200  # no single sign-on from an ended session


def test_tokens_codes_and_refresh_tokens_are_hashed_at_rest(client, tmp_path):
    code = code_for(client)
    body = token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).get_json()
    stored = b"".join(p.read_bytes() for p in sorted((tmp_path / "mdm").glob("mdm.db*")))
    for secret in (code, body["access_token"], body["refresh_token"]):
        assert secret.encode() not in stored
    assert hashlib.sha256(body["refresh_token"].encode()).hexdigest().encode() in stored


def test_authorization_url_query_is_kept_by_the_path_only_comparison(client):
    """The device keeps the authorization-url's own query; the MDM routes on the path only."""
    url = URLS["authorize_url"] + "?tenant=betterbag&" + urlencode(authorize_query())
    response = client.get(urlsplit(url).path + "?" + urlsplit(url).query, base_url=ORIGIN)
    assert response.status_code == 200
