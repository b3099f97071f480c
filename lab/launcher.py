"""Builds the whole lab from a scenario, in one place: PKI → events → listener → states → apps → DNS.

The CLI and the tests both use ``Lab``; nothing is global, so two labs can run side by side on other ports.
"""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
import secrets
import shutil
import threading
import time
from pathlib import Path

from lab import dispatch
from lab.config import ADMIN_TOKEN_FILE, LAB_FILE
from lab.console import create_app as create_console
from dnslib import QTYPE

from lab.dns import DNS_FAULTS, LabDNS, Zone, ZoneResolver
from lab.dns import query as dns_query
from lab.events import Event, EventLog
from lab.faults import TLS_FAULTS, FaultBoard, FaultError, TLSFaults, catalogue
from lab.net import LabResolver, Network, lab_session
from lab.pki import CertificateAuthority, write_private
from lab.scenario import Scenario
from lab.server import HostContexts, HTTPSServer, server_context
import mocks
from mocks import abm, mdm, org_domain
from mocks.mdm.abm_client import DEPClient, RegistrationError

OWNED = ("pki", "mdm", "abm", "org_domain", "events.db", "events.db-wal", "events.db-shm", LAB_FILE)


def fault_catalogue() -> dict:
    """Every fault of the lab: the mocks' records joined with the DNS and TLS ones (the one join)."""
    return catalogue(mocks.FAULTS, DNS_FAULTS, TLS_FAULTS)


class LabError(RuntimeError):
    """The lab cannot start as asked; the message says why in one line."""


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def _port_hint(port: int) -> str:
    if 0 < port < 1024 and os.geteuid() != 0:
        return f" (port {port} needs root or CAP_NET_BIND_SERVICE)"
    return f" (is another server using port {port}?)" if port else ""


class Lab:
    def __init__(self, scenario: Scenario, state_dir: Path, *, listen: str = "127.0.0.1", https_port: int = 0,
                 dns_port: int = 0, fresh: bool = False, upstream: tuple[str, int] | None = None,
                 conceal_faults: bool = False):
        self.scenario = scenario
        self.state_dir = Path(state_dir).resolve()
        self.listen = listen
        self.requested_ports = (https_port, dns_port)
        self.fresh = fresh
        self.upstream = upstream
        self.conceal_faults = conceal_faults
        self.admin_token = None if is_loopback(listen) else secrets.token_urlsafe(24)
        self.started_at: float | None = None
        self._lock_file = None
        self._reset_lock = threading.Lock()
        self.views: dict = {}  # more parts of snapshot(), added by the console (e.g. the saved devices)

    # -- life cycle --------------------------------------------------------------------------------------------
    def start(self) -> "Lab":
        t0 = time.perf_counter()
        try:
            address = ipaddress.ip_address(self.listen)
        except ValueError:
            raise LabError(f"--listen needs an IP address, got {self.listen!r}") from None
        if address.is_unspecified:
            raise LabError("--listen needs the one address devices will use (the lab's DNS answers with it), "
                           "not 0.0.0.0 or ::")
        self.state_dir.mkdir(parents=True, exist_ok=True)
        self._take_lock()
        if self.fresh:
            self._wipe()
        sc = self.scenario
        self.pki = CertificateAuthority(self.state_dir / "pki", sc.suffixes)
        self.events = EventLog(self.state_dir / "events.db")

        console_leaf = self.pki.issue_server(sc.console_host, names=["localhost", "127.0.0.1"])
        self.contexts = HostContexts(server_context(console_leaf.cert_path, console_leaf.key_path))
        https_port, dns_port = self.requested_ports
        try:
            self.https = HTTPSServer(self.contexts, self.listen, https_port)
        except OSError as exc:
            self._release_lock()
            raise LabError(f"cannot listen for HTTPS on {self.listen}:{https_port}: {exc.strerror or exc}"
                           + _port_hint(https_port)) from exc
        self.https_port = self.https.port

        self.dispatcher = dispatch.Dispatcher(self.events)
        self.zone = Zone(sc.suffixes)
        self.faults = FaultBoard(fault_catalogue(), {}, sc.domains[0].name, self.events,
                                 concealed=self.conceal_faults)
        self.contexts.override = TLSFaults(self.faults, self.pki, server_context)
        self._build_mocks()
        self._build_zone(address.version)
        self.faults.hosts.update(self._fault_hosts())
        if self.abm is not None:
            self.faults.default_hosts["abm"] = sc.abm_hosts["api"]
        self.faults.default_hosts["mdm"] = sc.mdm.host
        try:
            for armed in sc.faults:
                self.faults.set(armed.name, armed.host, armed.times, armed.seconds)
        except FaultError as exc:
            self._abort()
            raise LabError(f"{sc.path}: {exc}") from None
        try:
            self.dns = LabDNS(ZoneResolver(self.zone, self.events, self.faults, self.upstream), self.listen, dns_port)
        except OSError as exc:
            self._abort()
            raise LabError(str(exc) + _port_hint(dns_port)) from exc

        self.https.set_app(self.dispatcher)
        self.https.start()
        self.dns.start()
        self.started_at = time.time()
        try:
            self._set_up_abm()
        except (RegistrationError, OSError) as exc:
            self.stop()
            raise LabError(f"the MDM could not register its service-discovery URL with ABM: {exc}") from exc
        self._write_lab_file()
        self.events.record(Event(component="lab", kind="lab", summary=(
            f"lab up: scenario {sc.name}, HTTPS {self.listen}:{self.https_port}, DNS {self.listen}:{self.dns.port}"
            f" in {(time.perf_counter() - t0) * 1000:.0f} ms")))
        return self

    def _abort(self) -> None:
        self.https.stop()
        self.events.close()
        self._release_lock()

    def _build_mocks(self) -> None:
        sc = self.scenario
        mdm_urls = self.urls["mdm"]
        first = sc.domains[0]
        federation_secret = secrets.token_bytes(32)  # shared by the MDM and the IdP, like an OIDC client secret
        idp_origin = self.origin(sc.idp_host) if sc.idp_host else ""
        self.mdm = mdm.MDMState(
            mdm.MDMSetup(organization=sc.organization, host=sc.mdm.host, topic=sc.mdm.topic, users=sc.users,
                         version=first.version, versions=dict(first.versions), idp_origin=idp_origin,
                         federation_secret=federation_secret, **mdm.scenario_options(sc.mdm), **mdm_urls),
            self.state_dir / "mdm", self.pki.issue_profile_signer(sc.organization), faults=self.faults)
        self.org_domain = org_domain.OrgDomainState([self._domain_setup(d) for d in sc.domains],
                                                    origin=self.origin, faults=self.faults, zone=sc.zone)
        self._mount(sc.console_host, "console", create_console(self))
        self.dispatcher.apps["localhost"] = self.dispatcher.apps[sc.console_host]
        self._mount(sc.mdm.host, "mdm", mdm.create_app(self.mdm))
        if sc.idp_host:
            self._mount(sc.idp_host, "idp", mdm.create_idp_app(mdm.IdPState(
                sc.organization, idp_origin, sc.users, federation_secret, {mdm_urls["federated_callback_url"]})))
        org_app = org_domain.create_app(self.org_domain)
        for host in sorted(self.org_domain.hosts - set(self.dispatcher.apps)):
            self._mount(host, "org-domain", org_app)
        self.abm = None
        if sc.abm.enabled:
            hosts = sc.abm_hosts
            owned = {d.name for d in sc.domains}
            accounts = sc.abm.accounts if sc.abm.accounts is not None else tuple(
                u.identifier for u in sc.users if u.identifier.rsplit("@", 1)[1] in owned)
            self.abm = abm.ABMState(
                abm.ABMSetup(organization=sc.organization, kind=sc.kind, domains=tuple(sorted(owned)),
                             accounts=accounts, servers=sc.abm.servers, session_ttl=sc.abm.session_ttl,
                             hosts=hosts),
                self.state_dir / "abm", self._txt_lookup, faults=self.faults)
            for role, app in abm.create_apps(self.abm).items():
                self._mount(hosts[role], "abm", app)

    def _domain_setup(self, d) -> org_domain.DomainSetup:
        """The org domain's answer and its redirect chain; hop targets carry the lab's port."""
        urls = self.urls["mdm"]
        chain = [(d.name, org_domain.WELL_KNOWN_PATH)] + [(r.host, r.path) for r in d.redirects]
        hops = tuple(org_domain.Hop(chain[i][0], chain[i][1], r.status, self.origin(r.host) + r.path, r.keep_query)
                     for i, r in enumerate(d.redirects))
        final = chain[-1]
        if final[0] == self.scenario.mdm.host:
            final = None  # the MDM answers at its own discovery URL
        return org_domain.DomainSetup(d.name, d.version, urls["base_url"], dict(d.versions), hops, final,
                                      urls["adde_base_url"])

    def _build_zone(self, ip_version: int) -> None:
        rtype = "AAAA" if ip_version == 6 else "A"
        for host in self.dispatcher.hosts:
            if host != "localhost":
                self.zone.add(host, rtype, self.listen)
        self.zone.add("localhost", "A", "127.0.0.1")
        for d in self.scenario.domains:
            for txt in d.txt:
                self.zone.add(d.name, "TXT", txt)
        if self.abm is not None:
            for domain in self.scenario.abm.verified_domains:
                self.zone.add(domain, "TXT", self.abm.verification_record(domain))

    def _fault_hosts(self) -> dict[str, set[str]]:
        served = set(self.dispatcher.hosts) - {"localhost", self.scenario.console_host}
        return {"dns": set(self.zone.records) - {"localhost"}, "tls": served,
                "org-domain": {d.name for d in self.scenario.domains},
                "abm": {self.scenario.abm_hosts["api"]} if self.abm is not None else set(),
                "mdm": {self.scenario.mdm.host}}

    def _txt_lookup(self, name: str) -> list[str]:
        """ABM verifies domains the way Apple does: a real TXT query, here to the lab DNS."""
        reply = dns_query(name, "TXT", self.listen, self.dns.port, timeout=2.0)
        return [b"".join(rr.rdata.data).decode("utf-8", "replace") for rr in reply.rr
                if QTYPE.get(rr.rtype) == "TXT"]

    def _set_up_abm(self) -> None:
        sc = self.scenario
        if self.abm is None:
            return
        for domain in sc.abm.verified_domains:
            self.abm.verify_domain(domain)
        mdm_server = next((s for s in sc.abm.servers if s.mdm), None)
        if mdm_server is None or not sc.abm.register_url:
            return
        token = self.abm.server_token(mdm_server.name)
        session = lab_session(LabResolver(self.listen, self.dns.port), str(self.pki.cert_path))
        try:
            DEPClient(self.origin(sc.abm_hosts["api"]), token, session).register_discovery_url(
                self.urls["mdm"]["discovery_url"])
        finally:
            session.close()

    def reset(self) -> None:
        """Back to the scenario by reconstruction, as at a fresh start: the mocks' states, apps and zone rebuilt,
        the scenario's faults re-armed, ABM set up again. The CA, the listener and the timeline stay."""
        with self._reset_lock:
            self.faults.clear()
            self.mdm.close()
            if self.abm is not None:
                self.abm.close()
            for name in ("mdm", "abm", "org_domain"):  # the mocks' state; devices keep theirs, as real ones do
                if (self.state_dir / name).is_dir():
                    shutil.rmtree(self.state_dir / name)
            self._build_mocks()
            for record in self.zone.listing():
                self.zone.remove(record["name"], record["type"], record["value"])
            self._build_zone(ipaddress.ip_address(self.listen).version)
            self.faults.hosts.update(self._fault_hosts())
            for armed in self.scenario.faults:
                self.faults.set(armed.name, armed.host, armed.times, armed.seconds)
            self._set_up_abm()
            self.events.record(Event(component="lab", kind="lab",
                                     summary=f"lab reset to scenario {self.scenario.name}"))

    def stop(self) -> None:
        if self.started_at is None:
            return
        self.events.record(Event(component="lab", kind="lab", summary="lab stopped", outcome="lab-stopped"))
        self.dns.stop()
        self.https.stop()
        self.mdm.close()
        if self.abm is not None:
            self.abm.close()
        self.events.close()
        (self.state_dir / LAB_FILE).unlink(missing_ok=True)
        (self.state_dir / ADMIN_TOKEN_FILE).unlink(missing_ok=True)
        self._release_lock()
        self.started_at = None

    def __enter__(self) -> "Lab":
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------------------------------
    def _mount(self, host: str, component: str, app) -> None:
        leaf = self.pki.issue_server(host)
        self.contexts.set(host, server_context(leaf.cert_path, leaf.key_path))
        self.dispatcher.mount(host, component, app)

    def origin(self, host: str) -> str:
        """How the lab writes a URL to one of its hosts: the port only when it is not 443."""
        return f"https://{host}" + ("" if self.https_port == 443 else f":{self.https_port}")

    @property
    def urls(self) -> dict:
        sc = self.scenario
        return {"mdm": mdm.urls(self.origin(sc.mdm.host)), "console": self.origin(sc.console_host) + "/"}

    def _take_lock(self) -> None:
        self._lock_file = open(self.state_dir / "lab.lock", "w")
        try:
            fcntl.flock(self._lock_file, fcntl.LOCK_EX | fcntl.LOCK_NB)
        except BlockingIOError:
            self._lock_file.close()
            self._lock_file = None
            raise LabError(f"another lab is running on the state dir {self.state_dir}; "
                           "stop it or use --state-dir") from None

    def _release_lock(self) -> None:
        if self._lock_file is not None:
            fcntl.flock(self._lock_file, fcntl.LOCK_UN)
            self._lock_file.close()
            self._lock_file = None

    def _wipe(self) -> None:
        for name in OWNED:
            path = self.state_dir / name
            if path.is_dir():
                shutil.rmtree(path)
            else:
                path.unlink(missing_ok=True)

    def describe(self) -> dict:
        return {
            "scenario": self.scenario.name,
            "listen": self.listen,
            "dns": f"{self.listen}:{self.dns.port}",
            "dns_address": self.listen,
            "dns_port": self.dns.port,
            "https_port": self.https_port,
            "ca_cert": str(self.pki.cert_path),
            "hosts": self.dispatcher.hosts,
            "console_url": self.urls["console"],
            "mdm": self.urls["mdm"],
            "domains": [d.name for d in self.scenario.domains],
            "abm": self.scenario.abm_hosts if self.abm is not None else None,
            "apple_host": self.scenario.abm_hosts["fallback"],
            "users": [u.identifier for u in self.scenario.users],
            "pid": os.getpid(),
            "upstream": f"{self.upstream[0]}:{self.upstream[1]}" if self.upstream else None,
            "admin_token_required": self.admin_token is not None,
        }

    def _write_lab_file(self) -> None:
        if self.admin_token:
            write_private(self.state_dir / ADMIN_TOKEN_FILE, self.admin_token.encode())
        path = self.state_dir / LAB_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        os.replace(tmp, path)

    def network(self) -> Network:
        """This lab as a client sees it (the recipe of lab.json, ``Network.from_lab_info``)."""
        return Network.from_lab_info(self.describe())

    def snapshot(self) -> dict:
        return {"org_domain": self.org_domain.snapshot(), "mdm": self.mdm.snapshot(),
                "abm": self.abm.snapshot() if self.abm is not None else None, "faults": self.faults.armed(),
                **{name: view() for name, view in self.views.items()}}
