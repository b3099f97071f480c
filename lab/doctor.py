"""`mdmlab doctor`: run on the lab's machine, says check by check whether a phone on the LAN can use the lab.

It finds the lab through lab.json and asks it what a phone would ask, where the lab listens: DNS for the lab's
names, HTTPS with the right certificate for every host (verified against the lab CA only), the CA profile, names
outside the lab through the upstream. What only a phone's situation decides (a LAN address, ports 53 and 443) is
judged separately, so a lab on loopback with other ports still has its serving checked.
"""
from __future__ import annotations

import datetime as dt
import ipaddress
import json
import plistlib
import shutil
import socket
import ssl
import subprocess
from dataclasses import asdict, dataclass
from pathlib import Path

from cryptography import x509
from cryptography.hazmat.primitives import serialization
from dnslib import QTYPE, RCODE

from lab import config
from lab.dns import query
from lab.net import DNSFailure, LabResolver, lab_session

OUTSIDE_NAME = "apple.com"  # a name outside the lab a phone needs answered (Apple's services)
PROFILE_TYPE = "application/x-apple-aspen-config"
TIMEOUT = 3.0


@dataclass
class Check:
    name: str
    status: str  # "ok", "warn", "fail"
    detail: str
    fix: str = ""

    def to_dict(self) -> dict:
        return asdict(self)


def _ok(name, detail):
    return Check(name, "ok", detail)


def _warn(name, detail, fix=""):
    return Check(name, "warn", detail, fix)


def _fail(name, detail, fix=""):
    return Check(name, "fail", detail, fix)


def diagnose(state_dir: Path, *, outside_name: str = OUTSIDE_NAME) -> list[Check]:
    """Every check, in the order a phone meets them; a dead lab stops after the first."""
    try:
        info = config.read_lab_file(state_dir)
    except config.NoLabRunning as exc:
        return [_fail("lab process", str(exc), "start the lab: " + _restart(state_dir, _left_behind(state_dir)))]
    checks = [_process(state_dir, info)]
    listen = info.get("listen") or info.get("dns_address", "127.0.0.1")
    checks.append(_listen(listen, state_dir))
    checks.append(_port("DNS port", info["dns_port"], 53, "--dns-port", _restart(state_dir, info), info))
    checks.append(_port("HTTPS port", info["https_port"], 443, "--https-port", _restart(state_dir, info), info))
    resolver = LabResolver(info.get("dns_address", listen), info["dns_port"], timeout=TIMEOUT)
    flag = config.state_dir_flag(state_dir)  # every command a fix names reaches this lab, not another one
    checks += _dns(info, listen, flag)
    checks += _https(info, resolver, flag)
    checks.append(_profile(info, resolver, flag))
    checks.append(_upstream(info, outside_name))
    checks.append(_clock(Path(info["ca_cert"]), flag))
    return checks


def _process(state_dir: Path, info: dict) -> Check:
    return _ok("lab process", f"process {info.get('pid')} holds {state_dir} and serves it")


def _left_behind(state_dir: Path) -> dict:
    """The lab.json a lab that died (kill -9) left behind, or nothing: how it was started."""
    try:
        info = json.loads((state_dir / config.LAB_FILE).read_text())
    except (OSError, ValueError):
        return {}
    return info if isinstance(info, dict) else {}


def _restart(state_dir: Path, info: dict) -> str:
    """The ``mdmlab up`` that serves a phone from the lab of ``state_dir``: the LAN address it had (a loopback
    one will not do), --real-device (53 and 443), and the state dir."""
    listen = info.get("listen") or ""
    lan = listen if listen and not config.is_loopback(listen) else "<LAN address>"
    return config.up_command(state_dir, listen=lan, real_device=True)


def _listen(listen: str, state_dir: Path) -> Check:
    address = ipaddress.ip_address(listen)
    if address.is_loopback:
        return _fail("LAN address", f"the lab listens on {listen}, a loopback address: a phone cannot reach it",
                     "restart with the machine's LAN address: " + _restart(state_dir, {}))
    return _ok("LAN address", f"the lab listens on {listen}; the phone's Wi-Fi DNS must be set to it")


def _port(name: str, port: int, wanted: int, option: str, restart: str, info: dict) -> Check:
    if port != wanted:
        how = (f"or leave {option} out (the lab has --real-device, which then picks {wanted})"
               if info.get("real_device") else "or with --real-device, which picks 53 and 443")
        return _fail(name, f"the lab serves on port {port}; a phone only uses {wanted}",
                     f"restart with {option} {wanted}, {how}: {restart}")
    return _ok(name, f"port {port}, as a phone expects")


def _dns(info: dict, listen: str, flag: str) -> list[Check]:
    server, port = info.get("dns_address", listen), info["dns_port"]
    checks = []
    for name in info.get("domains") or []:
        for tcp in (False, True):
            label = f"DNS {name} ({'TCP' if tcp else 'UDP'})"
            try:
                reply = query(name, "A" if ":" not in listen else "AAAA", server, port, tcp=tcp, timeout=TIMEOUT)
            except OSError as exc:
                checks.append(_fail(label, f"no answer from {server}:{port}: {exc.__class__.__name__}",
                                    "is 'mdmlab up' still running? is a firewall dropping port "
                                    f"{port} ({'TCP' if tcp else 'UDP'})?"))
                continue
            rcode = RCODE.get(reply.header.rcode)
            answers = [str(rr.rdata) for rr in reply.rr if QTYPE.get(rr.rtype) in ("A", "AAAA")]
            if rcode != "NOERROR" or not answers:
                checks.append(_fail(label, f"{server}:{port} answered {rcode} with no address",
                                    f"mdmlab fault list{flag} (a DNS fault armed?); mdmlab dns list{flag} shows "
                                    f"{name}'s records"))
            elif listen not in answers:
                checks.append(_fail(label, f"{name} resolves to {', '.join(answers)}, not the lab's {listen}",
                                    f"mdmlab dns remove {name} A{flag}, then restart the lab"))
            else:
                checks.append(_ok(label, f"{server}:{port} answers {name} → {listen}"))
    return checks


def _https(info: dict, resolver: LabResolver, flag: str) -> list[Check]:
    context = ssl.create_default_context(cafile=info["ca_cert"])
    checks = []
    for host in info.get("hosts") or []:
        if host == "localhost":
            continue
        label = f"HTTPS {host}"
        try:
            address = resolver.resolve(host)
        except DNSFailure as exc:
            checks.append(_fail(label, f"the lab DNS does not resolve {host}: {exc.message}",
                                f"mdmlab dns list{flag}; mdmlab fault list{flag}"))
            continue
        try:
            with socket.create_connection((address, info["https_port"]), timeout=TIMEOUT) as sock, \
                    context.wrap_socket(sock, server_hostname=host) as tls:
                der = tls.getpeercert(binary_form=True)
                assert der is not None  # a verified handshake carries the peer's certificate
                cert = x509.load_der_x509_certificate(der)
        except ssl.SSLCertVerificationError as exc:
            checks.append(_fail(label, f"{address}:{info['https_port']} presents a certificate the lab CA does not "
                                       f"vouch for {host}: {exc.verify_message}",
                                f"mdmlab fault list{flag} (a TLS fault armed?); mdmlab up --fresh{flag} issues new "
                                "certificates"))
            continue
        except (OSError, ssl.SSLError) as exc:
            checks.append(_fail(label, f"cannot talk TLS to {address}:{info['https_port']} as {host}: {exc}",
                                "is 'mdmlab up' still running? is a firewall dropping the port?"))
            continue
        until = cert.not_valid_after_utc.strftime("%Y-%m-%d")
        checks.append(_ok(label, f"{address}:{info['https_port']} presents {host}'s certificate from the lab CA "
                                 f"(valid until {until})"))
    return checks


def _profile(info: dict, resolver: LabResolver, flag: str) -> Check:
    url = info["console_url"].rstrip("/") + "/ca.mobileconfig"
    session = lab_session(resolver, info["ca_cert"])
    try:
        response = session.get(url, timeout=TIMEOUT)
    except Exception as exc:  # requests' whole family: what matters is that a phone could not download it
        return _fail("CA profile", f"cannot download {url}: {exc.__class__.__name__}",
                     f"is 'mdmlab up' still running? mdmlab ca export --mobileconfig -o ca.mobileconfig{flag}, "
                     "then AirDrop or mail it to the phone")
    finally:
        session.close()
    if response.status_code != 200 or response.headers.get("Content-Type", "").split(";")[0] != PROFILE_TYPE:
        return _fail("CA profile", f"{url} answered {response.status_code} "
                                   f"{response.headers.get('Content-Type', 'no content type')}, not a profile",
                     "mdmlab events --host " + url.split("/")[2].split(":")[0] + flag + " shows why")
    try:
        profile = plistlib.loads(response.content)
        der = profile["PayloadContent"][0]["PayloadContent"]
    except (ValueError, KeyError, IndexError, TypeError, plistlib.InvalidFileException):
        return _fail("CA profile", f"{url} is not a readable configuration profile", f"mdmlab up --fresh{flag}")
    ca = x509.load_pem_x509_certificate(Path(info["ca_cert"]).read_bytes())
    if der != ca.public_bytes(serialization.Encoding.DER):
        return _fail("CA profile", f"{url} holds another CA than {info['ca_cert']}",
                     f"restart the lab (mdmlab up{flag}) so the console serves the current CA")
    return _ok("CA profile", f"{url} serves the lab CA ({len(response.content)} bytes); a phone opens it in Safari")


def _upstream(info: dict, outside_name: str) -> Check:
    server, port = info.get("dns_address", "127.0.0.1"), info["dns_port"]
    if not info.get("upstream"):
        return _warn("upstream", f"names outside the lab are refused: a phone using this DNS reaches nothing else "
                                 f"(e.g. {outside_name}, Apple's services after enrollment)",
                     "restart with --upstream HOST[:PORT] (--real-device uses the system's resolver)")
    try:
        reply = query(outside_name, "A", server, port, timeout=TIMEOUT * 2)
    except OSError as exc:
        return _fail("upstream", f"no answer for {outside_name} through the lab DNS: {exc.__class__.__name__}",
                     f"check {info['upstream']} answers from this machine: dig @{info['upstream'].split(':')[0]} "
                     f"{outside_name}")
    rcode = RCODE.get(reply.header.rcode)
    answers = [str(rr.rdata) for rr in reply.rr if QTYPE.get(rr.rtype) == "A"]
    if rcode != "NOERROR" or not answers:
        return _fail("upstream", f"the lab DNS answered {rcode} for {outside_name} (forwarded to "
                                 f"{info['upstream']})",
                     f"check {info['upstream']} resolves names from this machine, or pick another with --upstream")
    return _ok("upstream", f"{outside_name} → {answers[0]} through {info['upstream']}")


def _clock(ca_cert: Path, flag: str = "") -> Check:
    now = dt.datetime.now(dt.UTC)
    ca = x509.load_pem_x509_certificate(ca_cert.read_bytes())
    if now < ca.not_valid_before_utc:
        return _fail("clock", f"this machine's clock ({now:%Y-%m-%d %H:%M} UTC) is before the lab CA was made "
                              f"({ca.not_valid_before_utc:%Y-%m-%d %H:%M} UTC): it went back",
                     f"set the clock right (timedatectl set-ntp true), then mdmlab up --fresh{flag}")
    if now > ca.not_valid_after_utc:
        return _fail("clock", f"the lab CA expired on {ca.not_valid_after_utc:%Y-%m-%d}", f"mdmlab up --fresh{flag}")
    synced = _ntp_synchronized()
    if synced is False:
        return _warn("clock", f"{now:%Y-%m-%d %H:%M} UTC, but not synchronized by NTP: a phone refuses "
                              "certificates issued in its future", "timedatectl set-ntp true")
    return _ok("clock", f"{now:%Y-%m-%d %H:%M} UTC, within the lab CA's validity"
                        + (", NTP-synchronized" if synced else ""))


def _ntp_synchronized() -> bool | None:
    tool = shutil.which("timedatectl")
    if tool is None:
        return None
    try:
        out = subprocess.run([tool, "show", "-p", "NTPSynchronized", "--value"], capture_output=True, text=True,
                             timeout=5)
    except (OSError, subprocess.SubprocessError):
        return None
    value = out.stdout.strip()
    return {"yes": True, "no": False}.get(value)
