"""The device's own HTTP client (lab.device.http) through the lab's real DNS and TLS: keep-alive per host, trust
in the lab CA only, a connection the server closed replaced, redirects and header fields handed back as sent."""
from __future__ import annotations

import os
import socket
import ssl
import threading
from pathlib import Path
from urllib.parse import parse_qs

import pytest
import trustme

from lab.device.http import DeviceHTTP, HTTPStatusError
from lab.net import DNSFailure, LabResolver, trust_context
from tests.conftest import IDENTIFIER

WELL_KNOWN = "/.well-known/com.apple.remotemanagement"
TEST_HOST = "http-client.lab.test"


class _TinyServer:
    """A TLS server under the lab CA that answers each request from ``answers`` (by path) and then, for
    ``/once``, closes the connection without saying so (no ``Connection: close``), as an idle timeout would."""

    def __init__(self, lab):
        leaf = lab.pki.issue_server(TEST_HOST, tag="http-client-test")
        self.context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        self.context.load_cert_chain(leaf.cert_path, leaf.key_path)
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = self.listener.getsockname()[1]
        self.connections = 0
        self.requests: list[bytes] = []
        self._thread = threading.Thread(target=self._serve, daemon=True)
        self._thread.start()

    def _serve(self) -> None:
        while True:
            try:
                raw, _ = self.listener.accept()
            except OSError:
                return
            self.connections += 1
            threading.Thread(target=self._handle, args=(raw,), daemon=True).start()

    def _handle(self, raw: socket.socket) -> None:
        raw.settimeout(10)
        try:
            with self.context.wrap_socket(raw, server_side=True) as conn:
                buffered = b""
                while True:
                    while b"\r\n\r\n" not in buffered:
                        chunk = conn.recv(65536)
                        if not chunk:
                            return
                        buffered += chunk
                    head, _, buffered = buffered.partition(b"\r\n\r\n")
                    length = next((int(line.split(b":", 1)[1]) for line in head.split(b"\r\n")
                                   if line.lower().startswith(b"content-length:")), 0)
                    while len(buffered) < length:
                        buffered += conn.recv(65536)
                    body, buffered = buffered[:length], buffered[length:]
                    self.requests.append(head + b"\r\n\r\n" + body)
                    path = head.split(b" ")[1].decode()
                    conn.sendall(self._answer(path, body))
                    if path == "/once":
                        return
        except (OSError, ssl.SSLError):
            return

    @staticmethod
    def _answer(path: str, body: bytes) -> bytes:
        if path == "/redirect":
            return b"HTTP/1.1 302 Found\r\nLocation: https://elsewhere.lab.test/next\r\nContent-Length: 0\r\n\r\n"
        if path == "/repeated":
            return b"HTTP/1.1 200 OK\r\nX-Step: one\r\nx-step: two\r\nContent-Length: 2\r\n\r\nok"
        if path == "/missing":
            return b"HTTP/1.1 404 Not Found\r\nContent-Type: text/plain; charset=iso-8859-1\r\n" \
                   b"Content-Length: 5\r\n\r\nnon\xe9e"
        return b"HTTP/1.1 200 OK\r\nContent-Type: application/octet-stream\r\nContent-Length: %d\r\n\r\n%s" % (
            len(body), body)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture(scope="module")
def server(lab):
    lab.zone.add(TEST_HOST, "A", "127.0.0.1")
    tiny = _TinyServer(lab)
    yield tiny
    tiny.close()
    lab.zone.remove(TEST_HOST, "A")


@pytest.fixture
def client(lab):
    http = DeviceHTTP(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path))
    yield http
    http.close()


def test_one_kept_alive_connection_per_host_and_the_host_header_of_the_url(lab):
    """The device dials the lab's port for the URL it builds (port 443) but names the host as the URL does."""
    with DeviceHTTP(LabResolver("127.0.0.1", lab.dns.port), str(lab.pki.cert_path),
                    {443: lab.https_port}) as http:
        mark = lab.events.last_id()
        url = f"https://betterbag.test{WELL_KNOWN}?user-identifier={IDENTIFIER}"
        sockets = []
        for _ in range(3):
            response = http.get(url, headers={"Accept": "application/json"}, timeout=10)
            assert response.status_code == 200, response.content
            assert response.json()["Servers"][0]["Version"]
            sockets.append(http._idle[("betterbag.test", 443)][0].sock)
        assert len({id(s) for s in sockets}) == 1, "each request opened a new connection"
    events = [e for e in lab.events.query(after=mark, kind="http") if e["path"] == WELL_KNOWN]
    assert len(events) == 3
    assert {e["detail"]["request_headers"]["Host"] for e in events} == {"betterbag.test"}


def test_a_connection_the_server_closed_while_idle_is_replaced(server, client):
    url = f"https://{TEST_HOST}:{server.port}"
    before = server.connections
    assert client.get(f"{url}/once", timeout=10).status_code == 200
    assert client.put(f"{url}/echo", data=b"second", timeout=10).content == b"second"
    assert server.connections - before == 2


def test_bodies_forms_and_repeated_header_fields(server, client):
    url = f"https://{TEST_HOST}:{server.port}"
    form = client.post(f"{url}/echo", data={"grant_type": "authorization_code", "code": "a b&c"}, timeout=10)
    assert parse_qs(form.content.decode()) == {"grant_type": ["authorization_code"], "code": ["a b&c"]}
    sent = server.requests[-1].decode()
    assert "Content-Type: application/x-www-form-urlencoded" in sent
    assert f"Host: {TEST_HOST}:{server.port}" in sent
    repeated = client.get(f"{url}/repeated", timeout=10)
    assert repeated.headers["x-step"] == "one, two"
    missing = client.get(f"{url}/missing", timeout=10)
    assert (missing.status_code, missing.ok, missing.text) == (404, False, "nonée")
    with pytest.raises(HTTPStatusError, match="404"):
        missing.raise_for_status()


def test_redirects_are_handed_to_the_device_not_followed(server, client):
    response = client.get(f"https://{TEST_HOST}:{server.port}/redirect", timeout=10)
    assert (response.status_code, response.is_redirect) == (302, True)
    assert response.headers["location"] == "https://elsewhere.lab.test/next"
    with pytest.raises(ValueError, match="follows redirects itself"):
        client.get(f"https://{TEST_HOST}:{server.port}/redirect", allow_redirects=True)
    with pytest.raises(ValueError, match="only speaks https"):
        client.get(f"http://{TEST_HOST}:{server.port}/echo")


def test_only_the_given_ca_is_trusted(lab, server, tmp_path):
    other = tmp_path / "other-ca.pem"
    trustme.CA().cert_pem.write_to_path(str(other))
    with DeviceHTTP(LabResolver("127.0.0.1", lab.dns.port), str(other)) as http:
        with pytest.raises(ssl.SSLCertVerificationError):
            http.get(f"https://{TEST_HOST}:{server.port}/echo", timeout=10)
        with pytest.raises(ssl.SSLCertVerificationError):
            http.get(f"https://betterbag.test:{lab.https_port}{WELL_KNOWN}", timeout=10)


def test_a_name_the_lab_dns_does_not_know_fails_as_a_dns_failure(client):
    with pytest.raises(DNSFailure) as caught:
        client.get("https://nowhere.lab.test/", timeout=10)
    assert caught.value.code == "nxdomain"


def test_one_verifying_context_per_ca_file_renewed_when_the_file_changes(lab, tmp_path):
    bundle = tmp_path / "ca.pem"
    bundle.write_bytes(Path(lab.pki.cert_path).read_bytes())
    first = trust_context(str(bundle))
    assert trust_context(str(bundle)) is first
    assert (first.verify_mode, first.check_hostname) == (ssl.CERT_REQUIRED, True)
    trustme.CA().cert_pem.write_to_path(str(bundle))
    os.utime(bundle, ns=(1, 1))  # a new file even within the clock's resolution
    renewed = trust_context(str(bundle))
    assert renewed is not first
    assert len(renewed.get_ca_certs()) == 1
    assert renewed.get_ca_certs()[0] != first.get_ca_certs()[0]
