"""Apple's identity service: each way a Managed Apple Account sign-in is refused, and the ones that pass."""
import tempfile
import uuid

import jwt
import pytest
from cryptography.hazmat.primitives import serialization
from cryptography.hazmat.primitives.asymmetric import rsa

from mocks.apple_id import AppleIDSetup, AppleIDState
from mocks.apple_id.errors import BadSignInRequest
from mocks.mdm.maid import MAIDSigner

NOW = 1_800_000_000.0
ORG, OTHER = "BetterBag", "BetterBag Europe"


class FakeDirectory:
    def __init__(self, allowed_on="any", key_pem=None):
        self.allowed_on, self.key_pem = allowed_on, key_pem
        self.accounts = {"eliza@betterbag.test": ORG, "jo@betterbag-eu.test": OTHER}

    def account_record(self, identifier):
        org = self.accounts.get(identifier.lower())
        return {"identifier": identifier.lower(), "organization": org, "federated": False} if org else None

    def alias_owner(self, identifier):
        return "eliza@betterbag.test" if identifier == "e.bagshaw@betterbag.test" else None

    def maa_allowed_on(self, organization):
        return self.allowed_on

    def server_record(self, server_uuid):
        servers = {"uuid-ours": ("BetterBag MDM", ORG, self.key_pem), "uuid-eu": ("EU MDM", OTHER, None)}
        if server_uuid not in servers:
            return None
        name, org, key = servers[server_uuid]
        return {"server_uuid": server_uuid, "name": name, "organization": org, "public_key_pem": key}


class Tokens:
    """The lab MDM's com.apple.maid tokens (ES256), or an RSA-keyed server's (RS256, as vendors sign them)."""

    def __init__(self, rsa_key=False, now=NOW):
        self.now = now
        if rsa_key:
            self.key = rsa.generate_private_key(public_exponent=65537, key_size=2048)
            self.signer = None
        else:
            self.signer = MAIDSigner(tempfile.mkdtemp())
            self.key = self.signer.key

    def public_key_pem(self):
        return self.key.public_key().public_bytes(serialization.Encoding.PEM,
                                                  serialization.PublicFormat.SubjectPublicKeyInfo).decode()

    def mint(self, server_uuid="uuid-ours", now=None):
        now = self.now if now is None else now
        if self.signer is not None:
            return self.signer.token(server_uuid, now)
        return jwt.encode({"iss": server_uuid, "iat": int(now), "jti": str(uuid.uuid4()),
                           "service_type": "com.apple.maid"}, self.key, algorithm="RS256")


@pytest.fixture(scope="module", params=["ES256", "RS256"])
def tokens(request):
    return Tokens(rsa_key=request.param == "RS256")


def service(allowed_on="any", tokens=None):
    directory = FakeDirectory(allowed_on, tokens.public_key_pem() if tokens else None)
    return AppleIDState(AppleIDSetup(passwords={"eliza@betterbag.test": "pw", "jo@betterbag-eu.test": "pw"}),
                        directory, clock=lambda: NOW)


def body(account="eliza@betterbag.test", password="pw", token=None, **device):
    return {"account": account, "password": password, "maid_token": token,
            "device": {"platform": "iOS", "os_version": "18.2", "enrollment": "user", **device}}


def test_the_account_signs_in():
    answer = service().sign_in("gsa.lab.test", body())
    assert answer.status == 200 and answer.body["organization"] == ORG


@pytest.mark.parametrize("account, password, code", [
    ("nobody@betterbag.test", "pw", "account-not-found"),
    ("e.bagshaw@betterbag.test", "pw", "alias-not-account"),
    ("eliza@betterbag.test", "wrong", "wrong-password"),
])
def test_unknown_alias_and_wrong_password_get_apples_vague_alert(account, password, code):
    answer = service().sign_in("gsa.lab.test", body(account, password))
    assert answer.status == 401 and answer.body["error"] == code
    assert answer.body["alert"] == {"title": "Sign-in Failed",
                                    "message": "Your Apple Account or password was incorrect."}
    if code == "alias-not-account":
        assert "eliza@betterbag.test" in answer.body["reason"]


@pytest.mark.parametrize("os_version, status", [("14.6", 403), ("15.0", 200)])
def test_a_mac_virtual_machine_signs_in_from_macos_15(os_version, status):
    answer = service().sign_in("gsa.lab.test", body(platform="macOS", os_version=os_version, virtual_machine=True))
    assert answer.status == status
    if status == 403:
        assert answer.body["error"] == "virtual-machine" and answer.body["alert"]["title"] == "Verification Failed"


def test_managed_devices_only_takes_a_token_signed_by_the_organizations_mdm(tokens):
    answer = service("managed", tokens).sign_in("gsa.lab.test", body(token=tokens.mint()))
    assert answer.status == 200


@pytest.mark.parametrize("enrollment, platform, title", [
    ("user", "iOS", "Sign-in Failed"), ("device", "iOS", "Verification Failed"),
    ("device", "macOS", "Verification Failed")])
def test_managed_devices_only_refuses_no_token_with_the_platforms_dialog(enrollment, platform, title):
    answer = service("managed").sign_in("gsa.lab.test", body(enrollment=enrollment, platform=platform))
    assert answer.status == 403 and answer.body["error"] == "no-maid-token"
    assert answer.body["alert"]["title"] == title
    if enrollment == "user":
        assert "AKAuthenticationError error -7013" in answer.body["alert"]["message"]
    elif platform == "macOS":
        assert "can't sign into this device" in answer.body["alert"]["message"]
    else:
        assert "cannot sign into this device" in answer.body["alert"]["message"]


def test_managed_devices_only_refuses_a_token_of_another_organizations_mdm(tokens):
    foreign = jwt.encode({"iss": "uuid-eu", "iat": int(NOW), "jti": "x", "service_type": "com.apple.maid"},
                         "k" * 32, algorithm="HS256")
    answer = service("managed", tokens).sign_in("gsa.lab.test", body(token=foreign))
    assert answer.body["error"] == "maid-token-other-organization"
    # and an account of another organization through our MDM's token
    answer = service("managed", tokens).sign_in("gsa.lab.test", body("jo@betterbag-eu.test",
                                                                     token=tokens.mint()))
    assert answer.body["error"] == "maid-token-other-organization"


def test_managed_devices_only_refuses_forged_stale_replayed_and_unknown_tokens(tokens):
    svc = service("managed", tokens)
    forged = jwt.encode({"iss": "uuid-ours", "iat": int(NOW), "jti": "y", "service_type": "com.apple.maid"},
                        "k" * 32, algorithm="HS256")
    assert svc.sign_in("h", body(token=forged)).body["error"] == "maid-token-bad-signature"
    assert svc.sign_in("h", body(token="not a jwt")).body["error"] == "maid-token-malformed"
    unknown = jwt.encode({"iss": "uuid-gone", "iat": int(NOW), "jti": "z"}, "k" * 32, algorithm="HS256")
    assert svc.sign_in("h", body(token=unknown)).body["error"] == "maid-token-unknown-server"
    assert svc.sign_in("h", body(token=tokens.mint(now=NOW - 3600))).body["error"] == "maid-token-stale"
    other_key = Tokens(rsa_key=tokens.signer is not None)  # right claims, the other kind of key
    assert svc.sign_in("h", body(token=other_key.mint())).body["error"] == "maid-token-bad-signature"
    token = tokens.mint()
    assert svc.sign_in("h", body(token=token)).status == 200
    assert svc.sign_in("h", body(token=token)).body["error"] == "maid-token-replayed"


def test_any_device_ignores_the_token(tokens):
    assert service("any", tokens).sign_in("h", body(token="garbage")).status == 200


def test_supervised_only_refuses_every_unsupervised_device_whatever_the_token(tokens):
    svc = service("supervised", tokens)
    assert svc.sign_in("h", body(token=tokens.mint())).body["error"] == "not-supervised"
    assert svc.sign_in("h", body(token=tokens.mint(), enrollment="device", supervised=True)).status == 200


@pytest.mark.parametrize("bad", [
    None, [], {"account": "x"}, {"account": "a@b.c", "device": "iPhone"},
    {"account": "a@b.c", "device": {"platform": "Android", "os_version": "1", "enrollment": "user"}},
    {"account": "a@b.c", "device": {"platform": "iOS", "os_version": "eighteen", "enrollment": "user"}},
    {"account": "a@b.c", "device": {"platform": "iOS", "os_version": "18", "enrollment": "user",
                                    "supervised": "yes"}},
    {"account": "a@b.c", "maid_token": 5, "device": {"platform": "iOS", "os_version": "18", "enrollment": "user"}},
])
def test_malformed_requests_are_refused_with_the_reason(bad):
    with pytest.raises(BadSignInRequest):
        service().sign_in("h", bad)


def test_without_an_emulated_abm_the_scenarios_users_are_the_accounts():
    from mocks.apple_id import UsersDirectory

    svc = AppleIDState(AppleIDSetup(passwords={"first.last@school.example": "pw"}),
                       UsersDirectory("School", ["First.Last@school.example"]), clock=lambda: NOW)
    assert svc.sign_in("h", body("first.last@school.example")).status == 200
    assert svc.sign_in("h", body("someone@school.example")).body["error"] == "account-not-found"
