"""Apple's side of a federated Managed Apple Account sign-in (mocks/apple_id): the hand-off to the organization's
IdP, the checks of the IdP's assertion at Apple's callback (issuer, audience, state, expiry, single use, subject),
the one-time result code, and wrong passwords throttled for the accounts Apple itself signs in. Flask's test client."""
from __future__ import annotations

from urllib.parse import parse_qs, urlsplit

import pytest

from lab import federation
from lab.throttle import AFTER, SECONDS
from mocks.apple_id import CLIENT_ID, FEDERATED_CALLBACK_PATH, AppleIDSetup, AppleIDState, create_app

ORIGIN, IDP = "https://gsa.lab.test:8443", "https://idp.betterbag.test:8443"
SECRET = b"federation-secret-0123456789abcdef"
SIGN_IN = "/v1/managed-account/sign-in"
ACCOUNT = "eliza@betterbag.test"
DEVICE = {"platform": "iOS", "os_version": "26.1", "enrollment": "user"}


class Clock:
    now = 1_800_000_000.0

    def __call__(self) -> float:
        return self.now


class Directory:
    def account_record(self, identifier):
        account = identifier.strip().lower()
        if account == ACCOUNT:
            return {"identifier": account, "organization": "BetterBag", "federated": True}
        if account == "jo@betterbag.test":
            return {"identifier": account, "organization": "BetterBag", "federated": False}
        return None

    def alias_owner(self, identifier):
        return None

    def maa_allowed_on(self, organization):
        return "any"

    def server_record(self, server_uuid):
        return None


@pytest.fixture
def clock():
    return Clock()


@pytest.fixture
def client(clock):
    setup = AppleIDSetup(passwords={"jo@betterbag.test": "pw", ACCOUNT: "never-used"}, origin=ORIGIN,
                         idp_origin=IDP, federation_secret=SECRET)
    return create_app(AppleIDState(setup, Directory(), clock=clock)).test_client()


def start(client, account=ACCOUNT, password=""):
    return client.post(SIGN_IN, json={"account": account, "password": password, "device": DEVICE},
                       base_url=ORIGIN)


def idp_answer(client, clock, state, *, secret=SECRET, issuer=IDP, audience=CLIENT_ID, subject=ACCOUNT, nonce=None,
               assertion=None):
    """What the IdP's redirect brings to Apple's callback."""
    assertion = assertion or federation.sign(secret, issuer=issuer, audience=audience, subject=subject,
                                             nonce=nonce or state, now=clock())
    query = {"code": assertion, **({"state": state} if state else {})}
    return client.get(FEDERATED_CALLBACK_PATH, query_string=query, base_url=ORIGIN), assertion


def test_a_federated_account_is_sent_to_its_idp_as_apples_own_relying_party(client):
    answer = start(client, password="whatever the person typed")
    assert answer.status_code == 200 and answer.get_json()["federated"]["idp"] == "idp.betterbag.test"
    url = urlsplit(answer.get_json()["federated"]["url"])
    query = {k: v[0] for k, v in parse_qs(url.query).items()}
    assert f"{url.scheme}://{url.netloc}{url.path}" == IDP + "/authorize"
    assert query["client_id"] == CLIENT_ID and query["redirect_uri"] == ORIGIN + FEDERATED_CALLBACK_PATH
    assert query["login_hint"] == ACCOUNT and query["response_type"] == "code" and len(query["state"]) > 16


def _state(client) -> str:
    return parse_qs(urlsplit(start(client).get_json()["federated"]["url"]).query)["state"][0]


def test_the_idps_assertion_becomes_a_one_time_code_that_completes_the_sign_in(client, clock):
    back, _ = idp_answer(client, clock, _state(client))
    assert back.status_code == 302 and back.headers["Location"].startswith("mdmlab-maa://federated-result?code=")
    code = parse_qs(urlsplit(back.headers["Location"]).query)["code"][0]
    body = {"account": ACCOUNT, "device": DEVICE, "federated_code": code}
    done = client.post(SIGN_IN, json=body, base_url=ORIGIN)
    assert done.status_code == 200 and done.get_json()["federated"] is True
    again = client.post(SIGN_IN, json=body, base_url=ORIGIN)
    assert again.status_code == 401 and again.get_json()["error"] == "federated-code-invalid"


@pytest.mark.parametrize("change, error, words", [
    ({"audience": "mdmlab-mdm"}, "federated-assertion-invalid", "aud is 'mdmlab-mdm'"),
    ({"issuer": "https://idp.evil.test"}, "federated-assertion-invalid", "iss is"),
    ({"secret": b"another-secret-entirely-00000000"}, "federated-assertion-invalid", "signature"),
    ({"nonce": "another-sign-in"}, "federated-assertion-invalid", "nonce"),
    ({"subject": "jo@betterbag.test"}, "federated-other-user", "signed in jo@betterbag.test"),
])
def test_apple_checks_every_claim_of_the_assertion(client, clock, change, error, words):
    refused, _ = idp_answer(client, clock, _state(client), **change)
    assert refused.status_code in (401, 403) and refused.get_json()["error"] == error
    assert words in refused.get_json()["reason"] and refused.get_json()["alert"]["title"] == "Verification Failed"


def test_expired_replayed_and_stateless_answers_are_refused(client, clock):
    state = _state(client)
    assertion = federation.sign(SECRET, issuer=IDP, audience=CLIENT_ID, subject=ACCOUNT, nonce=state, now=clock())
    clock.now += federation.ASSERTION_TTL + 1
    expired, _ = idp_answer(client, clock, state, assertion=assertion)
    assert "expired" in expired.get_json()["reason"]
    state = _state(client)
    ok, assertion = idp_answer(client, clock, state)
    assert ok.status_code == 302
    replay, _ = idp_answer(client, clock, state, assertion=assertion)
    assert replay.get_json()["error"] == "federated-request-expired"  # the sign-in is single use
    other_sign_in = _state(client)
    reused, _ = idp_answer(client, clock, other_sign_in, assertion=assertion)
    assert reused.get_json()["error"] == "federated-assertion-invalid"  # its nonce is the first sign-in's
    missing, _ = idp_answer(client, clock, None)
    assert missing.status_code == 400 and missing.get_json()["error"] == "federated-state-missing"


def test_a_password_never_signs_in_a_federated_account(client):
    body = {"account": ACCOUNT, "password": "never-used", "device": DEVICE}
    assert "account" not in client.post(SIGN_IN, json=body, base_url=ORIGIN).get_json()


def test_wrong_passwords_at_apple_are_throttled(client, clock):
    for _ in range(AFTER):
        assert start(client, "jo@betterbag.test", "guess").status_code == 401
    throttled = start(client, "jo@betterbag.test", "pw")
    assert throttled.status_code == 429 and throttled.headers["Retry-After"] == str(SECONDS)
    assert throttled.get_json()["error"] == "throttled" and "throttled" in throttled.get_json()["reason"]
    clock.now += SECONDS
    assert start(client, "jo@betterbag.test", "pw").status_code == 200


def test_unfinished_federated_sign_ins_are_bounded(client, monkeypatch):
    monkeypatch.setattr("mocks.apple_id.state.PENDING_LIMIT", 3)
    first = _state(client)
    for _ in range(3):
        _state(client)
    gone, _ = idp_answer(client, Clock(), first)
    assert gone.get_json()["error"] == "federated-request-expired"  # the oldest was forgotten, memory stays flat
