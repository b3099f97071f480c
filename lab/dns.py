"""The lab's DNS: the zone, the resolver that answers from it (authoritative for the lab's zones), and the DNS
faults. The wire (UDP and TCP sockets, truncation, who may forward) is ``lab.dns_server``.

A resolver error becomes SERVFAIL, replies never claim DNSSEC (AD cleared), and nothing is printed per packet.
"""
from __future__ import annotations

import logging
import threading
from dataclasses import dataclass, field, replace
from typing import Any

from dnslib import AAAA, NS, QTYPE, RCODE, RR, SOA, TXT, A, DNSError, DNSRecord

from lab.dns_server import TCP_IDLE_TIMEOUT, DNSStartError, LabDNS, query
from lab.events import Event, EventLog
from lab.faults import FaultRegistry

__all__ = ["DNS_FAULTS", "TCP_IDLE_TIMEOUT", "DNSAnswer", "DNSStartError", "LabDNS", "ZoneResolver", "Zone", "query"]

log = logging.getLogger("mdmlab.dns")
TTL = 60
UPSTREAM_TIMEOUT = 3.0


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
        self.changes = None  # lab.changes.RunChanges: told of each record added or removed, for a resumed lab

    # -- the zone as the tools show and change it: what the DNS answers, nothing else -----------------------
    def listing(self) -> list[dict]:
        """Every record the DNS serves. A name an armed fault overrides is shown as the fault makes it answer
        (``overridden``, with ``fault`` naming it unless the board conceals it)."""
        overrides: dict[str, Any] = {}  # name → lab.faults.Armed
        for armed in (self.faults.armed_on("dns") if self.faults is not None else []):
            overrides.setdefault(armed.host, armed)
        rows = [r for r in self.zone.listing() if r["name"] not in overrides]
        for name, armed in overrides.items():
            answer = self.answer_for(name, armed)
            mark = {"overridden": True, "fault": self.faults.name(armed),
                    "remaining": armed.remaining}  # answers left; None: until cleared
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
        if added and self.changes is not None:
            self.changes.dns_changed("add", name, rtype, value)
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
        if gone and self.changes is not None:
            self.changes.dns_changed("remove", name, rtype, value)
        result = {"removed": len(gone), "records": gone}
        if not gone:
            result["note"] = f"{name} has no {rtype} record" + (f" {value}" if value else "") + ": nothing changed"
        return result

    def forwards(self, request: DNSRecord) -> bool:
        """Whether ``request`` goes upstream: a name outside the lab's zones, with an upstream set."""
        return self.upstream is not None and self.zone.apex(str(request.q.qname)) is None

    def resolve(self, request: DNSRecord, protocol="udp") -> DNSRecord | None:
        """The reply to one query (None: deliberately no answer); names outside the zone are forwarded upstream
        when there is one (the server does that in its pool, through ``forward``)."""
        protocol = protocol if isinstance(protocol, str) else getattr(protocol, "protocol", "udp")
        if self.forwards(request):
            return self.forward(request, protocol)
        reply = request.reply(ra=0, aa=0)
        reply.header.ad = 0
        armed = None
        try:
            armed = self._fault(request)
            if not self._answer(request, reply, armed):
                self._record(request, None, protocol, armed)
                return None
        except Exception as exc:  # a resolver bug must cost one SERVFAIL, never the server (nor a log flood)
            log.debug("resolver error for %s: %r", request.q.qname, exc)
            reply = self._rcode(request, RCODE.SERVFAIL)
        self._record(request, reply, protocol, armed)
        return reply

    def forward(self, request: DNSRecord, protocol: str = "udp") -> DNSRecord:
        """Ask the upstream server (blocking, bounded by UPSTREAM_TIMEOUT); silence or garbage becomes SERVFAIL.
        A truncated upstream answer is asked again over TCP only for a TCP client (a UDP client gets TC)."""
        assert self.upstream is not None  # only asked when there is one
        host, port = self.upstream
        try:
            reply = DNSRecord.parse(request.send(host, port, timeout=UPSTREAM_TIMEOUT, ipv6=":" in host))
            if reply.header.tc and protocol == "tcp":
                reply = DNSRecord.parse(request.send(host, port, tcp=True, timeout=UPSTREAM_TIMEOUT,
                                                     ipv6=":" in host))
        except (OSError, DNSError, ValueError):
            reply = self._rcode(request, RCODE.SERVFAIL, ra=1)
        reply.header.ad = 0
        self._record(request, reply, protocol)
        return reply

    def refuse(self, request: DNSRecord, protocol: str = "udp") -> DNSRecord:
        """REFUSED: a client outside the networks the lab serves asked for a name it would forward."""
        reply = self._rcode(request, RCODE.REFUSED)
        self._record(request, reply, protocol)
        return reply

    def servfail(self, request: DNSRecord, protocol: str = "udp") -> DNSRecord:
        """SERVFAIL at once: the forwarding pool is full."""
        reply = self._rcode(request, RCODE.SERVFAIL, ra=1)
        self._record(request, reply, protocol)
        return reply

    @staticmethod
    def _rcode(request: DNSRecord, rcode: int, ra: int = 0) -> DNSRecord:
        reply = request.reply(ra=ra, aa=0)
        reply.header.ad = 0
        reply.header.rcode = rcode
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
        apex = self.zone.apex(name)
        assert apex is not None, f"{name} is outside the lab's zones"  # asked only for the zones' own names
        answer = DNSAnswer(name, apex, records is not None or self.zone.exists(name), records or {})
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
        self.record_refusal(size, protocol, "unparseable", RCODE.FORMERR)

    def record_refusal(self, size: int, protocol: str, what: str, rcode: int) -> None:
        """A packet answered with an error before any question was resolved (garbage, an opcode not served)."""
        if self.events is not None:
            name = RCODE.get(rcode)
            self.events.record(Event(component="dns", kind="dns", status=rcode,
                                     summary=f"{what} {size}-byte query → {name}",
                                     detail={"protocol": protocol, "rcode": name, "bytes": size}))

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
