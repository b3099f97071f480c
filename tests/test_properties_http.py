"""Property-based tests (hypothesis) of every HTTP entry point that sees outside input: identifiers, query strings,
plists, JSON, form bodies, headers. Driven through the lab's own dispatcher (the WSGI app behind the TLS listener,
which also records each exchange), then over the real listener. The lab answers a clear 4xx (JSON with error and
message) or a success, never a 5xx, and keeps serving: a device enrolls afterwards."""
from __future__ import annotations

import plistlib
import socket
import ssl
import string
from urllib.parse import urlencode

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from werkzeug.test import Client

from lab.device import Device
from tests.conftest import IDENTIFIER, PASSWORD
from tests.test_properties_parsers import header_text, messages, plist_bodies, plist_values

SETTINGS = settings(max_examples=60, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
MDM, ORG, CONSOLE = "mdm.lab.test", "betterbag.test", "console.lab.test"

query_text = st.text(alphabet=st.characters(blacklist_categories=("Cs",)), max_size=40)
identifiers = (query_text | st.builds(lambda a, b: f"{a}@{b}", query_text, query_text)
               | st.sampled_from([IDENTIFIER, "@", "a@b@c", "", " eliza@betterbag.test ", "eliza@BETTERBAG.TEST."]))


@pytest.fixture(scope="module")
def client(lab):
    return Client(lab.dispatcher)


@pytest.fixture(scope="module")
def enrolled(lab):
    """A real enrollment, so check-ins and polls get past the token check with some bodies."""
    device = Device(lab.network())
    assert device.enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
    yield device
    device.close()


def judge(response) -> None:
    assert response.status_code < 500, (response.status_code, response.get_data()[:300])
    if response.status_code >= 400 and response.mimetype == "application/json":
        body = response.get_json()
        assert body["error"] and body["message"]


def call(client, method: str, host: str, path: str, **kwargs):
    return client.open(path, method=method, base_url=f"https://{host}", **kwargs)


@SETTINGS
@given(identifiers, query_text, st.sampled_from([ORG, MDM, "axm-adm-enroll.lab.test"]))
def test_discovery_with_any_identifier_and_model_family(client, identifier, family, host):
    path = "/mdm/service-discovery" if host == MDM else "/.well-known/com.apple.remotemanagement"
    judge(call(client, "GET", host, path, query_string={"user-identifier": identifier, "model-family": family}))


@SETTINGS
@given(st.text(alphabet=string.printable, max_size=120), st.sampled_from([ORG, MDM, CONSOLE]),
       st.sampled_from(["/", "/.well-known/com.apple.remotemanagement", "/auth/web", "/api/events", "/oauth2/authorize",
                        "/api/state/mdm", "/nowhere"]))
def test_any_query_string_on_any_path(client, raw_query, host, path):
    judge(call(client, "GET", host, path, query_string=raw_query))


@SETTINGS
@given(plist_bodies(), st.sampled_from(["/mdm/checkin", "/mdm/server", "/enroll", "/enroll/adde"]),
       st.booleans())
def test_any_plist_to_the_mdm(client, enrolled, body, path, with_token):
    headers = {"Authorization": f"Bearer {enrolled.enrollment.access_token}"} if with_token else {}
    method = "POST" if path.startswith("/enroll") else "PUT"
    judge(call(client, method, MDM, path, data=body, headers=headers,
               content_type="application/x-apple-aspen-mdm-checkin"))


@SETTINGS
@given(messages)
def test_any_check_in_message_from_an_enrolled_device(client, enrolled, message):
    keys = {"Topic": enrolled.enrollment.topic, "EnrollmentID": enrolled.enrollment.enrollment_id}
    message = {**keys, **message} if message.get("MessageType") != "CheckOut" else {**message, "MessageType": "Idle"}
    judge(call(client, "PUT", MDM, "/mdm/checkin", data=plistlib.dumps(message),
               headers={"Authorization": f"Bearer {enrolled.enrollment.access_token}"}))


form_values = st.dictionaries(st.sampled_from(["user-identifier", "password", "request", "grant_type", "code",
                                               "client_id", "redirect_uri", "refresh_token", "code_verifier"])
                              | query_text, query_text, max_size=6)


@SETTINGS
@given(form_values, st.sampled_from(["/auth/web", "/oauth2/authorize", "/oauth2/token"]), st.booleans())
def test_any_form_body(client, form, path, raw):
    body = urlencode(form) if not raw else "&".join(f"{k}{v}" for k, v in form.items())
    judge(call(client, "POST", MDM, path, data=body.encode("utf-8", "surrogatepass"),
               content_type="application/x-www-form-urlencoded"))


json_values = st.recursive(st.none() | st.booleans() | st.integers() | query_text | st.floats(allow_nan=False),
                           lambda inner: st.lists(inner, max_size=3) | st.dictionaries(query_text, inner, max_size=3),
                           max_leaves=8)


@SETTINGS
@given(json_values | st.dictionaries(st.sampled_from(["name", "host", "times", "seconds", "type", "value",
                                                     "mdm_service_discovery_url", "devices"]), json_values,
                                     max_size=4),
       st.sampled_from([(CONSOLE, "/api/dns/records"), ("business.lab.test", "/account-driven-enrollment/profile"),
                        ("mdmenrollment.lab.test", "/account-driven-enrollment/profile")]),
       st.booleans())
def test_any_json_body(client, value, where, garbled):
    import json
    host, path = where
    body = json.dumps(value).encode()
    if garbled:
        body = body[: len(body) // 2] + b"\xff{"
    judge(call(client, "POST", host, path, data=body, content_type="application/json"))


@SETTINGS
@given(st.dictionaries(st.text(alphabet=string.ascii_letters + "-", min_size=1, max_size=20), header_text,
                       max_size=5),
       header_text)
def test_any_headers_and_host(client, enrolled, headers, host):
    judge(call(client, "GET", MDM, "/auth/web", headers={**headers, "Host": host}))
    headers.pop("Host", None)
    headers["Authorization"] = headers.get("Authorization", "Bearer " + enrolled.enrollment.access_token)
    judge(call(client, "PUT", MDM, "/mdm/server", headers=headers, data=plistlib.dumps({"Status": "Idle"})))


@SETTINGS
@given(plist_values)
def test_any_command_report(client, enrolled, value):
    keys = {"Topic": enrolled.enrollment.topic, "EnrollmentID": enrolled.enrollment.enrollment_id}
    report = {**keys, **value} if isinstance(value, dict) else value
    judge(call(client, "PUT", MDM, "/mdm/server", data=plistlib.dumps(report),
               headers={"Authorization": f"Bearer {enrolled.enrollment.access_token}"}))


# -- over the real listener: raw bytes after the TLS handshake ---------------------------------------------------

@settings(max_examples=25, deadline=None, derandomize=True, database=None,
          suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
@given(st.binary(min_size=1, max_size=300) | st.builds(lambda line, rest: line + b"\r\n" + rest,
                                                       st.sampled_from([b"GET / HTTP/1.1", b"PUT /mdm/checkin HTTP/1.1",
                                                                        b"GET / HTTP/9.9", b"\x00\x01 / HTTP/1.1"]),
                                                       st.binary(max_size=200)))
def test_raw_bytes_over_tls_get_a_4xx_or_a_close(lab, data):
    context = ssl.create_default_context(cafile=str(lab.pki.cert_path))
    answer = b""
    with socket.create_connection(("127.0.0.1", lab.https_port), timeout=10) as raw:
        with context.wrap_socket(raw, server_hostname=MDM) as tls:
            tls.settimeout(3)
            tls.sendall(data + b"\r\n\r\n")
            try:
                while chunk := tls.recv(65536):
                    answer += chunk
                    if b"\r\n\r\n" in answer:
                        break
            except (TimeoutError, ssl.SSLError, OSError):
                pass  # closed, or still waiting for the rest of a request: both fine
    if answer:
        assert answer.startswith(b"HTTP/1.1 "), answer[:200]
        status = int(answer.split(b" ", 2)[1])
        assert 200 <= status < 500 or status == 505, answer[:200]


def test_the_lab_still_serves_after_the_fuzzing(lab, device):
    assert device().enroll(IDENTIFIER, PASSWORD).outcome == "enrolled"
    assert lab.https._thread.is_alive()
