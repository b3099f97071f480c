"""lab.dns_server through real sockets (and dig): the lab's DNS cannot be turned against itself or others.

Responses and packets from the lab's own address get silence, UDP answers are truncated with TC, forwarding serves
only the lab's networks through a bounded pool, TCP needs no thread per connection and reassembles what arrives in
pieces, UPDATE and the other opcodes get NOTIMP, and no packet prints a traceback.
"""
from __future__ import annotations

import logging
import socket
import struct
import subprocess
import threading
import time

import pytest
from dnslib import OPCODE, QTYPE, RCODE, RR, A, DNSHeader, DNSQuestion, DNSRecord

from lab import dns_server
from lab.dns import LabDNS, Zone, ZoneResolver, query
from lab.dns_server import Wire, serves
from tests.conftest import require_tool
from tests.test_dns_unit import serving
from tests.test_dns_unit import udp_exchange as udp

LOOPBACK = "127.0.0.1"
BIG = "big.betterbag.test"


def make_zone() -> Zone:
    zone = Zone(["lab.test", "betterbag.test"])
    zone.add("mdm.lab.test", "A", LOOPBACK)
    for i in range(60):  # 60 × 250 B: about 16 KB, as 60 verification records added through the console were
        zone.add(BIG, "TXT", f"{i:03d}" + "x" * 247)
    return zone


@pytest.fixture
def server():
    with serving(make_zone()) as dns:
        yield dns


def read_tcp(sock: socket.socket) -> DNSRecord:
    def exactly(n: int) -> bytes:
        data = b""
        while len(data) < n:
            chunk = sock.recv(n - len(data))
            assert chunk, "the server closed the connection"
            data += chunk
        return data
    return DNSRecord.parse(exactly(struct.unpack("!H", exactly(2))[0]))


def framed(record: DNSRecord) -> bytes:
    packet = record.pack()
    return struct.pack("!H", len(packet)) + packet


def dig(port: int, *args: str) -> str:
    result = subprocess.run([require_tool("dig"), f"@{LOOPBACK}", "-p", str(port), "+time=2", "+tries=1", *args],
                            capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stdout + result.stderr
    return result.stdout


def msg_size(output: str) -> int:
    return int(output.split("MSG SIZE  rcvd: ")[1].split()[0])


# -- never answer a response, nor the lab itself ------------------------------------------------------------------
def test_a_response_sent_to_the_lab_gets_silence_so_two_servers_cannot_loop(server):
    response = DNSRecord.question("mdm.lab.test", "A").reply()
    response.add_answer(RR("mdm.lab.test", QTYPE.A, rdata=A(LOOPBACK)))
    assert udp(server.port, response.pack(), timeout=0.5) is None
    assert query("mdm.lab.test", "A", LOOPBACK, server.port).header.rcode == RCODE.NOERROR


def test_a_packet_from_the_labs_own_address_gets_silence():
    wire = Wire(ZoneResolver(make_zone()), own=(LOOPBACK, 5300))
    packet = DNSRecord.question("mdm.lab.test", "A").pack()
    assert wire.reply(packet, "udp", (LOOPBACK, 5300)) is None  # a spoofed source: answering would loop forever
    assert DNSRecord.parse(wire.reply(packet, "udp", (LOOPBACK, 5301))).rr


# -- UDP answers fit, with TC ---------------------------------------------------------------------------------------
def test_udp_answers_are_cut_to_512_bytes_with_tc_without_edns(server):
    request = DNSRecord.question(BIG, "TXT")
    reply_bytes = udp(server.port, request.pack())
    reply = DNSRecord.parse(reply_bytes)
    assert len(reply_bytes) <= 512 and reply.header.tc == 1 and reply.rr == []
    assert str(reply.q.qname).rstrip(".") == BIG and reply.header.id == request.header.id
    assert len(query(BIG, "TXT", LOOPBACK, server.port, tcp=True).rr) == 60  # TCP carries it all


def test_dig_sees_tc_and_at_most_its_edns_size(server):
    plain = dig(server.port, BIG, "TXT", "+noedns", "+ignore")
    assert " tc " in plain.split("flags:")[1].split(";")[0] + " " and msg_size(plain) <= 512
    sized = dig(server.port, BIG, "TXT", "+bufsize=1232", "+ignore")
    assert " tc" in sized.split("flags:")[1].split(";")[0] and msg_size(sized) <= 1232
    over_tcp = dig(server.port, BIG, "TXT", "+tcp")
    assert "ANSWER: 60," in over_tcp and " tc" not in over_tcp.split("flags:")[1].split(";")[0]
    small = dig(server.port, "mdm.lab.test", "A", "+bufsize=4096")
    assert "ANSWER: 1," in small and "udp: 1232" in small  # the lab's own EDNS record offers 1232


# -- TCP ------------------------------------------------------------------------------------------------------------
def test_tcp_reassembles_a_split_length_prefix_and_answers_pipelined_queries(server):
    first, second = DNSRecord.question("mdm.lab.test", "A"), DNSRecord.question(BIG, "TXT")
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as sock:
        data = framed(first)
        for piece in (data[:1], data[1:2], data[2:7], data[7:]):
            sock.sendall(piece)
            time.sleep(0.05)
        assert read_tcp(sock).header.id == first.header.id
        sock.sendall(framed(first) + framed(second))  # two queries in one write: two answers
        answers = [read_tcp(sock), read_tcp(sock)]
    assert [a.header.id for a in answers] == [first.header.id, second.header.id]
    assert len(answers[1].rr) == 60


def test_many_tcp_connections_cost_no_thread_each_and_the_server_keeps_answering(server):
    threads = threading.active_count()
    clients = []
    try:
        for _ in range(300):
            clients.append(socket.create_connection((LOOPBACK, server.port), timeout=10))
            clients[-1].sendall(b"\xea")  # half a length prefix, then nothing
        assert threading.active_count() == threads
        assert query("mdm.lab.test", "A", LOOPBACK, server.port, tcp=True).header.rcode == RCODE.NOERROR
        assert server.connections() <= dns_server.TCP_MAX_CONNECTIONS
    finally:
        for sock in clients:
            sock.close()


def test_a_tcp_client_too_slow_to_finish_its_message_is_closed(server, monkeypatch):
    monkeypatch.setattr(dns_server, "TCP_MESSAGE_DEADLINE", 0.5)
    with socket.create_connection((LOOPBACK, server.port), timeout=5) as sock:
        sock.sendall(b"\xea\x60")  # claims 60,000 bytes
        closed = b"x"
        for _ in range(20):  # trickle a byte every 0.2 s: never idle, but never done
            try:
                sock.sendall(b"\x00")
                sock.settimeout(0.2)
                closed = sock.recv(1)
                break
            except TimeoutError:
                continue
            except (ConnectionResetError, BrokenPipeError):
                closed = b""
                break
        assert closed == b""


# -- opcodes and conformance ----------------------------------------------------------------------------------------
@pytest.mark.parametrize("opcode", ["UPDATE", "NOTIFY", "IQUERY", "STATUS"])
def test_opcodes_other_than_query_get_notimp(server, opcode):
    request = DNSRecord(DNSHeader(id=0x1234, opcode=getattr(OPCODE, opcode)),
                        q=DNSQuestion("betterbag.test", QTYPE.SOA))
    reply = DNSRecord.parse(udp(server.port, request.pack()))
    assert (reply.header.id, reply.header.qr, reply.header.rcode) == (0x1234, 1, RCODE.NOTIMP)


def test_nsupdate_is_refused_and_changes_nothing(server):
    script = (f"server {LOOPBACK} {server.port}\nzone betterbag.test\n"
              "update add evil.betterbag.test 60 A 10.0.0.1\nsend\n")
    result = subprocess.run([require_tool("nsupdate"), "-t", "3"], input=script, capture_output=True, text=True,
                            timeout=30)
    assert result.returncode != 0 and "NOTIMP" in result.stdout + result.stderr
    assert server.resolver.zone.lookup("evil.betterbag.test") is None


def test_more_than_one_question_is_formerr(server):
    request = DNSRecord(DNSHeader(id=7))
    for i in range(3):
        request.add_question(DNSQuestion(f"q{i}.lab.test", QTYPE.A))
    assert DNSRecord.parse(udp(server.port, request.pack())).header.rcode == RCODE.FORMERR


def test_an_illegal_name_gets_formerr_and_no_traceback(server, caplog):
    name = b"".join(b"\x01a" for _ in range(200)) + b"\x00"  # 400 bytes: beyond the 255 a name may have
    packet = struct.pack("!HHHHHH", 0xABCD, 0x0100, 1, 0, 0, 0) + name + struct.pack("!HH", 1, 1)
    with caplog.at_level(logging.INFO):
        for _ in range(3):
            reply = DNSRecord.parse(udp(server.port, packet))
            assert (reply.header.id, reply.header.rcode) == (0xABCD, RCODE.FORMERR)
    assert not [r for r in caplog.records if r.exc_info or r.levelno >= logging.WARNING]


# -- forwarding -----------------------------------------------------------------------------------------------------
@pytest.mark.parametrize("client, served", [
    ("127.0.0.1", True), ("::1", True), ("192.168.1.20", True), ("10.9.8.7", True), ("fe80::1%eth0", True),
    ("81.2.69.9", True),  # the listen address's own /24
    ("8.8.8.8", False), ("81.2.70.9", False), ("2a00:1450::1", False), ("not-an-address", False),
])
def test_forwarding_serves_only_the_labs_networks(client, served):
    assert serves("81.2.69.2")(client) is served


class Upstream:
    """A fake upstream on loopback: answers every A query with 192.0.2.1, or stays silent."""

    def __init__(self, silent: bool = False):
        self.sock = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
        self.sock.bind((LOOPBACK, 0))
        self.sock.settimeout(0.2)
        self.port = self.sock.getsockname()[1]
        self.silent, self.running = silent, True
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    def serve(self):
        while self.running:
            try:
                data, peer = self.sock.recvfrom(4096)
            except TimeoutError:
                continue
            except OSError:
                return
            if not self.silent:
                request = DNSRecord.parse(data)
                reply = request.reply()
                reply.add_answer(RR(request.q.qname, QTYPE.A, rdata=A("192.0.2.1")))
                self.sock.sendto(reply.pack(), peer)

    def close(self):
        self.running = False
        self.thread.join(timeout=2)
        self.sock.close()


def test_a_client_outside_the_labs_networks_is_refused_not_forwarded():
    upstream = Upstream()
    try:
        wire = Wire(ZoneResolver(make_zone(), upstream=(LOOPBACK, upstream.port)), served=serves(LOOPBACK))
        packet = DNSRecord.question("www.example.com", "A").pack()
        assert DNSRecord.parse(wire.reply(packet, "udp", ("8.8.8.8", 53))).header.rcode == RCODE.REFUSED
        assert [str(rr.rdata) for rr in DNSRecord.parse(wire.reply(packet, "udp", (LOOPBACK, 5353))).rr] == \
            ["192.0.2.1"]
    finally:
        upstream.close()


def test_forwarding_runs_in_a_bounded_pool_and_a_full_pool_answers_servfail(monkeypatch):
    monkeypatch.setattr(dns_server, "FORWARD_BACKLOG", 20)
    upstream = Upstream(silent=True)
    dns = LabDNS(ZoneResolver(make_zone(), upstream=(LOOPBACK, upstream.port)), LOOPBACK, 0)
    dns.start()
    threads = threading.active_count()
    try:
        with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
            sock.settimeout(2)
            for i in range(200):
                sock.sendto(DNSRecord.question(f"q{i}.slow.example", "A").pack(), (LOOPBACK, dns.port))
            first = DNSRecord.parse(sock.recv(4096))  # the queries past the backlog are answered at once
            assert first.header.rcode == RCODE.SERVFAIL
            assert threading.active_count() <= threads + dns_server.FORWARD_WORKERS
        assert query("mdm.lab.test", "A", LOOPBACK, dns.port).header.rcode == RCODE.NOERROR  # the zone unharmed
    finally:
        dns.stop()
        upstream.close()


def test_the_lab_refuses_to_forward_to_itself():
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as probe:
        probe.bind((LOOPBACK, 0))
        port = probe.getsockname()[1]
    with pytest.raises(OSError, match="own DNS"):
        LabDNS(ZoneResolver(make_zone(), upstream=(LOOPBACK, port)), LOOPBACK, port)
