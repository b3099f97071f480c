"""lab.dns: the authoritative resolver, and the UDP+TCP server on a loopback ephemeral port."""
from __future__ import annotations

import errno
import socket
import struct
from collections.abc import Iterator
from contextlib import contextmanager

import pytest
from dnslib import QTYPE, RCODE, DNSRecord

from lab.dns import DNS_FAULTS, DNSStartError, LabDNS, Zone, ZoneResolver, query
from lab.events import EventLog
from lab.faults import FaultBoard, catalogue

LOOPBACK = "127.0.0.1"


def make_zone() -> Zone:
    zone = Zone(["lab.test", "betterbag.test", "deep.lab.test"])
    zone.add("mdm.lab.test", "A", "127.0.0.1")
    zone.add("betterbag.test", "A", "127.0.0.1")
    zone.add("betterbag.test", "TXT", "apple-domain-verification=abc123")
    zone.add("v6.lab.test", "AAAA", "::1")
    zone.add("www.deep.lab.test", "A", "127.0.0.2")
    return zone


def ask(resolver: ZoneResolver, name: str, rtype: str = "A", *, ad: bool = False) -> DNSRecord:
    request = DNSRecord.question(name, rtype)
    if ad:
        request.header.ad = 1
    reply = resolver.resolve(request, None)
    assert reply.header.id == request.header.id and reply.header.qr == 1
    return reply


def soa_owner(reply: DNSRecord) -> str:
    soas = [rr for rr in reply.auth if rr.rtype == QTYPE.SOA]
    assert len(soas) == 1, reply.auth
    return str(soas[0].rname).rstrip(".")


@pytest.fixture
def resolver() -> ZoneResolver:
    return ZoneResolver(make_zone())


# -- the resolver ------------------------------------------------------------------------------------------------

@pytest.mark.parametrize("name", ["mdm.lab.test", "MDM.Lab.Test", "mdm.lab.test."])
def test_a_record(resolver, name):
    reply = ask(resolver, name)
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.header.aa == 1 and reply.header.ra == 0
    assert [(rr.rtype, str(rr.rdata)) for rr in reply.rr] == [(QTYPE.A, "127.0.0.1")]


def test_aaaa_record(resolver):
    reply = ask(resolver, "v6.lab.test", "AAAA")
    assert [(rr.rtype, str(rr.rdata)) for rr in reply.rr] == [(QTYPE.AAAA, "::1")]


def test_txt_record(resolver):
    reply = ask(resolver, "betterbag.test", "TXT")
    assert reply.header.rcode == RCODE.NOERROR
    assert [rr.rdata.data for rr in reply.rr] == [[b"apple-domain-verification=abc123"]]


def test_any_returns_every_type(resolver):
    reply = ask(resolver, "betterbag.test", "ANY")
    assert sorted(QTYPE[rr.rtype] for rr in reply.rr) == ["A", "TXT"]


@pytest.mark.parametrize("name, apex", [
    ("nope.lab.test", "lab.test"), ("a.b.betterbag.test", "betterbag.test"),
    ("nope.deep.lab.test", "deep.lab.test"),  # the longest suffix is the zone
])
def test_nxdomain_carries_the_zone_soa(resolver, name, apex):
    reply = ask(resolver, name)
    assert reply.header.rcode == RCODE.NXDOMAIN
    assert reply.header.aa == 1
    assert reply.rr == []
    assert soa_owner(reply) == apex


@pytest.mark.parametrize("name, rtype, apex", [
    ("mdm.lab.test", "AAAA", "lab.test"),
    ("mdm.lab.test", "TXT", "lab.test"),
    ("betterbag.test", "MX", "betterbag.test"),
])
def test_nodata_is_noerror_with_soa(resolver, name, rtype, apex):
    reply = ask(resolver, name, rtype)
    assert reply.header.rcode == RCODE.NOERROR
    assert reply.header.aa == 1
    assert reply.rr == []
    assert soa_owner(reply) == apex


@pytest.mark.parametrize("name", ["www.apple.com", "lab.test.evil.example", "evillab.test", "test", "."])
def test_out_of_zone_is_refused(resolver, name):
    reply = ask(resolver, name)
    assert reply.header.rcode == RCODE.REFUSED
    assert reply.header.ra == 0
    assert reply.rr == [] and reply.auth == []


def test_refused_does_not_claim_authority(resolver):
    """AA says "I am the authority for this name": never true for www.apple.com."""
    assert ask(resolver, "www.apple.com").header.aa == 0


@pytest.mark.parametrize("name, rtype", [("mdm.lab.test", "A"), ("nope.lab.test", "A"), ("www.apple.com", "A"),
                                          ("mdm.lab.test", "AAAA")])
def test_ad_flag_is_cleared_even_when_the_query_sets_it(resolver, name, rtype):
    assert ask(resolver, name, rtype, ad=True).header.ad == 0


def test_zone_apex_soa_and_ns_are_answered(resolver):
    soa = ask(resolver, "betterbag.test", "SOA")
    assert soa.header.rcode == RCODE.NOERROR
    assert [QTYPE[rr.rtype] for rr in soa.rr] == ["SOA"]
    ns = ask(resolver, "betterbag.test", "NS")
    assert [str(rr.rdata) for rr in ns.rr] == ["ns.betterbag.test."]


@pytest.mark.parametrize("rtype", ["SOA", "NS", "A"])
def test_zone_apex_without_records_of_its_own_exists(resolver, rtype):
    """lab.test holds no record itself (only mdm.lab.test, ...): it is still the zone apex, never NXDOMAIN.

    An NXDOMAIN here tells caching resolvers that nothing below lab.test exists (RFC 8020).
    """
    reply = ask(resolver, "lab.test", rtype)
    assert reply.header.rcode == RCODE.NOERROR
    if rtype == "SOA":
        assert [QTYPE[rr.rtype] for rr in reply.rr] == ["SOA"]
    elif rtype == "NS":
        assert [str(rr.rdata) for rr in reply.rr] == ["ns.lab.test."]
    else:
        assert reply.rr == [] and soa_owner(reply) == "lab.test"


def test_a_resolver_exception_becomes_servfail():
    class BrokenZone(Zone):
        def lookup(self, name):
            raise RuntimeError("zone bug")

    reply = ask(ZoneResolver(BrokenZone(["lab.test"])), "mdm.lab.test", ad=True)
    assert reply.header.rcode == RCODE.SERVFAIL
    assert reply.header.ad == 0
    assert reply.rr == []


def test_answers_are_recorded_as_events(tmp_path):
    events = EventLog(tmp_path / "events.db")
    try:
        resolver = ZoneResolver(make_zone(), events)
        ask(resolver, "mdm.lab.test")
        ask(resolver, "www.apple.com")
        recorded = events.query(component="dns")
        assert [(e["host"], e["method"], e["detail"]["rcode"]) for e in recorded] == [
            ("mdm.lab.test", "A", "NOERROR"), ("www.apple.com", "A", "REFUSED")]
        assert recorded[0]["detail"]["answers"] == ["127.0.0.1"]
        assert recorded[0]["detail"]["protocol"] == "udp"
    finally:
        events.close()


# -- the server --------------------------------------------------------------------------------------------------

@contextmanager
def serving(zone: Zone) -> Iterator[LabDNS]:
    """The lab's DNS server for ``zone`` on a loopback ephemeral port, stopped afterwards (test_dns_server.py too)."""
    dns = LabDNS(ZoneResolver(zone), LOOPBACK, 0)
    dns.start()
    try:
        yield dns
    finally:
        dns.stop()


@pytest.fixture
def server():
    with serving(make_zone()) as dns:
        yield dns


@pytest.mark.parametrize("tcp", [False, True], ids=["udp", "tcp"])
def test_server_answers_real_queries(server, tcp):
    assert server.port != 0
    reply = query("mdm.lab.test", "A", LOOPBACK, server.port, tcp=tcp)
    assert reply.header.rcode == RCODE.NOERROR
    assert [str(rr.rdata) for rr in reply.rr] == ["127.0.0.1"]
    txt = query("betterbag.test", "TXT", LOOPBACK, server.port, tcp=tcp)
    assert [rr.rdata.data for rr in txt.rr] == [[b"apple-domain-verification=abc123"]]
    assert query("nope.lab.test", "A", LOOPBACK, server.port, tcp=tcp).header.rcode == RCODE.NXDOMAIN
    assert query("www.apple.com", "A", LOOPBACK, server.port, tcp=tcp).header.rcode == RCODE.REFUSED


def test_server_clears_ad_on_the_wire(server):
    request = DNSRecord.question("mdm.lab.test", "A")
    request.header.ad = 1
    reply = DNSRecord.parse(request.send(LOOPBACK, server.port, timeout=2))
    assert reply.header.ad == 0 and reply.header.rcode == RCODE.NOERROR


def test_a_second_server_on_the_same_port_fails_to_start(server):
    with pytest.raises(DNSStartError) as failure:
        LabDNS(ZoneResolver(make_zone()), LOOPBACK, server.port)
    assert isinstance(failure.value, OSError)
    assert failure.value.errno == errno.EADDRINUSE
    assert query("mdm.lab.test", "A", LOOPBACK, server.port).header.rcode == RCODE.NOERROR  # first one unharmed


def test_no_silent_udp_bind_beside_a_reuseaddr_socket():
    """dnslib binds UDP with SO_REUSEADDR; two such sockets share a port and split the queries between them."""
    squatter = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
    try:
        squatter.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        squatter.bind((LOOPBACK, 0))
        with pytest.raises(DNSStartError):
            LabDNS(ZoneResolver(make_zone()), LOOPBACK, squatter.getsockname()[1])
    finally:
        squatter.close()


def udp_exchange(port: int, payload: bytes, timeout: float = 1.0) -> bytes | None:
    with socket.socket(socket.AF_INET, socket.SOCK_DGRAM) as sock:
        sock.settimeout(timeout)
        sock.sendto(payload, (LOOPBACK, port))
        try:
            return sock.recv(4096)
        except TimeoutError:
            return None


GARBAGE = [
    # id 0xBEEF, one question announced, then a label running past the end
    b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\x3f" + b"x" * 5,
    # id 0xBEEF, header only but claiming answers that are not there
    b"\xbe\xef\x01\x00\x00\x00\x00\x05\x00\x00\x00\x00",
    # id 0xBEEF, a compression pointer to itself
    b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00\x00\xc0\x0c\x00\x01\x00\x01",
]


@pytest.mark.parametrize("payload", GARBAGE, ids=["overlong-label", "missing-answers", "pointer-loop"])
def test_udp_garbage_gets_formerr_with_the_same_id(server, payload):
    raw = udp_exchange(server.port, payload)
    assert raw is not None, "no reply to a parseable header"
    reply = DNSRecord.parse(raw)
    assert reply.header.id == 0xBEEF
    assert reply.header.qr == 1
    assert reply.header.rcode == RCODE.FORMERR
    assert query("mdm.lab.test", "A", LOOPBACK, server.port).header.rcode == RCODE.NOERROR


def test_tcp_garbage_gets_formerr_with_the_same_id(server):
    payload = GARBAGE[0]
    with socket.create_connection((LOOPBACK, server.port), timeout=2) as sock:
        sock.sendall(struct.pack("!H", len(payload)) + payload)
        length = struct.unpack("!H", sock.recv(2))[0]
        raw = b""
        while len(raw) < length:
            chunk = sock.recv(length - len(raw))
            assert chunk
            raw += chunk
    reply = DNSRecord.parse(raw)
    assert (reply.header.id, reply.header.rcode) == (0xBEEF, RCODE.FORMERR)
    assert query("mdm.lab.test", "A", LOOPBACK, server.port, tcp=True).header.rcode == RCODE.NOERROR


@pytest.mark.parametrize("payload", [b"\x00", b"hello", b"\xbe\xef\x01\x00\x00\x01\x00\x00\x00\x00\x00"])
def test_short_udp_garbage_gets_no_reply_and_the_server_keeps_answering(server, payload):
    assert udp_exchange(server.port, payload, timeout=0.5) is None
    assert query("mdm.lab.test", "A", LOOPBACK, server.port).header.rcode == RCODE.NOERROR


def test_a_burst_of_garbage_does_not_stop_the_server(server):
    for i in range(50):
        udp_exchange(server.port, bytes([i]) * (i % 30), timeout=0.01)
    for tcp in (False, True):
        assert query("mdm.lab.test", "A", LOOPBACK, server.port, tcp=tcp).header.rcode == RCODE.NOERROR


def test_stop_releases_the_port():
    dns = LabDNS(ZoneResolver(make_zone()), LOOPBACK, 0)
    dns.start()
    port = dns.port
    dns.stop()
    again = LabDNS(ZoneResolver(make_zone()), LOOPBACK, port)
    try:
        again.start()
        assert query("mdm.lab.test", "A", LOOPBACK, port).header.rcode == RCODE.NOERROR
    finally:
        again.stop()


# -- DNS faults as the field sees them, and the zone as the tools show it ------------------------------------------
def faulted(*armed: tuple[str, str], concealed: bool = False) -> ZoneResolver:
    zone = make_zone()
    board = FaultBoard(catalogue(DNS_FAULTS), {"dns": {"*"}}, "betterbag.test", concealed=concealed)
    for name, host in armed:
        board.set(name, host)
    return ZoneResolver(zone, faults=board)


@pytest.mark.parametrize("rtype", ["A", "SOA", "TXT", "NS"])
def test_nxdomain_at_an_apex_means_the_whole_domain_is_gone_soa_included(rtype):
    reply = ask(faulted(("dns-nxdomain", "betterbag.test")), "betterbag.test", rtype)
    assert reply.header.rcode == RCODE.NXDOMAIN and reply.rr == []
    assert soa_owner(reply) == "test" and reply.header.aa == 0  # the parent's word, as for a lapsed domain


def test_nxdomain_below_an_apex_keeps_the_zone_serving_its_soa():
    resolver = faulted(("dns-nxdomain", "mdm.lab.test"))
    reply = ask(resolver, "mdm.lab.test")
    assert reply.header.rcode == RCODE.NXDOMAIN and soa_owner(reply) == "lab.test"
    assert ask(resolver, "lab.test", "SOA").header.rcode == RCODE.NOERROR


def test_a_deleted_address_record_is_noerror_with_no_data():
    resolver = faulted(("dns-nodata", "betterbag.test"))
    reply = ask(resolver, "betterbag.test", "A")
    assert reply.header.rcode == RCODE.NOERROR and reply.rr == [] and soa_owner(reply) == "betterbag.test"
    assert [str(rr.rdata) for rr in ask(resolver, "betterbag.test", "TXT").rr] == ['"apple-domain-verification=abc123"']


@pytest.mark.parametrize("fault, shown", [
    ("dns-nxdomain", [("betterbag.test", "*", "NXDOMAIN")]),
    ("dns-servfail", [("betterbag.test", "*", "SERVFAIL")]),
    ("dns-timeout", [("betterbag.test", "*", "no answer (queries time out)")]),
    ("dns-wrong-address", [("betterbag.test", "A", "127.0.0.2"),
                           ("betterbag.test", "TXT", "apple-domain-verification=abc123")]),
    ("dns-nodata", [("betterbag.test", "TXT", "apple-domain-verification=abc123")]),
])
@pytest.mark.parametrize("concealed", [False, True])
def test_the_listing_shows_what_the_dns_answers_and_names_the_fault_only_outside_exercises(fault, shown, concealed):
    resolver = faulted((fault, "betterbag.test"), concealed=concealed)
    rows = [r for r in resolver.listing() if r["name"] == "betterbag.test"]
    assert [(r["name"], r["type"], r["value"]) for r in rows] == shown
    assert all(r["overridden"] and r["fault"] == (None if concealed else fault) for r in rows)
    assert {"name": "mdm.lab.test", "type": "A", "value": "127.0.0.1"} in resolver.listing()


def test_adding_a_record_says_whether_it_is_served():
    resolver = faulted(("dns-nxdomain", "mdm.lab.test"))
    fresh = resolver.add("new.lab.test", "A", "127.0.0.1")
    assert (fresh["added"], fresh["served"], "note" in fresh) == (True, True, False)
    again = resolver.add("new.lab.test", "A", "127.0.0.1")
    assert (again["added"], again["served"]) == (False, True) and "already" in again["note"]
    hidden = resolver.add("MDM.lab.test.", "A", "127.0.0.9")
    assert (hidden["added"], hidden["served"]) == (True, False)
    assert "NXDOMAIN" in hidden["note"] and "dns-nxdomain" in hidden["note"]
    assert "dns-nxdomain" not in faulted(("dns-nxdomain", "mdm.lab.test"), concealed=True).add(
        "mdm.lab.test", "A", "127.0.0.9")["note"]


def test_removing_says_which_records_went():
    resolver = ZoneResolver(make_zone())
    assert resolver.remove("betterbag.test", "TXT") == {"removed": 1, "records": [
        {"name": "betterbag.test", "type": "TXT", "value": "apple-domain-verification=abc123"}]}
    assert "nothing changed" in resolver.remove("betterbag.test", "TXT")["note"]
