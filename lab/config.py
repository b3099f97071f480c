"""Defaults and how commands find the running lab."""
from __future__ import annotations

import fcntl
import ipaddress
import json
import os
from pathlib import Path

LAB_FILE = "lab.json"
LOCK_FILE = "lab.lock"  # held by the running lab (flock) as long as its process lives
ADMIN_TOKEN_FILE = "admin-token"  # in the state dir, only when the lab listens beyond loopback
DEFAULT_STATE_DIR = ".mdmlab"
DEFAULT_HTTPS_PORT = 8443
DEFAULT_DNS_PORT = 10053
DEFAULT_LISTEN = "127.0.0.1"
STATE_DIR_ENV = "MDMLAB_STATE_DIR"


class NoLabRunning(RuntimeError):
    pass


def state_dir(option: str | None = None) -> Path:
    """--state-dir, else $MDMLAB_STATE_DIR, else ./.mdmlab."""
    return Path(option or os.environ.get(STATE_DIR_ENV) or DEFAULT_STATE_DIR)


def read_lab_file(directory: Path) -> dict:
    path = Path(directory) / LAB_FILE
    try:
        info = json.loads(path.read_text())
    except FileNotFoundError:
        raise NoLabRunning(f"no running lab found: {path} does not exist (start one with "
                           f"'mdmlab up{state_dir_flag(directory)}', or point --state-dir / ${STATE_DIR_ENV} at its "
                           "state dir)") from None
    except ValueError:
        raise NoLabRunning(f"{path} is not valid JSON; restart the lab with 'mdmlab up{state_dir_flag(directory)}'"
                           ) from None
    for key in ("dns_port", "https_port", "ca_cert", "hosts"):
        if key not in info:
            raise NoLabRunning(f"{path} lacks {key!r}; restart the lab with 'mdmlab up{state_dir_flag(directory)}'")
    if not lab_running(directory):
        raise NoLabRunning(f"the lab of {directory} is not running: its process {info.get('pid', '?')} ended without "
                           f"stopping (killed?); start it again with 'mdmlab up{state_dir_flag(directory)}'")
    return info


def lab_running(directory: Path) -> bool:
    """Whether a lab holds ``directory``'s lock (a running lab keeps it until it stops; the kernel drops it when
    its process dies, even by kill -9, so a stale lab.json cannot pass for a running lab)."""
    try:
        fd = os.open(Path(directory) / LOCK_FILE, os.O_RDONLY)
    except OSError:
        return False
    try:
        fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
    except BlockingIOError:
        return True
    finally:
        os.close(fd)  # closing also drops the lock just taken
    return False


def state_dir_flag(directory: Path | str | None) -> str:
    """`` --state-dir DIR`` for a command the lab suggests, unless DIR is the one commands find by default: copied
    with two labs running, a command without it would silently reach the other lab."""
    if directory is None or Path(directory).resolve() == state_dir(None).resolve():
        return ""
    return f" --state-dir {directory}"


def system_nameserver(resolv_conf: str = "/etc/resolv.conf") -> str | None:
    """The first nameserver of the system that is not a loopback stub, for forwarding names outside the lab."""
    try:
        lines = Path(resolv_conf).read_text().splitlines()
    except OSError:
        return None
    for line in lines:
        parts = line.split()
        if len(parts) >= 2 and parts[0] == "nameserver" and not parts[1].startswith("127."):
            return parts[1]
    return None


def is_loopback(address: str) -> bool:
    try:
        return ipaddress.ip_address(address).is_loopback
    except ValueError:
        return address == "localhost"


def port_hint(port: int, option: str = "") -> str:
    """Why a port could not be bound, most likely, and the fix (for a one-line error)."""
    if 0 < port < 1024 and os.geteuid() != 0:
        return f" (port {port} needs root or CAP_NET_BIND_SERVICE)"
    other = f" pick another with {option}, or 0 for any free port" if option else ""
    return f" (is another server using port {port}?{other})" if port else ""


def check_listen(address: str) -> None:
    """ValueError, in one line, unless ``address`` is one IP address devices can be told to use."""
    try:
        ip = ipaddress.ip_address(address)
    except ValueError:
        raise ValueError(f"--listen needs an IP address, got {address!r}") from None
    if ip.is_unspecified:
        raise ValueError("--listen needs the one address devices will use (the lab's DNS answers with it), "
                         "not 0.0.0.0 or ::")


def up_command(directory: Path | str | None, *, listen: str = "<LAN address>", real_device: bool = True,
               dns_port: int | None = None, https_port: int | None = None) -> str:
    """The ``mdmlab up`` that starts the lab of ``directory`` again the way it was (lab.json tells), ports as given."""
    parts = ["mdmlab up"] + (["--real-device"] if real_device else []) + [f"--listen {listen}"]
    parts += [f"--dns-port {dns_port}"] if dns_port is not None else []
    parts += [f"--https-port {https_port}"] if https_port is not None else []
    return " ".join(parts) + state_dir_flag(directory)


def phone_readiness(listen: str, dns_port: int, https_port: int, *,
                    directory: Path | str | None = None) -> tuple[str | None, list[str]]:
    """Whether a phone on the LAN can be told to use a lab at ``listen``: a refusal (a phone cannot reach a loopback
    address), and warnings with their fix (a phone asks DNS on 53 and HTTPS on 443 only), each with the command."""
    refusal = None
    if is_loopback(listen):
        refusal = (f"no phone instructions: {listen} is a loopback address, which no phone can reach; start with "
                   f"--listen <this machine's LAN address> --real-device: {up_command(directory)}")
    fix = ("; as root or with CAP_NET_BIND_SERVICE): "
           + up_command(directory, listen="<LAN address>" if refusal else listen))
    warnings = []
    if dns_port != 53:
        warnings.append(f"DNS listens on port {dns_port}, but a phone asks port 53 only: restart with --dns-port 53 "
                        f"(--real-device's default{fix}")
    if https_port != 443:
        warnings.append(f"HTTPS listens on port {https_port}, but a phone's first request goes to 443: restart with "
                        f"--https-port 443 (--real-device's default{fix}")
    return refusal, warnings


PLACEHOLDER_SUFFIX = ".invalid"  # the template's names (RFC 2606): to be replaced by the organization's own


def template_problems(scenario) -> list[str]:
    """What is still the real-domain template's placeholder in ``scenario`` (one line each)."""
    names = [("domain", d.name) for d in scenario.domains] + [("user", u.identifier) for u in scenario.users]
    names += [("MDM host", scenario.mdm.host)]
    return [f"{scenario.path}: the {what} {name!r} is the template's placeholder; set your organization's own "
            "(the steps are at the top of the file)" for what, name in names if name.endswith(PLACEHOLDER_SUFFIX)]
