"""Faults: named, documented, deterministic breakages, each with its clear.

This module holds the machinery (``FaultSpec``, ``FaultBoard``) and the faults of the lab core (DNS and TLS).
Each mock defines its own in its ``faults.py``; the launcher joins them into one catalogue, from which the CLI,
the console and the README table are generated. A fault is armed for one host, for every request or the next N,
and is consumed in arrival order: never random.
"""
from __future__ import annotations

import threading
from dataclasses import dataclass, field

from lab.events import Event, EventLog


class FaultError(ValueError):
    """A fault request that cannot be honoured; ``code`` is machine-readable."""

    def __init__(self, message: str, code: str):
        super().__init__(message)
        self.code = code


@dataclass(frozen=True)
class FaultSpec:
    name: str
    component: str  # who applies it: "dns", "tls", "org-domain", ...
    description: str  # what the lab does
    symptom: str  # what the field sees
    takes_seconds: bool = False


@dataclass
class Armed:
    spec: FaultSpec
    host: str
    remaining: int | None  # None: until cleared
    seconds: float | None = None
    used: int = 0

    def to_dict(self) -> dict:
        return {"name": self.spec.name, "component": self.spec.component, "host": self.host,
                "remaining": self.remaining, "used": self.used, "seconds": self.seconds}


DNS_FAULTS = [
    FaultSpec("dns-nxdomain", "dns", "the lab DNS answers NXDOMAIN for the name",
              "'Unable to connect': the domain or MDM host does not resolve (record missing, typo in the zone)"),
    FaultSpec("dns-servfail", "dns", "the lab DNS answers SERVFAIL for the name",
              "intermittent 'cannot connect': a broken authoritative server or DNSSEC failure upstream"),
    FaultSpec("dns-timeout", "dns", "the lab DNS never answers queries for the name",
              "long spinner then failure: a firewall drops DNS or the name servers are down"),
    FaultSpec("dns-wrong-address", "dns", "the lab DNS answers 127.0.0.2, where nothing listens",
              "connection refused: the record still points at an old or internal-only server"),
]

TLS_FAULTS = [
    FaultSpec("tls-expired", "tls", "the host presents a certificate that expired yesterday",
              "'Cannot connect to server' after a certificate renewal was missed"),
    FaultSpec("tls-not-yet-valid", "tls", "the host presents a certificate valid from tomorrow",
              "works on some devices only: a wrong clock on the server or the device"),
    FaultSpec("tls-wrong-name", "tls", "the host presents a certificate for another name",
              "certificate name mismatch: a shared host or CDN serves its default certificate"),
    FaultSpec("tls-untrusted", "tls", "the host presents a certificate from a CA the device does not trust",
              "untrusted certificate: a self-signed or private CA, or a TLS-inspecting proxy"),
]


@dataclass
class FaultBoard:
    catalogue: dict[str, FaultSpec]
    hosts: dict[str, set[str]]  # component → hosts a fault of that component may target ("*": any in zone)
    default_host: str
    events: EventLog | None = None
    default_hosts: dict[str, str] = field(default_factory=dict)  # per component, else default_host
    concealed: bool = False  # training exercises: the lab must not name the fault the trainee has to find
    _armed: list[Armed] = field(default_factory=list)
    _lock: threading.Lock = field(default_factory=threading.Lock)

    def spec(self, name: str) -> FaultSpec:
        if name not in self.catalogue:
            raise FaultError(f"no fault named {name!r}; 'mdmlab fault list' shows them", "unknown-fault")
        return self.catalogue[name]

    def set(self, name: str, host: str | None = None, times: int | None = None,
            seconds: float | None = None) -> Armed:
        spec = self.spec(name)
        host = (host or self.default_hosts.get(spec.component, self.default_host)).lower().rstrip(".")
        allowed = self.hosts.get(spec.component, set())
        if "*" not in allowed and host not in allowed:
            raise FaultError(f"{name} applies to {spec.component} hosts ({', '.join(sorted(allowed))}), "
                             f"not {host}", "bad-fault-host")
        if times is not None and (not isinstance(times, int) or isinstance(times, bool) or times < 1):
            raise FaultError("times must be a positive integer (leave it out for 'until cleared')", "bad-times")
        if seconds is not None and (isinstance(seconds, bool) or not isinstance(seconds, (int, float))
                                    or not 0 <= seconds <= 120):
            raise FaultError("seconds must be a number between 0 and 120", "bad-seconds")
        armed = Armed(spec, host, times, float(seconds) if seconds is not None else None)
        with self._lock:
            self._armed = [a for a in self._armed if not (a.spec.name == name and a.host == host)]
            self._armed.append(armed)
        self._record(f"fault {name} set on {host}" + (f" for the next {times} requests" if times else ""), armed)
        return armed

    def clear(self, name: str | None = None, host: str | None = None) -> int:
        if name is not None:
            self.spec(name)
        host = host.lower().rstrip(".") if host else None
        with self._lock:
            keep = [a for a in self._armed if not ((name is None or a.spec.name == name)
                                                   and (host is None or a.host == host))]
            cleared = len(self._armed) - len(keep)
            self._armed = keep
        self._record(f"cleared {cleared} fault(s)" + (f" named {name}" if name else "") +
                     (f" on {host}" if host else ""), None)
        return cleared

    def take(self, component: str, host: str, names=None) -> Armed | None:
        """The first armed fault of ``component`` on ``host`` (among ``names`` if given), with one use consumed."""
        host = host.lower().rstrip(".")
        with self._lock:
            for armed in self._armed:
                if armed.spec.component == component and armed.host == host \
                        and (names is None or armed.spec.name in names):
                    armed.used += 1
                    if armed.remaining is not None:
                        armed.remaining -= 1
                        if armed.remaining == 0:
                            self._armed.remove(armed)
                    return armed
        return None

    def armed(self) -> list[dict]:
        if self.concealed:
            return []
        with self._lock:
            return [a.to_dict() for a in self._armed]

    def label(self, armed: Armed) -> str:
        """How an exchange broken by ``armed`` is summarised in the timeline."""
        if self.concealed:
            return "answered"
        left = "" if armed.remaining is None else f", {armed.remaining} left"
        return f"fault {armed.spec.name}{left}"

    def listing(self) -> list[dict]:
        return [{"name": s.name, "component": s.component, "description": s.description, "symptom": s.symptom,
                 "takes_seconds": s.takes_seconds} for s in self.catalogue.values()]

    def _record(self, summary: str, armed: Armed | None) -> None:
        if self.concealed:
            summary, armed = "fault settings changed (concealed for the exercise)", None
        if self.events is not None:
            self.events.record(Event(component="faults", kind="fault", host=armed.host if armed else None,
                                     summary=summary, detail=armed.to_dict() if armed else {}))


def catalogue(*groups: list[FaultSpec]) -> dict[str, FaultSpec]:
    joined: dict[str, FaultSpec] = {}
    for group in groups:
        for spec in group:
            if spec.name in joined:
                raise ValueError(f"fault {spec.name} is defined twice")
            joined[spec.name] = spec
    return joined
