"""Builds the whole lab from a scenario, in one place: PKI → events → listener → states → apps → DNS. The CLI and
the tests both use ``Lab``; nothing is global, so two labs can run side by side on other ports. In an exercise
(``exercise=N``) nothing the lab shows names its scenario or faults: ``title`` stands for the scenario."""
from __future__ import annotations

import ipaddress
import os
import secrets
import threading
import time
from pathlib import Path

import mocks
from lab import dispatch, setups
from lab.changes import FILE as CHANGES_FILE
from lab.changes import RunChanges
from lab.config import check_listen, is_loopback, port_hint
from lab.console import create_app as create_console
from lab.dns import DNS_FAULTS, LabDNS, Zone, ZoneResolver
from lab.events import Event, EventLog
from lab.faults import TLS_FAULTS, FaultBoard, FaultError, TLSFaults, catalogue
from lab.net import LabResolver, Network, lab_session, txt_records
from lab.pki import CertificateAuthority
from lab.scenario import Scenario
from lab.server import HostContexts, HTTPSServer, server_context
from lab.statedir import StateDir, StateDirBusy
from mocks import abm, apple_id, mdm, org_domain


def fault_catalogue() -> dict:
    """Every fault of the lab: the mocks' records joined with the DNS and TLS ones (the one join)."""
    return catalogue(mocks.FAULTS, DNS_FAULTS, TLS_FAULTS)


class LabError(RuntimeError):
    """The lab cannot start as asked; the message says why in one line."""


class Lab:
    def __init__(self, scenario: Scenario, state_dir: Path, *, listen: str = "127.0.0.1", https_port: int = 0,
                 dns_port: int = 0, fresh: bool = False, upstream: tuple[str, int] | None = None,
                 conceal_faults: bool = False, exercise: int | None = None, real_device: bool = False):
        self.scenario, self.home = scenario, StateDir(state_dir)
        self.state_dir = self.home.path
        self.listen, self.requested_ports, self.fresh = listen, (https_port, dns_port), fresh
        self.upstream, self.exercise, self.real_device = upstream, exercise, real_device
        self.conceal_faults = conceal_faults or exercise is not None
        self.admin_token = None if is_loopback(listen) else secrets.token_urlsafe(24)
        self.started_at: float | None = None
        self._reset_lock = threading.Lock()
        self.views: dict = {}  # more parts of snapshot(), added by the console (e.g. the saved devices)

    # -- life cycle --------------------------------------------------------------------------------------------
    def start(self) -> Lab:
        t0 = time.perf_counter()
        try:
            check_listen(self.listen)
            self.home.lock()
            self.home.prepare(fresh=self.fresh, exercise=self.exercise)
        except (ValueError, StateDirBusy) as exc:
            self.home.unlock()
            raise LabError(str(exc)) from None
        sc = self.scenario
        self.pki = CertificateAuthority(self.state_dir / "pki", sc.suffixes)
        self.events = EventLog(self.state_dir / "events.db")
        console_leaf = self.pki.issue_server(sc.console_host, names=["localhost", "127.0.0.1"])
        self.contexts = HostContexts(server_context(console_leaf.cert_path, console_leaf.key_path))
        https_port, dns_port = self.requested_ports
        try:
            self.https = HTTPSServer(self.contexts, self.listen, https_port)
        except OSError as exc:
            self.home.unlock()
            raise LabError(f"cannot listen for HTTPS on {self.listen}:{https_port}: {exc.strerror or exc}"
                           + port_hint(https_port, "--https-port")) from exc
        self.https_port = self.https.port
        self.dispatcher, self.zone = dispatch.Dispatcher(self.events), Zone(sc.suffixes)
        self.faults = FaultBoard(fault_catalogue(), {}, sc.domains[0].name, self.events,
                                 concealed=self.conceal_faults)
        self.contexts.override = TLSFaults(self.faults, self.pki, server_context)
        try:
            self._build()
        except FaultError as exc:
            self._abort()
            raise LabError(f"{sc.path}: {exc}") from None
        try:
            self.dns = LabDNS(ZoneResolver(self.zone, self.events, self.faults, self.upstream), self.listen, dns_port)
        except OSError as exc:
            self._abort()
            raise LabError((exc.strerror or str(exc)) + port_hint(dns_port, "--dns-port")) from exc
        self.changes = RunChanges(self.state_dir / CHANGES_FILE)  # those of the lab that stopped, then kept
        self.restored = self.changes.resume(self.dns.resolver, self.faults)
        self.https.set_app(self.dispatcher)
        self.https.start()
        self.dns.start()
        self.started_at = time.time()
        try:
            self._set_up_abm()
        except OSError as exc:
            self.stop()
            raise LabError(f"the MDM could not reach ABM to register its service-discovery URL: {exc}") from exc
        self.home.publish(self.describe(), self.admin_token)
        self.events.record(Event(component="lab", kind="lab", summary=(
            f"lab up: {self.headline}, HTTPS {self.listen}:{self.https_port}, DNS {self.listen}:{self.dns.port}"
            f" in {(time.perf_counter() - t0) * 1000:.0f} ms" + (f"; restored {self.restored} made at run time"
                                                               if self.restored else ""))))
        return self

    def _abort(self) -> None:
        self.https.stop()
        self.events.close()
        self.home.unlock()

    def _build(self) -> None:
        """The mocks, their apps and the zone, from the scenario, with the scenario's faults armed."""
        sc = self.scenario
        self._build_mocks()
        self._build_zone(ipaddress.ip_address(self.listen).version)
        served = set(self.dispatcher.hosts) - {"localhost", sc.console_host}
        hosts, defaults = setups.fault_hosts(sc, set(self.zone.records), served, self.abm is not None)
        self.faults.hosts.update(hosts)
        self.faults.default_hosts.update(defaults)
        for armed in sc.faults:
            self.faults.set(armed.name, armed.host, armed.times, armed.seconds)

    def _build_mocks(self) -> None:
        sc, urls = self.scenario, self.urls["mdm"]
        federation_secret = secrets.token_bytes(32)  # the IdP's signing key, shared with its relying parties
        idp_origin = self.origin(sc.idp_host) if sc.idp_host else ""
        self.mdm = mdm.MDMState(setups.mdm_setup(sc, urls, idp_origin, federation_secret), self.state_dir / "mdm",
                                self.pki.issue_profile_signer(sc.organization), faults=self.faults)
        domains = [setups.domain_setup(sc, d, urls, self.origin) for d in sc.domains]
        self.org_domain = org_domain.OrgDomainState(domains, origin=self.origin, faults=self.faults, zone=sc.zone)
        self._mount(sc.console_host, "console", create_console(self))
        self.dispatcher.apps["localhost"] = self.dispatcher.apps[sc.console_host]
        self._mount(sc.mdm.host, "mdm", mdm.create_app(self.mdm))
        apple_origin = self.origin(sc.apple_identity_host)
        if sc.idp_host:
            self._mount(sc.idp_host, "idp", mdm.create_idp_app(mdm.IdPState(
                sc.organization, idp_origin, sc.users, federation_secret,
                setups.idp_relying_parties(sc, urls, apple_origin), faults=self.faults)))
        org_app = org_domain.create_app(self.org_domain)
        for host in sorted(self.org_domain.hosts - set(self.dispatcher.apps)):
            self._mount(host, "org-domain", org_app)
        self.abm = None
        if sc.abm.enabled:
            self.abm = abm.ABMState(setups.abm_setup(sc), self.state_dir / "abm",
                                    lambda name: txt_records(name, self.listen, self.dns.port), faults=self.faults)
            for role, app in abm.create_apps(self.abm, lambda: self.admin_token).items():
                self._mount(sc.abm_hosts[role], "abm", app)
        self.directory = setups.apple_directory(sc, self.abm, self.mdm)
        self.apple_id = apple_id.AppleIDState(setups.apple_id_setup(sc, apple_origin, idp_origin, federation_secret),
                                              self.directory, faults=self.faults)
        self._mount(sc.apple_identity_host, "apple-id", apple_id.create_app(self.apple_id))

    def _build_zone(self, ip_version: int) -> None:
        for host in setups.address_hosts(self.scenario, self.dispatcher.hosts):
            self.zone.add(host, "AAAA" if ip_version == 6 else "A", self.listen)
        self.zone.add("localhost", "A", "127.0.0.1")
        for name, txt in ((d.name, txt) for d in self.scenario.domains for txt in d.txt):
            self.zone.add(name, "TXT", txt)
        if self.abm is not None:  # ABM verifies domains the way Apple does: a real TXT query, here to the lab DNS
            for domain in self.scenario.abm.verified_domains:
                self.zone.add(domain, "TXT", self.abm.verification_record(domain))

    def _set_up_abm(self) -> None:
        if self.abm is not None:
            with lab_session(LabResolver(self.listen, self.dns.port), str(self.pki.cert_path)) as session:
                setups.set_up_abm(self.scenario, self.abm, self.mdm, session, self.origin, self.events)

    def reset(self) -> None:
        """Back to the scenario by reconstruction, as at a fresh start: the mocks' states, apps and zone rebuilt,
        the scenario's faults re-armed, ABM set up again. The CA, the listener and the timeline stay."""
        with self._reset_lock:
            self.faults.on_change = None  # the scenario's faults are not run-time changes
            self.faults.clear()
            self.mdm.close()
            if self.abm is not None:
                self.abm.close()
            self.home.wipe(("mdm", "abm", "org_domain"))  # the mocks' state; devices keep theirs, as real ones do
            for record in self.zone.listing():
                self.zone.remove(record["name"], record["type"], record["value"])
            self._build()
            self.changes.forget()
            self.faults.on_change = self.changes.faults_changed
            self._set_up_abm()
            self.events.record(Event(component="lab", kind="lab", summary=f"lab reset to {self.headline}"))

    def stop(self) -> None:
        if self.started_at is None:
            return
        self.events.record(Event(component="lab", kind="lab", summary="lab stopped", outcome="lab-stopped"))
        self.changes.stopping(self.faults)
        self.dns.stop()
        self.https.stop()
        self.mdm.close()
        if self.abm is not None:
            self.abm.close()
        self.events.close()
        self.home.withdraw()
        self.started_at = None

    def __enter__(self) -> Lab:
        return self.start()

    def __exit__(self, *exc) -> None:
        self.stop()

    # -- helpers -----------------------------------------------------------------------------------------------
    def _mount(self, host: str, component: str, app) -> None:
        leaf = self.pki.issue_server(host)
        self.contexts.set(host, server_context(leaf.cert_path, leaf.key_path))
        self.dispatcher.mount(host, component, app)

    @property
    def title(self) -> str:  # what the lab shows for its scenario: its name, or in an exercise a neutral one
        return self.scenario.name if not self.conceal_faults else f"exercise {self.exercise or ''}".strip()

    @property
    def headline(self) -> str:
        return self.title if self.conceal_faults else f"scenario {self.scenario.name}"

    def origin(self, host: str) -> str:
        """How the lab writes a URL to one of its hosts: the port only when it is not 443."""
        return f"https://{host}" + ("" if self.https_port == 443 else f":{self.https_port}")

    @property
    def urls(self) -> dict:
        sc = self.scenario
        return {"mdm": mdm.urls(self.origin(sc.mdm.host)), "console": self.origin(sc.console_host) + "/"}

    def describe(self) -> dict:
        """lab.json, /api/health and the dashboard's facts; ``scenario`` is the title (conceals an exercise's)."""
        sc = self.scenario
        return {"scenario": self.title, "exercise": self.exercise, "listen": self.listen,
                "dns": f"{self.listen}:{self.dns.port}", "dns_address": self.listen, "dns_port": self.dns.port,
                "https_port": self.https_port, "ca_cert": str(self.pki.cert_path), "hosts": self.dispatcher.hosts,
                "console_url": self.urls["console"], "mdm": self.urls["mdm"], "domains": [d.name for d in sc.domains],
                "abm": sc.abm_hosts if self.abm is not None else None, "apple_host": sc.abm_hosts["fallback"],
                "users": [u.identifier for u in sc.users], "pid": os.getpid(),
                "upstream": f"{self.upstream[0]}:{self.upstream[1]}" if self.upstream else None,
                "admin_token_required": self.admin_token is not None, "real_device": self.real_device}

    def network(self) -> Network:
        """This lab as a client sees it (the recipe of lab.json, ``Network.from_lab_info``)."""
        return Network.from_lab_info(self.describe())

    def snapshot(self) -> dict:
        return {"org_domain": self.org_domain.snapshot(), "mdm": self.mdm.snapshot(),
                "abm": self.abm.snapshot() if self.abm is not None else None, "faults": self.faults.armed(),
                **{name: view() for name, view in self.views.items()}}
