"""Bad input gets a clear 4xx JSON reason, every exchange is in the timeline, and the lab keeps serving.

Everything goes through the lab's real DNS and TLS (the lab's client plumbing (lab.net), raw ssl sockets, curl);
after every test a whole device enrollment must still succeed.
"""
from __future__ import annotations

import http.client
import json
import plistlib
import random
import socket
import ssl
import struct
import time
import uuid
from urllib.parse import parse_qs, urlsplit

import pytest
import requests
from cryptography.hazmat.primitives.asymmetric import ec
from dnslib import DNSRecord

from lab import cms
from lab.device import Device
from lab.device.http import DeviceHTTP
from lab.dns import TCP_IDLE_TIMEOUT, query
from lab.net import LabResolver, lab_session
from lab.pki import self_signed
from lab.scenario import load
from lab.server import WORKER_THREADS
from tests.conftest import IDENTIFIER, PASSWORD, require_tool, run

ORG_DOMAIN = "betterbag.test"
MDM_HOST = "mdm.lab.test"
WELL_KNOWN = "/.well-known/com.apple.remotemanagement"
TIMEOUT = 5  # the normal timeout of one request in these tests
BIG = 12 * 1024 * 1024
FIRST_REQUEST = plistlib.dumps({"LANGUAGE": "en-US", "PRODUCT": "iPhone17,2", "VERSION": "23B100"})
TOPIC = load("betterbag").mdm.topic  # the scenario the conftest lab runs


# -- fixtures and helpers -----------------------------------------------------------------------------------------
@pytest.fixture
def session(lab):
    s = lab_session(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path))
    yield s
    s.close()


@pytest.fixture(autouse=True)
def keeps_serving(lab, network):
    """After every case, whatever it did, a whole device enrollment still succeeds."""
    yield
    phone = Device(network)
    try:
        trace = phone.enroll(IDENTIFIER, PASSWORD)
    finally:
        phone.close()
    assert trace.outcome == "enrolled", "the lab stopped serving after this case:\n" + trace.render()


@pytest.fixture
def mark(lab) -> int:
    return lab.events.last_id()


def url(lab, host: str, path: str) -> str:
    return f"https://{host}:{lab.https_port}{path}"


def exchanges(lab, after: int) -> list[tuple]:
    return [(e["host"], e["method"], e["path"], e["status"]) for e in lab.events.query(after=after, kind="http")]


def assert_recorded(lab, after: int, host: str, method: str, path: str, status: int) -> None:
    recorded = exchanges(lab, after)
    assert (host, method, path, status) in recorded, f"not in the timeline: {recorded}"


def assert_json_error(response, status: int, error: str) -> dict:
    assert response.status_code == status, f"{response.status_code}: {response.text[:500]}"
    assert response.headers.get("Content-Type", "").split(";")[0] == "application/json", response.headers
    body = response.json()
    assert body.get("error") == error, body
    assert isinstance(body.get("message"), str) and body["message"], body
    return body


def well_known(session, lab, params=None):
    return session.get(url(lab, ORG_DOMAIN, WELL_KNOWN), params=params, timeout=TIMEOUT)


def sign_in(session, lab) -> str:
    r = session.post(url(lab, MDM_HOST, "/auth/web"), data={"user-identifier": IDENTIFIER, "password": PASSWORD},
                     allow_redirects=False, timeout=TIMEOUT)
    assert r.status_code == 308, r.text
    return parse_qs(urlsplit(r.headers["Location"]).query)["access-token"][0]


def tls_socket(lab, server_hostname: str | None, *, check_hostname: bool = True) -> ssl.SSLSocket:
    """A TLS connection to the lab's listener, verified against the lab CA, with the SNI we choose."""
    ctx = ssl.create_default_context(cafile=str(lab.pki.cert_path))
    ctx.check_hostname = check_hostname
    raw = socket.create_connection(("127.0.0.1", lab.https_port), timeout=TIMEOUT)
    return ctx.wrap_socket(raw, server_hostname=server_hostname)


def raw_request(lab, sni: str | None, host: str, method: str = "GET", path: str = "/", *,
                check_hostname: bool = True) -> tuple[http.client.HTTPResponse, dict, str]:
    """One request on a fresh TLS connection whose SNI and Host header are set independently.

    Returns the response, its JSON body and the common name of the certificate the listener presented."""
    sock = tls_socket(lab, sni, check_hostname=check_hostname)
    peer_cn = dict(x[0] for x in sock.getpeercert()["subject"])["commonName"]
    conn = http.client.HTTPConnection("127.0.0.1", lab.https_port, timeout=TIMEOUT)
    conn.sock = sock
    try:
        conn.request(method, path, headers={"Host": host})
        response = conn.getresponse()
        body = json.loads(response.read())
    finally:
        conn.close()
    return response, body, peer_cn


def checkin_message(**extra) -> bytes:
    return plistlib.dumps({"MessageType": "Authenticate", "Topic": TOPIC,
                           "EnrollmentID": uuid.uuid4().hex.upper(), **extra})


# -- enrollment body -----------------------------------------------------------------------------------------------
def _signed_request() -> bytes:
    """A first enrollment request as a device sends it: the plist CMS-signed by a (self-signed) device identity."""
    key = ec.generate_private_key(ec.SECP256R1())
    return cms.sign(FIRST_REQUEST, self_signed("bad-input device", key, days=1), key)


def _tampered_cms() -> bytes:
    der = bytearray(_signed_request())
    at = der.find(FIRST_REQUEST) + len(FIRST_REQUEST) // 2
    der[at] ^= 0x01
    return bytes(der)


BAD_ENROLLMENT_BODIES = {
    "text": b"garbage",
    "random-bytes": random.Random(1).randbytes(300),
    "empty": b"",
    "json": b'{"PRODUCT": "iPhone17,2", "VERSION": "23B100"}',
    "plist-without-product": plistlib.dumps({"LANGUAGE": "en-US", "VERSION": "23B100"}),
    "plist-not-a-dict": plistlib.dumps(["PRODUCT", "VERSION"]),
    "truncated-cms": _signed_request()[:120],
    "tampered-cms": _tampered_cms(),
}


@pytest.mark.parametrize("body", BAD_ENROLLMENT_BODIES.values(), ids=BAD_ENROLLMENT_BODIES.keys())
def test_garbage_enrollment_body_is_400(lab, session, mark, body):
    r = session.post(url(lab, MDM_HOST, "/enroll"), data=body,
                     headers={"Content-Type": "application/pkcs7-signature"}, timeout=TIMEOUT)
    assert_json_error(r, 400, "bad-enrollment-request")
    assert_recorded(lab, mark, MDM_HOST, "POST", "/enroll", 400)


def test_valid_signed_enrollment_body_gets_the_challenge(lab, session, mark):
    """Control for the cases above: the same request, untampered, passes parsing and gets the 401 challenge."""
    r = session.post(url(lab, MDM_HOST, "/enroll"), data=_signed_request(),
                     headers={"Content-Type": "application/pkcs7-signature"}, timeout=TIMEOUT)
    assert_json_error(r, 401, "token-required")
    assert r.headers["WWW-Authenticate"].startswith('Bearer method="apple-as-web"')
    assert_recorded(lab, mark, MDM_HOST, "POST", "/enroll", 401)


# -- body size cap --------------------------------------------------------------------------------------------------
def _post_expecting_413(lab, session, mark, data, **kwargs):
    try:
        r = session.post(url(lab, MDM_HOST, "/enroll"), data=data, timeout=15, **kwargs)
    except requests.exceptions.RequestException as exc:
        pytest.fail(f"the client never received the lab's answer ({exc!r}); "
                    f"the lab recorded {exchanges(lab, mark)}")
    body = assert_json_error(r, 413, "body-too-large")
    assert body["limit"] == 1024 * 1024
    assert_recorded(lab, mark, MDM_HOST, "POST", "/enroll", 413)


def test_12_mb_body_is_413(lab, session, mark):
    _post_expecting_413(lab, session, mark, b"\0" * BIG)


def test_12_mb_chunked_body_is_413(lab, session, mark):
    def pieces():
        for _ in range(BIG // 65536):
            yield b"\0" * 65536

    _post_expecting_413(lab, session, mark, pieces())


def test_12_mb_body_is_413_for_a_client_that_waits_for_100_continue(lab, tmp_path, mark):
    """curl sends Expect: 100-continue for big bodies, so it reads the 413 before uploading anything."""
    big = tmp_path / "big.bin"
    with big.open("wb") as fh:
        fh.truncate(BIG)
    body = tmp_path / "answer.json"
    out = run([require_tool("curl"), "-sS", "--max-time", "15", "--noproxy", "*",
               "--connect-to", f"::127.0.0.1:{lab.https_port}", "--cacert", str(lab.pki.cert_path),
               "-o", str(body), "-w", "%{http_code}", "--data-binary", f"@{big}",
               url(lab, MDM_HOST, "/enroll")], timeout=30)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == "413"
    assert json.loads(body.read_bytes())["error"] == "body-too-large"
    assert_recorded(lab, mark, MDM_HOST, "POST", "/enroll", 413)


def _read_responses(sock: ssl.SSLSocket, count: int) -> list[tuple[int, dict, bytes]]:
    """Up to ``count`` responses (each with a Content-Length) from one connection, stopping when it closes."""
    reader = sock.makefile("rb")
    responses = []
    try:
        for _ in range(count):
            status_line = reader.readline()
            if not status_line:
                break
            headers = {}
            while (line := reader.readline()) not in (b"\r\n", b"\n", b""):
                name, _, value = line.decode("latin-1").partition(":")
                headers[name.strip().lower()] = value.strip()
            body = reader.read(int(headers.get("content-length", "0")))
            responses.append((int(status_line.split()[1]), headers, body))
            if headers.get("connection", "").lower() == "close":
                break
    except (TimeoutError, ConnectionError, ssl.SSLError):
        pass
    finally:
        reader.close()
    return responses


def test_chunked_body_with_a_lying_content_length_is_framed_by_the_chunks(lab, mark):
    """RFC 9112 6.3: with Transfer-Encoding chunked, Content-Length is ignored (or the request refused and the
    connection closed). The MDM must never be handed the first Content-Length bytes of a chunked body, and the
    rest of the body must never be read as the next request on the connection."""
    body = FIRST_REQUEST
    chunked = b"%x\r\n" % len(body) + body + b"\r\n0\r\n\r\n"
    first = (f"POST /enroll HTTP/1.1\r\nHost: {MDM_HOST}\r\nContent-Type: application/xml\r\n"
             f"Content-Length: 5\r\nTransfer-Encoding: chunked\r\n\r\n").encode() + chunked
    second = f"GET /auth/web?user-identifier={IDENTIFIER} HTTP/1.1\r\nHost: {MDM_HOST}\r\n\r\n".encode()
    with tls_socket(lab, MDM_HOST) as sock:
        sock.sendall(first + second)
        responses = _read_responses(sock, 2)
    assert responses, "no response at all"
    status, headers, payload = responses[0]
    seen = f"responses on the connection: {[(st, b[:120]) for st, _, b in responses]}"
    if status == 400:  # refusing the ambiguous framing is allowed, if the reason says so and the connection closes
        assert json.loads(payload).get("error") != "bad-enrollment-request", \
            f"the MDM parsed a truncated body (Content-Length won over chunked); {seen}"
        assert headers.get("connection") == "close", seen
    else:
        assert status == 401, seen  # the whole chunked plist reached the MDM: the challenge
        assert headers["www-authenticate"].startswith('Bearer method="apple-as-web"')
    if headers.get("connection") != "close":
        assert len(responses) == 2, f"the pipelined request got no answer; {seen}"
        assert responses[1][0] == 200, f"leftover body bytes were parsed as a request; {seen}"
    assert_recorded(lab, mark, MDM_HOST, "POST", "/enroll", status)


# -- discovery input ------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("identifier", [
    "eliza", "eliza@", "@betterbag.test", "eliza@betterbag", "eliza@.test", "eliza@betterbag.test.",
    "a@b@betterbag.test", "",
])
def test_malformed_identifier_is_400(lab, session, mark, identifier):
    r = well_known(session, lab, {"user-identifier": identifier, "model-family": "iPhone"})
    assert_json_error(r, 400, "malformed-identifier")
    assert_recorded(lab, mark, ORG_DOMAIN, "GET", WELL_KNOWN, 400)


def test_missing_identifier_is_400(lab, session, mark):
    r = well_known(session, lab, {"model-family": "iPhone"})
    body = assert_json_error(r, 400, "malformed-identifier")
    assert "user-identifier" in body["message"]
    assert_recorded(lab, mark, ORG_DOMAIN, "GET", WELL_KNOWN, 400)


def test_unknown_model_family_is_400(lab, session, mark):
    r = well_known(session, lab, {"user-identifier": IDENTIFIER, "model-family": "Toaster"})
    assert_json_error(r, 400, "unknown-model-family")
    assert_recorded(lab, mark, ORG_DOMAIN, "GET", WELL_KNOWN, 400)


# -- tokens ---------------------------------------------------------------------------------------------------------
AUTHORIZATIONS = {
    "missing": (None, "token-required"),
    "unknown-token": ("Bearer this-token-was-never-issued-by-the-lab", "invalid-token"),
    "empty-bearer": ("Bearer ", "malformed-authorization"),
    "basic": ("Basic ZWxpemE6Y2Fycnktb24tMjAyNg==", "malformed-authorization"),
}


def _expect_challenge(lab, r, error: str) -> None:
    assert_json_error(r, 401, error)
    assert r.headers["WWW-Authenticate"] == \
        f'Bearer method="apple-as-web", url="https://{MDM_HOST}:{lab.https_port}/auth/web"'


@pytest.mark.parametrize("authorization,error", AUTHORIZATIONS.values(), ids=AUTHORIZATIONS.keys())
def test_enroll_without_a_valid_token_is_401_with_the_challenge(lab, session, mark, authorization, error):
    headers = {"Content-Type": "application/xml"}
    if authorization is not None:
        headers["Authorization"] = authorization
    r = session.post(url(lab, MDM_HOST, "/enroll"), data=FIRST_REQUEST, headers=headers, timeout=TIMEOUT)
    _expect_challenge(lab, r, error)
    assert_recorded(lab, mark, MDM_HOST, "POST", "/enroll", 401)


@pytest.mark.parametrize("authorization,error", AUTHORIZATIONS.values(), ids=AUTHORIZATIONS.keys())
def test_checkin_without_a_valid_token_is_401_with_the_challenge(lab, session, mark, authorization, error):
    headers = {"Content-Type": "application/x-apple-aspen-mdm-checkin"}
    if authorization is not None:
        headers["Authorization"] = authorization
    r = session.put(url(lab, MDM_HOST, "/mdm/checkin"), data=checkin_message(), headers=headers, timeout=TIMEOUT)
    _expect_challenge(lab, r, error)
    assert_recorded(lab, mark, MDM_HOST, "PUT", "/mdm/checkin", 401)


BAD_CHECKINS = {
    "garbage": (b"garbage", "bad-check-in"),
    "random-bytes": (random.Random(1).randbytes(300), "bad-check-in"),
    "empty": (b"", "bad-check-in"),
    "no-message-type": (plistlib.dumps({"Topic": TOPIC}), "bad-check-in"),
    "unknown-message-type": (checkin_message(MessageType="Reboot"), "unknown-message-type"),
}


@pytest.mark.parametrize("body,error", BAD_CHECKINS.values(), ids=BAD_CHECKINS.keys())
def test_garbage_checkin_with_a_valid_token_is_400(lab, session, mark, body, error):
    token = sign_in(session, lab)
    r = session.put(url(lab, MDM_HOST, "/mdm/checkin"), data=body, timeout=TIMEOUT,
                    headers={"Authorization": f"Bearer {token}",
                             "Content-Type": "application/x-apple-aspen-mdm-checkin"})
    assert_json_error(r, 400, error)
    assert_recorded(lab, mark, MDM_HOST, "PUT", "/mdm/checkin", 400)


# -- hosts and TLS server names -------------------------------------------------------------------------------------
def test_unknown_sni_and_host_is_404_naming_the_known_hosts(lab, mark):
    # No certificate matches the name, so the listener falls back to the console's; the chain is still the lab's.
    response, body, peer_cn = raw_request(lab, "nowhere.lab.test", "nowhere.lab.test", check_hostname=False)
    assert peer_cn == "console.lab.test"
    assert response.status == 404
    assert response.getheader("Content-Type") == "application/json"
    assert body["error"] == "unknown-host" and body["host"] == "nowhere.lab.test"
    assert body["known_hosts"] == lab.dispatcher.hosts
    assert {ORG_DOMAIN, MDM_HOST, "console.lab.test", "localhost"} <= set(body["known_hosts"])
    assert_recorded(lab, mark, "nowhere.lab.test", "GET", "/", 404)


def test_unknown_host_without_sni_is_404(lab, mark):
    # A client dialling the IP sends no SNI; the console certificate carries IP:127.0.0.1, so it verifies.
    response, body, _ = raw_request(lab, None, f"nowhere.lab.test:{lab.https_port}", path=WELL_KNOWN,
                                    check_hostname=False)
    assert response.status == 404 and body["error"] == "unknown-host", body
    assert body["known_hosts"] == lab.dispatcher.hosts
    assert_recorded(lab, mark, "nowhere.lab.test", "GET", WELL_KNOWN, 404)


@pytest.mark.parametrize("sni,host", [(MDM_HOST, ORG_DOMAIN), (ORG_DOMAIN, MDM_HOST)])
def test_host_header_not_matching_sni_is_421(lab, mark, sni, host):
    response, body, peer_cn = raw_request(lab, sni, host, path=WELL_KNOWN)
    assert peer_cn == sni
    assert response.status == 421
    assert response.getheader("Content-Type") == "application/json"
    assert body["error"] == "misdirected-request" and sni in body["message"] and host in body["message"], body
    assert_recorded(lab, mark, host, "GET", WELL_KNOWN, 421)


def test_421_through_curl_with_resolve_and_a_host_header(lab, tmp_path, mark):
    body = tmp_path / "answer.json"
    out = run([require_tool("curl"), "-sS", "--max-time", "10", "--noproxy", "*",
               "--resolve", f"{MDM_HOST}:{lab.https_port}:127.0.0.1", "--cacert", str(lab.pki.cert_path),
               "-H", f"Host: {ORG_DOMAIN}", "-o", str(body), "-w", "%{http_code}",
               url(lab, MDM_HOST, f"{WELL_KNOWN}?user-identifier={IDENTIFIER}")], timeout=20)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == "421"
    assert json.loads(body.read_bytes())["error"] == "misdirected-request"
    assert_recorded(lab, mark, ORG_DOMAIN, "GET", WELL_KNOWN, 421)


def test_fully_qualified_host_with_trailing_dot_is_not_misdirected(lab, tmp_path, mark):
    """`https://betterbag.test./...` is the same name: curl sends SNI betterbag.test (SNI never carries the
    trailing dot, RFC 6066 3) and Host betterbag.test.; the lab must treat them as one host, not answer 421."""
    body = tmp_path / "answer.json"
    out = run([require_tool("curl"), "-sS", "--max-time", "10", "--noproxy", "*",
               "--connect-to", f"::127.0.0.1:{lab.https_port}", "--cacert", str(lab.pki.cert_path),
               "-o", str(body), "-w", "%{http_code}",
               f"https://{ORG_DOMAIN}.:{lab.https_port}{WELL_KNOWN}?user-identifier={IDENTIFIER}"], timeout=20)
    assert out.returncode == 0, out.stderr.decode()
    assert out.stdout.decode() == "200", body.read_bytes()
    assert json.loads(body.read_bytes())["Servers"][0]["Version"] == "mdm-byod"


# -- DNS garbage ----------------------------------------------------------------------------------------------------
def assert_dns_answers(lab) -> None:
    for tcp in (False, True):
        reply = query(ORG_DOMAIN, "A", "127.0.0.1", lab.dns.port, tcp=tcp, timeout=2)
        assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
    out = run([require_tool("dig"), "@127.0.0.1", "-p", str(lab.dns.port), "+time=2", "+tries=1", "+short",
               ORG_DOMAIN, "A"], timeout=15)
    assert out.returncode == 0 and out.stdout.decode().split() == ["127.0.0.1"], out


GARBAGE_SIZES = (1, 5, 11, 12, 13, 64, 300, 512)


def test_random_bytes_to_dns_udp(lab):
    rng = random.Random(1)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(2)
        for size in GARBAGE_SIZES:
            data = rng.randbytes(size)
            udp.sendto(data, ("127.0.0.1", lab.dns.port))
            if size < 12 or data[2] & 0x80:
                continue  # shorter than a header, or a response (QR set; answering could loop): dropped
            reply = DNSRecord.parse(udp.recvfrom(4096)[0])
            assert reply.header.id == int.from_bytes(data[:2], "big")
            assert reply.header.rcode in (1, 4, 5), reply  # FORMERR (or NOTIMP/REFUSED), never a crash
            assert not reply.rr
    assert_dns_answers(lab)


def test_random_bytes_to_dns_tcp(lab):
    rng = random.Random(1)
    clients = []
    try:
        for size in GARBAGE_SIZES:  # all at once: the server's idle timeouts then run side by side
            tcp = socket.create_connection(("127.0.0.1", lab.dns.port), timeout=TCP_IDLE_TIMEOUT + 3)
            clients.append(tcp)
            tcp.sendall(rng.randbytes(size))
        started = time.monotonic()
        for tcp in clients:
            try:
                answer = tcp.recv(4096)  # a FORMERR, or the server closing at its idle timeout
            except ConnectionResetError:
                answer = b""
            if answer:
                assert DNSRecord.parse(answer[2:]).header.rcode == 1
        assert time.monotonic() - started < TCP_IDLE_TIMEOUT + 2, "a garbage TCP client was held open too long"
    finally:
        for tcp in clients:
            tcp.close()
    # The same garbage framed as DNS over TCP (length prefix) is answered FORMERR at once.
    data = rng.randbytes(300)
    with socket.create_connection(("127.0.0.1", lab.dns.port), timeout=TIMEOUT) as tcp:
        tcp.sendall(struct.pack("!H", len(data)) + data)
        answer = tcp.recv(4096)
    assert len(answer) > 2 and struct.unpack("!H", answer[:2])[0] == len(answer) - 2
    reply = DNSRecord.parse(answer[2:])
    assert reply.header.id == int.from_bytes(data[:2], "big") and reply.header.rcode == 1
    assert_dns_answers(lab)


def test_dns_garbage_answers_are_in_the_timeline(lab):
    """ARCHITECTURE.md: every DNS answer is an event. A FORMERR sent to a client is an answer too."""
    after = lab.events.last_id()
    data = random.Random(1).randbytes(300)
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(2)
        udp.sendto(data, ("127.0.0.1", lab.dns.port))
        assert DNSRecord.parse(udp.recvfrom(4096)[0]).header.rcode == 1
    dns = lab.events.query(after=after, kind="dns")
    assert [e for e in dns if e["status"] == 1], f"the FORMERR answer is not in the timeline: {dns}"


# -- connections ------------------------------------------------------------------------------------------------------
def _idle_clients(lab, count: int) -> list[socket.socket]:
    return [socket.create_connection(("127.0.0.1", lab.https_port), timeout=TIMEOUT) for _ in range(count)]


def _request_while_idle_clients(lab, session, mark, count: int) -> None:
    idle = _idle_clients(lab, count)
    try:
        time.sleep(0.2)  # let the listener accept them all
        started = time.monotonic()
        try:
            r = well_known(session, lab, {"user-identifier": IDENTIFIER})
        except requests.exceptions.RequestException as exc:
            pytest.fail(f"{count} idle TCP clients stalled the listener: {exc!r}")
        assert r.status_code == 200
        assert time.monotonic() - started < TIMEOUT
        for s in idle:  # they were never closed by the server in the meantime, only ignored
            s.setblocking(False)
            with pytest.raises(BlockingIOError):
                s.recv(1)
    finally:
        for s in idle:
            s.close()
    assert_recorded(lab, mark, ORG_DOMAIN, "GET", WELL_KNOWN, 200)


def test_idle_tcp_clients_do_not_stall_others(lab, session, mark):
    _request_while_idle_clients(lab, session, mark, 3)


def test_more_idle_tcp_clients_than_worker_threads_do_not_stall_others(lab, session, mark):
    """Browsers preconnect sockets they may never use; a few dozen of them must not take the lab down."""
    _request_while_idle_clients(lab, session, mark, WORKER_THREADS + 4)


def test_kept_alive_clients_gone_quiet_after_a_request_do_not_stall_others(lab, session, mark):
    """A worker waits a few milliseconds for a kept-alive client's next request, then hands the connection back
    to the selector: more quiet clients than workers must not hold every worker."""
    quiet = [DeviceHTTP(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path))
             for _ in range(WORKER_THREADS + 4)]
    try:
        for client in quiet:
            assert client.get(url(lab, ORG_DOMAIN, f"{WELL_KNOWN}?user-identifier={IDENTIFIER}"),
                              timeout=TIMEOUT).status_code == 200
        assert all(client._idle for client in quiet), "a quiet client's connection was not kept alive"
        mark = lab.events.last_id()
        try:
            r = well_known(session, lab, {"user-identifier": IDENTIFIER})
        except requests.exceptions.RequestException as exc:
            pytest.fail(f"{len(quiet)} quiet kept-alive clients stalled the listener: {exc!r}")
        assert r.status_code == 200
        assert_recorded(lab, mark, ORG_DOMAIN, "GET", WELL_KNOWN, 200)
    finally:
        for client in quiet:
            client.close()


def test_plain_http_to_the_https_port_is_closed_cleanly(lab, mark):
    with socket.create_connection(("127.0.0.1", lab.https_port), timeout=TIMEOUT) as plain:
        plain.sendall(f"GET {WELL_KNOWN}?user-identifier={IDENTIFIER} HTTP/1.1\r\nHost: {ORG_DOMAIN}\r\n\r\n"
                      .encode())
        received = b""
        try:
            while chunk := plain.recv(4096):
                received += chunk
        except ConnectionResetError:
            pass
    # Closed without an answer, or a plain-text 400 saying this port speaks HTTPS; never a hang, never JSON data.
    assert received == b"" or received.startswith(b"HTTP/1.1 400 "), received[:200]
    out = run([require_tool("curl"), "-sS", "--max-time", str(TIMEOUT), "--noproxy", "*",
               f"http://127.0.0.1:{lab.https_port}/"], timeout=20)
    assert out.returncode in (0, 52, 56), (out.returncode, out.stderr)  # 52 empty reply, 56 reset
    assert b"Servers" not in out.stdout
    assert not [e for e in exchanges(lab, mark) if e[3] == 200], "a plain-HTTP request was served"


def test_keep_alive_reuses_one_connection(lab, session, mark):
    first = session.get(url(lab, MDM_HOST, "/auth/web"), params={"user-identifier": IDENTIFIER}, timeout=TIMEOUT)
    refused = session.post(url(lab, MDM_HOST, "/enroll"), data=b"garbage", timeout=TIMEOUT)
    second = session.get(url(lab, MDM_HOST, "/auth/web"), params={"user-identifier": IDENTIFIER}, timeout=TIMEOUT)
    assert (first.status_code, refused.status_code, second.status_code) == (200, 400, 200)
    for r in (first, refused, second):
        assert r.headers.get("Connection", "").lower() != "close", r.headers
    pools = session.get_adapter(url(lab, MDM_HOST, "/")).poolmanager.pools
    counts = [(pools[k].num_connections, pools[k].num_requests) for k in pools.keys()]
    assert counts == [(1, 3)], f"(connections, requests) per pool: {counts}"
    assert exchanges(lab, mark) == [
        (MDM_HOST, "GET", "/auth/web", 200), (MDM_HOST, "POST", "/enroll", 400), (MDM_HOST, "GET", "/auth/web", 200)]
    assert len({e["detail"]["client"] for e in lab.events.query(after=mark, kind="http")}) == 1
