"""mocks.mdm through Flask's test client: stages 2-4 of PROTOCOL.md (challenge, web sign-in, profile, check-in)."""
from __future__ import annotations

import hashlib
import plistlib
from html.parser import HTMLParser
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography import x509
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.serialization import pkcs12
from cryptography.x509.oid import ExtendedKeyUsageOID

from lab import cms
from lab.device.authentication import parse_challenge
from lab.pki import CertificateAuthority
from mocks.mdm.profiles import parse_enrollment_body
from tests.mdm_support import (
    DEVICE_INFO,
    IDENTIFIER,
    ORIGIN,
    OTHER,
    OTHER_PASSWORD,
    PASSWORD,
    PATH,
    TOPIC,
    TTL,
    URLS,
    bearer,
    check_in,
    client_of,
    make_state,
)

CALLBACK = "apple-remotemanagement-user-login"
PROFILE_TYPE = "application/x-apple-aspen-config"
CHECKIN_TYPE = "application/x-apple-aspen-mdm-checkin"
ENROLL, AUTH, CHECKIN = PATH["base_url"], PATH["auth_url"], PATH["checkin_url"]
CHALLENGE = f'Bearer method="apple-as-web", url="{URLS["auth_url"]}"'
EID = "ENROLLMENT-0001"


@pytest.fixture(scope="module")
def device_identity(tmp_path_factory):
    """Stands in for the device's built-in identity that signs the enrollment request."""
    return CertificateAuthority(tmp_path_factory.mktemp("apple"), ["lab.test"]).issue_profile_signer("Apple device")


# -- helpers -----------------------------------------------------------------------------------------------------

def plain_body(**overrides) -> bytes:
    return plistlib.dumps({**DEVICE_INFO, **overrides})


def signed_body(identity, **overrides) -> bytes:
    return cms.sign(plain_body(**overrides), identity.cert, identity.key)


def post_enroll(client, body: bytes, token: str | None = None, content_type: str = "application/pkcs7-signature"):
    return client.post(ENROLL, data=body, headers=bearer(token), content_type=content_type, base_url=ORIGIN)


def sign_in(client, identifier: str = IDENTIFIER, password: str = PASSWORD):
    return client.post(AUTH, data={"user-identifier": identifier, "password": password}, base_url=ORIGIN)


def token_from(response) -> str:
    assert response.status_code == 308, response.get_data(as_text=True)
    location = urlsplit(response.headers["Location"])
    assert (location.scheme, location.netloc) == (CALLBACK, "authentication-results")
    query = parse_qs(location.query)
    assert list(query) == ["access-token"] and len(query["access-token"]) == 1
    return query["access-token"][0]


def enrolled_token(client, identifier: str = IDENTIFIER, password: str = PASSWORD) -> str:
    """Sign in and fetch the profile, as the device does before its first check-in."""
    token = token_from(sign_in(client, identifier, password))
    assert post_enroll(client, plain_body(), token).status_code == 200
    return token


def authenticate(eid: str = EID, **extra) -> dict:
    return {"MessageType": "Authenticate", "Topic": TOPIC, "EnrollmentID": eid, "ProductName": "iPhone17,2",
            "OSVersion": "26.1", "BuildVersion": "23A300", **extra}


def token_update(eid: str = EID, **extra) -> dict:
    return {"MessageType": "TokenUpdate", "Topic": TOPIC, "EnrollmentID": eid, "Token": b"\x01" * 32,
            "PushMagic": "push-magic-0001", **extra}


def assert_error(response, status: int, code: str) -> dict:
    assert response.status_code == status, response.get_data(as_text=True)
    assert response.mimetype == "application/json"
    body = response.get_json()
    assert body["error"] == code, body
    return body


def assert_challenged(response, code: str):
    assert_error(response, 401, code)
    assert response.headers["WWW-Authenticate"] == CHALLENGE


class Inputs(HTMLParser):
    def __init__(self, html: str):
        super().__init__()
        self.inputs, self.forms, self.alerts, self._alert = {}, [], [], False
        self.feed(html)

    def handle_starttag(self, tag, attrs):
        attrs = dict(attrs)
        if tag == "input":
            self.inputs[attrs.get("name")] = attrs
        elif tag == "form":
            self.forms.append(attrs)
        self._alert = attrs.get("role") == "alert"

    def handle_data(self, data):
        if self._alert:
            self.alerts.append(data.strip())
            self._alert = False


# -- stage 2: the enrollment request and its challenge -----------------------------------------------------------

@pytest.mark.parametrize("kind", ["plain", "signed"])
def test_enroll_without_token_is_challenged(client, device_identity, kind):
    body = plain_body() if kind == "plain" else signed_body(device_identity)
    response = post_enroll(client, body)
    assert_challenged(response, "token-required")
    challenge = parse_challenge(response.headers["WWW-Authenticate"], strict=True)
    assert (challenge.method, challenge.params["url"]) == ("apple-as-web", URLS["auth_url"])


@pytest.mark.parametrize("content_type", ["application/pkcs7-signature", "application/x-www-form-urlencoded",
                                          "application/xml", "application/octet-stream"])
def test_enroll_content_type_is_ignored(client, device_identity, content_type):
    """iOS 15 labelled the CMS body as a form (PROTOCOL.md 6.7): the server sniffs the body instead."""
    assert_challenged(post_enroll(client, signed_body(device_identity), content_type=content_type),
                      "token-required")


@pytest.mark.parametrize("body", [
    b"", b"garbage", b"\x30\x82\x00\x10" + b"\x00" * 16, plistlib.dumps(["not", "a", "dict"]),
    plistlib.dumps({"LANGUAGE": "en-US", "VERSION": "23A300"}), plistlib.dumps({**DEVICE_INFO, "VERSION": 23}),
], ids=["empty", "text", "broken-der", "plist-array", "no-product", "version-not-string"])
def test_bad_enrollment_bodies_are_400(client, body):
    assert_error(post_enroll(client, body), 400, "bad-enrollment-request")


def test_tampered_cms_enrollment_body_is_400(client, device_identity):
    body = bytearray(signed_body(device_identity))
    at = bytes(body).index(b"iPhone17,2")
    body[at] ^= 0x01
    assert_error(post_enroll(client, bytes(body)), 400, "bad-enrollment-request")


def test_a_signed_body_posted_twice_is_verified_once_and_each_post_gets_its_own_answer(client, device_identity):
    """The device posts the same signed bytes for the 401 and again with its token: the second post reuses the
    verification, a tampered copy of the same body is still refused, and callers never share a parsed dict."""
    body = signed_body(device_identity)
    first, second = parse_enrollment_body(body), parse_enrollment_body(body)
    assert first == second == DEVICE_INFO and first is not second
    first["PRODUCT"] = "changed"
    assert parse_enrollment_body(body)["PRODUCT"] == DEVICE_INFO["PRODUCT"]
    tampered = bytearray(body)
    tampered[bytes(body).index(b"iPhone17,2")] ^= 0x01
    assert_error(post_enroll(client, bytes(tampered)), 400, "bad-enrollment-request")
    assert post_enroll(client, body).status_code == 401


def test_cms_body_with_a_corrupted_signer_key_is_400_not_500(client, device_identity):
    body = signed_body(device_identity)
    point = device_identity.cert.public_key().public_bytes(serialization.Encoding.X962,
                                                           serialization.PublicFormat.UncompressedPoint)
    at = body.index(point) + len(point) - 1
    corrupted = body[:at] + bytes([body[at] ^ 0x01]) + body[at + 1:]
    assert_error(post_enroll(client, corrupted), 400, "bad-enrollment-request")


@pytest.mark.parametrize("authorization, code", [
    ("Bearer not-a-token", "invalid-token"), ("Basic ZWxpemE6cHc=", "malformed-authorization"),
    ("Bearer ", "malformed-authorization"), ("Bearer", "malformed-authorization"),
])
def test_enroll_with_a_bad_token_is_challenged(client, authorization, code):
    response = client.post(ENROLL, data=plain_body(), headers={"Authorization": authorization}, base_url=ORIGIN)
    assert_challenged(response, code)


# -- stage 2.3: the web sign-in ----------------------------------------------------------------------------------

def test_sign_in_page_is_prefilled(client):
    response = client.get(AUTH, query_string={"user-identifier": IDENTIFIER}, base_url=ORIGIN)
    assert response.status_code == 200
    assert response.mimetype == "text/html"
    page = Inputs(response.get_data(as_text=True))
    assert page.inputs["user-identifier"]["value"] == IDENTIFIER
    assert page.inputs["password"]["type"] == "password"
    assert [(f["method"].lower(), f["action"]) for f in page.forms] == [("post", AUTH)]
    assert page.alerts == []


def test_sign_in_page_escapes_the_identifier(client):
    hostile = '"><script>alert(1)</script>@betterbag.test'
    html = client.get(AUTH, query_string={"user-identifier": hostile}, base_url=ORIGIN).get_data(as_text=True)
    assert "<script>alert(1)" not in html
    assert Inputs(html).inputs["user-identifier"]["value"] == hostile


@pytest.mark.parametrize("identifier, password", [(IDENTIFIER, "wrong-password"), (IDENTIFIER, PASSWORD.upper()),
                                                  ("nobody@betterbag.test", PASSWORD), (OTHER, PASSWORD)])
def test_wrong_credentials_are_a_401_page_without_location(client, identifier, password):
    response = sign_in(client, identifier, password)
    assert response.status_code == 401
    assert response.mimetype == "text/html"
    assert "Location" not in response.headers
    page = Inputs(response.get_data(as_text=True))
    assert page.alerts == ["The account or password is not correct."]
    assert page.inputs["user-identifier"]["value"] == identifier  # prefilled again for the retry
    assert password not in response.get_data(as_text=True)


@pytest.mark.parametrize("form", [{"user-identifier": IDENTIFIER}, {"password": PASSWORD},
                                  {"user-identifier": " ", "password": PASSWORD}])
def test_incomplete_sign_in_is_400(client, form):
    assert_error(client.post(AUTH, data=form, base_url=ORIGIN), 400, "missing-credentials")


def test_right_password_redirects_308_to_the_callback_with_a_token(client):
    first = token_from(sign_in(client))
    second = token_from(sign_in(client))
    assert len(first) >= 32 and first != second


def test_tokens_and_passwords_are_stored_hashed(client, state, tmp_path):
    token = token_from(sign_in(client))
    stored = b"".join(p.read_bytes() for p in sorted((tmp_path / "mdm").glob("mdm.db*")))
    assert token.encode() not in stored
    assert PASSWORD.encode() not in stored
    assert hashlib.sha256(token.encode()).hexdigest().encode() in stored  # we looked in the right place


# -- stage 3: the enrollment profile -----------------------------------------------------------------------------

@pytest.fixture
def profile_response(client, device_identity):
    token = token_from(sign_in(client))
    return post_enroll(client, signed_body(device_identity), token)


@pytest.fixture
def profile(profile_response) -> dict:
    return plistlib.loads(cms.parse(profile_response.get_data()).content)


def mdm_payload(profile: dict) -> dict:
    [payload] = [p for p in profile["PayloadContent"] if p["PayloadType"] == "com.apple.mdm"]
    return payload


def test_profile_response_is_a_signed_aspen_config(profile_response, state, pki):
    assert profile_response.status_code == 200
    assert profile_response.mimetype == PROFILE_TYPE
    body = profile_response.get_data()
    assert cms.looks_like_cms(body)
    signed = cms.parse(body)
    assert signed.signer == state.signer.cert
    assert cms.verify_chain(signed.signer, [pki.cert]) == pki.cert


def test_profile_mdm_payload_is_user_enrollment(profile):
    assert profile["PayloadType"] == "Configuration"
    mdm = mdm_payload(profile)
    assert mdm["EnrollmentMode"] == "BYOD"
    assert mdm["AssignedManagedAppleID"] == IDENTIFIER
    assert "AccessRights" not in mdm
    assert "ManagedAppleID" not in mdm
    assert mdm["ServerURL"] == URLS["server_url"]
    assert mdm["CheckInURL"] == URLS["checkin_url"]
    assert mdm["Topic"] == TOPIC and mdm["Topic"].startswith("com.apple.mgmt.")
    assert urlsplit(mdm["ServerURL"]).scheme == "https"


def test_profile_identity_payload_opens_with_its_password(profile, state):
    mdm = mdm_payload(profile)
    [identity] = [p for p in profile["PayloadContent"] if p["PayloadUUID"] == mdm["IdentityCertificateUUID"]]
    assert identity["PayloadType"] == "com.apple.security.pkcs12"
    key, cert, _ = pkcs12.load_key_and_certificates(identity["PayloadContent"], identity["Password"].encode())
    assert key is not None and cert is not None
    assert key.public_key().public_numbers() == cert.public_key().public_numbers()
    cert.verify_directly_issued_by(state.identity_ca.cert)
    eku = cert.extensions.get_extension_for_class(x509.ExtendedKeyUsage).value
    assert ExtendedKeyUsageOID.CLIENT_AUTH in eku
    with pytest.raises(ValueError):
        pkcs12.load_key_and_certificates(identity["PayloadContent"], b"wrong password")


def test_each_user_gets_their_own_profile(client):
    token = token_from(sign_in(client, OTHER, OTHER_PASSWORD))
    profile = plistlib.loads(cms.parse(post_enroll(client, plain_body(), token).get_data()).content)
    assert mdm_payload(profile)["AssignedManagedAppleID"] == OTHER


def test_enroll_with_an_expired_token_is_challenged(client, clock):
    token = token_from(sign_in(client))
    clock.now += TTL
    assert_challenged(post_enroll(client, plain_body(), token), "expired-token")


# -- stage 3.3/4: check-in ---------------------------------------------------------------------------------------

def test_authenticate_then_token_update(client, state):
    token = enrolled_token(client)
    response = check_in(client, authenticate(), token)
    assert response.status_code == 200
    assert state.enrollment(EID)["status"] == "authenticated"
    assert check_in(client, token_update(), token).status_code == 200
    enrollment = state.enrollment(EID)
    assert (enrollment["status"], enrollment["user"], enrollment["push_magic"]) == \
        ("enrolled", IDENTIFIER, "push-magic-0001")


@pytest.mark.parametrize("message", [authenticate(), token_update()], ids=["Authenticate", "TokenUpdate"])
def test_check_in_without_token_is_challenged(client, message):
    assert_challenged(check_in(client, message, None), "token-required")


def test_token_update_before_authenticate_is_404(client, state):
    token = enrolled_token(client)
    assert_error(check_in(client, token_update(), token), 404, "unknown-enrollment")
    assert state.enrollment(EID) is None


@pytest.mark.parametrize("key, value", [("UDID", "00008120-001234567890801E"), ("SerialNumber", "F2LXK0QZHG7F"),
                                        ("IMEI", "35 000000 000000 0"), ("MEID", "35000000000000"),
                                        ("UnlockToken", b"\x00" * 16)])
def test_device_identifiers_in_a_user_enrollment_check_in_are_400(client, state, key, value):
    token = enrolled_token(client)
    assert_error(check_in(client, authenticate(**{key: value}), token), 400, "device-identifier-in-user-enrollment")
    assert state.enrollment(EID) is None


def test_wrong_topic_is_400(client):
    token = enrolled_token(client)
    assert_error(check_in(client, authenticate(Topic="com.apple.mgmt.External.someone-else"), token), 400,
                 "wrong-topic")


@pytest.mark.parametrize("message, code", [
    ({"MessageType": "Authenticate", "Topic": TOPIC}, "missing-enrollment-id"),
    ({"MessageType": "Authenticate", "Topic": TOPIC, "EnrollmentID": ""}, "missing-enrollment-id"),
    ({"MessageType": "Shout", "Topic": TOPIC, "EnrollmentID": EID}, "unknown-message-type"),
    ({"Topic": TOPIC, "EnrollmentID": EID}, "bad-check-in"),
])
def test_malformed_check_ins_are_400(client, message, code):
    token = enrolled_token(client)
    assert_error(check_in(client, message, token), 400, code)


def test_an_incomplete_token_update_is_400_by_the_mdms_own_rule(tmp_path, signer, clock):
    # warn: the schema check (strict by default) would refuse it first (missing-required); this is the MDM's own
    # rule for a TokenUpdate it cannot use, which holds whatever the schema check is set to
    state = make_state(tmp_path / "mdm", signer, clock, schema_check="warn")
    client = client_of(state)
    token = enrolled_token(client)
    assert check_in(client, authenticate(), token).status_code == 200
    assert_error(check_in(client, {"MessageType": "TokenUpdate", "Topic": TOPIC, "EnrollmentID": EID}, token), 400,
                 "incomplete-token-update")
    state.close()


def test_check_in_body_that_is_not_a_plist_is_400(client):
    token = enrolled_token(client)
    response = client.put(CHECKIN, data=b"not a plist", headers=bearer(token), content_type=CHECKIN_TYPE,
                          base_url=ORIGIN)
    assert_error(response, 400, "bad-check-in")


def test_token_used_by_another_enrollment_is_403(client, state):
    token = enrolled_token(client)
    assert check_in(client, authenticate("ENROLLMENT-A"), token).status_code == 200
    assert_error(check_in(client, authenticate("ENROLLMENT-B"), token), 403, "token-bound-to-other-enrollment")
    assert_error(check_in(client, token_update("ENROLLMENT-B"), token), 403, "token-bound-to-other-enrollment")
    assert state.enrollment("ENROLLMENT-B") is None
    assert check_in(client, token_update("ENROLLMENT-A"), token).status_code == 200


def test_expired_token_is_challenged_on_check_in(client, clock):
    token = enrolled_token(client)
    assert check_in(client, authenticate(), token).status_code == 200
    clock.now += TTL - 1
    assert check_in(client, token_update(), token).status_code == 200
    clock.now += 1
    assert_challenged(check_in(client, token_update(), token), "expired-token")


def test_check_out_revokes_the_token(client, state):
    token = enrolled_token(client)
    assert check_in(client, authenticate(), token).status_code == 200
    assert check_in(client, {"MessageType": "CheckOut", "Topic": TOPIC, "EnrollmentID": EID}, token).status_code == 200
    assert state.enrollment(EID)["status"] == "checked-out"
    assert_challenged(check_in(client, authenticate(), token), "revoked-token")


def test_check_out_is_accepted_with_the_enrollments_expired_token(client, state, clock):
    """PROTOCOL.md 4.6: the one best-effort CheckOut cannot re-authenticate; accept its expired token."""
    token = enrolled_token(client)
    assert check_in(client, authenticate(), token).status_code == 200
    assert check_in(client, token_update(), token).status_code == 200
    clock.now += TTL + 60
    response = check_in(client, {"MessageType": "CheckOut", "Topic": TOPIC, "EnrollmentID": EID}, token)
    assert response.status_code == 200, response.get_data(as_text=True)
    assert state.enrollment(EID)["status"] == "checked-out"
