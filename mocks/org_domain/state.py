"""Rules of the org domain: which well-known answer each domain gives (PROTOCOL.md stage 1.2-1.4), its
redirect chain, and the faults armed on it."""
from __future__ import annotations

import json
from dataclasses import dataclass, field
from urllib.parse import urlsplit

from lab.protocol import WELL_KNOWN_PATH, discovery_server
from mocks.org_domain import faults as catalogue
from mocks.org_domain.errors import NoSuchPath, UnknownDomain
from mocks.well_known import check_model_family, identifier_parts


@dataclass(frozen=True)
class Hop:
    """At (host, path) answer ``status`` with Location ``target`` (the query copied only if keep_query)."""
    host: str
    path: str
    status: int
    target: str
    keep_query: bool


@dataclass(frozen=True)
class DomainSetup:
    name: str
    version: str
    base_url: str
    versions: dict = field(default_factory=dict)  # model family or user identifier → Version
    hops: tuple[Hop, ...] = ()
    final: tuple[str, str] | None = None  # (host, path) serving the answer; default the well-known itself
    adde_base_url: str | None = None
    mdm_origins: dict = field(default_factory=dict)  # model family → origin of the MDM that family is routed to

    def document(self, identifier: str, model_family: str | None) -> dict:
        server = discovery_server(identifier, model_family, version=self.version, versions=self.versions,
                                  base_url=self.base_url, adde_base_url=self.adde_base_url)
        origin = self.mdm_origins.get(model_family or "")
        if origin:  # routing per device type: this family has an MDM of its own
            server["BaseURL"] = origin + urlsplit(server["BaseURL"]).path
        return {"Servers": [server]}


@dataclass(frozen=True)
class Answer:
    status: int
    content_type: str
    body: bytes
    summary: str
    location: str | None = None
    delay: float = 0.0
    reset: bool = False
    headers: tuple = ()


class OrgDomainState:
    def __init__(self, domains: list[DomainSetup], *, origin=lambda host: f"https://{host}", faults=None,
                 zone: str = "lab.test"):
        self.setups = list(domains)
        self.domains = {d.name: d for d in domains}
        self.origin, self.faults, self.zone = origin, faults, zone
        self.routes: dict[tuple[str, str], DomainSetup | Hop] = {}
        for d in domains:
            entry = (d.name, WELL_KNOWN_PATH)
            for hop in d.hops:
                self.routes[(hop.host, hop.path)] = hop
            self.routes.setdefault(d.final or entry, d)
            self.routes[(d.name, catalogue.DISCOVERY_PATH)] = d
            for path in catalogue.LOOP_PATHS:
                self.routes[(d.name, path)] = d

    @property
    def hosts(self) -> set[str]:
        return {host for host, _ in self.routes}

    def respond(self, host: str, path: str, args, query: str) -> Answer:
        route = self.routes.get((host, path))
        if route is None:
            if host not in self.hosts:
                raise UnknownDomain(f"{host} is not one of the organization's web hosts")
            served = sorted(p for h, p in self.routes if h == host)
            raise NoSuchPath(f"{host} serves nothing at {path}", served=served)
        if isinstance(route, Hop):
            return self._redirect(route, query)
        if path == WELL_KNOWN_PATH and self.faults is not None:
            armed = self.faults.take(catalogue.COMPONENT, host, at=catalogue.AT)
            if armed is not None:
                return self._broken(armed, route, host, path, args, query)
        if path in catalogue.LOOP_PATHS:
            other = catalogue.LOOP_PATHS[1 - catalogue.LOOP_PATHS.index(path)]
            return Answer(302, "text/html", b"", f"loop: {path} → {other}", self.origin(host) + other +
                          (f"?{query}" if query else ""))
        return self.answer(route, args.get("user-identifier"), args.get("model-family"))

    def answer(self, setup: DomainSetup, identifier: str | None, model_family: str | None) -> Answer:
        identifier_parts(identifier)
        assert identifier is not None  # identifier_parts refuses a missing one
        check_model_family(model_family, required=False)
        server = setup.document(identifier, model_family)["Servers"][0]
        return Answer(200, "application/json", json.dumps({"Servers": [server]}).encode(),
                      f"{server['Version']} → {server['BaseURL']}")

    def _redirect(self, hop: Hop, query: str) -> Answer:
        target = hop.target + (f"?{query}" if hop.keep_query and query else "")
        kept = "with" if hop.keep_query else "without"
        return Answer(hop.status, "text/html", b"", f"{hop.status} → {hop.target} ({kept} the query)", target)

    def _broken(self, armed, setup: DomainSetup, host: str, path: str, args, query: str) -> Answer:
        document = setup.document(args.get("user-identifier") or "", args.get("model-family"))
        broken = armed.apply(catalogue.WellKnownAnswer(document, self.origin(host), path, query, armed.seconds,
                                                       self.zone))
        return Answer(broken.status, broken.content_type, broken.body, self.faults.label(armed),
                      broken.location, broken.delay, broken.reset, broken.extra_headers)

    def snapshot(self) -> dict:
        return {"domains": {d.name: {"version": d.version, "versions": d.versions, "base_url": d.base_url,
                                     "mdm_origins": d.mdm_origins,
                                     "redirects": [{"from": f"{h.host}{h.path}", "status": h.status,
                                                    "to": h.target, "keep_query": h.keep_query} for h in d.hops]}
                            for d in self.setups},
                "faults": self.faults.armed() if self.faults else []}
