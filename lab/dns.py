"""The lab's DNS server: dnslib over UDP and TCP on one port, authoritative for the lab's zones.

The dnslib traps are handled here: UDP never binds with SO_REUSEADDR (a second lab would silently steal
queries), a resolver error becomes SERVFAIL, garbage gets FORMERR, replies never claim DNSSEC (AD cleared),
and nothing is printed per packet.
"""
from __future__ import annotations

import errno
import logging
import socket
import socketserver
import threading
from dataclasses import dataclass, field, replace

from dnslib import AAAA, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSHeader, DNSRecord, NS
from dnslib.buffer import Buffer
from dnslib.server import DNSHandler, DNSServer

from lab.events import Event, EventLog
from lab.faults import FaultRegistry

log = logging.getLogger("mdmlab.dns")
TTL = 60
TCP_IDLE_TIMEOUT = 5.0
UPSTREAM_TIMEOUT = 3.0


class DNSStartError(OSError):
    pass


_RDATA = {"A": A, "AAAA": AAAA, "TXT": TXT}


@dataclass
class Zone:
    """Records by lower-case name; the suffixes are the zones the lab answers for with authority.

    Records can change at run time (an admin adds a TXT record to verify a domain in ABM): readers get a
    consistent copy under the lock.
    """
    suffixes: list[str]
    records: dict[str, dict[str, list[str]]] = field(default_factory=dict)
    _lock: threading.Lock = field(default_factory=threading.Lock, repr=False)

    def add(self, name: str, rtype: str, value: str) -> bool:
        """Add one record; False when it was already there."""
        name = name.lower().rstrip(".")
        if self.apex(name) is None:
            raise ValueError(f"{name} is outside the lab's zones ({', '.join(self.suffixes)})")
        if rtype not in _RDATA:
            raise ValueError(f"record type {rtype!r} is not one of {', '.join(_RDATA)}")
        with self._lock:
            values = self.records.setdefault(name, {}).setdefault(rtype, [])
            if value in values:
                return False
            values.append(value)
            return True

    def remove(self, name: str, rtype: str, value: str | None = None) -> int:
        name = name.lower().rstrip(".")
        with self._lock:
            values = self.records.get(name, {}).get(rtype, [])
            removed = [v for v in values if value is None or v == value]
            self.records.get(name, {})[rtype] = [v for v in values if v not in removed]
            return len(removed)

    def listing(self) -> list[dict]:
        with self._lock:
            return [{"name": n, "type": t, "value": v} for n, types in sorted(self.records.items())
                    for t, values in sorted(types.items()) for v in values]

    def apex(self, name: str) -> str | None:
        name = name.lower().rstrip(".")
        matches = [s for s in self.suffixes if name == s or name.endswith("." + s)]
        return max(matches, key=len) if matches else None

    def exists(self, name: str) -> bool:
        """The apex and every name with records at or below it exist (RFC 8020: no NXDOMAIN for them)."""
        name = name.lower().rstrip(".")
        if name in self.suffixes:
            return True
        with self._lock:
            return any(n == name or n.endswith("." + name) for n, types in self.records.items()
                       if any(types.values()))

    def lookup(self, name: str) -> dict[str, list[str]] | None:
        with self._lock:
            found = self.records.get(name.lower().rstrip("."))
            return None if found is None else {t: list(v) for t, v in found.items() if v}


WRONG_ADDRESS = {"A": "127.0.0.2", "AAAA": "::2"}  # loopback, where no lab listens: connection refused


@dataclass(frozen=True)
class DNSAnswer:
    """What the lab's DNS says about one name, before it is packed: a DNS fault's hook turns one into another."""
    name: str
    soa: str  # the zone whose SOA goes with a negative answer (NXDOMAIN, NODATA)
    exists: bool  # False: NXDOMAIN
    records: dict[str, list[str]]  # by type; empty for a name without data (NODATA)
    rcode: int = RCODE.NOERROR  # another rcode (SERVFAIL) replaces the whole answer
    dropped: bool = False  # no answer at all

    @property
    def outcome(self) -> str:
        """In a word, what a client gets when the answer is not records."""
        if self.dropped:
            return "no answer (queries time out)"
        if self.rcode != RCODE.NOERROR:
            return RCODE.get(self.rcode)
        return "NOERROR" if self.exists else "NXDOMAIN"


def _parent(name: str) -> str:
    return name.split(".", 1)[1] if "." in name else ""


class _Dropped(Exception):
    """The query is deliberately left unanswered (fault dns-timeout)."""


dns_fault = FaultRegistry("dns")


@dns_fault("dns-nxdomain", description="the lab DNS answers NXDOMAIN for the name, every type; at a zone apex the "
                                       "whole domain is gone (its SOA too), as when a registration lapses",
           symptom="'Unable to connect': the domain or MDM host does not exist (an expired domain, a typo in the "
                   "zone, a name only the internal DNS knows)")
def _nxdomain(answer: DNSAnswer) -> DNSAnswer:
    soa = _parent(answer.name) if answer.name == answer.soa else answer.soa
    return replace(answer, soa=soa, exists=False, records={})


@dns_fault("dns-nodata", description="the name's address records (A, AAAA) are gone: NOERROR with no answer",
           symptom="'Unable to connect' at once: the record was deleted (a DNS provider migration dropped the "
                   "apex A record), the name itself still exists")
def _nodata(answer: DNSAnswer) -> DNSAnswer:
    return replace(answer, records={t: v for t, v in answer.records.items() if t not in ("A", "AAAA")})


@dns_fault("dns-servfail", description="the lab DNS answers SERVFAIL for the name",
           symptom="intermittent 'cannot connect': a broken authoritative server or DNSSEC failure upstream")
def _servfail(answer: DNSAnswer) -> DNSAnswer:
    return replace(answer, rcode=RCODE.SERVFAIL)


@dns_fault("dns-timeout", description="the lab DNS never answers queries for the name",
           symptom="long spinner then failure: a firewall drops DNS or the name servers are down")
def _timeout(answer: DNSAnswer) -> DNSAnswer:
    return replace(answer, dropped=True)


@dns_fault("dns-wrong-address", description="the lab DNS answers 127.0.0.2, where nothing listens",
           symptom="connection refused: the record still points at an old or internal-only server")
def _wrong_address(answer: DNSAnswer) -> DNSAnswer:
    return replace(answer, records={**answer.records, **{t: [WRONG_ADDRESS[t]] for t in ("A", "AAAA")
                                                         if t in answer.records}})


DNS_FAULTS = dns_fault.specs


class ZoneResolver:
    def __init__(self, zone: Zone, events: EventLog | None = None, faults=None,
                 upstream: tuple[str, int] | None = None):
        self.zone = zone
        self.events = events
        self.faults = faults  # lab.faults.FaultBoard
        self.upstream = upstream  # real devices need every other name resolved too

    def resolve(self, request: DNSRecord, handler) -> DNSRecord | None:
        reply = request.reply(ra=0, aa=0)
        reply.header.ad = 0
        protocol = getattr(handler, "protocol", "udp")
        armed = None
        try:
            if self.upstream and self.zone.apex(str(request.q.qname)) is None:
                reply = self._forward(request)
                self._record(request, reply, protocol)
                return reply
            armed = self._fault(request)
            if not self._answer(request, reply, armed):
                self._record(request, None, protocol, armed)
                return None
        except Exception:  # a resolver bug must cost one SERVFAIL, never the server
            log.exception("resolver error")
            reply = request.reply(ra=0, aa=0)
            reply.header.ad = 0
            reply.header.rcode = RCODE.SERVFAIL
        self._record(request, reply, protocol, armed)
        return reply

    # -- the zone as the tools show and change it: what the DNS answers, nothing else -----------------------
    def listing(self) -> list[dict]:
        """Every record the DNS serves. A name an armed fault overrides is shown as the fault makes it answer
        (``overridden``, with ``fault`` naming it unless the board conceals it)."""
        overrides = {}
        for armed in (self.faults.armed_on("dns") if self.faults is not None else []):
            overrides.setdefault(armed.host, armed)
        rows = [r for r in self.zone.listing() if r["name"] not in overrides]
        for name, armed in overrides.items():
            answer = self.answer_for(name, armed)
            mark = {"overridden": True, "fault": self.faults.name(armed)}
            if answer.dropped or answer.rcode != RCODE.NOERROR or not answer.exists:
                rows.append({"name": name, "type": "*", "value": answer.outcome, **mark})
            elif answer.records:
                rows += [{"name": name, "type": t, "value": v, **mark}
                         for t, values in sorted(answer.records.items()) for v in values]
            else:
                rows.append({"name": name, "type": "*", "value": "NOERROR, no data", **mark})
        return sorted(rows, key=lambda r: (r["name"], r["type"]))

    def add(self, name: str, rtype: str, value: str) -> dict:
        """Add a record and say whether the DNS now serves it, and if not, why."""
        name = name.lower().rstrip(".")
        added = self.zone.add(name, rtype, value)
        result = {"name": name, "type": rtype, "value": value, "added": added, "served": True}
        armed = self.faults.peek("dns", name) if self.faults is not None else None
        answer = self.answer_for(name, armed)
        if value not in answer.records.get(rtype, []) or answer.dropped or answer.rcode != RCODE.NOERROR:
            result["served"] = False
            result["note"] = self.faults.say(f"stored, but not served: an override on {name} makes every query for "
                                             f"it answer {answer.outcome}; it is served once the override is "
                                             "cleared", armed)
        elif not added:
            result["note"] = f"{name} {rtype} {value} was already in the zone: nothing changed"
        return result

    def remove(self, name: str, rtype: str, value: str | None = None) -> dict:
        """Remove the records of ``name`` and ``rtype`` (one value, or all): say which."""
        name = name.lower().rstrip(".")
        gone = [r for r in self.zone.listing() if r["name"] == name and r["type"] == rtype
                and (value is None or r["value"] == value)]
        self.zone.remove(name, rtype, value)
        result = {"removed": len(gone), "records": gone}
        if not gone:
            result["note"] = f"{name} has no {rtype} record" + (f" {value}" if value else "") + ": nothing changed"
        return result

    def _forward(self, request: DNSRecord) -> DNSRecord:
        """Ask the upstream server; its silence or garbage becomes SERVFAIL (dnslib's proxy would hang)."""
        host, port = self.upstream
        try:
            reply = DNSRecord.parse(request.send(host, port, timeout=UPSTREAM_TIMEOUT, ipv6=":" in host))
            if reply.header.tc:
                reply = DNSRecord.parse(request.send(host, port, tcp=True, timeout=UPSTREAM_TIMEOUT,
                                                     ipv6=":" in host))
        except (OSError, DNSError, ValueError):
            reply = request.reply(ra=1, aa=0)
            reply.header.rcode = RCODE.SERVFAIL
        reply.header.ad = 0
        return reply

    def _fault(self, request: DNSRecord):
        if self.faults is None:
            return None
        qname = str(request.q.qname).rstrip(".")
        if self.zone.apex(qname) is None:
            return None
        return self.faults.take("dns", qname)

    def answer_for(self, name: str, armed=None) -> DNSAnswer:
        """The zone's answer for ``name`` (inside the zone), as the armed fault (if any) changes it."""
        name = name.lower().rstrip(".")
        records = self.zone.lookup(name)
        answer = DNSAnswer(name, self.zone.apex(name), records is not None or self.zone.exists(name), records or {})
        return armed.apply(answer) if armed is not None else answer

    def _answer(self, request: DNSRecord, reply: DNSRecord, armed=None) -> bool:
        """Fill ``reply``; False when the query gets no answer at all."""
        q = request.q
        qname = str(q.qname).rstrip(".")
        qtype = QTYPE.get(q.qtype, str(q.qtype))
        apex = self.zone.apex(qname)
        if apex is None:
            reply.header.rcode = RCODE.REFUSED
            reply.header.ra = 0
            return True
        reply.header.aa = 1
        reply.header.ra = 0
        answer = self.answer_for(qname, armed)
        if answer.dropped:
            return False
        if answer.rcode != RCODE.NOERROR:
            reply.header.aa = 0
            reply.header.rcode = answer.rcode
            return True
        if not answer.exists:
            reply.header.rcode = RCODE.NXDOMAIN
            reply.header.aa = int(answer.soa == apex)  # a vanished domain: the parent zone's word, not ours
            reply.add_auth(self._soa(answer.soa))
            return True
        for rtype, values in answer.records.items():
            if qtype in (rtype, "ANY"):
                for value in values:
                    rdata = _RDATA[rtype](value)
                    reply.add_answer(RR(q.qname, getattr(QTYPE, rtype), rdata=rdata, ttl=TTL))
        if qtype in ("SOA", "NS") and qname == apex == answer.soa:
            reply.add_answer(self._soa(apex) if qtype == "SOA" else
                             RR(apex, QTYPE.NS, rdata=NS(f"ns.{apex}"), ttl=TTL))
        if not reply.rr:
            reply.add_auth(self._soa(answer.soa))  # NODATA: the name exists, not with this type
        return True

    @staticmethod
    def _soa(apex: str) -> RR:
        return RR(apex, QTYPE.SOA, ttl=TTL,
                  rdata=SOA(f"ns.{apex}", f"hostmaster.{apex}", (1, 3600, 600, 86400, TTL)))

    def _say(self, message: str, armed) -> str:
        return self.faults.say(message, armed) if self.faults is not None else message

    def record_garbage(self, size: int, protocol: str) -> None:
        if self.events is not None:
            self.events.record(Event(component="dns", kind="dns", status=RCODE.FORMERR,
                                     summary=f"unparseable {size}-byte query → FORMERR",
                                     detail={"protocol": protocol, "rcode": "FORMERR", "bytes": size}))

    def _record(self, request: DNSRecord, reply: DNSRecord | None, protocol: str, armed=None) -> None:
        if self.events is None:
            return
        qname = str(request.q.qname).rstrip(".")
        qtype = QTYPE.get(request.q.qtype, str(request.q.qtype))
        if reply is None:
            self.events.record(Event(component="dns", kind="dns", host=qname, method=qtype, status=None,
                                     summary=f"{qtype} {qname} → " + self._say("no answer", armed),
                                     detail={"protocol": protocol, "rcode": None, "answers": []}))
            return
        rcode = RCODE.get(reply.header.rcode)
        answers = [str(rr.rdata) for rr in reply.rr]
        self.events.record(Event(
            component="dns", kind="dns", host=qname, method=qtype, status=reply.header.rcode,
            summary=f"{qtype} {qname} → {rcode}{': ' + ', '.join(answers) if answers else ''}",
            detail={"protocol": protocol, "rcode": rcode, "answers": answers}))


class _Handler(DNSHandler):
    """Answers FORMERR to unparseable queries and times out idle TCP clients."""

    def setup(self):
        if self.server.socket_type == socket.SOCK_STREAM:
            self.request.settimeout(TCP_IDLE_TIMEOUT)

    def handle(self):
        try:
            super().handle()
        except (_Dropped, OSError, ValueError, IndexError):  # deliberate silence, short TCP reads, resets
            pass

    def get_reply(self, data: bytes) -> bytes:
        try:
            request = DNSRecord.parse(data)
        except DNSError:
            if len(data) < 12:
                raise
            header = DNSHeader.parse(Buffer(data[:12]))
            if header.qr:
                raise  # a response sent to us: answering it could start a loop between two servers
            self.server.resolver.record_garbage(len(data), self.protocol)
            return DNSRecord(DNSHeader(id=header.id, qr=1, rcode=RCODE.FORMERR)).pack()
        reply = self.server.resolver.resolve(request, self)
        if reply is None:
            raise _Dropped()
        return reply.pack()


class _QuietLogger:
    def __getattr__(self, name):
        if name == "log_error":
            return lambda handler, e: log.debug("dns error from %s: %s", handler.client_address, e)
        return lambda *args, **kwargs: None


class _UDPServer(socketserver.ThreadingMixIn, socketserver.UDPServer):
    allow_reuse_address = False  # dnslib's default True lets two labs share a UDP port silently
    daemon_threads = True

    def process_request(self, request, client_address):
        """Answers from the lab's zone are in memory: answer them in the serving thread (a thread per query costs
        more than the answer). Only forwarding upstream can block, so with an upstream each query gets a thread."""
        if self.resolver.upstream is not None:
            return super().process_request(request, client_address)
        try:
            self.finish_request(request, client_address)
        except Exception:
            self.handle_error(request, client_address)
        finally:
            self.shutdown_request(request)


class _TCPServer(socketserver.ThreadingMixIn, socketserver.TCPServer):
    allow_reuse_address = True
    daemon_threads = True


def _family(address: str) -> int:
    return socket.AF_INET6 if ":" in address else socket.AF_INET


class LabDNS:
    """UDP and TCP servers on the same port, sharing one resolver."""

    def __init__(self, resolver: ZoneResolver, address: str = "127.0.0.1", port: int = 0):
        self.resolver = resolver
        self.address = address
        attempts = 20 if port == 0 else 1
        last_error: OSError | None = None
        for _ in range(attempts):
            try:
                self.udp = self._server(_UDPServer, port)
                try:
                    self.tcp = self._server(_TCPServer, self.udp.server.server_address[1])
                except OSError:
                    self.udp.server.server_close()
                    raise
                break
            except OSError as exc:
                last_error = exc
        else:
            raise DNSStartError(last_error.errno or errno.EADDRINUSE,
                                f"cannot bind DNS on {address}:{port} (UDP and TCP): {last_error.strerror}")
        self.port = self.udp.server.server_address[1]

    def _server(self, cls, port: int) -> DNSServer:
        server_cls = type(cls.__name__, (cls,), {"address_family": _family(self.address)})
        return DNSServer(self.resolver, address=self.address, port=port, logger=_QuietLogger(),
                         handler=_Handler, server=server_cls)

    def start(self) -> None:
        for server in (self.udp, self.tcp):
            server.thread = threading.Thread(target=server.server.serve_forever, kwargs={"poll_interval": 0.1},
                                             name=f"dns-{server.server.socket_type}", daemon=True)
            server.thread.start()

    def stop(self) -> None:
        for server in (self.udp, self.tcp):
            server.server.shutdown()
            server.server.server_close()


def query(name: str, rtype: str, server: str, port: int, *, tcp: bool = False, timeout: float = 2.0) -> DNSRecord:
    """One query to the lab DNS; raises OSError (incl. socket.timeout) when the server does not answer."""
    packet = DNSRecord.question(name, rtype).send(server, port, tcp=tcp, timeout=timeout,
                                                  ipv6=":" in server)
    return DNSRecord.parse(packet)
