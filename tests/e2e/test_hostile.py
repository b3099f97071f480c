"""Idle, slow and streaming clients stall nobody, and ambiguous HTTP framing is refused (issue 13 §1 and §7).

Through the lab's real TLS listener on loopback, each load bounded in count and time. No timing is asserted: a
stalled listener shows as a request that gets no answer within a generous timeout, or a slow client the listener
never closes. benchmarks/hostile.py measures the same attacks, all at once, with numbers.
"""
from __future__ import annotations

import json
import socket
import ssl
import time

import pytest

from lab import server
from lab.server import WORKER_THREADS

PATIENCE = 20  # seconds a request may take before the listener counts as stalled
MDM_HOST = "mdm.lab.test"


def tls(lab, host: str, timeout: float = PATIENCE) -> ssl.SSLSocket:
    ctx = ssl.create_default_context(cafile=str(lab.pki.cert_path))
    raw = socket.create_connection(("127.0.0.1", lab.https_port), timeout=timeout)
    try:
        return ctx.wrap_socket(raw, server_hostname=host)
    except BaseException:
        raw.close()
        raise


def read_response(sock: ssl.SSLSocket) -> tuple[int, dict, bytes, bytes]:
    """One response with a Content-Length; also what followed it on the connection until the server closed it."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        if not chunk:
            raise ConnectionError(f"closed before a whole response head: {data[:200]!r}")
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    length = int(headers.get("content-length", "0"))
    while len(rest) < length:
        chunk = sock.recv(65536)
        if not chunk:
            break
        rest += chunk
    return int(lines[0].split()[1]), headers, rest[:length], rest[length:]


def until_closed(sock: ssl.SSLSocket) -> bytes:
    """Everything the server still sends; the server must close the connection (a timeout here fails)."""
    data = b""
    try:
        while chunk := sock.recv(65536):
            data += chunk
    except (ConnectionResetError, ssl.SSLEOFError):
        pass
    return data


def health(lab) -> int:
    with tls(lab, "localhost") as sock:
        sock.sendall(b"GET /api/health HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n")
        return read_response(sock)[0]


def silent_connections(lab, count: int) -> list[ssl.SSLSocket]:
    """Up to ``count`` TLS connections that finish the handshake and say nothing (fewer if the listener stalls)."""
    held = []
    try:
        for _ in range(count):
            held.append(tls(lab, MDM_HOST, timeout=3))
    except (OSError, ssl.SSLError):
        pass
    return held


def close_all(socks) -> None:
    for s in socks:
        s.close()


# -- §1: idle, slow and streaming clients --------------------------------------------------------------------------

def test_health_answers_while_more_silent_tls_clients_than_workers_are_held(lab):
    held = silent_connections(lab, WORKER_THREADS * 2)
    try:
        assert len(held) == WORKER_THREADS * 2, f"only {len(held)} TLS handshakes completed"
        assert health(lab) == 200
        held[0].setblocking(False)  # the silent clients were not cut off meanwhile: they only cost a socket
        with pytest.raises(ssl.SSLWantReadError):
            held[0].recv(1)
    finally:
        close_all(held)


@pytest.mark.parametrize("body", [False, True], ids=["head", "body"])
def test_a_slowloris_client_is_closed_by_the_listener(lab, monkeypatch, body):
    monkeypatch.setattr(server, "HEAD_TIMEOUT", 1.0, raising=False)
    monkeypatch.setattr(server, "BODY_TIMEOUT", 1.0, raising=False)
    with tls(lab, MDM_HOST) as sock:
        if body:
            sock.sendall(b"PUT /mdm/checkin HTTP/1.1\r\nHost: mdm.lab.test\r\nContent-Length: 100000\r\n\r\n")
        else:
            sock.sendall(b"GET /auth/web HTTP/1.1\r\n")
        sock.settimeout(0.5)
        answer = b""
        for _ in range(60):  # a byte every half second, for 30 s at most
            try:
                sock.sendall(b"a" if body else b"X")
            except (BrokenPipeError, ConnectionResetError, ssl.SSLError):
                break
            try:
                chunk = sock.recv(4096)
            except (TimeoutError, ssl.SSLWantReadError):
                continue
            except (ConnectionResetError, ssl.SSLError):
                break
            answer += chunk
            if not chunk:
                break
        else:
            pytest.fail("the listener kept a client that sends one byte every half second for 30 s")
    assert answer == b"" or answer.startswith(b"HTTP/1.1 408 "), answer[:200]
    assert health(lab) == 200


def test_a_partial_client_hello_is_dropped_without_stalling_others(lab, monkeypatch):
    monkeypatch.setattr(server, "HANDSHAKE_TIMEOUT", 1.0, raising=False)
    partial = [socket.create_connection(("127.0.0.1", lab.https_port), timeout=PATIENCE)
               for _ in range(WORKER_THREADS + 4)]
    try:
        for s in partial:
            s.sendall(bytes.fromhex("1603010200"))  # a ClientHello record header, the record never comes
        assert health(lab) == 200
        assert partial[0].recv(1) == b"", "the listener kept a handshake that never finished"
    finally:
        close_all(partial)


def _open_stream(lab) -> tuple[ssl.SSLSocket, int, dict, bytes]:
    sock = tls(lab, "localhost")
    sock.sendall(b"GET /api/events/stream HTTP/1.1\r\nHost: localhost\r\nAccept: text/event-stream\r\n\r\n")
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(65536)
        assert chunk, "the stream closed before its head"
        data += chunk
    head, _, rest = data.partition(b"\r\n\r\n")
    lines = head.decode("latin-1").split("\r\n")
    headers = {k.strip().lower(): v.strip() for k, _, v in (line.partition(":") for line in lines[1:])}
    return sock, int(lines[0].split()[1]), headers, rest


def test_event_streams_do_not_hold_a_worker_each(lab):
    streams = []
    try:
        for _ in range(WORKER_THREADS + 4):
            sock, status, _, _ = _open_stream(lab)
            streams.append(sock)
            assert status == 200
        assert health(lab) == 200
    finally:
        close_all(streams)


def test_event_streams_are_capped_and_a_departed_client_frees_its_place(lab, monkeypatch):
    monkeypatch.setattr(server, "MAX_STREAMS", 3)
    mark = lab.events.last_id()
    streams = []
    try:
        for _ in range(3):
            sock, status, _, _ = _open_stream(lab)
            streams.append(sock)
            assert status == 200
        extra, status, headers, rest = _open_stream(lab)
        extra.close()
        assert status == 503
        body = json.loads(rest[:int(headers["content-length"])])
        assert body["error"] == "too-many-streams" and body["limit"] == 3
        assert any(e["path"] == "/api/events/stream" and e["status"] == 503
                   for e in lab.events.query(after=mark, kind="http")), "the refusal is not in the timeline"
        streams.pop().close()  # a client leaves: its place is free again long before the next keep-alive
        for _ in range(100):  # bounded: 10 s
            sock, status, _, _ = _open_stream(lab)
            if status == 200:
                streams.append(sock)
                break
            sock.close()
            time.sleep(0.1)
        else:
            pytest.fail("the place of a departed stream client was never freed")
    finally:
        close_all(streams)


# -- §7: ambiguous framing is refused and the connection closed (no request smuggled in) ----------------------------

SMUGGLED = b"GET /smuggled HTTP/1.1\r\nHost: mdm.lab.test\r\nConnection: close\r\n\r\n"
FRAMINGS = {
    "two-content-lengths": b"Content-Length: 3\r\nContent-Length: 40\r\n\r\nabc",
    "content-length-and-chunked": b"Content-Length: 4\r\nTransfer-Encoding: chunked\r\n\r\n3\r\nabc\r\n0\r\n\r\n",
    "signed-content-length": b"Content-Length: +3\r\n\r\nabc",
    "chunk-size-not-hex": b"Transfer-Encoding: chunked\r\n\r\nzz\r\nabc\r\n0\r\n\r\n",
    "negative-chunk-size": b"Transfer-Encoding: chunked\r\n\r\n-5\r\nabc\r\n0\r\n\r\n",
    "chunk-longer-than-declared": b"Transfer-Encoding: chunked\r\n\r\n3\r\nabcdef\r\n0\r\n\r\n",
}


@pytest.mark.parametrize("framing", FRAMINGS.values(), ids=FRAMINGS.keys())
def test_ambiguous_framing_is_400_and_the_connection_closes(lab, framing):
    mark = lab.events.last_id()
    with tls(lab, MDM_HOST) as sock:
        sock.sendall(b"PUT /mdm/checkin HTTP/1.1\r\nHost: mdm.lab.test\r\n" + framing + SMUGGLED)
        status, headers, body, after = read_response(sock)
        after += until_closed(sock)
    assert status == 400, (status, body)
    assert headers.get("connection") == "close"
    assert json.loads(body)["error"] in ("bad-request", "ambiguous-framing")
    assert b"HTTP/1.1" not in after, f"a second answer on the connection: {after[:200]!r}"
    assert not [e for e in lab.events.query(after=mark, kind="http") if e["path"] == "/smuggled"]


def test_transfer_encoding_on_http_1_0_is_400(lab):
    with tls(lab, MDM_HOST) as sock:
        sock.sendall(b"PUT /mdm/checkin HTTP/1.0\r\nHost: mdm.lab.test\r\nTransfer-Encoding: chunked\r\n\r\n"
                     b"3\r\nabc\r\n0\r\n\r\n")
        status, headers, _, _ = read_response(sock)
        until_closed(sock)
    assert status == 400 and headers.get("connection") == "close"
