"""The mdmlab command line. Every command but ``up`` finds the running lab through <state-dir>/lab.json."""
from __future__ import annotations

import json
import signal
import sys
import threading

import click

from lab import config
from lab.scenario import DEFAULT_SCENARIO, ScenarioError, load


def _fail(message: str) -> None:
    raise click.ClickException(message)


@click.group(context_settings={"help_option_names": ["-h", "--help"]})
@click.version_option(package_name="mdmlab")
def main() -> None:
    """A lab for Apple's account-driven User Enrollment and Device Enrollment."""


@main.command()
@click.option("--scenario", default=DEFAULT_SCENARIO, show_default=True, help="Scenario name or TOML path.")
@click.option("--state-dir", default=None, help="State directory [default: $MDMLAB_STATE_DIR or ./.mdmlab].")
@click.option("--listen", default=config.DEFAULT_LISTEN, show_default=True,
              help="Address to serve DNS and HTTPS on; beyond loopback the console needs the admin token.")
@click.option("--https-port", type=click.IntRange(0, 65535), default=config.DEFAULT_HTTPS_PORT, show_default=True)
@click.option("--dns-port", type=click.IntRange(0, 65535), default=config.DEFAULT_DNS_PORT, show_default=True)
@click.option("--fresh", is_flag=True, help="Forget the saved state (CA, enrollments, events) and start over.")
def up(scenario, state_dir, listen, https_port, dns_port, fresh):
    """Start the lab: DNS, the CA, one HTTPS listener for every host."""
    from lab.launcher import Lab, LabError

    try:
        sc = load(scenario)
    except ScenarioError as exc:
        _fail(str(exc))
    lab = Lab(sc, config.state_dir(state_dir), listen=listen, https_port=https_port, dns_port=dns_port,
              fresh=fresh)
    try:
        lab.start()
    except LabError as exc:
        _fail(str(exc))
    stop = threading.Event()
    for sig in (signal.SIGINT, signal.SIGTERM):
        signal.signal(sig, lambda *_: stop.set())
    click.echo(_banner(lab))
    sys.stdout.flush()
    try:
        while not stop.wait(3600):
            pass
    finally:
        lab.stop()
        click.echo("mdmlab stopped.")


def _banner(lab) -> str:
    info = lab.describe()
    sc = lab.scenario
    dns_flag = "" if info["dns_port"] == 53 else f" -p {info['dns_port']}"
    lines = [
        f"mdmlab is up · scenario {sc.name} ({sc.organization})",
        f"  DNS      {info['dns']} (UDP+TCP)   e.g. dig @{info['dns_address']}{dns_flag} {sc.domains[0].name}",
        f"  HTTPS    {lab.listen}:{info['https_port']}   hosts: {', '.join(h for h in info['hosts'] if h != 'localhost')}",
        f"  CA       {info['ca_cert']}",
        f"  Console  {info['console_url']}  (also https://localhost:{info['https_port']}/)",
    ]
    if lab.admin_token:
        lines.append(f"  Admin token (console beyond loopback): {lab.admin_token}")
    lines.append("  Users to try:")
    for user in sc.users:
        lines.append(f"    {user.identifier}  password: {user.password}")
    if sc.users:
        first = sc.users[0]
        lines.append(f"  Try:     mdmlab enroll {first.identifier} --password {first.password}")
    lines.append("  Stop with Ctrl-C.")
    return "\n".join(lines)


@main.command()
@click.argument("identifier")
@click.option("--model-family", type=click.Choice(["iPhone", "iPad", "Mac", "Vision"]), default="iPhone",
              show_default=True)
@click.option("--os-version", default=None, help="OS version of the device, e.g. 18.2 [default: 26.1].")
@click.option("--password", default=None, help="Password typed on the sign-in page (prompted when on a terminal).")
@click.option("--strict", is_flag=True, help="Reject what a real device was only seen or inferred to tolerate.")
@click.option("--state-dir", default=None, help="State directory of the running lab.")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def enroll(identifier, model_family, os_version, password, strict, state_dir, as_json):
    """Enroll a simulated device as IDENTIFIER through the running lab; exit 0 only when enrolled."""
    from lab.device import Device, Network
    from lab.device.device import parse_version

    try:
        info = config.read_lab_file(config.state_dir(state_dir))
    except config.NoLabRunning as exc:
        _fail(str(exc))
    if os_version is not None:
        try:
            parse_version(os_version)
        except ValueError as exc:
            raise click.BadParameter(str(exc), param_hint="--os-version") from None
    if password is None and sys.stdin.isatty() and not as_json:
        password = click.prompt(f"Password for {identifier}", hide_input=True, default="", show_default=False) or None
    network = Network(info.get("dns_address", "127.0.0.1"), info["dns_port"], info["ca_cert"], info["https_port"])
    device = Device(network, model_family=model_family, os_version=os_version or "", strict=strict)
    try:
        trace = device.enroll(identifier, password)
    finally:
        device.close()
    if as_json:
        click.echo(json.dumps(trace.to_dict(), indent=2))
    else:
        click.echo(f"{device.model_family} ({device.product}, {device.os_name} {device.os_version}) "
                   f"enrolling as {identifier}")
        click.echo(trace.render())
    sys.exit(0 if trace.outcome == "enrolled" else 1)


if __name__ == "__main__":
    main()
