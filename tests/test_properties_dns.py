"""Property-based tests (hypothesis) of the lab DNS with outside input: any packet gets a well-formed answer
(FORMERR for garbage) or, for responses and runts, silence; any question gets NOERROR, NXDOMAIN or REFUSED with
the right authority; and the live server keeps answering over UDP and TCP."""
from __future__ import annotations

import socket
import struct
import types

from dnslib import QTYPE, RCODE, DNSError, DNSHeader, DNSQuestion, DNSRecord
from dnslib.buffer import Buffer
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from lab.dns import Zone, ZoneResolver, query
from lab.dns_server import Wire

SETTINGS = settings(max_examples=200, deadline=None, derandomize=True, database=None,
                    suppress_health_check=[HealthCheck.too_slow, HealthCheck.function_scoped_fixture])
ZONE = Zone(["lab.test", "betterbag.test"])
for name, rtype, value in (("mdm.lab.test", "A", "127.0.0.1"), ("betterbag.test", "A", "127.0.0.1"),
                           ("betterbag.test", "TXT", "v=verified"), ("mdm.lab.test", "AAAA", "::1")):
    ZONE.add(name, rtype, value)


class _Dropped(Exception):
    """The server stays silent."""


def handler(protocol: str = "udp"):
    """The lab's DNS wire, without a socket: get_reply is where every packet is parsed (silence raises)."""
    wire = Wire(ZoneResolver(ZONE))

    def get_reply(packet: bytes) -> bytes:
        reply = wire.reply(packet, protocol)
        if reply is None:
            raise _Dropped()
        return reply
    return types.SimpleNamespace(get_reply=get_reply)


def check_reply(packet: bytes, reply: bytes) -> DNSRecord:
    parsed = DNSRecord.parse(reply)
    assert parsed.header.qr == 1 and parsed.header.ad == 0
    assert parsed.header.id == struct.unpack("!H", packet[:2])[0]
    return parsed


@st.composite
def mutated_queries(draw):
    """A real query with some bytes changed, cut or appended: nearly valid packets hit the parser hardest."""
    name = draw(st.sampled_from(["mdm.lab.test", "betterbag.test", "x.lab.test", "example.com", "."]))
    record = DNSRecord(DNSHeader(id=draw(st.integers(0, 65535)), rd=1))
    record.add_question(DNSQuestion(name, getattr(QTYPE, draw(st.sampled_from(["A", "AAAA", "TXT", "ANY", "SOA"])))))
    packet = bytearray(record.pack())
    for _ in range(draw(st.integers(0, 4))):
        packet[draw(st.integers(0, len(packet) - 1))] = draw(st.integers(0, 255))
    cut = draw(st.integers(0, len(packet)))
    return bytes(packet[:cut] if draw(st.booleans()) else packet) + draw(st.binary(max_size=8))


@SETTINGS
@given(st.binary(max_size=120) | mutated_queries())
def test_any_packet_gets_a_wellformed_answer_or_silence(packet):
    try:
        reply = handler().get_reply(packet)
    except (DNSError, _Dropped, ValueError, IndexError, struct.error):
        # the server stays silent: a runt (under 12 bytes), a response sent to us, or a deliberate drop
        assert len(packet) < 12 or DNSHeader.parse(Buffer(packet[:12])).qr == 1
        return
    parsed = check_reply(packet, reply)
    assert RCODE.get(parsed.header.rcode) in ("NOERROR", "NXDOMAIN", "REFUSED", "FORMERR", "SERVFAIL", "NOTIMP")


labels = st.lists(st.binary(min_size=1, max_size=20) | st.sampled_from([b"mdm", b"lab", b"test", b"betterbag"]),
                  min_size=0, max_size=5)


@SETTINGS
@given(labels, st.sampled_from(["", ".lab.test", ".betterbag.test"]), st.integers(0, 65535))
def test_any_question_gets_noerror_nxdomain_or_refused(parts, suffix, qtype):
    request = DNSRecord(DNSHeader(id=4242, rd=1))
    name = ".".join(p.decode("latin-1").replace(".", "-") for p in parts) + suffix
    try:
        request.add_question(DNSQuestion(name.lstrip(".") or ".", qtype))
        packet = request.pack()
    except Exception:  # dnslib refuses to build it (label too long, ...): nothing to send
        return
    reply = check_reply(packet, handler().get_reply(packet))
    rcode = RCODE.get(reply.header.rcode)
    in_zone = ZONE.apex(str(reply.q.qname)) is not None
    assert rcode in (("NOERROR", "NXDOMAIN") if in_zone else ("REFUSED", "FORMERR"))
    assert bool(reply.header.aa) == (in_zone and rcode in ("NOERROR", "NXDOMAIN"))


def test_the_live_server_answers_formerr_to_garbage_and_keeps_serving(lab):
    port = lab.dns.port
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as udp:
        udp.settimeout(5)
        header = b"\x01\x00\x00\x01" + b"\x00" * 6  # a query with one question...
        for garbage in (b"\x12\x34" + header + b"\x3fabc", b"\xab\xcd" + header + b"\x05lab"):  # ...cut short
            udp.sendto(garbage, ("127.0.0.1", port))
            reply = DNSRecord.parse(udp.recvfrom(4096)[0])
            assert RCODE.get(reply.header.rcode) == "FORMERR" and reply.header.id == struct.unpack("!H", garbage[:2])[0]
        udp.sendto(b"\x00" * 5, ("127.0.0.1", port))  # a runt: no answer, and no harm
    with socket.create_connection(("127.0.0.1", port), timeout=5) as tcp:
        garbage = b"\x56\x78\x01\x00\x00\x01" + b"\x00" * 6 + b"\x3f" * 10
        tcp.sendall(struct.pack("!H", len(garbage)) + garbage)
        length = struct.unpack("!H", tcp.recv(2))[0]
        assert RCODE.get(DNSRecord.parse(tcp.recv(length)).header.rcode) == "FORMERR"
    for tcp in (False, True):
        answer = query("mdm.lab.test", "A", "127.0.0.1", port, tcp=tcp, timeout=5)
        assert [str(rr.rdata) for rr in answer.rr if QTYPE.get(rr.rtype) == "A"] == ["127.0.0.1"]
