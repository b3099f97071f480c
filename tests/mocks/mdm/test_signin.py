"""mocks/mdm/signin.py where RFC 6749/7636 speak and Apple is silent (ROBUSTNESS.md F21): a replayed code revokes
what it issued, PKCE S256 only by default (test_oauth.py), and wrong passwords are throttled."""
from __future__ import annotations

from urllib.parse import urlencode

import pytest

from mocks.mdm.signin import THROTTLE_AFTER, THROTTLE_SECONDS
from tests.mdm_support import (
    IDENTIFIER,
    ORIGIN,
    OTHER,
    OTHER_PASSWORD,
    PASSWORD,
    PATH,
    REDIRECT,
    authorize_query,
    client_of,
    code_for,
    enroll,
    location_query,
    make_state,
    request_id_of,
    token,
)


@pytest.fixture(params=["simple", "oauth2"])
def state(request, tmp_path, signer, clock):
    mdm = make_state(tmp_path / "mdm", signer, clock, auth=request.param)
    yield mdm
    mdm.close()


def test_a_replayed_code_revokes_the_tokens_it_was_exchanged_for(tmp_path, signer, clock):
    mdm = make_state(tmp_path / "oauth", signer, clock, auth="oauth2")
    try:
        client = client_of(mdm)
        code = code_for(client)
        first = token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).get_json()
        assert enroll(client, first["access_token"]).status_code == 200
        replay = token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
        assert replay.status_code == 400 and replay.get_json()["error"] == "invalid_grant"
        assert "revoked" in replay.get_json()["error_description"]
        assert enroll(client, first["access_token"]).status_code == 401
        refreshed = token(client, grant_type="refresh_token", refresh_token=first["refresh_token"])
        assert refreshed.status_code == 400 and "revoked" in refreshed.get_json()["error_description"]
    finally:
        mdm.close()


def _submit(state, password: str, identifier: str = IDENTIFIER):
    client = client_of(state)  # a browser without the web session of an earlier sign-in
    if state.setup.auth == "simple":
        return client.post(PATH["auth_url"], data={"user-identifier": identifier, "password": password},
                           base_url=ORIGIN)
    page = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query(login_hint=identifier)),
                      base_url=ORIGIN)
    return client.post(PATH["authorize_url"], data={"request": request_id_of(page.get_data(as_text=True)),
                                                    "user-identifier": identifier, "password": password},
                       base_url=ORIGIN)


def test_wrong_passwords_in_a_row_are_throttled_then_forgiven(state, clock):
    for _ in range(THROTTLE_AFTER):
        assert _submit(state, "guess").status_code == 401
    throttled = _submit(state, PASSWORD)  # even the right password waits
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == str(THROTTLE_SECONDS)
    assert "Too many attempts" in throttled.get_data(as_text=True)
    assert _submit(state, OTHER_PASSWORD, OTHER).status_code == 308  # other accounts are not affected
    clock.now += THROTTLE_SECONDS
    assert _submit(state, PASSWORD).status_code == 308
    assert _submit(state, "guess").status_code == 401  # the count started again


def test_a_right_password_resets_the_count(state):
    for _ in range(THROTTLE_AFTER - 1):
        assert _submit(state, "guess").status_code == 401
    assert _submit(state, PASSWORD).status_code == 308
    for _ in range(THROTTLE_AFTER - 1):
        assert _submit(state, "guess").status_code == 401
    assert location_query(_submit(state, PASSWORD))


def test_a_303_callback_and_a_space_separated_challenge_as_settings(tmp_path, signer, clock):
    mdm = make_state(tmp_path / "fleet-like", signer, clock, callback_status=303, challenge_separator=" ")
    try:
        client = client_of(mdm)
        first = enroll(client, None)
        assert first.status_code == 401
        assert first.headers["WWW-Authenticate"] == f'Bearer method="apple-as-web" url="{mdm.setup.auth_url}"'
        signed_in = client.post(PATH["auth_url"], data={"user-identifier": IDENTIFIER, "password": PASSWORD},
                                base_url=ORIGIN)
        assert signed_in.status_code == 303
        assert enroll(client, location_query(signed_in)["access-token"]).status_code == 200
    finally:
        mdm.close()
