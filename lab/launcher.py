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
import time
from pathlib import Path

from lab import dispatch
from lab.config import LAB_FILE
from lab.console import create_app as create_console
from lab.dns import LabDNS, LabResolver, Zone
from lab.events import Event, EventLog
from lab.pki import CertificateAuthority
from lab.scenario import Scenario
from lab.server import HostContexts, HTTPSServer, server_context
from mocks import mdm, org_domain

OWNED = ("pki", "mdm", "org_domain", "events.db", "events.db-wal", "events.db-shm", LAB_FILE)


class LabError(RuntimeError):
    """The lab cannot start as asked; the message says why in one line."""


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


class Lab:
    def __init__(self, scenario: Scenario, state_dir: Path, *, listen: str = "127.0.0.1", https_port: int = 0,
                 dns_port: int = 0, fresh: bool = False):
        self.scenario = scenario
        self.state_dir = Path(state_dir).resolve()
        self.listen = listen
        self.requested_ports = (https_port, dns_port)
        self.fresh = fresh
        self.admin_token = None if is_loopback(listen) else secrets.token_urlsafe(24)
        self.started_at: float | None = None
        self._lock_file = None

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
            raise LabError(f"cannot listen for HTTPS on {self.listen}:{https_port}: {exc.strerror or exc}") from exc
        self.https_port = self.https.port

        self.dispatcher = dispatch.Dispatcher(self.events)
        self.org_domain = org_domain.OrgDomainState([
            org_domain.DomainSetup(d.name, d.version, self.urls["mdm"]["base_url"]) for d in sc.domains])
        mdm_urls = self.urls["mdm"]
        self.mdm = mdm.MDMState(
            mdm.MDMSetup(organization=sc.organization, host=sc.mdm.host, topic=sc.mdm.topic,
                         token_ttl=sc.mdm.token_ttl, users=sc.users, **mdm_urls),
            self.state_dir / "mdm", self.pki.issue_profile_signer(sc.organization))
        self._mount(sc.console_host, "console", create_console(self))
        self.dispatcher.apps["localhost"] = self.dispatcher.apps[sc.console_host]
        org_app = org_domain.create_app(self.org_domain)
        for d in sc.domains:
            self._mount(d.name, "org-domain", org_app)
        self._mount(sc.mdm.host, "mdm", mdm.create_app(self.mdm))

        zone = Zone(sc.suffixes)
        rtype = "AAAA" if address.version == 6 else "A"
        for host in self.dispatcher.hosts:
            if host != "localhost":
                zone.add(host, rtype, self.listen)
        zone.add("localhost", "A", "127.0.0.1")
        for d in sc.domains:
            for txt in d.txt:
                zone.add(d.name, "TXT", txt)
        self.zone = zone
        try:
            self.dns = LabDNS(LabResolver(zone, self.events), self.listen, dns_port)
        except OSError as exc:
            self.https.stop()
            self._release_lock()
            raise LabError(str(exc)) from exc

        self.https.set_app(self.dispatcher)
        self.https.start()
        self.dns.start()
        self.started_at = time.time()
        self._write_lab_file()
        self.events.record(Event(component="lab", kind="lab", summary=(
            f"lab up: scenario {sc.name}, HTTPS {self.listen}:{self.https_port}, DNS {self.listen}:{self.dns.port}"
            f" in {(time.perf_counter() - t0) * 1000:.0f} ms")))
        return self

    def stop(self) -> None:
        if self.started_at is None:
            return
        self.events.record(Event(component="lab", kind="lab", summary="lab stopped"))
        self.dns.stop()
        self.https.stop()
        self.mdm.close()
        self.events.close()
        (self.state_dir / LAB_FILE).unlink(missing_ok=True)
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
            "users": [u.identifier for u in self.scenario.users],
            "pid": os.getpid(),
            "admin_token_required": self.admin_token is not None,
        }

    def _write_lab_file(self) -> None:
        path = self.state_dir / LAB_FILE
        tmp = path.with_suffix(".tmp")
        tmp.write_text(json.dumps(self.describe(), indent=2) + "\n")
        os.replace(tmp, path)

    def snapshot(self) -> dict:
        return {"org_domain": self.org_domain.snapshot(), "mdm": self.mdm.snapshot()}
