"""A federated Managed Apple Account through the lab's real DNS and TLS: Apple's sign-in hands the device's web view
to the organization's IdP, takes its assertion back at gsa.<zone>, and completes; and what breaks it (an assertion
for another application, state dropped on the way back, wrong IdP passwords, throttled)."""
from __future__ import annotations

import re
from urllib.parse import parse_qs, urlsplit

import pytest

from lab.launcher import Lab
from lab.scenario import load
from lab.throttle import AFTER
from tests.conftest import IDENTIFIER, PASSWORD

SIGN_IN = "/v1/managed-account/sign-in"
DEVICE = {"platform": "iOS", "os_version": "26.1", "enrollment": "user"}


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    with Lab(load("maa-federated"), tmp_path_factory.mktemp("fed"), https_port=0, dns_port=0) as running:
        yield running


@pytest.fixture(autouse=True)
def _clear(lab):
    yield
    lab.faults.clear()


def _idp(lab):
    """The IdP's state, as its administrator would reach it (the lab does not expose it otherwise)."""
    return lab.dispatcher.apps["idp.betterbag.test"][1].config["STATE"]


def _http(lab, after: int, host: str) -> list[tuple]:
    return [(e["method"], e["path"], e["status"]) for e in lab.events.query(after=after, limit=5000)
            if e["kind"] == "http" and e["host"] == host]


def test_the_device_signs_in_at_the_idp_and_apple_completes(lab, device):
    after = lab.events.last_id()
    trace = device().enroll(IDENTIFIER, PASSWORD)
    assert trace.outcome == "enrolled", trace.render()
    assert _http(lab, after, "idp.betterbag.test") == [("GET", "/authorize", 200), ("POST", "/authorize", 302)]
    assert _http(lab, after, "gsa.lab.test") == [("POST", SIGN_IN, 200),
                                                  ("GET", "/v1/managed-account/federated/callback", 302),
                                                  ("POST", SIGN_IN, 200)]
    assert any("is a federated Managed Apple Account" in s.explanation for s in trace.steps)
    dns = {e["host"] for e in lab.events.query(after=after, limit=5000) if e["kind"] == "dns"}
    assert {"idp.betterbag.test", "gsa.lab.test"} <= dns  # found through the lab's DNS, as a phone would


@pytest.mark.parametrize("fault, diagnosis, words", [
    ("idp-assertion-wrong-audience", "maa-federated-assertion-invalid", "aud is 'mdmlab-mdm'"),
    ("idp-drops-state", "maa-federated-state-missing", "must send state back unchanged"),
])
def test_apple_refuses_what_the_idp_got_wrong(lab, device, fault, diagnosis, words):
    lab.faults.set(fault, times=1)
    trace = device().enroll(IDENTIFIER, PASSWORD)
    assert (trace.outcome, trace.diagnosis) == ("failed", diagnosis), trace.render()
    assert words in trace.explanation and "Verification Failed" in trace.explanation


def _start(lab, session) -> str:
    """Apple's answer to a federated account: the IdP's authorize URL for Apple's client."""
    answer = session.post(lab.origin("gsa.lab.test") + SIGN_IN, json={"account": IDENTIFIER, "device": DEVICE},
                          timeout=10)
    assert answer.status_code == 200, answer.text
    return answer.json()["federated"]["url"]


def _submit(session, page, password: str):
    fields = dict(re.findall(r'name="(client_id|redirect_uri|state)" value="([^"]*)"', page.text))
    return session.post(page.url.split("?")[0], data={**fields, "username": IDENTIFIER, "password": password},
                        allow_redirects=False, timeout=10)


def test_an_outside_client_walks_the_same_round_trip_and_a_code_is_single_use(lab, session):
    url = _start(lab, session)
    query = parse_qs(urlsplit(url).query)
    assert query["client_id"] == ["apple-managed-apple-accounts"] and query["login_hint"] == [IDENTIFIER]
    page = session.get(url, timeout=10)
    back = _submit(session, page, PASSWORD)
    assert back.status_code == 302 and back.headers["Location"].startswith(lab.origin("gsa.lab.test"))
    result = session.get(back.headers["Location"], allow_redirects=False, timeout=10)
    code = parse_qs(urlsplit(result.headers["Location"]).query)["code"][0]
    body = {"account": IDENTIFIER, "device": DEVICE, "federated_code": code}
    assert session.post(lab.origin("gsa.lab.test") + SIGN_IN, json=body, timeout=10).status_code == 200
    again = session.post(lab.origin("gsa.lab.test") + SIGN_IN, json=body, timeout=10)
    assert again.status_code == 401 and again.json()["error"] == "federated-code-invalid"
    replay = session.get(back.headers["Location"], allow_redirects=False, timeout=10)
    assert replay.status_code == 400 and replay.json()["error"] == "federated-request-expired"


def test_wrong_idp_passwords_are_refused_then_throttled(lab, session, device):
    page = session.get(_start(lab, session), timeout=10)
    try:
        for _ in range(AFTER):
            refused = _submit(session, page, "guess")
            assert refused.status_code == 401 and "incorrect" in refused.text
        throttled = _submit(session, page, PASSWORD)  # even the right password waits
        assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
        assert "Too many attempts" in throttled.text
        events = [e for e in lab.events.query(component="idp") if e["status"] == 429]
        assert events and "throttled" in events[-1]["summary"]
        trace = device().enroll(IDENTIFIER, PASSWORD)  # the MDM lets the person in; the IdP still waits
        assert (trace.outcome, trace.diagnosis) == ("failed", "maa-federated-throttled"), trace.render()
    finally:
        _idp(lab).throttle.succeeded(IDENTIFIER)


def test_a_wrong_idp_password_on_the_device_names_the_idp(lab, device):
    idp = _idp(lab)
    real = idp._users[IDENTIFIER]
    idp._users[IDENTIFIER] = (real[0], b"changed at the IdP")  # the MDM (not federated here) still takes it
    try:
        trace = device().enroll(IDENTIFIER, PASSWORD)
    finally:
        idp._users[IDENTIFIER] = real
    assert (trace.outcome, trace.diagnosis) == ("failed", "maa-federated-wrong-password"), trace.render()
    assert "password at the IdP" in trace.explanation
