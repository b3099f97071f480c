"""How the lab's clients reach a lab: names through the lab DNS, trust in the lab CA only.

``Network`` is what a client is configured with (built from lab.json by ``Network.from_lab_info``, the one
recipe). ``LabResolver`` (the stub resolver) and ``trust_context`` (one verifying context per CA bundle) serve
the device's own client (``lab.device.http``). ``lab_session`` is a requests session built on them, for the lab's
other clients (the launcher handing the MDM its ABM session, the probe, the fleet's re-check): its adapter's
urllib3 connections resolve through the lab DNS (per adapter, no global monkeypatch), keeping the original host
name for SNI, certificate checks and the Host header.
"""
from __future__ import annotations

import functools
import os
import socket
import ssl
import threading
import time
from dataclasses import dataclass
from typing import NoReturn, Protocol

import requests
from dnslib import QTYPE, RCODE
from requests.adapters import HTTPAdapter
from urllib3.connection import HTTPConnection, HTTPSConnection
from urllib3.connectionpool import HTTPConnectionPool, HTTPSConnectionPool
from urllib3.exceptions import ConnectTimeoutError, NameResolutionError, NewConnectionError

from lab.dns import query

DEFAULT_APPLE_HOST = "axm-adm-enroll.lab.test"  # where "Apple" answers the ABM/ASM discovery fallback in the lab


@dataclass(frozen=True)
class Network:
    """What a lab client is configured with: its DNS server, the CA it trusts, the lab's HTTPS port."""
    dns_server: str
    dns_port: int
    ca_cert: str
    https_port: int = 443
    apple_host: str = DEFAULT_APPLE_HOST

    @classmethod
    def from_lab_info(cls, info: dict, *, dns_address: str | None = None, ca_cert: str | None = None) -> Network:
        """The running lab as a client sees it, from its lab.json (``config.read_lab_file``)."""
        return cls(dns_address or info.get("dns_address", "127.0.0.1"), int(info["dns_port"]),
                   ca_cert or info["ca_cert"], int(info["https_port"]),
                   info.get("apple_host") or (info.get("abm") or {}).get("fallback") or DEFAULT_APPLE_HOST)


class DNSFailure(socket.gaierror):
    """A name the lab DNS did not resolve; ``code`` says how (nxdomain, servfail, timeout, ...)."""

    def __init__(self, host: str, code: str, message: str):
        super().__init__(message)
        self.host, self.code, self.message = host, code, message


class Resolver(Protocol):
    """What the client plumbing asks for an address: the lab's stub resolver, or another that answers alike."""

    def resolve(self, host: str) -> str: ...


class LabResolver:
    """A stub resolver for the lab DNS with a small positive cache (answers' TTL)."""

    def __init__(self, server: str, port: int, *, timeout: float = 2.0):
        self.server, self.port, self.timeout = server, port, timeout
        self._cache: dict[str, tuple[str, float]] = {}
        self._lock = threading.Lock()
        self.log: list[dict] = []

    def resolve(self, host: str) -> str:
        host = host.lower().rstrip(".")
        with self._lock:
            hit = self._cache.get(host)
            if hit and hit[1] > time.monotonic():
                return hit[0]
        for rtype in ("A", "AAAA"):
            address = self._ask(host, rtype)
            if address:
                return address
        self._fail(host, "nodata", f"the lab DNS has no address (A or AAAA) for {host}")

    def _ask(self, host: str, rtype: str) -> str | None:
        try:
            reply = query(host, rtype, self.server, self.port, timeout=self.timeout)
        except TimeoutError:
            self._fail(host, "timeout", f"no answer from the DNS server {self.server}:{self.port} for {host} "
                                        f"within {self.timeout:g} s")
        except OSError as exc:
            self._fail(host, "unreachable", f"cannot reach the DNS server {self.server}:{self.port}: {exc}")
        rcode = RCODE.get(reply.header.rcode)
        if rcode != "NOERROR":
            self._fail(host, rcode.lower(), f"the DNS server answered {rcode} for {host}")
        for rr in reply.rr:
            if QTYPE.get(rr.rtype) == rtype:
                address = str(rr.rdata)
                with self._lock:
                    self._cache[host] = (address, time.monotonic() + min(rr.ttl, 60))
                self.log.append({"name": host, "type": rtype, "answer": address})
                return address
        return None

    def _fail(self, host: str, code: str, message: str) -> NoReturn:
        self.log.append({"name": host, "error": code})
        raise DNSFailure(host, code, message)


def _connection_class(base, resolver: Resolver, port_map: dict[int, int]):
    def _new_conn(self):
        try:
            address = resolver.resolve(self._dns_host)
        except DNSFailure as exc:
            raise NameResolutionError(self.host, self, exc) from exc
        port = port_map.get(self.port, self.port)
        timeout = self.timeout if isinstance(self.timeout, (int, float)) else None
        try:
            sock = socket.create_connection((address, port), timeout, source_address=self.source_address)
        except TimeoutError as exc:
            raise ConnectTimeoutError(self, f"connection to {self.host} ({address}:{port}) timed out") from exc
        except OSError as exc:
            raise NewConnectionError(self, f"cannot connect to {self.host} ({address}:{port}): {exc}") from exc
        sock.setsockopt(socket.IPPROTO_TCP, socket.TCP_NODELAY, 1)
        return sock

    return type(f"Lab{base.__name__}", (base,), {"_new_conn": _new_conn})


@functools.lru_cache(maxsize=8)
def _trust_context(path: str, mtime_ns: int, size: int) -> ssl.SSLContext:
    return ssl.create_default_context(cafile=path)  # this bundle only, hostname checked, CERT_REQUIRED


def trust_context(path: str) -> ssl.SSLContext:
    """One verifying context per CA bundle (a new file at the same path gets a new one), shared by every session.

    Loading the bundle into a fresh context for each connection, as urllib3 does when given a path, cost more
    client CPU than the handshake itself.
    """
    stat = os.stat(path)
    return _trust_context(os.path.abspath(path), stat.st_mtime_ns, stat.st_size)


class LabAdapter(HTTPAdapter):
    """Resolves through ``resolver``; ``port_map`` maps a URL's port to the one to dial (443 → the lab's).

    ``trust`` (a CA bundle's path) gets one shared verifying context; any other ``verify`` takes requests' path.
    """

    def __init__(self, resolver: Resolver, port_map: dict[int, int] | None = None, trust: str | bool | None = None,
                 **kwargs):
        self.resolver = resolver
        self.port_map = dict(port_map or {})
        self.trust = trust if isinstance(trust, str) and os.path.isfile(trust) else None
        super().__init__(**kwargs)

    def _shared(self, url: str, verify) -> bool:
        return self.trust is not None and verify == self.trust and url.lower().startswith("https:")

    def build_connection_pool_key_attributes(self, request, verify, cert=None):
        if not self._shared(request.url, verify) or cert:
            return super().build_connection_pool_key_attributes(request, verify, cert)
        host_params, _ = super().build_connection_pool_key_attributes(request, False, None)
        return host_params, {"ssl_context": trust_context(self.trust), "cert_reqs": "CERT_REQUIRED"}

    def cert_verify(self, conn, url, verify, cert):
        if not self._shared(url, verify) or cert:
            return super().cert_verify(conn, url, verify, cert)
        conn.cert_reqs, conn.ca_certs, conn.ca_cert_dir = "CERT_REQUIRED", None, None

    def init_poolmanager(self, *args, **kwargs):
        super().init_poolmanager(*args, **kwargs)
        http_conn = _connection_class(HTTPConnection, self.resolver, self.port_map)
        https_conn = _connection_class(HTTPSConnection, self.resolver, self.port_map)
        self.poolmanager.pool_classes_by_scheme = {
            "http": type("LabHTTPPool", (HTTPConnectionPool,), {"ConnectionCls": http_conn}),
            "https": type("LabHTTPSPool", (HTTPSConnectionPool,), {"ConnectionCls": https_conn}),
        }


def lab_session(resolver: Resolver, ca_cert: str | bool, port_map: dict[int, int] | None = None) -> requests.Session:
    session = requests.Session()
    session.trust_env = False  # an exported REQUESTS_CA_BUNDLE would silently replace verify
    session.verify = ca_cert
    adapter = LabAdapter(resolver, port_map, trust=ca_cert, pool_connections=8, pool_maxsize=8)
    session.mount("https://", adapter)
    session.mount("http://", adapter)
    return session


def txt_records(name: str, server: str, port: int, *, timeout: float = 2.0) -> list[str]:
    """The TXT strings of ``name`` at the DNS server ``server:port`` (e.g. ABM verifying a domain)."""
    reply = query(name, "TXT", server, port, timeout=timeout)
    return [b"".join(rr.rdata.data).decode("utf-8", "replace") for rr in reply.rr if QTYPE.get(rr.rtype) == "TXT"]
