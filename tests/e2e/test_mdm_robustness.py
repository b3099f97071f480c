"""The MDM through the lab's real DNS and TLS: against hostile clients (ROBUSTNESS.md F3, F5, F12, F21: a
binary-plist reference bomb as a command report, large signed bodies without a token, another account's
Authenticate and TokenUpdate on a live enrollment, a replayed authorization code, PKCE plain, password guessing),
and what it tells and gives devices (event facts, schema problems, GetToken for com.apple.maid)."""
from __future__ import annotations

import base64
import gc
import hashlib
import json
import plistlib
import tracemalloc
import uuid
from dataclasses import replace
from types import SimpleNamespace
from urllib.parse import parse_qs, urlencode, urlsplit

import pytest
import trustme
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.asymmetric.utils import encode_dss_signature

from lab import cms, schema
from lab.launcher import Lab
from lab.net import LabResolver, lab_session
from lab.scenario import load
from mocks.mdm.signin import THROTTLE_AFTER
from tests.test_plists import bomb

ELIZA, ELIZA_PASSWORD = "eliza@betterbag.test", "carry-on-2026"
MALLORY, MALLORY_PASSWORD = "mallory@betterbag.test", "mallory-2026"
CAROL, CAROL_PASSWORD = "carol@betterbag.test", "carol-2026"  # the account whose password is guessed
TOPIC = "com.apple.mgmt.External.betterbag"
SCENARIO = f"""
[scenario]
name = "mdm-robustness"
[organization]
name = "BetterBag"
[[domains]]
name = "betterbag.test"
version = "mdm-byod"
[[users]]
identifier = "{ELIZA}"
password = "{ELIZA_PASSWORD}"
[[users]]
identifier = "{MALLORY}"
password = "{MALLORY_PASSWORD}"
[[users]]
identifier = "{CAROL}"
password = "{CAROL_PASSWORD}"
[mdm]
auth = "oauth2"
topic = "{TOPIC}"
"""
TIMEOUT = 10


@pytest.fixture(scope="module")
def lab(tmp_path_factory):
    directory = tmp_path_factory.mktemp("robust")
    (directory / "mdm-robustness.toml").write_text(SCENARIO)
    with Lab(load(str(directory / "mdm-robustness.toml")), directory / "lab", https_port=0, dns_port=0) as running:
        yield running


@pytest.fixture
def http(lab):
    session = lab_session(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path))
    session.headers["Connection"] = "close"
    yield session
    session.close()


def mdm(lab, path: str) -> str:
    return lab.urls["mdm"][path]


def _s256(verifier: str) -> str:
    return base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()


def authorize(lab, http, identifier: str, password: str, **pkce):
    """The authorization page, then its form: the final response."""
    setup = lab.mdm.setup
    query = {"response_type": "code", "client_id": setup.client_id, "redirect_uri": setup.redirect_url,
             "state": "S", "login_hint": identifier, **pkce}
    page = http.get(mdm(lab, "authorize_url") + "?" + urlencode(query), allow_redirects=False, timeout=TIMEOUT)
    if page.status_code != 200:
        return page
    marker = 'name="request" value="'
    start = page.text.index(marker) + len(marker)
    return http.post(mdm(lab, "authorize_url"), data={"request": page.text[start:page.text.index('"', start)],
                                                      "user-identifier": identifier, "password": password},
                     allow_redirects=False, timeout=TIMEOUT)


def redeem(lab, http, code: str, **extra):
    return http.post(mdm(lab, "token_url"), data={"grant_type": "authorization_code", "code": code,
                                                  "redirect_uri": lab.mdm.setup.redirect_url,
                                                  "client_id": lab.mdm.setup.client_id, **extra}, timeout=TIMEOUT)


def code_of(response) -> str:
    assert response.status_code == 308, response.text
    return parse_qs(urlsplit(response.headers["Location"]).query)["code"][0]


def access_token(lab, http, identifier: str, password: str) -> str:
    reply = redeem(lab, http, code_of(authorize(lab, http, identifier, password)))
    assert reply.status_code == 200, reply.text
    return reply.json()["access_token"]


def put(lab, http, path: str, body: bytes, token: str):
    return http.put(mdm(lab, path), data=body, headers={"Authorization": f"Bearer {token}"}, timeout=TIMEOUT)


def enroll(lab, http, token: str) -> str:
    eid = uuid.uuid4().hex.upper()
    assert put(lab, http, "checkin_url", plistlib.dumps({"MessageType": "Authenticate", "Topic": TOPIC,
                                                         "EnrollmentID": eid}), token).status_code == 200
    assert put(lab, http, "checkin_url", plistlib.dumps({"MessageType": "TokenUpdate", "Topic": TOPIC,
                                                         "EnrollmentID": eid, "Token": b"x" * 32,
                                                         "PushMagic": "m"}), token).status_code == 200
    return eid


def console(lab, http, method: str, path: str, **kwargs):
    response = http.request(method, f"https://localhost:{lab.https_port}/api{path}", timeout=TIMEOUT, **kwargs)
    assert response.status_code < 400, response.text
    return response.json()


def test_a_plist_bomb_report_is_refused_with_its_reason_and_stores_nothing(lab, http):
    token = access_token(lab, http, ELIZA, ELIZA_PASSWORD)
    eid = enroll(lab, http, token)
    command = console(lab, http, "POST", f"/mdm/enrollments/{eid}/commands",
                      json={"request_type": "DeviceInformation"})["command_uuid"]
    put(lab, http, "server_url", plistlib.dumps({"Status": "Idle", "EnrollmentID": eid}), token)
    size_before, mark = (lab.state_dir / "mdm" / "mdm.db").stat().st_size, lab.events.last_id()
    refused = put(lab, http, "server_url", bomb(19), token)
    assert refused.status_code == 400
    assert refused.json()["error"] == "plist-too-large" and "refer to the same objects" in refused.json()["message"]
    commands = console(lab, http, "GET", f"/mdm/enrollments/{eid}/commands")
    assert [(c["command_uuid"], c["status"], c["result"]) for c in commands] == [(command, "Sent", None)]
    assert (lab.state_dir / "mdm" / "mdm.db").stat().st_size < size_before + 1024 * 1024
    events = lab.events.query(after=mark, component="mdm")
    assert any(e["status"] == 400 and e["path"] == "/mdm/server" for e in events)


def test_signed_bodies_without_a_token_leave_nothing_in_memory(lab, http):
    """F12: the MDM verified each signed enrollment request into a cache before the token check, so large bodies
    from anyone pinned memory. Nothing is kept for a request before it is authenticated."""
    ca = trustme.CA()
    leaf = ca.issue_cert("device.attacker.test")
    cert = x509.load_pem_x509_certificate(leaf.cert_chain_pems[0].bytes())
    key = serialization.load_pem_private_key(leaf.private_key_pem.bytes(), None)
    # the bulk in a key MachineInfo has (LANGUAGE), so the MDM's strict schema check lets it on to the token check
    bodies = [cms.sign(plistlib.dumps({"PRODUCT": "iPhone17,2", "VERSION": "23A300",
                                       "LANGUAGE": "en-" + chr(ord("a") + n) * 256 * 1024}), cert, key)
              for n in range(13)]
    http.post(mdm(lab, "base_url"), data=bodies.pop(), timeout=TIMEOUT)  # what the first request loads stays
    gc.collect()
    tracemalloc.start()
    try:
        before = tracemalloc.take_snapshot()
        for body in bodies:
            reply = http.post(mdm(lab, "base_url"), data=body, timeout=TIMEOUT,
                              headers={"Content-Type": "application/pkcs7-signature"})
            assert reply.status_code == 401 and reply.headers["WWW-Authenticate"].startswith("Bearer ")
        gc.collect()
        stats = tracemalloc.take_snapshot().compare_to(before, "lineno")
        grown = sum(stat.size_diff for stat in stats)
    finally:
        tracemalloc.stop()
    assert grown < 1024 * 1024, f"{grown} bytes kept after 12 unauthenticated signed bodies of 256 KiB"


def test_another_account_cannot_take_over_a_live_enrollment(lab, http):
    owner = access_token(lab, http, ELIZA, ELIZA_PASSWORD)
    eid = enroll(lab, http, owner)
    intruder = access_token(lab, http, MALLORY, MALLORY_PASSWORD)
    for message in ({"MessageType": "Authenticate"},
                    {"MessageType": "TokenUpdate", "Token": b"\xee" * 32, "PushMagic": "evil"}):
        refused = put(lab, http, "checkin_url", plistlib.dumps({**message, "Topic": TOPIC, "EnrollmentID": eid}),
                      intruder)
        assert refused.status_code == 403 and refused.json()["code"] == "com.apple.unrecognized.device"
    listed = {e["enrollment_id"]: e for e in console(lab, http, "GET", "/mdm/enrollments")}
    assert listed[eid]["user"] == ELIZA and listed[eid]["status"] == "enrolled"
    assert put(lab, http, "server_url", plistlib.dumps({"Status": "Idle", "EnrollmentID": eid}),
               owner).status_code == 200


def test_a_replayed_code_revokes_what_it_issued(lab, http):
    code = code_of(authorize(lab, http, ELIZA, ELIZA_PASSWORD))
    first = redeem(lab, http, code)
    assert first.status_code == 200
    token = first.json()["access_token"]
    eid = enroll(lab, http, token)
    replay = redeem(lab, http, code)
    assert replay.status_code == 400 and replay.json()["error"] == "invalid_grant"
    assert "revoked" in replay.json()["error_description"]
    poll = put(lab, http, "server_url", plistlib.dumps({"Status": "Idle", "EnrollmentID": eid}), token)
    assert poll.status_code == 401 and "revoked" in poll.json()["message"]
    assert poll.headers["WWW-Authenticate"].startswith('Bearer method="apple-oauth2"')


def test_pkce_plain_is_refused_and_s256_works(lab, http):
    refused = authorize(lab, http, ELIZA, ELIZA_PASSWORD, code_challenge="v" * 50, code_challenge_method="plain")
    assert refused.status_code == 302
    assert parse_qs(urlsplit(refused.headers["Location"]).query)["error"] == ["invalid_request"]
    code = code_of(authorize(lab, http, ELIZA, ELIZA_PASSWORD, code_challenge=_s256("v" * 50),
                             code_challenge_method="S256"))
    assert redeem(lab, http, code, code_verifier="v" * 50).status_code == 200


def test_password_guessing_is_throttled(lab, http):
    mark = lab.events.last_id()
    for _ in range(THROTTLE_AFTER):
        assert authorize(lab, http, CAROL, "guess").status_code == 401
    throttled = authorize(lab, http, CAROL, CAROL_PASSWORD)
    assert throttled.status_code == 429 and int(throttled.headers["Retry-After"]) > 0
    assert "Too many attempts" in throttled.text
    events = [e for e in lab.events.query(after=mark, component="mdm") if e["status"] == 429]
    assert events and "throttled" in events[-1]["summary"]
    assert authorize(lab, http, ELIZA, ELIZA_PASSWORD).status_code == 308  # other accounts sign in as before


def test_every_mdm_event_of_an_enrollment_carries_its_account_and_enrollment_id(lab, http):
    """Contract 2: the device key stays the account from sign-in to commands; the EnrollmentID is its own field."""
    mark = lab.events.last_id()
    token = access_token(lab, http, ELIZA, ELIZA_PASSWORD)
    eid = enroll(lab, http, token)
    put(lab, http, "server_url", plistlib.dumps({"Status": "Idle", "EnrollmentID": eid}), token)
    events = [e for e in lab.events.query(after=mark, component="mdm") if e["kind"] == "http"]
    channel = [e for e in events if e["path"] in ("/mdm/checkin", "/mdm/server")]
    assert [(e["message_type"], e["enrollment"], e["user"], e["device"]) for e in channel] == [
        ("Authenticate", eid, ELIZA, ELIZA), ("TokenUpdate", eid, ELIZA, ELIZA), (None, eid, ELIZA, ELIZA)]
    assert [e["outcome"] for e in channel] == [None, "enrolled", None]
    assert {e["device"] for e in events if e["device"]} == {ELIZA}
    refused = put(lab, http, "checkin_url", plistlib.dumps({"MessageType": "Authenticate", "Topic": TOPIC,
                                                            "EnrollmentID": eid}),
                  access_token(lab, http, MALLORY, MALLORY_PASSWORD))
    assert refused.status_code == 403
    last = lab.events.query(after=mark, component="mdm", newest=True, limit=1)[0]
    assert (last["user"], last["enrollment"], last["message_type"]) == (MALLORY, eid, "Authenticate")


def test_schema_problems_reach_the_timeline_events_detail(lab, http):
    """The MDM's validation (mocks/mdm/validation.py) with a stand-in checker, through DNS and TLS: strict (the
    default) answers 400 with the problems, warn answers 200; both record the problems with the exchange. A real
    device newer than the facts is never refused for a key they do not know."""
    def checker(kind, name, message, **device):
        return [SimpleNamespace(path="Colour", code="unknown-key", message="no such key in Authenticate",
                                severity="error")] if "Colour" in message else []

    channel, strict = lab.mdm.channel, lab.mdm.channel.setup
    assert strict.schema_check == "strict"
    channel.checker = checker
    expected = [{"path": "Colour", "code": "unknown-key", "message": "no such key in Authenticate"}]
    try:
        newest = ".".join(map(str, schema.newest_known("iOS")))
        newer = f"{schema.newest_known('iOS')[0] + 1}.0"
        for mode, os_version, status in (("strict", newest, 400), ("warn", newest, 200), ("strict", newer, 200)):
            channel.setup = replace(strict, schema_check=mode)
            token = access_token(lab, http, ELIZA, ELIZA_PASSWORD)  # an accepted Authenticate binds the token
            eid = uuid.uuid4().hex.upper()
            mark = lab.events.last_id()
            answer = put(lab, http, "checkin_url", plistlib.dumps({
                "MessageType": "Authenticate", "Topic": TOPIC, "EnrollmentID": eid, "ProductName": "iPhone17,2",
                "OSVersion": os_version, "Colour": "teal"}), token)
            assert answer.status_code == status, answer.text
            event = lab.events.query(after=mark, component="mdm", message_type="Authenticate")[-1]
            # from an OS newer than the facts, a key they do not know may be Apple's newer one: recorded, not refused
            assert event["detail"]["schema_problems"] == (expected if os_version == newest
                                                          else [{**expected[0], "judged": False}])
            assert "1 schema problem(s): Colour: no such key in Authenticate" in event["summary"]
            if status == 400:
                assert answer.json()["error"] == "schema-violation" and answer.json()["problems"] == expected
    finally:
        channel.checker, channel.setup = None, strict


def test_get_token_for_managed_apple_account_sign_in(lab, http):
    """The MDM registers with ABM as an admin would hand it the server token; its com.apple.maid tokens then name
    ABM's server_uuid."""
    server = next(s for s in lab.abm.snapshot()["servers"] if s["lab_mdm"])
    lab.mdm.register_with_abm(f"https://{lab.scenario.abm_hosts['api']}:{lab.https_port}",
                              lab.abm.server_token(server["name"]), http)
    token = access_token(lab, http, ELIZA, ELIZA_PASSWORD)
    eid = enroll(lab, http, token)
    answer = put(lab, http, "checkin_url", plistlib.dumps({"MessageType": "GetToken", "TokenServiceType":
                                                           "com.apple.maid", "EnrollmentID": eid}), token)
    assert answer.status_code == 200 and answer.headers["Content-Type"].startswith("application/xml")
    jwt = plistlib.loads(answer.content)["TokenData"].decode()
    header, claims, signature = (base64.urlsafe_b64decode(p + "=" * (-len(p) % 4)) for p in jwt.split("."))
    key = serialization.load_pem_public_key(lab.mdm.channel.maid.public_pem)
    key.verify(encode_dss_signature(int.from_bytes(signature[:32], "big"), int.from_bytes(signature[32:], "big")),
               jwt.rsplit(".", 1)[0].encode(), ec.ECDSA(hashes.SHA256()))
    assert json.loads(claims)["service_type"] == "com.apple.maid" and json.loads(header)["alg"] == "ES256"
    assert json.loads(claims)["iss"] == server["server_uuid"]
    watch = put(lab, http, "checkin_url", plistlib.dumps({"MessageType": "GetToken", "TokenServiceType":
                                                          "com.apple.watch.pairing", "EnrollmentID": eid}), token)
    assert watch.status_code == 400 and watch.json()["error"] == "unknown-token-service"
