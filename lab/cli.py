"""The mdmlab command line. Every command but ``up`` finds the running lab through <state-dir>/lab.json."""
from __future__ import annotations

import json
import signal
import sys
import threading

import click

from lab import config
from lab.cli_device import device
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
    lab = _start(scenario, state_dir, listen=listen, https_port=https_port, dns_port=dns_port, fresh=fresh,
                 upstream=_host_port(upstream, "--upstream") if upstream else None)
    _serve(lab, _banner(lab) + ("\n" + _real_device_steps(lab) if real_device else ""))


def _host_port(text: str, option: str) -> tuple[str, int]:
    host, _, port = text.rpartition(":") if text.count(":") == 1 else (text, "", "53")
    if not port.isdigit() or not 0 < int(port) < 65536 or not host:
        raise click.BadParameter(f"{text!r} is not HOST or HOST:PORT", param_hint=option)
    return host, int(port)


def _start(scenario, state_dir, **kwargs):
    from lab.launcher import Lab, LabError

    try:
        sc = load(scenario)
    except ScenarioError as exc:
        _fail(str(exc))
    lab = Lab(sc, config.state_dir(state_dir), **kwargs)
    try:
        lab.start()
    except LabError as exc:
        _fail(str(exc))
    return lab


def _serve(lab, text: str) -> None:
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


def _real_device_steps(lab) -> str:
    info = lab.describe()
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
    ])


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
@click.option("--fallback-on", default="http,transport,content", show_default=True,
              help="Which org-domain failures send an 18.2+ device to ABM/ASM (comma-separated).")
@click.option("--state-dir", default=None, help="State directory of the running lab.")
@click.option("--json", "as_json", is_flag=True, help="Print the trace as JSON.")
def enroll(identifier, model_family, os_version, password, strict, fallback_on, state_dir, as_json):
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
    triggers = tuple(t.strip() for t in fallback_on.split(",") if t.strip())
    unknown = sorted(set(triggers) - {"http", "transport", "content"})
    if unknown:
        raise click.BadParameter(f"unknown trigger {unknown[0]!r}; use http, transport, content",
                                 param_hint="--fallback-on")
    if password is None and sys.stdin.isatty() and not as_json:
        password = click.prompt(f"Password for {identifier}", hide_input=True, default="", show_default=False) or None
    device = Device(Network.from_lab_info(info), model_family=model_family, os_version=os_version or "", strict=strict,
                    fallback_on=triggers)
    from lab.cli_device import save_enrolled

    try:
        trace = device.enroll(identifier, password)
        saved = {"device_id": save_enrolled(device, state_dir)} if trace.outcome == "enrolled" else {}
    finally:
        device.close()
    _report_trace(state_dir, identifier, trace)
    if as_json:
        click.echo(json.dumps({**trace.to_dict(), **saved}, indent=2))
    else:
        click.echo(f"{device.model_family} ({device.product}, {device.os_name} {device.os_version}) "
                   f"enrolling as {identifier}")
        click.echo(trace.render())
        if saved:
            click.echo(f"device id: {saved['device_id']} (mdmlab device show {saved['device_id']})")
    sys.exit(0 if trace.outcome == "enrolled" else 1)


def _report_trace(state_dir, identifier: str, trace) -> None:
    """Hand the device's own steps to the lab's timeline, as a sysdiagnose would; the enrollment's result does
    not depend on it, so a console that cannot be reached only costs a warning."""
    from lab.control import ControlClient, ControlError

    try:
        client = ControlClient(config.state_dir(state_dir))
    except config.NoLabRunning:
        return
    try:
        client.request("POST", "/api/device-traces", json={"identifier": identifier, **trace.to_dict()})
    except ControlError as exc:
        click.echo(f"warning: the device's trace did not reach the timeline: {exc}", err=True)
    finally:
        client.close()


def _control(state_dir):
    from lab.control import ControlClient

    try:
        return ControlClient(config.state_dir(state_dir))
    except config.NoLabRunning as exc:
        _fail(str(exc))


def _call(client, method: str, path: str, **kwargs):
    from lab.control import ControlError

    try:
        return client.request(method, path, **kwargs)
    except ControlError as exc:
        _fail(str(exc))
    finally:
        client.close()


def fault_catalogue() -> list[dict]:
    from lab.launcher import fault_catalogue as joined

    return [{"name": f.name, "component": f.component, "description": f.description, "symptom": f.symptom}
            for f in joined().values()]


state_dir_option = click.option("--state-dir", default=None, help="State directory of the running lab.")


@main.group()
def fault():
    """Break the lab the way the field breaks: list, set and clear named faults."""


@fault.command("list")
@state_dir_option
@click.option("--json", "as_json", is_flag=True)
def fault_list(state_dir, as_json):
    """Every fault with what it does and the field symptom it reproduces; armed ones when a lab runs."""
    armed = []
    try:
        info_dir = config.state_dir(state_dir)
        config.read_lab_file(info_dir)
        armed = _call(_control(state_dir), "GET", "/api/faults")["armed"]
    except config.NoLabRunning:
        pass
    if as_json:
        click.echo(json.dumps({"catalogue": fault_catalogue(), "armed": armed}, indent=2))
        return
    for f in fault_catalogue():
        on = [a for a in armed if a["name"] == f["name"]]
        mark = " [armed on " + ", ".join(a["host"] + ("" if a["remaining"] is None else f" ×{a['remaining']}")
                                        for a in on) + "]" if on else ""
        click.echo(f"{f['name']:<22} {f['component']:<11} {f['description']}{mark}")
        click.echo(f"{'':<34} field symptom: {f['symptom']}")


@main.command()
@click.argument("identifier")
@click.option("--dns", "dns_server", default=None, metavar="HOST:PORT",
              help="DNS server to ask [default: the system's resolver].")
@click.option("--ca", default=None, type=click.Path(exists=True, dir_okay=False),
              help="Trust only this CA [default: the system trust store].")
@click.option("--port", type=click.IntRange(1, 65535), default=443, show_default=True,
              help="Port for the URLs the device builds itself (the well-known URL).")
@click.option("--model-family", type=click.Choice(["iPhone", "iPad", "Mac", "Vision"]), default="iPhone",
              show_default=True)
@click.option("--json", "as_json", is_flag=True)
def probe(identifier, dns_server, ca, port, model_family, as_json):
    """Diagnose the discovery of IDENTIFIER's domain (lab or real) and the first request of stage 2."""
    from lab.probe import probe as run_probe

    dns = _host_port(dns_server, "--dns") if dns_server else None
    trace = run_probe(identifier, dns=dns, ca=ca, port=port, model_family=model_family)
    ok = trace.outcome == "enrolled"  # the trace's success state: every check passed
    if as_json:
        click.echo(json.dumps({**trace.to_dict(), "outcome": "ok" if ok else "failed"}, indent=2))
    else:
        steps = trace.render().rsplit("\n", 1)[0]
        verdict = "PROBE OK" if ok else f"PROBE FAILED ({trace.diagnosis})"
        click.echo(f"{steps}\n{verdict}: {trace.explanation}")
    sys.exit(0 if ok else 1)


def fault_table() -> str:
    """The README's fault table, generated from the catalogue so the two cannot drift."""
    rows = ["| fault | layer | what the lab does | field symptom it reproduces |", "| --- | --- | --- | --- |"]
    rows += [f"| `{f['name']}` | {f['component']} | {f['description']} | {f['symptom']} |" for f in fault_catalogue()]
    return "\n".join(rows)


@fault.command("table", hidden=True)
def fault_table_command():
    """Print the README's fault table (markdown)."""
    click.echo(fault_table())


@fault.command("set")
@click.argument("name")
@click.option("--host", default=None, help="Host or DNS name to break [default: the organization's first domain].")
@click.option("--times", type=click.IntRange(min=1), default=None, help="Only the next N requests.")
@click.option("--seconds", type=click.FloatRange(0, 120), default=None, help="Delay for slow faults.")
@state_dir_option
def fault_set(name, host, times, seconds, state_dir):
    """Arm fault NAME."""
    body = {"name": name, **({"host": host} if host else {}), **({"times": times} if times else {}),
            **({"seconds": seconds} if seconds is not None else {})}
    armed = _call(_control(state_dir), "POST", "/api/faults", json=body)["armed"]
    scope = "until cleared" if armed["remaining"] is None else f"for the next {armed['remaining']} request(s)"
    click.echo(f"armed {armed['name']} on {armed['host']} {scope}")


@fault.command("clear")
@click.argument("name", required=False)
@click.option("--host", default=None)
@state_dir_option
def fault_clear(name, host, state_dir):
    """Clear fault NAME, or every fault."""
    path = "/api/faults" + (f"/{name}" if name else "")
    cleared = _call(_control(state_dir), "DELETE", path, params={"host": host} if host else None)["cleared"]
    click.echo(f"cleared {cleared} fault(s)")


@main.group()
def dns():
    """Records in the lab's DNS zone (e.g. the TXT record that verifies a domain in ABM)."""


@dns.command("list")
@state_dir_option
def dns_list(state_dir):
    for record in _call(_control(state_dir), "GET", "/api/dns/records"):
        click.echo(f"{record['name']:<32} {record['type']:<5} {record['value']}")


@dns.command("add")
@click.argument("name")
@click.argument("rtype", metavar="TYPE", type=click.Choice(["A", "AAAA", "TXT"]))
@click.argument("value")
@state_dir_option
def dns_add(name, rtype, value, state_dir):
    _call(_control(state_dir), "POST", "/api/dns/records", json={"name": name, "type": rtype, "value": value})
    click.echo(f"added {name} {rtype} {value}")


@dns.command("remove")
@click.argument("name")
@click.argument("rtype", metavar="TYPE", type=click.Choice(["A", "AAAA", "TXT"]))
@click.argument("value", required=False)
@state_dir_option
def dns_remove(name, rtype, value, state_dir):
    body = {"name": name, "type": rtype, **({"value": value} if value else {})}
    removed = _call(_control(state_dir), "DELETE", "/api/dns/records", json=body)["removed"]
    click.echo(f"removed {removed} record(s)")


@main.group()
def scenario():
    """Scenarios reproducing field issues, each with its expected outcome."""


@scenario.command("list")
@click.option("--json", "as_json", is_flag=True)
def scenario_list(as_json):
    from lab.scenario import available

    rows = []
    for name in available():
        try:
            sc = load(name)
        except ScenarioError as exc:
            _fail(str(exc))
        expect = sc.expect
        rows.append({"name": name, "description": sc.description,
                     "expect": None if expect is None else {k: v for k, v in vars(expect).items() if v}})
    if as_json:
        click.echo(json.dumps(rows, indent=2))
        return
    for row in rows:
        e = row["expect"] or {}
        outcome = " ".join(str(e[k]) for k in ("outcome", "path", "stage", "diagnosis") if k in e)
        click.echo(f"{row['name']:<34} {outcome:<58} {row['description']}")


@scenario.command("run")
@click.argument("names", nargs=-1)
@click.option("--all", "run_all", is_flag=True, help="Run every scenario.")
@click.option("--exercise", type=click.IntRange(min=1), default=None,
              help="Start the broken lab of training exercise N and print its symptom (not the answer).")
@click.option("--state-dir", default=None, help="With --exercise: the lab's state directory.")
@click.option("--https-port", type=click.IntRange(0, 65535), default=config.DEFAULT_HTTPS_PORT, show_default=True)
@click.option("--dns-port", type=click.IntRange(0, 65535), default=config.DEFAULT_DNS_PORT, show_default=True)
@click.option("--json", "as_json", is_flag=True)
def scenario_run(names, run_all, exercise, state_dir, https_port, dns_port, as_json):
    """Start a lab per scenario, run its device, check its [expect]; exit 0 only if all pass."""
    from lab import exercises, runner
    from lab.launcher import LabError
    from lab.scenario import available

    if exercise is not None:
        if names or run_all:
            raise click.UsageError("--exercise runs one exercise; give no scenario names or --all with it")
        try:
            found = exercises.find(exercise)
        except exercises.ExerciseError as exc:
            _fail(str(exc))
        lab = _start(found.scenario, state_dir, https_port=https_port, dns_port=dns_port, fresh=True,
                     conceal_faults=True)
        _serve(lab, _banner(lab) + "\n\n" + found.briefing())
        return
    if run_all == bool(names):
        raise click.UsageError("give scenario names or --all (not both)")
    results = []
    for name in (available() if run_all else names):
        try:
            sc = load(name)
            results.append(runner.run(sc))
        except (ScenarioError, LabError, ValueError) as exc:
            _fail(str(exc))
    if as_json:
        click.echo(json.dumps([r.to_dict() for r in results], indent=2))
    else:
        for r in results:
            observed = " ".join(str(r.observed[k]) for k in ("outcome", "path", "stage", "diagnosis")
                                if r.observed.get(k))
            click.echo(f"{'PASS' if r.passed else 'FAIL'}  {r.scenario:<34} {observed}")
            for mismatch in r.mismatches:
                click.echo(f"      {mismatch}")
        passed = sum(r.passed for r in results)
        click.echo(f"{passed} passed, {len(results) - passed} failed")
    sys.exit(0 if all(r.passed for r in results) else 1)


main.add_command(device)

from lab import cli_console  # noqa: E402  (the console's commands: events, ca export)

main.add_command(cli_console.events)
main.add_command(cli_console.ca)

main.add_command(__import__("lab.cli_fleet", fromlist=["fleet"]).fleet)


if __name__ == "__main__":
    main()
