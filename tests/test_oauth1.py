"""OAuth 1.0a signing and verification, checked against the published examples and every refusal reason."""
import pytest
from hypothesis import given, settings
from hypothesis import strategies as st

from lab import oauth1

# OAuth Core 1.0 Appendix A / RFC 5849 section 1.2: the photos example.
PHOTOS_URL = "http://photos.example.net/photos?file=vacation.jpg&size=original"
PHOTOS = dict(consumer_key="dpf43f3p2l4k3l03", consumer_secret="kd94hf93k423kf44", token="nnch734d00sl2jdk",
              token_secret="pfkkdhi9sl3r4s00")

URL = "https://mdmenrollment.lab.test/session"
CREDS = dict(consumer_key="CK_abc", consumer_secret="CS_def", token="AT_ghi", token_secret="AS_jkl")
NOW = 1_750_000_000


def test_oauth_core_appendix_a_base_string_and_signature():
    params = [("oauth_consumer_key", PHOTOS["consumer_key"]), ("oauth_token", PHOTOS["token"]),
              ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", "1191242096"),
              ("oauth_nonce", "kllo9940pd9333jh"), ("oauth_version", "1.0")]
    base = oauth1.base_string("GET", PHOTOS_URL, params)
    assert base == ("GET&http%3A%2F%2Fphotos.example.net%2Fphotos&file%3Dvacation.jpg%26oauth_consumer_key%3D"
                    "dpf43f3p2l4k3l03%26oauth_nonce%3Dkllo9940pd9333jh%26oauth_signature_method%3DHMAC-SHA1%26"
                    "oauth_timestamp%3D1191242096%26oauth_token%3Dnnch734d00sl2jdk%26oauth_version%3D1.0%26"
                    "size%3Doriginal")
    assert oauth1.signature(base, PHOTOS["consumer_secret"], PHOTOS["token_secret"]) == "tR3+Ty81lMeYAr/Fid0kMTYa/WM="


def test_rfc5849_section_1_2_signature_in_header():
    header = oauth1.authorization_header("GET", PHOTOS_URL, **PHOTOS, nonce="chapoH", timestamp=137131202)
    params = oauth1.parse_header(header)
    # RFC 5849 1.2 omits oauth_version; ours adds it, so sign the RFC's exact parameter set separately.
    rfc_params = [(k, v) for k, v in params.items() if k not in ("realm", "oauth_signature", "oauth_version")]
    base = oauth1.base_string("GET", PHOTOS_URL, rfc_params)
    assert oauth1.signature(base, PHOTOS["consumer_secret"], PHOTOS["token_secret"]) == "MdpQcU8iPSUjWoN/UDMsK2sui9I="


def test_rfc5849_section_3_4_1_base_string_normalisation():
    url = "http://EXAMPLE.com:80/request?b5=%3D%253D&a3=a&c%40=&a2=r%20b"
    params = [("oauth_consumer_key", "9djdj82h48djs9d2"), ("oauth_token", "kkk9d7dh3k39sjv7"),
              ("oauth_signature_method", "HMAC-SHA1"), ("oauth_timestamp", "137131201"),
              ("oauth_nonce", "7d8f3e4a"), ("c2", ""), ("a3", "2 q")]  # the last two come from the form body
    assert oauth1.base_string("post", url, params) == (
        "POST&http%3A%2F%2Fexample.com%2Frequest&a2%3Dr%2520b%26a3%3D2%2520q%26a3%3Da%26b5%3D%253D%25253D%26"
        "c%2540%3D%26c2%3D%26oauth_consumer_key%3D9djdj82h48djs9d2%26oauth_nonce%3D7d8f3e4a%26"
        "oauth_signature_method%3DHMAC-SHA1%26oauth_timestamp%3D137131201%26oauth_token%3Dkkk9d7dh3k39sjv7")


def test_twitter_docs_creating_a_signature():
    params = [("status", "Hello Ladies + Gentlemen, a signed OAuth request!"),
              ("oauth_consumer_key", "xvz1evFS4wEEPTGEFPHBog"),
              ("oauth_nonce", "kYjzVBB8Y0ZFabxSWbWovY3uYSQ2pTgmZeNu2VS4cg"), ("oauth_signature_method", "HMAC-SHA1"),
              ("oauth_timestamp", "1318622958"), ("oauth_token", "370773112-GmHxMAgYyLbNEtIKZeRNFsMKPR9EyMZeS9weJAEb"),
              ("oauth_version", "1.0")]
    base = oauth1.base_string("POST", "https://api.twitter.com/1.1/statuses/update.json?include_entities=true",
                              params)
    assert oauth1.signature(base, "kAcSOqF21Fu85e7zjz7ZN2U4ZRhfV3WpwPAoE3Z7kBw",
                            "LswwdoUaIvS8ltyTt5jkRh4J50vUPVVHtR2YPi5kE") == "hCtSmYh+iHYCEqBWrE7C7hYmtUk="


@pytest.mark.parametrize("url, expected", [
    ("https://Mdmenrollment.LAB.test:443/session", "https://mdmenrollment.lab.test/session"),
    ("https://mdmenrollment.lab.test:8443/session?x=1#f", "https://mdmenrollment.lab.test:8443/session"),
    ("http://example.com:8080", "http://example.com:8080/"),
])
def test_normalized_url(url, expected):
    assert oauth1.normalized_url(url) == expected


def test_header_is_one_line_with_realm_adm_first():
    header = oauth1.authorization_header("GET", URL, **CREDS, nonce="n1", timestamp=NOW)
    # The order of the other parameters is free (RFC 5849 3.5.1); Apple's examples put the realm first.
    assert header.startswith('OAuth realm="ADM", ')
    params = oauth1.parse_header(header)
    assert params["oauth_consumer_key"] == "CK_abc" and params["oauth_token"] == "AT_ghi"
    assert "\n" not in header and 'oauth_version="1.0"' in header
    assert oauth1.parse_header(header)["oauth_signature_method"] == "HMAC-SHA1"


class Nonces:
    def __init__(self):
        self.seen = set()

    def __call__(self, consumer_key, token, nonce, timestamp):
        key = (consumer_key, token, nonce)
        was = key in self.seen
        self.seen.add(key)
        return was


def lookup(consumer_key, token):
    if (consumer_key, token) == (CREDS["consumer_key"], CREDS["token"]):
        return CREDS["consumer_secret"], CREDS["token_secret"]
    return None


def check(header, *, url=URL, method="GET", now=NOW, nonces=None):
    return oauth1.verify(header, method, url, lookup, now=now, seen_nonce=nonces or Nonces())


def test_verify_accepts_a_signed_request_once():
    nonces = Nonces()
    header = oauth1.authorization_header("GET", URL, **CREDS, nonce="n1", timestamp=NOW)
    verified = check(header, nonces=nonces, now=NOW + 299)
    assert (verified.consumer_key, verified.token, verified.nonce, verified.timestamp) == ("CK_abc", "AT_ghi",
                                                                                           "n1", NOW)
    with pytest.raises(ValueError) as err:
        check(header, nonces=nonces)
    assert err.value.reason == "reused-nonce"


def test_generated_nonces_and_timestamps_differ():
    a = oauth1.parse_header(oauth1.authorization_header("GET", URL, **CREDS))
    b = oauth1.parse_header(oauth1.authorization_header("GET", URL, **CREDS))
    assert a["oauth_nonce"] != b["oauth_nonce"]
    check(oauth1.authorization_header("GET", URL, **CREDS), now=int(a["oauth_timestamp"]))


def _signed(**overrides):
    creds = {**CREDS, **overrides}
    return oauth1.authorization_header("GET", URL, **creds, nonce="n1", timestamp=NOW)


@pytest.mark.parametrize("header, kwargs, reason", [
    (None, {}, "missing-authorization"),
    ("Bearer abc", {}, "not-oauth"),
    ("OAuth realm=ADM", {}, "malformed-authorization"),
    (_signed().replace('realm="ADM"', 'realm="Photos"'), {}, "wrong-realm"),
    (_signed().replace(', oauth_nonce="n1"', ""), {}, "missing-parameter"),
    (_signed().replace("HMAC-SHA1", "PLAINTEXT"), {}, "unsupported-signature-method"),
    (_signed().replace('oauth_version="1.0"', 'oauth_version="2.0"'), {}, "unsupported-version"),
    (_signed().replace(f'oauth_timestamp="{NOW}"', 'oauth_timestamp="soon"'), {}, "malformed-timestamp"),
    (_signed(), {"now": NOW + 301}, "stale-timestamp"),
    (_signed(), {"now": NOW - 301}, "stale-timestamp"),
    (_signed(consumer_key="CK_other"), {}, "unknown-token"),
    (_signed(token_secret="wrong"), {}, "bad-signature"),
    (_signed(), {"url": "https://mdmenrollment.lab.test/account"}, "bad-signature"),
    (_signed(), {"method": "POST"}, "bad-signature"),
    (_signed() + ', oauth_nonce="n2"', {}, "duplicate-parameter"),
])
def test_verify_refuses(header, kwargs, reason):
    with pytest.raises(ValueError) as err:
        check(header, **kwargs)
    assert err.value.reason == reason and str(err.value) == reason and err.value.message


def test_forged_request_does_not_burn_the_nonce():
    nonces = Nonces()
    with pytest.raises(ValueError):
        check(_signed(token_secret="wrong"), nonces=nonces)
    check(_signed(), nonces=nonces)


@settings(max_examples=300, deadline=None)
@given(st.text(max_size=200))
def test_parse_header_refuses_any_text_only_with_an_oauth_error(text):
    try:
        oauth1.parse_header("OAuth " + text)
    except oauth1.OAuthError as exc:
        assert exc.reason in ("malformed-authorization", "duplicate-parameter")


@settings(max_examples=100, deadline=None)
@given(st.text(min_size=1, max_size=40), st.text(min_size=1, max_size=40), st.text(max_size=40),
       st.text(max_size=40))
def test_signed_header_verifies_for_any_credentials(consumer_key, token, consumer_secret, token_secret):
    header = oauth1.authorization_header("GET", URL, consumer_key, consumer_secret, token, token_secret,
                                         timestamp=NOW)
    verified = oauth1.verify(header, "GET", URL, lambda ck, t: (consumer_secret, token_secret), now=NOW,
                             seen_nonce=lambda *a: False)
    assert (verified.consumer_key, verified.token) == (consumer_key, token)
