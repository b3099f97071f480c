"""lab.device.authentication and oauth2 without a network: the challenge's required parameters per method, the
authorization URL as the iOS client builds it, PKCE."""
from __future__ import annotations

import base64
import hashlib
from urllib.parse import parse_qsl, urlsplit

import pytest
from requests.structures import CaseInsensitiveDict

from lab.device import DeviceFailure, Trace
from lab.device.authentication import parse_challenge, read_challenge
from lab.device.oauth2 import authorization_url, pkce_pair
from lab.device.trace import WARN

OAUTH = ('Bearer method="apple-oauth2", authorization-url="https://mdm.example.com/oauth2/authorize?tenant=bb", '
         'token-url="https://mdm.example.com/oauth2/token", redirect-url="apple-remotemanagement-user-login:/oauth2/'
         'redirection", client-id="C-1", scope="mdm"')


class Response:
    def __init__(self, header):
        self.headers = CaseInsensitiveDict({"WWW-Authenticate": header} if header is not None else {})


def outcome(header, strict=False):
    trace = Trace()
    try:
        read_challenge(Response(header), trace, strict=strict)
    except DeviceFailure as failure:
        return failure.code, trace
    return None, trace


def test_a_complete_oauth2_challenge_is_usable():
    code, trace = outcome(OAUTH, strict=True)
    assert code is None and trace.steps[-1].explanation.startswith("OAuth 2: authorize at https://mdm.example.com")


@pytest.mark.parametrize("drop, code", [("authorization-url", "challenge-missing-authorization-url"),
                                        ("token-url", "challenge-missing-token-url"),
                                        ("redirect-url", "challenge-missing-redirect-url"),
                                        ("client-id", "challenge-missing-client-id")])
def test_each_required_oauth2_parameter(drop, code):
    params = {k: v for k, v in parse_challenge(OAUTH).params.items() if k != drop}
    assert outcome("Bearer " + ", ".join(f'{k}="{v}"' for k, v in params.items()))[0] == code


def test_scope_is_required_by_the_docs_but_tolerated_by_the_client():
    header = OAUTH.replace(', scope="mdm"', "")
    code, trace = outcome(header)
    assert code is None and [s.code for s in trace.steps if s.verdict == WARN] == ["challenge-missing-scope"]
    assert outcome(header, strict=True)[0] == "challenge-missing-scope"


@pytest.mark.parametrize("header, code", [
    (None, "challenge-missing"),
    ('Bearer method="apple-as-web" url="https://x', "challenge-malformed"),
    ('Bearer method="oauth2", url="https://x"', "challenge-method-unknown"),
    ('Bearer method="apple-as-web"', "challenge-missing-url"),
    ('Bearer method="apple-as-web", url="ftp://x"', "challenge-bad-url"),
    (OAUTH.replace("https://mdm.example.com/oauth2/token", "http://mdm.example.com/oauth2/token"),
     "challenge-bad-url"),
    (OAUTH.replace("apple-remotemanagement-user-login:", "https:"), "challenge-bad-redirect-url"),
])
def test_unusable_challenges(header, code):
    assert outcome(header)[0] == code


def test_authorization_url_keeps_its_query_and_adds_the_parameters_in_the_observed_order():
    url = authorization_url(parse_challenge(OAUTH), "eliza@betterbag.test", "STATE-1")
    parts = urlsplit(url)
    assert (parts.scheme, parts.netloc, parts.path) == ("https", "mdm.example.com", "/oauth2/authorize")
    assert parse_qsl(parts.query) == [
        ("tenant", "bb"), ("response_type", "code"), ("client_id", "C-1"),
        ("redirect_uri", "apple-remotemanagement-user-login:/oauth2/redirection"), ("scope", "mdm"),
        ("state", "STATE-1"), ("login_hint", "eliza@betterbag.test")]


def test_authorization_url_without_scope_sends_none_and_pkce_only_when_asked():
    url = authorization_url(parse_challenge(OAUTH.replace(', scope="mdm"', "")), "e@b.test", "S", "CHALLENGE")
    query = dict(parse_qsl(urlsplit(url).query))
    assert "scope" not in query
    assert (query["code_challenge"], query["code_challenge_method"]) == ("CHALLENGE", "S256")
    assert list(dict(parse_qsl(urlsplit(url).query)))[-1] == "login_hint"


def test_pkce_pair_is_s256():
    verifier, challenge = pkce_pair()
    assert 43 <= len(verifier) <= 128
    assert challenge == base64.urlsafe_b64encode(hashlib.sha256(verifier.encode()).digest()).rstrip(b"=").decode()
