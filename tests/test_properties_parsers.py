"""Property-based tests (hypothesis) of the parsers that see outside input, called directly: whatever they are
given, they return a result or raise their own typed error (a clear 4xx when a handler renders it), nothing else;
and the redaction helpers never let a secret through."""
from __future__ import annotations

import datetime as dt
import plistlib
import string

from hypothesis import HealthCheck, assume, given, settings
from hypothesis import strategies as st

from lab import cms
from lab.device.authentication import parse_challenge
from lab.dispatch import host_of
from lab.events import SECRET_KEYS, mask, redact_body, redact_headers, redact_query, redact_url
from lab.flaskapp import LabError
from mocks.mdm.checkin import parse_checkin_body, parse_report
from mocks.mdm.profiles import parse_enrollment_body

SETTINGS = settings(max_examples=150, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow])

# -- what outside input looks like -------------------------------------------------------------------------------
xml_text = st.text(alphabet=st.characters(blacklist_categories=("Cs", "Cc")), max_size=40)
plist_scalars = (st.booleans() | st.integers(min_value=-(2 ** 63), max_value=2 ** 63 - 1) | xml_text
                 | st.binary(max_size=40) | st.floats(allow_nan=False, allow_infinity=False)
                 | st.datetimes(min_value=dt.datetime(1900, 1, 1)))
plist_values = st.recursive(plist_scalars, lambda inner: st.lists(inner, max_size=4)
                            | st.dictionaries(xml_text, inner, max_size=4), max_leaves=12)
MESSAGE_KEYS = ["MessageType", "Topic", "EnrollmentID", "UDID", "Token", "PushMagic", "Status", "CommandUUID",
                "SerialNumber", "UnlockToken", "EnrollmentUserID", "PRODUCT", "VERSION", "LANGUAGE"]
messages = st.dictionaries(st.sampled_from(MESSAGE_KEYS) | xml_text, plist_values, max_size=6)


@st.composite
def plist_bodies(draw):
    """A plist (XML or binary) of some message, or bytes that only look like one, or garbage."""
    kind = draw(st.sampled_from(["xml", "binary", "garbage", "truncated"]))
    value = draw(messages | plist_values)
    if kind == "garbage":
        return draw(st.binary(max_size=200))
    data = plistlib.dumps(value, fmt=plistlib.FMT_XML if kind == "xml" else plistlib.FMT_BINARY)
    return data[:draw(st.integers(0, len(data)))] if kind == "truncated" else data


def _typed(parse, body: bytes):
    try:
        return parse(body)
    except LabError as exc:
        assert 400 <= exc.status < 500 and exc.code and exc.message
        return None


@SETTINGS
@given(plist_bodies())
def test_check_in_parser_returns_a_message_or_a_4xx(body):
    message = _typed(parse_checkin_body, body)
    assert message is None or isinstance(message.get("MessageType"), str)


@SETTINGS
@given(plist_bodies())
def test_command_report_parser_returns_a_report_or_a_4xx(body):
    report = _typed(parse_report, body)
    assert report is None or report["Status"] in ("Idle", "NotNow", "Acknowledged", "Error", "CommandFormatError")


@SETTINGS
@given(plist_bodies() | st.binary(max_size=300).map(lambda b: b"\x30\x82" + b))
def test_enrollment_request_parser_returns_device_info_or_a_4xx(body):
    info = _typed(parse_enrollment_body, body)
    assert info is None or (isinstance(info["PRODUCT"], str) and isinstance(info["VERSION"], str))


@SETTINGS
@given(st.binary(max_size=400))
def test_cms_parser_raises_only_cms_errors(der):
    try:
        cms.parse(der)
    except cms.CMSError:
        pass


# -- headers and identifiers -------------------------------------------------------------------------------------
header_text = st.text(alphabet=st.characters(min_codepoint=0x20, max_codepoint=0xFF), max_size=60)


@SETTINGS
@given(header_text, header_text)
def test_host_of_any_host_header_is_a_lowercase_name_without_port(host, server_name):
    result = host_of({"HTTP_HOST": host, "SERVER_NAME": server_name})
    assert isinstance(result, str) and result == result.lower() and not result.endswith(".")


@SETTINGS
@given(header_text)
def test_challenge_parser_returns_a_challenge_or_says_why_not(header):
    try:
        challenge = parse_challenge("Bearer " + header)
    except ValueError as exc:
        assert str(exc)
    else:
        assert challenge.method == challenge.params["method"]


# -- redaction never lets a secret through -----------------------------------------------------------------------
secrets_ = st.text(alphabet=string.ascii_letters + string.digits + "-_.~", min_size=16, max_size=48)
keys = st.sampled_from(sorted(SECRET_KEYS))
noise = st.text(alphabet=string.ascii_letters + string.digits + "=&;%+", max_size=30)


@SETTINGS
@given(keys, secrets_, noise, noise)
def test_redacted_query_and_url_never_carry_the_secret(key, secret, before, after):
    assume(secret not in before + after)
    query = f"{before}&{key}={secret}&{after}"
    assert secret not in redact_query(query)
    assert secret not in redact_url(f"https://mdm.lab.test/cb?{query}")


@SETTINGS
@given(st.sampled_from(["Authorization", "Cookie", "Set-Cookie", "X-ADM-Auth-Session", "Mdm-Signature"]),
       st.sampled_from(["Bearer ", "Basic ", "session=", "a=1; t=", ""]), secrets_)
def test_redacted_headers_never_carry_the_secret(name, prefix, secret):
    redacted = redact_headers([(name, prefix + secret), ("Location", f"x://cb?access-token={secret}")])
    assert secret not in "".join(redacted.values())


@SETTINGS
@given(keys, secrets_, st.sampled_from(["application/json", "application/x-www-form-urlencoded", "text/html",
                                        "application/xml", None]))
def test_redacted_bodies_never_carry_the_secret(key, secret, content_type):
    bodies = [f'{{"{key}": "{secret}", "n": [{{"{key}": "{secret}"}}]}}',
              f"{key}={secret}&other=1",
              f'<a href="x://r?{key}={secret}">',
              f"<dict><key>{key}</key><string>{secret}</string></dict>"]
    for body in bodies:
        assert secret not in redact_body(body.encode(), content_type)


@SETTINGS
@given(st.text(max_size=64))
def test_mask_never_returns_the_value(value):
    masked = mask(value)
    assert "[redacted]" in masked and (len(value) < 12 or value not in masked)
