"""The MDM's named faults (mocks/mdm/faults.py), each where it applies and nowhere else; Enrollment SSO's document;
federated sign-in through the organization's IdP. Flask's test client, a real fault board."""
from __future__ import annotations

import base64
import plistlib
from urllib.parse import urlencode, urlsplit

import pytest

from lab import cms
from lab.device.authentication import parse_challenge
from lab.throttle import AFTER as THROTTLE_AFTER
from lab.throttle import SECONDS as THROTTLE_SECONDS
from mocks.mdm import FAULTS, FEDERATION_CLIENT_ID, IdPState, create_idp_app
from mocks.mdm.faults import fault, idp_fault
from mocks.mdm.signin import SIGN_IN_COOKIE
from tests.mdm_support import (
    IDENTIFIER,
    ORIGIN,
    PASSWORD,
    PATH,
    REDIRECT,
    TOPIC,
    URLS,
    USERS,
    authorize,
    authorize_query,
    check_in,
    client_of,
    enroll,
    enrolled,
    fault_board,
    location_query,
    make_state,
    poll,
    token,
    tokens_for,
)

EID = {"EnrollmentID": "ENROLLMENT-0001"}
IDP_ORIGIN = "https://idp.betterbag.test:8443"
SECRET = b"federation-secret-0123456789abcdef"


@pytest.fixture
def board():
    return fault_board()


@pytest.fixture
def make(tmp_path, signer, board, clock):
    made = []

    def build(**setup):
        state = make_state(tmp_path / f"mdm{len(made)}", signer, clock, faults=board, **setup)
        made.append(state)
        return state, client_of(state)

    yield build
    for state in made:
        state.close()


def simple_token(client) -> str:
    response = client.post(PATH["auth_url"], data={"user-identifier": IDENTIFIER, "password": PASSWORD},
                           base_url=ORIGIN)
    return location_query(response)["access-token"]


def test_every_fault_applies_somewhere_and_is_tested_here():
    places = {n for registry in (fault, idp_fault) for names in registry.places().values() for n in names}
    assert {f.name for f in FAULTS} == places
    assert all(f.at and f.apply for f in FAULTS)  # each a record: where it applies and what it does
    assert all(f.component in ("mdm", "idp") and f.description and f.symptom for f in FAULTS)
    tested = {"challenge-missing", "challenge-malformed", "challenge-missing-parameter", "challenge-unknown-method",
              "callback-302", "callback-wrong-host", "token-endpoint-down", "refresh-rejected",
              "refresh-drops-refresh-token", "token-expired-early", "token-revoked", "reauth-loop",
              "esso-document-html", "profile-access-rights", "profile-missing-maa", "profile-mode-mismatch",
              "callback-drops-state", "session-cookie-other-host", "idp-drops-state", "idp-assertion-wrong-audience"}
    assert tested == {f.name for f in FAULTS}


# -- the challenge -------------------------------------------------------------------------------------------------
def test_challenge_missing_is_a_bare_401_once(make, board):
    _, client = make()
    board.set("challenge-missing", times=1)
    first, second = enroll(client, None), enroll(client, None)
    assert first.status_code == second.status_code == 401
    assert "WWW-Authenticate" not in first.headers and "WWW-Authenticate" in second.headers


def test_challenge_malformed_does_not_parse(make, board):
    _, client = make()
    board.set("challenge-malformed")
    header = enroll(client, None).headers["WWW-Authenticate"]
    with pytest.raises(ValueError, match="cannot parse"):
        parse_challenge(header)


@pytest.mark.parametrize("auth, dropped", [("simple", "url"), ("oauth2", "token-url")])
def test_challenge_missing_parameter(make, board, auth, dropped):
    _, client = make(auth=auth)
    board.set("challenge-missing-parameter")
    params = parse_challenge(enroll(client, None).headers["WWW-Authenticate"]).params
    assert dropped not in params and "method" in params


def test_challenge_unknown_method(make, board):
    _, client = make(auth="oauth2")
    board.set("challenge-unknown-method")
    assert parse_challenge(enroll(client, None).headers["WWW-Authenticate"]).method == "oauth2"


def test_challenge_faults_apply_to_check_in_401s_too(make, board):
    _, client = make()
    board.set("challenge-missing")
    response = check_in(client, {"MessageType": "Authenticate", "Topic": TOPIC, **EID}, None)
    assert response.status_code == 401 and "WWW-Authenticate" not in response.headers


# -- the callback ----------------------------------------------------------------------------------------------------
def test_callback_302_simple_and_oauth2(make, board):
    _, simple = make()
    board.set("callback-302", times=2)
    response = simple.post(PATH["auth_url"], data={"user-identifier": IDENTIFIER, "password": PASSWORD},
                           base_url=ORIGIN)
    assert response.status_code == 302 and response.headers["Location"].startswith(
        "apple-remotemanagement-user-login://authentication-results?access-token=")
    _, oauth = make(auth="oauth2")
    response = authorize(oauth)
    assert response.status_code == 302 and response.headers["Location"].startswith(REDIRECT + "?code=")


def test_callback_drops_state_keeps_the_code(make, board):
    state, oauth = make(auth="oauth2")
    board.set("callback-drops-state", times=1)
    query = location_query(authorize(oauth))
    assert "code" in query and "state" not in query
    assert location_query(authorize(client_of(state)))["state"] == "STATE-1"  # one use consumed


def test_callback_wrong_host(make, board):
    _, simple = make()
    board.set("callback-wrong-host", times=2)
    response = simple.post(PATH["auth_url"], data={"user-identifier": IDENTIFIER, "password": PASSWORD},
                           base_url=ORIGIN)
    assert urlsplit(response.headers["Location"]).netloc == "authentication-result"
    _, oauth = make(auth="oauth2")
    location = urlsplit(authorize(oauth).headers["Location"])
    assert (location.scheme, location.netloc, location.path) == ("apple-remotemanagement-user-login", "oauth2",
                                                                 "/redirection")


# -- the token endpoint ------------------------------------------------------------------------------------------------
def test_token_endpoint_down(make, board):
    _, client = make(auth="oauth2")
    code = location_query(authorize(client))["code"]
    board.set("token-endpoint-down", times=1)
    response = token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT)
    assert response.status_code == 503 and response.headers["Retry-After"] == "120"
    assert token(client, grant_type="authorization_code", code=code, redirect_uri=REDIRECT).status_code == 200


def test_refresh_rejected_touches_refresh_grants_only(make, board):
    _, client = make(auth="oauth2")
    board.set("refresh-rejected", times=1)
    body = tokens_for(client)  # the code exchange does not consume the fault
    assert board.armed()[0]["remaining"] == 1
    response = token(client, grant_type="refresh_token", refresh_token=body["refresh_token"])
    assert response.status_code == 400 and response.get_json()["error"] == "invalid_grant"
    assert token(client, grant_type="refresh_token", refresh_token=body["refresh_token"]).status_code == 200


def test_refresh_drops_refresh_token(make, board):
    _, client = make(auth="oauth2")
    body = tokens_for(client)
    board.set("refresh-drops-refresh-token", times=1)
    refreshed = token(client, grant_type="refresh_token", refresh_token=body["refresh_token"]).get_json()
    assert "refresh_token" not in refreshed and refreshed["access_token"]


# -- ongoing authentication ------------------------------------------------------------------------------------------
def test_token_expired_early_really_expires_the_token(make, board):
    _, client = make(auth="oauth2")
    body = tokens_for(client)
    assert enroll(client, body["access_token"]).status_code == 200
    board.set("token-expired-early", times=1)
    response = check_in(client, {"MessageType": "Authenticate", "Topic": TOPIC, **EID}, body["access_token"])
    assert response.status_code == 401 and response.get_json()["error"] == "expired-token"
    assert response.headers["WWW-Authenticate"].startswith('Bearer method="apple-oauth2"')
    assert enroll(client, body["access_token"]).get_json()["error"] == "expired-token"  # for good, not only once
    renewed = token(client, grant_type="refresh_token", refresh_token=body["refresh_token"]).get_json()
    assert check_in(client, {"MessageType": "Authenticate", "Topic": TOPIC, **EID},
                    renewed["access_token"]).status_code == 200


def test_token_revoked_kills_the_refresh_token_too(make, board):
    _, client = make(auth="oauth2")
    body = tokens_for(client)
    enroll(client, body["access_token"])
    board.set("token-revoked", times=1)
    response = check_in(client, {"MessageType": "Authenticate", "Topic": TOPIC, **EID}, body["access_token"])
    assert response.get_json()["error"] == "revoked-token"
    assert token(client, grant_type="refresh_token", refresh_token=body["refresh_token"]).status_code == 400


def test_reauth_loop_refuses_every_check_in_and_poll_while_armed(make, board):
    _, client = make()
    access = simple_token(client)
    enrolled(client, access, EID)
    board.set("reauth-loop")
    for _ in range(3):
        assert poll(client, {"Status": "Idle", **EID}, simple_token(client)).status_code == 401
    assert enroll(client, access).status_code == 200  # the enrollment endpoint is not where it applies
    board.clear()
    assert poll(client, {"Status": "Idle", **EID}, access).status_code == 200


def test_ongoing_faults_leave_check_out_alone(make, board):
    _, client = make()
    access = simple_token(client)
    enrolled(client, access, EID)
    board.set("reauth-loop")
    assert check_in(client, {"MessageType": "CheckOut", "Topic": TOPIC, **EID}, access).status_code == 200


# -- the enrollment profile -----------------------------------------------------------------------------------------
@pytest.mark.parametrize("fault, check", [
    ("profile-access-rights", lambda mdm: mdm.get("AccessRights") == 8191 and mdm["EnrollmentMode"] == "BYOD"),
    ("profile-missing-maa", lambda mdm: "AssignedManagedAppleID" not in mdm),
    ("profile-mode-mismatch", lambda mdm: mdm["EnrollmentMode"] == "ADDE"),
])
def test_profile_faults(make, board, fault, check):
    _, client = make()
    board.set(fault, times=1)
    access = simple_token(client)
    for expected in (True, False):
        profile = plistlib.loads(cms.parse(enroll(client, access).get_data()).content)
        [mdm] = [p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.mdm"]
        assert check(mdm) is expected


# -- Enrollment SSO ---------------------------------------------------------------------------------------------------
def test_esso_header_on_the_enrollment_401_only(make):
    _, client = make(auth="oauth2", esso=True)
    assert enroll(client, None).headers["X-Apple-MDM-ESSO"] == URLS["esso_url"]
    assert "X-Apple-MDM-ESSO" not in check_in(client, {"MessageType": "Authenticate", **EID}, None).headers


def test_esso_document(make):
    state, client = make(auth="oauth2", esso=True)
    response = client.get(PATH["esso_url"], base_url=ORIGIN)
    assert response.status_code == 200 and response.mimetype == "application/json"
    document = response.get_json()
    assert document["iTunesStoreID"] == state.setup.esso_app_id and isinstance(document["iTunesStoreID"], int)
    signed = cms.parse(base64.b64decode(document["ConfigurationProfile"]))
    profile = plistlib.loads(signed.content)
    assert [p["PayloadType"] for p in profile["PayloadContent"]] == ["com.apple.extensiblesso"]
    assert document["AssociatedDomains"] == ["authsrv:mdm.lab.test"]


def test_esso_document_html(make, board):
    _, client = make(auth="oauth2", esso=True)
    board.set("esso-document-html", times=1)
    assert client.get(PATH["esso_url"], base_url=ORIGIN).mimetype == "text/html"
    assert client.get(PATH["esso_url"], base_url=ORIGIN).mimetype == "application/json"


# -- federated sign-in -----------------------------------------------------------------------------------------------
@pytest.fixture
def idp(clock):
    state = IdPState("BetterBag", IDP_ORIGIN, USERS, SECRET, {FEDERATION_CLIENT_ID: {URLS["federated_callback_url"]}},
                     clock=clock)
    return create_idp_app(state).test_client()


def _to_idp(response, idp):
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert f"{location.scheme}://{location.netloc}" == IDP_ORIGIN and location.path == "/authorize"
    return idp.get(location.path + "?" + location.query, base_url=IDP_ORIGIN)


def _idp_sign_in(page, idp, password=PASSWORD):
    assert page.status_code == 200
    html = page.get_data(as_text=True)
    fields = {name: html.split(f'name="{name}" value="', 1)[1].split('"', 1)[0]
              for name in ("client_id", "redirect_uri", "state")}
    return idp.post("/authorize", data={**fields, "username": IDENTIFIER, "password": password}, base_url=IDP_ORIGIN)


def _back_to_mdm(response, client):
    assert response.status_code == 302
    location = urlsplit(response.headers["Location"])
    assert location.path == PATH["federated_callback_url"]
    return client.get(location.path + "?" + location.query, base_url=ORIGIN)


@pytest.mark.parametrize("auth", ["simple", "oauth2"])
def test_federated_sign_in_goes_to_the_idp_and_back(make, idp, auth):
    _, client = make(auth=auth, idp_origin=IDP_ORIGIN, federation_secret=SECRET)
    if auth == "simple":
        start = client.get(PATH["auth_url"] + "?" + urlencode({"user-identifier": IDENTIFIER}), base_url=ORIGIN)
    else:
        start = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN)
    page = _to_idp(start, idp)
    assert f'value="{IDENTIFIER}"' in page.get_data(as_text=True)  # login_hint passed on
    final = _back_to_mdm(_idp_sign_in(page, idp), client)
    assert final.status_code == 308
    if auth == "simple":
        assert final.headers["Location"].startswith("apple-remotemanagement-user-login://authentication-results?")
        assert enroll(client, location_query(final)["access-token"]).status_code == 200
    else:
        query = location_query(final)
        assert query["state"] == "STATE-1"
        body = token(client, grant_type="authorization_code", code=query["code"], redirect_uri=REDIRECT).get_json()
        assert enroll(client, body["access_token"]).status_code == 200


def test_idp_refuses_a_wrong_password_and_unknown_relying_parties(make, idp):
    _, client = make(auth="oauth2", idp_origin=IDP_ORIGIN, federation_secret=SECRET)
    page = _to_idp(client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN), idp)
    refused = _idp_sign_in(page, idp, password="wrong")
    assert refused.status_code == 401 and "incorrect" in refused.get_data(as_text=True)
    evil = idp.get("/authorize?" + urlencode({"client_id": "mdmlab-mdm", "redirect_uri": "https://evil.example/cb",
                                              "state": "x"}), base_url=IDP_ORIGIN)
    assert evil.status_code == 400 and evil.get_json()["error"] == "redirect-uri-mismatch"


def test_mdm_refuses_tampered_replayed_or_foreign_assertions(make, idp):
    _, client = make(auth="oauth2", idp_origin=IDP_ORIGIN, federation_secret=SECRET)
    page = _to_idp(client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN), idp)
    back = urlsplit(_idp_sign_in(page, idp).headers["Location"])
    query = dict(pair.split("=", 1) for pair in back.query.split("&"))
    tampered = client.get(back.path + "?" + urlencode({"code": "x" + query["code"], "state": query["state"]}),
                          base_url=ORIGIN)
    assert tampered.status_code == 401 and tampered.get_json()["error"] == "federated-assertion-invalid"
    assert client.get(back.path + "?" + back.query, base_url=ORIGIN).status_code == 308
    replay = client.get(back.path + "?" + back.query, base_url=ORIGIN)
    assert replay.status_code == 400 and replay.get_json()["error"] == "sign-in-request-expired"


def test_the_federated_sign_in_is_tied_to_the_browser_that_started_it(make, idp):
    _, client = make(auth="oauth2", idp_origin=IDP_ORIGIN, federation_secret=SECRET)
    start = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN)
    cookie = next(h for h in start.headers.getlist("Set-Cookie") if h.startswith(SIGN_IN_COOKIE + "="))
    assert "Domain" not in cookie and "Secure" in cookie and "HttpOnly" in cookie  # host-only
    back = urlsplit(_idp_sign_in(_to_idp(start, idp), idp).headers["Location"])
    client.delete_cookie(SIGN_IN_COOKIE, domain=urlsplit(ORIGIN).hostname)
    again = client.get(back.path + "?" + back.query, base_url=ORIGIN)
    assert again.status_code == 302 and again.headers["Location"].startswith(IDP_ORIGIN + "/authorize?")  # over
    assert any(h.startswith(SIGN_IN_COOKIE + "=") for h in again.headers.getlist("Set-Cookie"))


def test_session_cookie_other_host_sets_the_idps_domain(make, board, idp):
    _, client = make(auth="oauth2", idp_origin=IDP_ORIGIN, federation_secret=SECRET)
    board.set("session-cookie-other-host")
    start = client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN)
    cookie = next(h for h in start.headers.getlist("Set-Cookie") if h.startswith(SIGN_IN_COOKIE + "="))
    assert "Domain=idp.betterbag.test" in cookie
    assert "session-cookie-other-host" in board.label(board.take("mdm", "mdm.lab.test", at="cookie"))


def _idp_board(board):
    board.hosts["idp"] = {"idp.betterbag.test"}
    board.default_hosts["idp"] = "idp.betterbag.test"
    return board


def test_idp_drops_state_and_the_mdm_says_so(make, board, clock):
    idp = create_idp_app(IdPState("BetterBag", IDP_ORIGIN, USERS, SECRET,
                                  {FEDERATION_CLIENT_ID: {URLS["federated_callback_url"]}},
                                  faults=_idp_board(board), clock=clock)).test_client()
    _, client = make(auth="oauth2", idp_origin=IDP_ORIGIN, federation_secret=SECRET)
    board.set("idp-drops-state", times=1)
    page = _to_idp(client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN), idp)
    back = _idp_sign_in(page, idp)
    assert "state=" not in back.headers["Location"] and "code=" in back.headers["Location"]
    refused = _back_to_mdm(back, client)
    assert refused.status_code == 400 and refused.get_json()["error"] == "federated-state-missing"
    assert "return state unchanged" in refused.get_json()["message"]


def test_idp_assertion_wrong_audience_is_refused_by_the_mdm(make, board, clock):
    parties = {FEDERATION_CLIENT_ID: {URLS["federated_callback_url"]}, "apple": {"https://gsa.lab.test/cb"}}
    idp = create_idp_app(IdPState("BetterBag", IDP_ORIGIN, USERS, SECRET, parties, faults=_idp_board(board),
                                  clock=clock)).test_client()
    _, client = make(auth="oauth2", idp_origin=IDP_ORIGIN, federation_secret=SECRET)
    board.set("idp-assertion-wrong-audience", times=1)
    page = _to_idp(client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN), idp)
    refused = _back_to_mdm(_idp_sign_in(page, idp), client)
    assert refused.status_code == 401 and "aud is 'apple'" in refused.get_json()["message"]


def test_idp_throttles_wrong_passwords(make, idp, clock):
    _, client = make(auth="oauth2", idp_origin=IDP_ORIGIN, federation_secret=SECRET)
    page = _to_idp(client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN), idp)
    for _ in range(THROTTLE_AFTER):
        assert _idp_sign_in(page, idp, password="guess").status_code == 401
    throttled = _idp_sign_in(page, idp)  # even the right password waits
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == str(THROTTLE_SECONDS)
    assert "Too many attempts" in throttled.get_data(as_text=True)
    clock.now += THROTTLE_SECONDS
    assert _idp_sign_in(page, idp).status_code == 302


def test_mdm_refuses_an_assertion_signed_with_another_secret(make, idp):
    _, client = make(auth="oauth2", idp_origin=IDP_ORIGIN, federation_secret=b"another-secret-entirely-0000000")
    page = _to_idp(client.get(PATH["authorize_url"] + "?" + urlencode(authorize_query()), base_url=ORIGIN), idp)
    response = _back_to_mdm(_idp_sign_in(page, idp), client)
    assert response.status_code == 401 and "signature" in response.get_json()["message"]


# -- every word about a fault comes from the board ---------------------------------------------------------------
@pytest.mark.parametrize("concealed", [False, True])
def test_fault_messages_name_the_fault_unless_the_board_conceals_it(make, board, concealed):
    board.concealed = concealed
    _, client = make(auth="oauth2")
    body = tokens_for(client)
    said = []
    for name, request in (
            ("refresh-rejected", lambda: token(client, grant_type="refresh_token",
                                                refresh_token=body["refresh_token"])),
            ("token-endpoint-down", lambda: token(client, grant_type="refresh_token",
                                                   refresh_token=body["refresh_token"])),
            ("reauth-loop", lambda: check_in(client, {"MessageType": "Authenticate", "Topic": TOPIC, **EID},
                                             body["access_token"]))):
        board.set(name, times=1)
        response = request()
        assert response.status_code in (400, 401, 503)
        said.append((name, response.get_json().get("error_description") or response.get_json()["message"]))
    for name, message in said:
        assert (name in message) is not concealed, message
        assert "fault" not in message or not concealed
