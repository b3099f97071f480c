"""lab.device pieces without a network: the challenge parser, the identifier, the sign-in URL, profile checks."""
from __future__ import annotations

import plistlib
from urllib.parse import parse_qs, urlsplit

import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.hazmat.primitives.serialization import pkcs12
from requests.structures import CaseInsensitiveDict

from lab import cms
from lab.device import DeviceFailure, Trace
from lab.device.authentication import parse_challenge, sign_in_url
from lab.device.discovery import split_identifier
from lab.device.profile import install
from lab.device.trace import FAIL, WARN
from lab.pki import CertificateAuthority, self_signed

IDENTIFIER = "eliza@betterbag.test"
AUTH_URL = "https://mdm.lab.test:8443/auth/web"

# -- parse_challenge ---------------------------------------------------------------------------------------------


@pytest.mark.parametrize("header", [
    f'Bearer method="apple-as-web", url="{AUTH_URL}"',
    f'Bearer method="apple-as-web",url="{AUTH_URL}"',
    f'Bearer  method="apple-as-web" ,  url="{AUTH_URL}"',
    f'Bearer method=apple-as-web, url="{AUTH_URL}"',  # token value
    f'Bearer url="{AUTH_URL}", method="apple-as-web"',  # any order
])
def test_challenge_with_commas(header):
    challenge = parse_challenge(header, strict=True)
    assert challenge.method == "apple-as-web"
    assert challenge.params == {"method": "apple-as-web", "url": AUTH_URL}
    assert challenge.separator_warning is None


def test_oauth2_challenge_keeps_every_parameter():
    header = ('Bearer method="apple-oauth2", authorization-url="https://idp.test/authorize?tenant=1", '
              'token-url="https://idp.test/token", '
              'redirect-url="apple-remotemanagement-user-login:/oauth2/redirection", '
              'client-id="abc", scope="openid email"')
    challenge = parse_challenge(header)
    assert challenge.method == "apple-oauth2"
    assert challenge.params["authorization-url"] == "https://idp.test/authorize?tenant=1"
    assert challenge.params["redirect-url"] == "apple-remotemanagement-user-login:/oauth2/redirection"
    assert challenge.params["scope"] == "openid email"


def test_quoted_values_unescape():
    challenge = parse_challenge(r'Bearer method="apple-as-web", url="https://x.test/a\"b"')
    assert challenge.params["url"] == 'https://x.test/a"b'


def test_bare_space_is_a_warning_when_lenient():
    challenge = parse_challenge(f'Bearer method="apple-as-web" url="{AUTH_URL}"')
    assert challenge.params == {"method": "apple-as-web", "url": AUTH_URL}
    assert challenge.separator_warning is not None
    assert "' '" in challenge.separator_warning and "iOS 18.2.1" in challenge.separator_warning


def test_bare_space_is_an_error_when_strict():
    with pytest.raises(ValueError, match="instead of ', '"):
        parse_challenge(f'Bearer method="apple-as-web" url="{AUTH_URL}"', strict=True)


@pytest.mark.parametrize("header, reason", [
    (f'Bearer method="apple-as-web"; url="{AUTH_URL}"', "';'"),
    (f'Bearer method="apple-as-web";url="{AUTH_URL}"', "';'"),
    (f'bearer method="apple-as-web", url="{AUTH_URL}"', "exactly 'Bearer'"),
    (f'BEARER method="apple-as-web", url="{AUTH_URL}"', "exactly 'Bearer'"),
    (f'Basic realm="mdm", method="apple-as-web", url="{AUTH_URL}"', "exactly 'Bearer'"),
    (f'Bearer url="{AUTH_URL}"', "no method"),
    ('Bearer realm="mdm"', "no method"),
    ("Bearer", "no method"),
    ("", "no WWW-Authenticate"),
    (None, "no WWW-Authenticate"),
    ('Bearer method="apple-as-web", , url="x"', "cannot parse"),
    ('Bearer method="unterminated', "cannot parse"),
    ("Bearer method", "cannot parse"),
])
@pytest.mark.parametrize("strict", [False, True])
def test_unusable_challenges_raise(header, reason, strict):
    with pytest.raises(ValueError, match=reason):
        parse_challenge(header, strict=strict)


# -- split_identifier --------------------------------------------------------------------------------------------

@pytest.mark.parametrize("identifier, expected", [
    ("eliza@betterbag.test", ("eliza", "betterbag.test")),
    ("Eliza.Bagshaw@BetterBag.Test", ("Eliza.Bagshaw", "betterbag.test")),
    ("e+tag@mail.school-district.example", ("e+tag", "mail.school-district.example")),
])
def test_split_identifier(identifier, expected):
    assert split_identifier(identifier) == expected


@pytest.mark.parametrize("identifier", [
    "eliza.betterbag.test",  # no @
    "a@b@betterbag.test",  # two @ (the 26.1 client splits on every @)
    "eliza@",  # no domain
    "@betterbag.test",  # no user
    "eliza@localhost",  # no dot: not a fully qualified name
    "eliza@betterbag..test",
    "eliza@.betterbag.test",
    "eliza@betterbag.test.",
    "eliza@bad_domain.test",
    "eliza@bad domain.test",
    "eliza@" + "a" * 64 + ".test",  # a DNS label has at most 63 characters
    "",
])
def test_split_identifier_refuses_locally(identifier):
    with pytest.raises(DeviceFailure) as failure:
        split_identifier(identifier)
    assert (failure.value.stage, failure.value.code) == ("identifier", "identifier-malformed")


# -- sign_in_url -------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("url", [AUTH_URL, AUTH_URL + "?session=abc&tenant=7", AUTH_URL + "?x=1#fragment",
                                 AUTH_URL + "?user-identifier=someone@else.test"])
def test_sign_in_url_replaces_the_query(url):
    out = urlsplit(sign_in_url(url, IDENTIFIER))
    assert (out.scheme, out.netloc, out.path) == ("https", "mdm.lab.test:8443", "/auth/web")
    assert parse_qs(out.query) == {"user-identifier": [IDENTIFIER]}
    assert out.fragment == ""


# -- profile.install ---------------------------------------------------------------------------------------------

class FakeResponse:
    def __init__(self, content: bytes, content_type: str | None = "application/x-apple-aspen-config"):
        self.headers = CaseInsensitiveDict({"Content-Type": content_type} if content_type is not None else {})
        self.content = content
        self.status_code = 200


@pytest.fixture(scope="module")
def pki(tmp_path_factory):
    ca = CertificateAuthority(tmp_path_factory.mktemp("pki"), ["lab.test"])
    stranger = CertificateAuthority(tmp_path_factory.mktemp("stranger"), ["lab.test"])
    return {"ca": ca, "signer": ca.issue_profile_signer("BetterBag"),
            "stranger_signer": stranger.issue_profile_signer("BetterBag")}


@pytest.fixture(scope="module")
def identity_p12() -> bytes:
    key = ec.generate_private_key(ec.SECP256R1())
    cert = self_signed("BetterBag MDM identity", key, days=1)
    return pkcs12.serialize_key_and_certificates(b"identity", key, cert, None,
                                                 serialization.BestAvailableEncryption(b"p12-password"))


def make_profile(p12: bytes, *, drop=(), identity=None, **mdm_changes) -> dict:
    mdm = {"PayloadType": "com.apple.mdm", "PayloadUUID": "MDM-UUID", "PayloadVersion": 1,
           "IdentityCertificateUUID": "ID-UUID", "Topic": "com.apple.mgmt.External.betterbag",
           "ServerURL": "https://mdm.lab.test:8443/mdm/server", "CheckInURL": "https://mdm.lab.test:8443/mdm/checkin",
           "EnrollmentMode": "BYOD", "AssignedManagedAppleID": IDENTIFIER, **mdm_changes}
    for key in drop:
        del mdm[key]
    identity_payload = {"PayloadType": "com.apple.security.pkcs12", "PayloadUUID": "ID-UUID", "PayloadVersion": 1,
                        "PayloadContent": p12, "Password": "p12-password", **(identity or {})}
    return {"PayloadType": "Configuration", "PayloadUUID": "PROFILE-UUID", "PayloadVersion": 1,
            "PayloadContent": [identity_payload, mdm]}


def signed(profile: dict, signer) -> bytes:
    return cms.sign(plistlib.dumps(profile), signer.cert, signer.key)


def run_install(pki, body: bytes, *, version: str = "mdm-byod", content_type="application/x-apple-aspen-config",
                identifier: str = IDENTIFIER):
    trace = Trace()
    return install(FakeResponse(body, content_type), version, identifier, [pki["ca"].cert], trace), trace


def install_fails(pki, body: bytes, code: str, **kwargs) -> Trace:
    trace = Trace()
    with pytest.raises(DeviceFailure) as failure:
        install(FakeResponse(body, kwargs.pop("content_type", "application/x-apple-aspen-config")),
                kwargs.pop("version", "mdm-byod"), IDENTIFIER, [pki["ca"].cert], trace)
    assert (failure.value.stage, failure.value.code) == ("enrollment", code), failure.value.explanation
    assert (trace.steps[-1].verdict, trace.steps[-1].code) == (FAIL, code)
    return trace


def warning_codes(trace: Trace) -> list[str]:
    return [s.code for s in trace.steps if s.verdict == WARN]


def test_signed_trusted_profile_installs_without_warnings(pki, identity_p12):
    installed, trace = run_install(pki, signed(make_profile(identity_p12), pki["signer"]))
    assert warning_codes(trace) == []
    assert "BetterBag Profile Signing" in installed.signed_by
    assert installed.mdm["EnrollmentMode"] == "BYOD"
    assert installed.checkin_url == "https://mdm.lab.test:8443/mdm/checkin"
    assert installed.identity_cert.subject.rfc4514_string() == "CN=BetterBag MDM identity"
    assert installed.identity_key is not None


@pytest.mark.parametrize("content_type", ["application/x-apple-aspen-config; charset=utf-8",
                                          "Application/X-Apple-Aspen-Config"])
def test_profile_content_type_parameters_and_case_are_fine(pki, identity_p12, content_type):
    installed, _ = run_install(pki, signed(make_profile(identity_p12), pki["signer"]), content_type=content_type)
    assert installed.mdm["AssignedManagedAppleID"] == IDENTIFIER


@pytest.mark.parametrize("content_type", ["application/xml", "text/html; charset=utf-8",
                                          "application/x-apple-aspen-mdm", "application/octet-stream", None])
def test_wrong_profile_content_type_fails(pki, identity_p12, content_type):
    install_fails(pki, signed(make_profile(identity_p12), pki["signer"]), "profile-content-type",
                  content_type=content_type)


def test_unsigned_profile_installs_with_a_warning(pki, identity_p12):
    installed, trace = run_install(pki, plistlib.dumps(make_profile(identity_p12)))
    assert warning_codes(trace) == ["profile-unsigned"]
    assert installed.signed_by is None


def test_untrusted_signer_installs_with_a_warning(pki, identity_p12):
    installed, trace = run_install(pki, signed(make_profile(identity_p12), pki["stranger_signer"]))
    assert warning_codes(trace) == ["profile-signer-untrusted"]
    assert installed.signed_by is None


def test_broken_signature_fails(pki, identity_p12):
    body = bytearray(signed(make_profile(identity_p12), pki["signer"]))
    at = bytes(body).index(b"com.apple.mgmt.External.betterbag")
    body[at] ^= 0x01
    install_fails(pki, bytes(body), "profile-signature-invalid")


@pytest.mark.parametrize("changes, drop, version, code", [
    ({"AccessRights": 8191}, (), "mdm-byod", "profile-access-rights"),
    ({"AccessRights": 0}, (), "mdm-byod", "profile-access-rights"),
    ({}, ("AssignedManagedAppleID",), "mdm-byod", "profile-missing-maa"),
    ({"AssignedManagedAppleID": ""}, (), "mdm-byod", "profile-missing-maa"),
    ({"AssignedManagedAppleID": 42}, (), "mdm-byod", "profile-missing-maa"),
    ({}, (), "mdm-adde", "profile-enrollment-mode"),  # BYOD profile after an mdm-adde discovery
    ({"EnrollmentMode": "ADDE"}, (), "mdm-byod", "profile-enrollment-mode"),
    ({"EnrollmentMode": "byod"}, (), "mdm-byod", "profile-enrollment-mode"),
    ({}, ("EnrollmentMode",), "mdm-byod", "profile-enrollment-mode"),
    ({}, ("Topic",), "mdm-byod", "profile-missing-key"),
    ({}, ("ServerURL",), "mdm-byod", "profile-missing-key"),
    ({}, ("IdentityCertificateUUID",), "mdm-byod", "profile-missing-key"),
    ({"Topic": "com.example.mdm"}, (), "mdm-byod", "profile-bad-topic"),
    ({"ServerURL": "http://mdm.lab.test/mdm/server"}, (), "mdm-byod", "profile-url-not-https"),
    ({"CheckInURL": "http://mdm.lab.test/mdm/checkin"}, (), "mdm-byod", "profile-url-not-https"),
    ({"IdentityCertificateUUID": "NO-SUCH-UUID"}, (), "mdm-byod", "profile-identity-missing"),
])
def test_mdm_payload_faults_fail(pki, identity_p12, changes, drop, version, code):
    install_fails(pki, signed(make_profile(identity_p12, drop=drop, **changes), pki["signer"]), code, version=version)


def test_adde_profile_may_carry_access_rights(pki, identity_p12):
    profile = make_profile(identity_p12, EnrollmentMode="ADDE", AccessRights=8191)
    installed, trace = run_install(pki, signed(profile, pki["signer"]), version="mdm-adde")
    assert installed.mdm["AccessRights"] == 8191
    assert warning_codes(trace) == []


@pytest.mark.parametrize("identity, code", [
    ({"Password": "wrong"}, "identity-unreadable"),
    ({"PayloadContent": b"not a pkcs12"}, "identity-unreadable"),
    ({"PayloadType": "com.apple.security.scep"}, "identity-type-unsupported"),
    ({"PayloadType": "com.apple.security.root"}, "profile-identity-missing"),
])
def test_identity_payload_faults_fail(pki, identity_p12, identity, code):
    install_fails(pki, signed(make_profile(identity_p12, identity=identity), pki["signer"]), code)


@pytest.mark.parametrize("profile, code", [
    (plistlib.dumps(["not", "a", "dict"]), "profile-malformed"),
    (plistlib.dumps({"PayloadType": "com.apple.mdm"}), "profile-malformed"),
    (b"<html>not a plist</html>", "profile-malformed"),
])
def test_malformed_profiles_fail(pki, profile, code):
    install_fails(pki, cms.sign(profile, pki["signer"].cert, pki["signer"].key), code)


def test_two_mdm_payloads_fail(pki, identity_p12):
    profile = make_profile(identity_p12)
    profile["PayloadContent"].append(dict(profile["PayloadContent"][1], PayloadUUID="MDM-2"))
    install_fails(pki, signed(profile, pki["signer"]), "profile-mdm-payload")


def test_legacy_managed_apple_id_is_a_warning(pki, identity_p12):
    _, trace = run_install(pki, signed(make_profile(identity_p12, ManagedAppleID=IDENTIFIER), pki["signer"]))
    assert warning_codes(trace) == ["profile-legacy-maid"]


@pytest.mark.parametrize("assigned, warned", [(IDENTIFIER, False), (IDENTIFIER.upper(), False),
                                              ("eliza@betterbag.appleid.com", True)])
def test_assigned_managed_apple_id_that_differs_is_a_warning(pki, identity_p12, assigned, warned):
    _, trace = run_install(pki, signed(make_profile(identity_p12, AssignedManagedAppleID=assigned), pki["signer"]))
    assert warning_codes(trace) == (["profile-maa-differs"] if warned else [])


def test_nothing_listening_names_the_port_the_device_tried():
    import requests

    from lab.device.errors import transport_failure

    refused = requests.ConnectionError(ConnectionRefusedError(111, "Connection refused"))
    failure = transport_failure("commands", "https://mdm.lab.test:45973/mdm/server", refused, "the MDM")
    assert failure.code == "connection-refused"
    assert "nothing listens on https at mdm.lab.test:45973" in failure.explanation
