"""``mdmlab up``: start the lab and serve until Ctrl-C, with a banner that says how to use it."""
from __future__ import annotations

import signal
import sys
import threading

import click

from lab import config
from lab.cli.common import fail, host_port, load_scenario
from lab.scenario import DEFAULT_SCENARIO


@click.command()
@click.option("--scenario", default=DEFAULT_SCENARIO, show_default=True, help="Scenario name or TOML path.")
@click.option("--state-dir", default=None, help="State directory [default: $MDMLAB_STATE_DIR or ./.mdmlab].")
@click.option("--listen", default=config.DEFAULT_LISTEN, show_default=True,
              help="Address to serve DNS and HTTPS on; beyond loopback the console needs the admin token.")
@click.option("--https-port", type=click.IntRange(0, 65535), default=None,
              help=f"[default: {config.DEFAULT_HTTPS_PORT}; 443 with --real-device]")
@click.option("--dns-port", type=click.IntRange(0, 65535), default=None,
              help=f"[default: {config.DEFAULT_DNS_PORT}; 53 with --real-device]")
@click.option("--fresh", is_flag=True, help="Forget the saved state (CA, enrollments, events) and start over.")
@click.option("--real-device", is_flag=True,
              help="Serve a real iPhone/iPad/Mac: HTTPS on 443, DNS on 53 forwarding other names upstream.")
@click.option("--upstream", default=None, metavar="HOST[:PORT]",
              help="DNS server for names outside the lab [default with --real-device: the system's].")
def up(scenario, state_dir, listen, https_port, dns_port, fresh, real_device, upstream):
    """Start the lab: DNS, the CA, one HTTPS listener for every host."""
    if real_device:
        https_port = 443 if https_port is None else https_port
        dns_port = 53 if dns_port is None else dns_port
        upstream = upstream or config.system_nameserver()
    https_port = config.DEFAULT_HTTPS_PORT if https_port is None else https_port
    dns_port = config.DEFAULT_DNS_PORT if dns_port is None else dns_port
    lab = start(scenario, state_dir, listen=listen, https_port=https_port, dns_port=dns_port, fresh=fresh,
                upstream=host_port(upstream, "--upstream") if upstream else None, check_template=True,
                real_device=real_device)
    serve(lab, banner(lab) + ("\n" + real_device_steps(lab) if real_device else ""))


def start(scenario, state_dir, *, check_template: bool = False, **kwargs):
    """Load ``scenario`` and start its lab in ``state_dir``, or fail in one line (also, with ``check_template``,
    when the real-domain template's placeholders are still in it)."""
    from lab.launcher import Lab, LabError

    sc = load_scenario(scenario)
    problems = config.template_problems(sc) if check_template else []
    if problems:
        fail(problems[0])
    lab = Lab(sc, config.state_dir(state_dir), **kwargs)
    try:
        lab.start()
    except LabError as exc:
        fail(str(exc))
    return lab


def serve(lab, text: str) -> None:
    """Print ``text``, serve until SIGINT/SIGTERM, stop cleanly."""
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(text)
    sys.stdout.flush()
    try:
        while not stop.wait(3600):
            pass
    finally:
        lab.stop()
        click.echo("mdmlab stopped.")


def real_device_steps(lab) -> str:
    info = lab.describe()
    refusal, warnings = config.phone_readiness(lab.listen, info["dns_port"], info["https_port"],
                                               directory=lab.state_dir)
    warned = [f"warning: {w}" for w in warnings]
    if refusal:
        return "\n".join([refusal, *warned])
    sc = lab.scenario
    user = sc.users[0].identifier if sc.users else "name@" + sc.domains[0].name
    return "\n".join([
        "To enroll a real iPhone or iPad on this network:",
        f"  1. Settings > Wi-Fi > (i) > Configure DNS > Manual: remove the servers, add {lab.listen}.",
        f"  2. In Safari open {info['console_url']}ca.mobileconfig (Safari warns: the CA is not trusted yet;",
        "     continue), allow the download, then Settings > General > VPN & Device Management: install it.",
        "  3. Settings > General > About > Certificate Trust Settings: turn on full trust for the mdmlab CA.",
        "     It is name-constrained to the lab's zones only (" + ", ".join(sc.suffixes) + ").",
        f"  4. Settings > General > VPN & Device Management > Sign In to Work or School Account: type {user}.",
        "  A Mac: System Settings > Network > Wi-Fi > Details > DNS, then Keychain Access for the CA (Always Trust),",
        "  then System Settings > General > Device Management.",
        "  Names outside the lab are forwarded to " + (f"{lab.upstream[0]}:{lab.upstream[1]}" if lab.upstream
                                                     else "nowhere (REFUSED)") + ".",
        "  How far a real device gets, stage by stage: README, 'Real devices on the LAN'.",
        *warned,
    ])


LOCALHOST = ("127.0.0.1", "::1")  # where https://localhost/ reaches a lab (its console certificate names it)


def moved_devices(state_dir, https_port: int) -> str | None:
    """A one-line warning when saved devices were enrolled with this lab on another HTTPS port: they keep the
    URLs of their enrollment profile, as a real device does, so nothing answers them here."""
    from lab.device.store import DeviceStore

    elsewhere = DeviceStore.elsewhere(state_dir, https_port)
    if not elsewhere:
        return None
    ports = sorted({port for _, port in elsewhere})
    ids = ", ".join(device_id for device_id, _ in elsewhere)
    flag = config.state_dir_flag(state_dir)
    return (f"{len(elsewhere)} saved device(s) ({ids}) were enrolled with this lab on HTTPS port "
            f"{' and '.join(map(str, ports))}, not {https_port}, and keep that port: restart with "
            f"--https-port {ports[0]} ('mdmlab up --https-port {ports[0]}{flag}' and the other options), or sign "
            f"each out and enroll it again ('mdmlab device unenroll ID{flag}', 'mdmlab device enroll ID "
            f"IDENTIFIER{flag}')")


def banner(lab) -> str:
    info = lab.describe()
    sc = lab.scenario
    dns_flag = "" if info["dns_port"] == 53 else f" -p {info['dns_port']}"
    lines = [
        f"mdmlab is up · {lab.headline} ({sc.organization})",
        f"  DNS      {info['dns']} (UDP+TCP)   e.g. dig @{info['dns_address']}{dns_flag} {sc.domains[0].name}",
        f"  HTTPS    {lab.listen}:{info['https_port']}   "
        f"hosts: {', '.join(h for h in info['hosts'] if h != 'localhost')}",
        f"  CA       {info['ca_cert']}",
        f"  Console  {info['console_url']}"
        + (f"  (also https://localhost:{info['https_port']}/)" if lab.listen in LOCALHOST else ""),
    ]
    moved = moved_devices(lab.state_dir, info["https_port"])
    if moved:
        lines.append(f"  warning: {moved}")
    if lab.admin_token:
        lines.append(f"  Admin token (console beyond loopback): {lab.admin_token}")
    if lab.restored:
        lines.append(f"  Resumed  {lab.restored} made while it last ran (--fresh starts from the scenario)")
    lines.append("  Users to try:")
    for user in sc.users:
        lines.append(f"    {user.identifier}  password: {user.password}")
    if sc.users:
        first = sc.users[0]
        lines.append(f"  Try:     mdmlab enroll {first.identifier} --password {first.password}"
                     + config.state_dir_flag(lab.state_dir))
    lines.append("  Stop with Ctrl-C.")
    return "\n".join(lines)
